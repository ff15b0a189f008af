"""``--profile`` rendering: the per-op table of one bench result, its check line, and compare's per-block
depthwise vs pointwise table and plot. Renders the records of ``edgesep.devices.profile`` (as dicts)."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

PARTS = ("dw", "pw", "other")
PART_OF_KIND = {"depthwise": "dw", "pointwise": "pw"}
PART_LABELS = {"dw": "depthwise", "pw": "pointwise", "other": "other ops"}


def _num(value: Optional[float], fmt: str) -> str:
    return "-" if value is None else format(value, fmt)


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def profile_table(result: dict[str, Any], limit: Optional[int] = None):
    """A rich table of one result's ops (index, name, type, ms/run, share of the whole, MACs, GMAC/s, share of
    the peak), slowest first when ``limit`` keeps only the top ones; the caption is the check line."""
    from rich import box
    from rich.table import Table

    profile = result.get("profile") or {}
    label = result.get("label") or str(result["model"]).replace("\\", "/").rsplit("/", 1)[-1]
    title = f"where the time goes: {label} ({profile.get('method', '?')})"
    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                  title_justify="left", caption_justify="left")
    for column, justify in (("#", "right"), ("op", "left"), ("type", "left"), ("ms/run", "right"),
                            ("share", "right"), ("MMACs", "right"), ("GMAC/s", "right"), ("of peak", "right")):
        table.add_column(column, justify=justify, overflow="fold" if column == "op" else "ellipsis",
                         ratio=1 if column == "op" else None, no_wrap=column != "op")
    ops = list(result.get("ops") or [])
    scope = _common_scope([str(op["name"]).split(";")[0] for op in ops if op.get("kind") != "executor"])
    if limit is not None and len(ops) > limit:
        ops = sorted(ops, key=lambda o: -(o.get("ms") or 0))[:limit]
    for op in ops:
        name = str(op["name"]).split(";")[0]
        layer = (name[len(scope):] if scope and name.startswith(scope) else name).split("/")[0]
        table.add_row(str(op["index"]), _short_op(layer), op["type"], _num(op.get("ms"), ".4f"),
                      _pct(op.get("share")), _num(op["macs"] / 1e6 if op.get("macs") else None, ".2f"),
                      _num(op.get("gmacs"), ".2f"), _pct(op.get("peak_share")))
    table.caption = "\n".join(profile_lines(result) + [
        "op: the layer an op's name starts with" + (f" after the model's scope {scope}" if scope else "")
        + " (full names in --json)"])
    return table


def _common_scope(names: list[str]) -> str:
    """The first path part every op name shares (the model's scope, e.g. ``edgesep_split_1/``), or ""."""
    from collections import Counter

    firsts = Counter(n.split("/", 1)[0] + "/" for n in names if "/" in n)
    if not firsts or len(names) < 2:
        return ""
    scope, count = firsts.most_common(1)[0]
    # a graph output's own name (Identity) may lack it, and so do the QUANTIZE/DEQUANTIZE ops a mixed model
    # adds (tfl.quantize): every scoped name sharing it is enough
    return scope if count >= max(2, len(names) - 2) or (count >= 2 and len(firsts) == 1) else ""


def _short_op(name: str, width: int = 48) -> str:
    """The first of an op's ';'-joined names, its tail kept when long."""
    first = str(name).split(";")[0]
    return first if len(first) <= width else "..." + first[-(width - 3):]


def profile_lines(result: dict[str, Any]) -> list[str]:
    """The check line (per-op sum / measured whole), the peak, the cost and the method's notes."""
    p = result.get("profile") or {}
    if p.get("error"):
        return [f"profile failed: {p['error']}"]
    lines = [f"per-op sum {_num(p.get('sum_ms'), '.4g')} ms / measured whole (p50) {_num(p.get('whole_ms'), '.4g')} "
             f"ms = ratio {_num(p.get('ratio'), '.2f')}"
             + (" (per-op in isolation)" if p.get("isolated") else "")] + _executor_lines(p)
    if p.get("session_ratio"):
        between = "its ops" if p.get("isolated") else "the profiled runs"
        lines.append(f"the whole model timed again between {between} in the profile session: "
                     f"{p['session_whole_ms']:.4g} ms, ratio {p['session_ratio']:.2f}")
        lines += _load_changed(p)
    if p.get("preempted"):
        lines.append(f"{100 * p['preempted']:.0f}% of the whole's runs timed again were preempted (waited for a CPU); "
                     + (f"the median of the others {p['clean_whole_ms']:.4g} ms, ratio {p['clean_ratio']:.2f}"
                        if p.get("clean_ratio") else "too few were not to take their median"))
    if p.get("best_ratio"):
        lines.append(f"fastest against fastest (each op's fastest run / the whole's fastest run in the profile "
                     f"session, each with a CPU to itself): ratio {p['best_ratio']:.2f}")
    if p.get("cpu_whole_ms") and p.get("session_whole_ms"):
        lines.append(f"the whole's CPU time per run (1 thread, timed again): {p['cpu_whole_ms']:.4g} ms against "
                     f"{p['session_whole_ms']:.4g} ms of wall time in the profile session; the difference waited "
                     "for a CPU (a long run more often than a short op)")
    if p.get("correction_ms"):
        per_input = (p.get("calibration") or {}).get("cost_us_per_input") or 0.0
        lines.append(f"onnxruntime's profiler's own cost ({1e3 * p['correction_ms']:.3g} us per node, {per_input:+.2g} "
                     f"per further input; measured) is subtracted from every node; before it: sum "
                     f"{_num(p.get('raw_sum_ms'), '.4g')} ms, ratio {_num(p.get('raw_ratio'), '.2f')}")
    peak = p.get("peak") or {}
    if peak.get("gmacs"):
        lines.append(f"peak {peak['gmacs']:.2f} GMAC/s ({peak.get('precision')}, {peak.get('source', 'measured')}: "
                     f"{peak.get('model', 'large convolution')})")
    elif peak.get("error"):
        lines.append(f"peak not measured: {peak['error']}")
    host = result.get("host") or {}
    if host.get("emulated"):
        lines.append(f"measured under emulation ({host.get('emulator') or 'an emulator'}): per-op times and the peak "
                     "say nothing about the real hardware")
    lines.append(f"profile cost {_num(p.get('cost_s'), '.2f')} s, {p.get('runs') or '-'} runs per op, apart from the "
                 "timed runs (not in samples_ms)")
    lines += list(p.get("notes") or [])
    return lines


def _executor_lines(p: dict[str, Any]) -> list[str]:
    """The ops + executor check (ONNX): the time between the nodes is its own row, not an op."""
    e = p.get("executor") or {}
    if e.get("sum_ms") is None:
        return []
    others = ", ".join(f"{what} {e[key]:.2f}" for what, key in (("session's whole", "session_ratio"),
                                                                 ("unpreempted", "clean_ratio"),
                                                                 ("fastest against fastest", "best_ratio"))
                       if e.get(key))
    return [f"+ onnxruntime's executor between the ops ({e['ms']:.4g} ms; the row '(between ops)', not an op; "
            f"the profiler's records between nodes, {e['profiler_ms']:.4g} ms, taken out): ops + executor "
            f"{e['sum_ms']:.4g} ms = ratio {_num(e.get('ratio'), '.2f')}" + (f" ({others})" if others else "")]


def _load_changed(p: dict[str, Any]) -> list[str]:
    """A line when the whole timed in the profile session and the timed runs' p50 disagree by over 20 %."""
    whole, again = p.get("whole_ms"), p.get("session_whole_ms")
    if not whole or not again or 1 / 1.2 <= again / whole <= 1.2:
        return []
    return [f"the whole took {again / whole:.2f}x its timed p50 in the profile session: the machine was not in the "
            "same state for both (load, preemption); the ratios against the session's whole and against the "
            "unpreempted runs compare like with like"]


def block_rows(reports: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per form and block: depthwise, pointwise and other ops' ms, GMAC/s and share of the peak, then an
    ``all blocks`` row per form.

    ``reports`` are bench results with ``ops`` (their ``block`` from the builders' layer names, their
    ``kind``) and a ``label`` (the form, e.g. ``fused float32``); a fused ``block3_sep`` counts its depthwise
    and pointwise ops apart, by kind.
    """
    rows: dict[tuple[str, str], dict[str, Any]] = {}
    for report in reports:
        peak = (report.get("profile") or {}).get("peak_gmacs")
        for op in report.get("ops") or []:
            if not op.get("block") or op.get("ms") is None:
                continue
            for block in (op["block"], "all blocks"):
                row = rows.setdefault((report["label"], block), {
                    "label": report["label"], "block": block, "peak": peak,
                    **{f"{p}_ms": None for p in PARTS}, **{f"{p}_macs": 0 for p in PARTS}})
                part = PART_OF_KIND.get(op.get("kind"), "other")
                row[f"{part}_ms"] = (row[f"{part}_ms"] or 0.0) + op["ms"]
                row[f"{part}_macs"] += op.get("macs") or 0
    for row in rows.values():
        for part in PARTS:
            ms, macs = row[f"{part}_ms"], row[f"{part}_macs"]
            gmacs = macs / ms / 1e6 if ms and macs else None
            row[f"{part}_gmacs"] = gmacs
            row[f"{part}_peak_share"] = gmacs / row["peak"] if gmacs and row["peak"] else None
        row["total_ms"] = sum(row[f"{p}_ms"] or 0.0 for p in PARTS)
    order = _label_order([r["label"] for r in reports])
    return sorted(rows.values(), key=lambda r: (r["block"] == "all blocks", _block_number(r["block"]),
                                                order[r["label"]]))


def _label_order(labels: list[str]) -> dict[str, int]:
    """Labels in the order given, but the built-in forms side by side per artifact (``fused TFLite int8`` next
    to ``split TFLite int8``), so each pair reads at a glance."""
    unique = list(dict.fromkeys(labels))
    forms = [label.split(" ", 1) for label in unique]
    if all(len(f) == 2 and f[0] in ("fused", "split") for f in forms):
        kinds = list(dict.fromkeys(f[1] for f in forms))
        unique = sorted(unique, key=lambda label: (kinds.index(label.split(" ", 1)[1]), label.split(" ", 1)[0]))
    return {label: i for i, label in enumerate(unique)}


def _block_number(block: str) -> int:
    digits = "".join(ch for ch in block if ch.isdigit())
    return int(digits) if digits else 0


def block_table(rows: list[dict[str, Any]], title: str = "per block: depthwise vs pointwise"):
    """The per-block table of :func:`block_rows` (ms and share of peak of each part)."""
    from rich import box
    from rich.table import Table

    table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                  title_justify="left")
    for column in ("block", "form", "dw ms", "dw GMAC/s", "of peak", "pw ms", "pw GMAC/s", "of peak", "other ms",
                   "total ms"):
        table.add_column(column, justify="left" if column in ("form", "block") else "right")
    for r in rows:
        table.add_row(r["block"], r["label"], *_cells(r))
    return table


def _cells(r: dict[str, Any]) -> list[str]:
    return [_num(r["dw_ms"], ".4f"), _num(r["dw_gmacs"], ".1f"), _pct(r["dw_peak_share"]), _num(r["pw_ms"], ".4f"),
            _num(r["pw_gmacs"], ".1f"), _pct(r["pw_peak_share"]), _num(r["other_ms"], ".4f"),
            _num(r["total_ms"], ".4f")]


def block_markdown(rows: list[dict[str, Any]]) -> str:
    """The per-block table as Markdown."""
    head = ("| block | form | depthwise ms | GMAC/s | of peak | pointwise ms | GMAC/s | of peak | other ms "
            "| total ms |")
    lines = [head, "|---|---|" + "---:|" * 8]
    for r in rows:
        lines.append("| " + " | ".join([r["block"], r["label"], *_cells(r)]) + " |")
    return "\n".join(lines) + "\n"


def block_plot(rows: list[dict[str, Any]], path: Path, title: str = "where the time goes, per block") -> Path:
    """Stacked bars, one per form within each block: depthwise, pointwise and other ops' ms per run (a PNG)."""
    import io

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgesep.io import write_bytes

    rows = [r for r in rows if r["block"] != "all blocks"]
    blocks = list(dict.fromkeys(r["block"] for r in rows))
    labels = list(dict.fromkeys(r["label"] for r in rows))  # block_rows' order: the forms side by side
    width = 0.8 / max(len(labels), 1)
    colors = {"dw": "#4c72b0", "pw": "#dd8452", "other": "#9e9e9e"}
    bars = len(blocks) * len(labels)
    fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 1.5 + 0.42 * bars)), 5.0), dpi=110)
    ticks, tick_labels, drawn = [], [], set()
    for j, label in enumerate(labels):
        by_block = {r["block"]: r for r in rows if r["label"] == label}
        xs = [i + (j - (len(labels) - 1) / 2) * width for i in range(len(blocks))]
        bottom = [0.0] * len(blocks)
        for part in PARTS:
            heights = [(by_block.get(b) or {}).get(f"{part}_ms") or 0.0 for b in blocks]
            if any(heights):
                ax.bar(xs, heights, width * 0.9, bottom=bottom, color=colors[part], edgecolor="white",
                       label=None if part in drawn else PART_LABELS[part])
                drawn.add(part)
                bottom = [b + h for b, h in zip(bottom, heights)]
        ticks += xs
        tick_labels += [label] * len(xs)
    ax.set_xticks(ticks, tick_labels, rotation=55, ha="right", fontsize=7)
    top = ax.secondary_xaxis("top")
    top.set_xticks(range(len(blocks)), blocks)
    ax.set_ylabel("ms per run")
    ax.set_title(title, pad=22)
    ax.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    plt.close(fig)
    write_bytes(path, buffer.getvalue())
    return path
