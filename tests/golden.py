"""The golden view of a compare report.json: its key skeleton and its deterministic values.

Two runs of ``edgesep compare`` on the same inputs differ in timings, timestamps, samples and what hashes
them; everything else must match. ``view(doc)`` keeps exactly that: the skeleton (every key path with the
JSON type of its value, lists merged over their elements) and the values that do not depend on timing.
``check(reference, doc)`` asserts a report still matches a stored reference: the same deterministic values,
and every key path of the reference still there with the same type (fields may only grow; so may the
artifact kinds: rows of a new kind are left out of the value comparison).

    python tests/golden.py report.json > reference.json    # store a reference made by the current code
"""
from __future__ import annotations

import json
import sys
from typing import Any

# per variant: everything that follows from the inputs (not the file paths of a temp folder)
VARIANT_KEYS = ("id", "name", "form", "kind", "label", "format", "precision", "params", "macs", "ops")
COMPARISON_KEYS = ("label", "kind", "a", "b", "a_name", "b_name")
RESULT_KEYS = ("variant", "runtime", "threads", "delegate", "error")


def _type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, (int, float)):
        return "number"
    return {str: "str", list: "list", dict: "dict"}[type(value)]


def _merge(a: Any, b: Any) -> Any:
    if isinstance(a, dict) and isinstance(b, dict):
        return {k: _merge(a[k], b[k]) if k in a and k in b else a.get(k, b.get(k)) for k in {**a, **b}}
    if a == "null":
        return b
    return a


def skeleton(value: Any) -> Any:
    """Every key path of ``value`` with the JSON type of its leaves; a list becomes its merged element."""
    if isinstance(value, dict):
        return {k: skeleton(v) for k, v in value.items()}
    if isinstance(value, list):
        merged: Any = "null"
        for item in value:
            merged = _merge(merged, skeleton(item))
        return [merged] if value else []
    return _type(value)


def values(doc: dict[str, Any]) -> dict[str, Any]:
    """The deterministic values of a compare report (same inputs, same values)."""
    out: dict[str, Any] = {k: doc.get(k) for k in ("kind", "report_version", "status", "config", "bench_config")}
    out["variants"] = [{k: v.get(k) for k in VARIANT_KEYS} for v in doc["variants"]]
    out["comparisons"] = [{k: c.get(k) for k in COMPARISON_KEYS} for c in doc["comparisons"]]
    out["stages"] = {k: s["status"] for k, s in doc["stages"].items()}
    out["dataset"] = doc.get("dataset")
    out["accuracy_seeds"] = (doc.get("accuracy") or {}).get("seeds")
    out["plots"] = sorted((p["file"], p["kind"], p["width"], p["height"]) for p in doc["plots"])
    devices = {}
    for target, section in doc["devices"].items():
        devices[target] = {
            "status": section["status"], "error": section["error"],
            "session_formats": sorted({s["format"] for s in section["sessions"]}, key=str),
            "results": {vid: {k: r.get(k) for k in RESULT_KEYS} for vid, r in section["results"].items()},
            "comparisons": [{k: c.get(k) for k in COMPARISON_KEYS + ("paired",)} for c in section["comparisons"]]}
    out["devices"] = devices
    return json.loads(json.dumps(out))  # tuples -> lists, as stored


def view(doc: dict[str, Any]) -> dict[str, Any]:
    """``{"skeleton": ..., "values": ...}`` of a report document."""
    return {"skeleton": skeleton(doc), "values": values(doc)}


def missing_paths(reference: Any, current: Any, path: str = "$") -> list[str]:
    """Key paths of skeleton ``reference`` that ``current`` lost or changed the type of (null matches all)."""
    if reference == "null" or current == "null":
        return []
    if isinstance(reference, dict):
        if not isinstance(current, dict):
            return [f"{path}: dict became {current}"]
        return [p for k, v in reference.items()
                for p in ([f"{path}.{k}: missing"] if k not in current else missing_paths(v, current[k], f"{path}.{k}"))]
    if isinstance(reference, list):
        if not isinstance(current, list):
            return [f"{path}: list became {current}"]
        if not reference or not current:
            return []
        return missing_paths(reference[0], current[0], f"{path}[]")
    return [] if reference == current else [f"{path}: {reference} became {current}"]


def _known_rows(values: dict[str, Any], reference: dict[str, Any]) -> dict[str, Any]:
    """``values`` restricted to the variants and comparisons the reference has (new artifact kinds are
    growth, like new fields: every row of the reference must still be there, unchanged and in order)."""
    ids = {v["id"] for v in reference["variants"]}
    kinds = {c["kind"] for c in reference["comparisons"]}
    out = dict(values)
    out["variants"] = [v for v in values["variants"] if v["id"] in ids]
    out["comparisons"] = [c for c in values["comparisons"] if c["kind"] in kinds]
    out["devices"] = {
        target: {**section, "results": {k: r for k, r in section["results"].items() if k in ids},
                 "comparisons": [c for c in section["comparisons"] if c["kind"] in kinds]}
        for target, section in values["devices"].items()}
    return out


def check(reference: dict[str, Any], doc: dict[str, Any]) -> None:
    """Assert ``doc`` keeps the reference's deterministic values and every key path of its skeleton."""
    now = view(doc)
    assert _known_rows(now["values"], reference["values"]) == reference["values"]
    lost = missing_paths(reference["skeleton"], now["skeleton"])
    assert not lost, lost


if __name__ == "__main__":
    print(json.dumps(view(json.loads(open(sys.argv[1]).read())), indent=1, sort_keys=True))
