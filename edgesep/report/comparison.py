"""The compare report (report.json's document) as format-free sections, Markdown (report.md) and rich tables.

Renders what ``edgesep.compare`` decided (the verdict sentences are in the document); decides nothing.
"""
from __future__ import annotations

from typing import Any, Optional

from edgesep.report.tables import SHARED_MEMORY_NOTE, bench_rows, emulated_note, format_memory
from edgesep.report.text import count_text, format_ms, md_cell, ops_text, pct, pp, size_text


def _variant_rows(doc: dict[str, Any]) -> dict[str, Any]:
    variants = doc.get("variants") or []
    with_keras = any(v.get("keras_accuracy") is not None for v in variants)
    columns = [("variant", "left"), ("params", "right"), ("MACs", "right"), ("size", "right"), ("ops", "left")]
    if with_keras:
        columns += [("Keras acc", "right"), ("acc", "right"), ("drop", "right")]
    rows = []
    for v in variants:
        row = [v["name"], count_text(v.get("params")), count_text(v.get("macs")), size_text(v.get("bytes")), ops_text(v["ops"])]
        if with_keras:
            drop = v.get("accuracy_drop")
            row += [pct(v.get("keras_accuracy")), pct(v.get("accuracy")), "-" if drop is None else pp(drop)]
        rows.append(row)
    note = ["acc: top-1 of the artifact on the host (export verification); drop: Keras minus artifact"] \
        if with_keras else []
    return {"title": "Variants", "columns": columns, "rows": rows, "notes": note}


def _seed_rows(doc: dict[str, Any]) -> Optional[dict[str, Any]]:
    acc = doc.get("accuracy")
    if not acc or not any("int8_drop" in f for f in acc["forms"].values()):
        return None

    def ms(s: dict[str, Any]) -> str:
        return pct(s["mean"]) + (f" ± {s['std'] * 100:.2f} pp" if s["n"] > 1 else "")

    rows = []
    for form, f in acc["forms"].items():
        d = f.get("int8_drop")
        if d is None:
            continue
        rows.append([form, ms(f["keras_accuracy"]), ms(f["int8_accuracy"]), pp(d["mean"]),
                     pp(d["std"]) if d["n"] > 1 else "-", f"{pp(d['min'])} .. {pp(d['max'])}"])
    columns = [("form", "left"), ("Keras acc", "right"), ("int8 acc", "right"), ("drop mean", "right"),
               ("drop std", "right"), ("drop min .. max", "right")]
    return {"title": f"int8 accuracy over {acc['seeds']} seed(s)", "columns": columns, "rows": rows,
            "notes": [f"verdict: {acc['verdict']}"]}


def _device_rows(doc: dict[str, Any], target: str) -> list[dict[str, Any]]:
    section = doc["devices"][target]
    names = {v["id"]: v["name"] for v in doc.get("variants") or []}
    status = section.get("status", "pending")
    notes = []
    if section.get("error"):
        notes.append(f"error: {section['error']}")
    if section.get("resumed"):
        notes.append("results reused from an earlier run (--resume)")
    host = section.get("host") or {}
    if host:
        temp = host.get("temp_c")
        notes.append(f"host: {host.get('cpu') or '?'}, {host.get('cores') or '?'} cores, governor "
                     f"{host.get('governor') or '-'}, temp {'-' if temp is None else f'{temp:.0f} C'}")
    results = section.get("results") or {}
    note = emulated_note([{"host": host}] + list(results.values()))
    notes += [note] if note else []
    with_acc = any(r.get("accuracy") is not None for r in results.values())
    columns = [("variant", "left"), ("p50 ms [95% CI]", "right"), ("p90 ms", "right"), ("runs", "right")]
    columns += [("device acc", "right")] if with_acc else []
    with_mem = any(format_memory(r.get("memory_mb")) != "-" for r in results.values())
    columns += [("peak MB (+model)", "right")] if with_mem else []
    columns += [("runtime", "left")]
    rows = []
    for vid, name in names.items():
        r = results.get(vid)
        if r is None:
            continue
        cells = bench_rows([r])[0]
        p50 = cells["p50"] if not r.get("error") else "failed: " + str(r["error"])[:120]
        rows.append([name, p50, cells["p90"], cells["runs"]] + ([pct(r.get("accuracy"))] if with_acc else [])
                    + ([cells["memory"]] if with_mem else []) + [cells["runtime"]])
    notes += [f"warning: {c['message']}" for c in section.get("checks") or []]
    if with_mem and any(format_memory(r.get("memory_mb")).endswith("*") for r in results.values()):
        notes.append(SHARED_MEMORY_NOTE)
    latency = {"title": f"{target}: latency ({status})", "columns": columns, "rows": rows, "notes": notes}
    ratios = _ratio_rows(doc, target)
    return [latency, ratios] if ratios["rows"] else [latency]


RATIO_NOTE = ("ratio of median latencies (geometric mean over sessions); interval: bootstrap over the sessions, "
              "then over blocks of consecutive paired rounds in each; A/A floor: how far the control (the "
              "baseline loaded twice) strayed from 1 - a difference is called only beyond it and the interval")


def _ratio_cells(c: dict[str, Any]) -> list[str]:
    if c.get("ratio") is None:
        return [c["label"], "-", "-", "-", c.get("verdict") or "-"]
    ratio = f"{c['ratio']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]"
    sessions = "unpaired" if not c.get("paired") else str(c.get("sessions") or 1)
    floor = c.get("noise_floor")
    return [c["label"], ratio, sessions, "-" if floor is None else f"±{floor:.1%}", c.get("verdict") or "-"]


def _ratio_rows(doc: dict[str, Any], target: str) -> dict[str, Any]:
    comparisons = doc["devices"][target].get("comparisons") or []
    first = (comparisons or [{}])[0]
    ratio_name = f"{first.get('a_name')}/{first.get('b_name')}" if doc.get("kind") == "builtin" else "a/b"
    return {"title": f"{target}: latency ratio {ratio_name} (< 1: {ratio_name.split('/')[0]} is faster)",
            "columns": [("comparison", "left"), ("ratio [95% CI]", "right"), ("sessions", "right"),
                        ("A/A floor", "right"), ("verdict", "left")],
            "rows": [_ratio_cells(c) for c in comparisons], "notes": [RATIO_NOTE] if comparisons else []}


def compare_sections(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The compare report as format-free sections: ``title``, ``columns`` (header, justify), ``rows``, ``notes``."""
    sections = [_variant_rows(doc)]
    seeds = _seed_rows(doc)
    if seeds:
        sections.append(seeds)
    for target in doc.get("devices") or {}:
        sections.extend(_device_rows(doc, target))
    return sections


def compare_verdicts(doc: dict[str, Any], warnings: bool = True) -> list[str]:
    """One line per device and comparison (``local, TFLite int8: fused is 1.08x faster than split (...)``),
    then the int8 accuracy verdict; ``warnings``: also each device's stability warnings."""
    lines = []
    for target, section in (doc.get("devices") or {}).items():
        if section.get("status") == "failed":
            lines.append(f"{target}: failed ({section.get('error')})")
            continue
        emulated = " (emulated device: not the hardware's speed)" if (section.get("host") or {}).get("emulated") else ""
        for c in section.get("comparisons") or []:
            lines.append(f"{target}, {c['label']}: {c.get('verdict')}{emulated}")
        lines += [f"{target}: warning: {c['message']}" for c in section.get("checks") or []] if warnings else []
    acc = doc.get("accuracy")
    if acc:
        lines.append(f"int8 accuracy: {acc['verdict']}")
    return lines


def resume_summary(doc: dict[str, Any]) -> str:
    """What ``--resume`` reused: exports (training skipped) and device sessions, per device."""
    forms = [f for seed in doc.get("seeds") or [] for f in seed.values()]
    parts = []
    if forms:
        reused = sum(1 for f in forms if (f.get("train") or {}).get("resumed"))
        parts.append(f"{reused} of {len(forms)} exports (their training skipped)")
    for target, section in (doc.get("devices") or {}).items():
        sessions = [s for s in section.get("sessions") or [] if s.get("session")]
        reused = sum(1 for s in sessions if s.get("resumed"))
        parts.append(f"{reused} of {len(sessions)} sessions on {target}")
    return "--resume reused " + ("; ".join(parts) if parts else "nothing") + "; the rest was made anew"


def _md_table(section: dict[str, Any]) -> list[str]:
    cols = section["columns"]
    lines = ["| " + " | ".join(h for h, _ in cols) + " |",
             "|" + "|".join("---:" if j == "right" else "---" for _, j in cols) + "|"]
    lines += ["| " + " | ".join(md_cell(c) for c in row) + " |" for row in section["rows"]]
    return lines


def _md_intro(doc: dict[str, Any]) -> list[str]:
    if doc.get("kind") == "models":
        return ["Given models, each compared with the first: " + ", ".join(f"`{m}`" for m in doc.get("models", []))]
    cfg = doc.get("config") or {}
    blocks = ", ".join(f"{f}/s{s}" for f, s in cfg.get("blocks", []))
    ds = doc.get("dataset") or {}
    return [f"Built-in network in both forms: input {cfg.get('input_size')}x{cfg.get('input_size')}x3, width "
            f"{cfg.get('width')}, blocks {blocks}; both trained {cfg.get('epochs')} epochs on {ds.get('name', '?')} "
            f"({ds.get('train_samples', '?')} train / {ds.get('test_samples', '?')} test images) with seed(s) "
            f"0..{cfg.get('seeds', 1) - 1}, BatchNorm folded, exported and verified.",
            "",
            "Latency is measured on seed 0's artifacts in several sessions per device (a fresh runner process "
            "each, artifacts in a shuffled order, interleaved round by round; TFLite and ONNX in separate "
            "sessions), with an A/A control (one artifact loaded as two variants) in every session."]


def compare_markdown(doc: dict[str, Any]) -> str:
    """report.md: what was compared, the verdicts, the tables and the plots (GitHub Markdown)."""
    title = "fused vs split" if doc.get("kind") == "builtin" else "model comparison"
    lines = [f"# edgesep compare: {title}", "", *_md_intro(doc), ""]
    if doc.get("status") != "done":
        lines += [f"Status: **{doc.get('status')}**", ""]
    verdicts = compare_verdicts(doc)
    if verdicts:
        lines += ["## Verdicts", "", *[f"- {v}" for v in verdicts], ""]
    for section in compare_sections(doc):
        lines += [f"## {section['title']}", ""]
        if section["rows"]:
            lines += [*_md_table(section), ""]
        lines += [*[f"- {n}" for n in section["notes"]], ""] if section["notes"] else []
    plots = doc.get("plots") or []
    if plots:
        lines += ["## Plots", ""] + [f"![{p['title']}]({p['file']})" for p in plots] + [""]
    stages = doc.get("stages") or {}
    if stages:
        lines += ["## Stages", "", "| stage | status | seconds |", "|---|---|---:|"]
        lines += [f"| {md_cell(k)} | {s.get('status')} | {s.get('seconds', '-')} |" for k, s in stages.items()]
        lines.append("")
    return "\n".join(lines)


def _summary_cells(doc: dict[str, Any], v: dict[str, Any], targets: list[str]) -> list[str]:
    acc = v.get("accuracy")
    cells = [v["name"], size_text(v.get("bytes"))]
    for target in targets:
        r = ((doc["devices"][target].get("results") or {}).get(v["id"])) or {}
        acc = r.get("accuracy") if acc is None else acc
        lat = r.get("latency_ms") or {}
        ci = lat.get("ci95_p50") if len(targets) == 1 else None
        cells.append("failed" if r.get("error") else "-" if not lat else
                     format_ms(lat.get("p50")) + (f" [{format_ms(ci[0])}, {format_ms(ci[1])}]" if ci else ""))
    return cells[:2] + [pct(acc)] + cells[2:]


def compare_summary(doc: dict[str, Any]) -> list[str]:
    """The compare report in a few unpadded lines for a terminal: one line per variant (size, top-1, median
    latency on each device), then one per verdict. Stability warnings are left to the caller (said once)."""
    targets = [t for t, s in (doc.get("devices") or {}).items() if s.get("status") != "failed"]
    body = [_summary_cells(doc, v, targets) for v in doc.get("variants") or []]
    legend: list[str] = []
    if len(targets) == 1:
        header = ["variant", "size", "top-1", f"{targets[0]} p50 ms [95% CI]"]
    else:
        header = ["variant", "size", "top-1"] + targets
        if len(_aligned([header] + body)[0]) > 78:  # long targets: numbered columns, named below
            header = header[:3] + [f"device {i}" for i in range(1, len(targets) + 1)]
            legend = [f"device {i}: {t}" for i, t in enumerate(targets, start=1)]
        legend.insert(0, "latency: p50 ms per device")
    verdicts = compare_verdicts(doc, warnings=False)
    return (_aligned([header] + body) + legend
            + (["verdicts:"] + [f"  {v}" for v in verdicts] if verdicts else []))


def _aligned(rows: list[list[str]]) -> list[str]:
    """Rows as text columns two spaces apart: the first left-aligned, the others right-aligned; no padding."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))).rstrip()
            for row in rows]


def compare_tables(doc: dict[str, Any], warnings: bool = True) -> list:
    """The report's sections as rich renderables (tables, then notes), and the verdicts; ``warnings``: also the
    devices' stability warnings."""
    from rich.table import Table
    from rich.text import Text

    out: list = []
    for section in compare_sections(doc):
        table = Table(title=section["title"], title_justify="left")
        for header, justify in section["columns"]:
            table.add_column(header, justify=justify, overflow="fold")
        for row in section["rows"]:
            table.add_row(*row)
        out.append(table)
        out += [Text("  " + n) for n in section["notes"] if warnings or not n.startswith("warning: ")]
    verdicts = compare_verdicts(doc, warnings)
    if verdicts:
        out.append(Text("Verdicts", style="bold"))
        out += [Text("  " + v) for v in verdicts]
    return out
