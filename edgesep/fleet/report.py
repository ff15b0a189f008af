"""Everything read back from ``DIR/sweep.db``: report.md with plots, and the rows as CSV or Parquet.

The report takes the newest row per job key (an ``ok`` one where there is one): a models x devices table and
heatmap of median latency, fused/split latency ratios per device with bootstrap intervals (unpaired: each
artifact ran in its own job), int8 accuracy drops from the exports, and the failed jobs, one line each.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any, Optional

from edgesep.errors import EdgesepError
from edgesep.fleet.store import JOB_COLUMNS, SweepStore

HEATMAP = "latency_heatmap.png"
RATIOS = "fused_split_ratios.png"
CSV_COLUMNS = [name for name, _ in JOB_COLUMNS if name != "result_json"]


def _rows(out: Path, latest: bool = True) -> list[dict[str, Any]]:
    store = SweepStore(out, create=False)
    try:
        return store.rows(latest=latest)
    finally:
        store.close()


def _groups(out: Path) -> list[dict[str, Any]]:
    store = SweepStore(out, create=False)
    try:
        return store.group_results()
    finally:
        store.close()


PAIRED = ("paired: each group ran on its device as compare runs it, in sessions (a fresh runner process each) "
          "over a, b and an A/A control (b loaded twice) in shuffled order with interleaved rounds; a difference "
          "must clear the control's noise floor")


def paired_verdicts(groups: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per group, device and artifact kind: the session ratio a/b, its interval, the A/A floor and the verdict
    (``edgesep.compare.analysis.judge_sessions``, the same judgement as ``compare``)."""
    from edgesep.compare.analysis import judge_sessions
    from edgesep.compare.records import ComparisonSpec

    out = []
    for g in groups:
        sessions = g["samples"]
        if not sessions:
            continue
        a_name, b_name = g["a_model"], g["b_model"]
        if a_name == b_name and g["precision"] != g["b_precision"]:  # by = "precision": int8 vs float32
            a_name, b_name = f"{a_name} {g['precision']}", f"{b_name} {g['b_precision']}"
        elif a_name == b_name:
            b_name = f"{b_name} (again)"
        spec = ComparisonSpec(label=g["name"], a="a", b="b", a_name=a_name, b_name=b_name)
        c = judge_sessions(spec, [s["a"] for s in sessions], [s["b"] for s in sessions],
                           [s["control"] for s in sessions])
        out.append({"group": g["name"], "device": g["device"], "host": g["host"], "node_ip": g["node_ip"],
                    "artifact": f"{g['format']} {g['precision']}" + (f" vs {g['b_precision']}" if
                                                                      g["b_precision"] != g["precision"] else ""), "ratio": c.ratio, "lo": c.lo, "hi": c.hi,
                    "sessions": len(sessions), "noise_floor": c.details.get("noise_floor"),
                    "significant": bool(c.details.get("significant")), "verdict": c.verdict})
    return out


def report_rows(out) -> list[dict[str, Any]]:
    """The rows the report reads from ``out/sweep.db`` (the newest per job key)."""
    return _rows(Path(out))


def _label(row: dict[str, Any]) -> str:
    return f"{row['model']} ({row['format']} {row['precision']})"


def latency_table(rows: list[dict[str, Any]]) -> tuple[list[str], list[str], dict[tuple[str, str], float]]:
    """(model labels, devices, {(label, device): median ms}) of the ``ok`` rows."""
    ok = [r for r in rows if r["status"] == "ok" and r["p50_ms"] is not None]
    labels = list(dict.fromkeys(_label(r) for r in ok))
    devices = list(dict.fromkeys(r["device"] for r in ok))
    return labels, devices, {(_label(r), r["device"]): r["p50_ms"] for r in ok}


def _samples(row: dict[str, Any]) -> Optional[list[float]]:
    result = json.loads(row["result_json"]) if row.get("result_json") else {}
    return result.get("samples_ms") or None


def fused_split_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per device and matched pair (same format, precision, seed and name but the form): fused / split."""
    from edgesep.stats import ratio_of_medians

    groups: dict[tuple, dict[str, dict[str, Any]]] = {}
    for r in rows:
        if r["status"] == "ok" and r["form"] in ("fused", "split"):
            stem = r["model"].replace(r["form"], "*")
            groups.setdefault((r["device"], r["format"], r["precision"], r["seed"], stem), {})[r["form"]] = r
    out = []
    for (device, fmt, precision, seed, stem), pair in groups.items():
        a, b = (_samples(pair[f]) if f in pair else None for f in ("fused", "split"))
        if a and b:
            ci = ratio_of_medians(a, b, paired=False)
            out.append({"device": device, "model": stem, "format": fmt, "precision": precision, "seed": seed,
                        "ratio": ci.ratio, "lo": ci.lo, "hi": ci.hi})
    return out


UNPAIRED = ("unpaired: each artifact ran in its own job, and no A/A control ran, so the interval omits "
            "job-to-job and load variation; treat a small difference as unproven")
NEAR_CHANCE = 0.1  # Keras accuracy within this share of the way from chance (1/classes) to 1 is "near chance"


def _classes(path: Optional[str]) -> Optional[int]:
    """The class count of an artifact (its first output's last dimension), when the file is here to read."""
    from edgesep.converters.inspect import inspect_model

    try:
        shape = inspect_model(path).outputs[0]["shape"] if path else None
    except (EdgesepError, OSError, IndexError, KeyError):
        return None
    return int(shape[-1]) if shape and shape[-1] and int(shape[-1]) > 1 else None


def accuracy_drops(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per exported artifact: Keras accuracy, artifact accuracy and the drop (from the export's verification),
    and the class count where the artifact can be read (for the near-chance flag)."""
    seen, out = set(), []
    for r in rows:
        if r["accuracy"] is None or r["keras_accuracy"] is None or r["artifact_hash"] in seen:
            continue
        seen.add(r["artifact_hash"])
        out.append({"model": r["model"], "format": r["format"], "precision": r["precision"],
                    "keras_accuracy": r["keras_accuracy"], "accuracy": r["accuracy"],
                    "drop": r["keras_accuracy"] - r["accuracy"], "classes": _classes(r.get("artifact"))})
    return out


def chance_warnings(rows: list[dict[str, Any]]) -> list[str]:
    """One warning per model whose Keras accuracy is near chance: its accuracy figures say little."""
    out = {}
    for d in accuracy_drops(rows):
        chance = 1 / d["classes"] if d["classes"] else None
        if chance is not None and d["keras_accuracy"] < chance + NEAR_CHANCE * (1 - chance):
            out.setdefault(d["model"], f"{d['model']}: Keras accuracy {d['keras_accuracy']:.4f} is near chance "
                                       f"({chance:.4f} for {d['classes']} classes): the model has barely learned, "
                                       "so its accuracy drops say little (train longer)")
    return list(out.values())


def report_document(rows: list[dict[str, Any]], groups: Optional[list[dict[str, Any]]] = None) -> dict[str, Any]:
    """What report.md shows, decided here: job counts, the latency table, fused/split ratios with their verdicts,
    accuracy drops, near-chance warnings and the jobs without a result (rendered by ``edgesep.report.sweep``)."""

    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    labels, devices, p50 = latency_table(rows)
    ratios = [{**r, "significant": False, "verdict": "not judged (unpaired, no A/A control): measure them as a "
                                                      "[[groups]] entry for a verdict"} for r in fused_split_ratios(rows)]
    failed = [{"device": r["device"], "label": _label(r), "status": r["status"], "error": r["error"]}
              for r in rows if r["status"] != "ok"]
    return {"counts": counts, "labels": labels, "devices": devices, "p50": p50, "ratios": ratios,
            "unpaired": UNPAIRED, "paired": paired_verdicts(groups or []), "paired_note": PAIRED, "drops": accuracy_drops(rows), "warnings": chance_warnings(rows), "failed": failed}


def report_markdown(rows: list[dict[str, Any]], plots: list[str], groups: Optional[list[dict[str, Any]]] = None) -> str:
    """report.md of a sweep's rows (and its paired groups)."""
    from edgesep.report.sweep import sweep_markdown

    return sweep_markdown(report_document(rows, groups), plots)


def plot_heatmap(rows: list[dict[str, Any]], out: Path) -> Optional[str]:
    """models x devices heatmap of median latency; None when nothing was measured."""
    from edgesep.io import write_bytes
    from edgesep.report.sweep import heatmap_png

    labels, devices, p50 = latency_table(rows)
    if not labels:
        return None
    write_bytes(out / HEATMAP, heatmap_png(labels, devices, p50))
    return HEATMAP


def plot_ratios(rows: list[dict[str, Any]], out: Path) -> Optional[str]:
    """fused/split ratio with its interval, one point per device and pair; None without pairs."""
    from edgesep.io import write_bytes
    from edgesep.report.sweep import ratios_png

    ratios = fused_split_ratios(rows)
    if not ratios:
        return None
    write_bytes(out / RATIOS, ratios_png(ratios))
    return RATIOS


def write_report(out) -> list[str]:
    """report.md and the plots, from ``out/sweep.db``; returns the file names written."""
    from edgesep.io import write_text

    out = Path(out)
    rows = _rows(out)
    plots = [p for p in (plot_heatmap(rows, out), plot_ratios(rows, out)) if p]
    write_text(out / "report.md", report_markdown(rows, plots, _groups(out)))
    return ["report.md", *plots]


def write_csv(out) -> str:
    """Every job row (all attempts; the bench JSON left out) as ``out/sweep.csv``; returns its path."""
    from edgesep.io import write_text

    out = Path(out)
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=["id", *CSV_COLUMNS], extrasaction="ignore")
    writer.writeheader()
    writer.writerows(_rows(out, latest=False))
    write_text(out / "sweep.csv", buffer.getvalue())
    return str(out / "sweep.csv")


def require_pyarrow() -> None:
    """One line with the install command when pyarrow is missing."""
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise EdgesepError("--parquet needs pyarrow, which is not installed: pip install pyarrow "
                           "(or use --csv)") from None


def write_parquet(out) -> str:
    """Every job row, the full bench JSON included, as ``out/sweep.parquet`` (needs pyarrow)."""
    require_pyarrow()
    import pyarrow
    import pyarrow.parquet as pq

    from edgesep.io import write_bytes

    out = Path(out)
    rows = _rows(out, latest=False)
    table = pyarrow.Table.from_pylist(rows) if rows else pyarrow.table({"id": pyarrow.array([], pyarrow.int64())})
    sink = pyarrow.BufferOutputStream()
    pq.write_table(table, sink)
    write_bytes(out / "sweep.parquet", sink.getvalue().to_pybytes())
    return str(out / "sweep.parquet")
