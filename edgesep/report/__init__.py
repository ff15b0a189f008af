"""Tables and documents for people: export and bench results as rich tables, JSON, CSV and Markdown.

Imports nothing else of edgesep.
"""
from __future__ import annotations

from typing import Any, Optional


def _size(n: Optional[int]) -> str:
    if n is None:
        return "-"
    return f"{n / 1024:.1f} KiB" if n < 1024 * 1024 else f"{n / 1024 / 1024:.2f} MiB"


def export_table(doc: dict[str, Any]):
    """A rich Table of export.json's artifacts: size, ops, max error vs Keras, accuracy."""
    from rich.table import Table

    keras_acc = doc.get("keras_accuracy")
    title = f"{doc['model']['name']} ({doc['model'].get('form') or 'custom'})"
    if keras_acc is not None:
        title += f" - Keras accuracy {keras_acc:.4f}"
    table = Table(title=title)
    table.add_column("artifact", no_wrap=True)
    table.add_column("precision", no_wrap=True)
    table.add_column("size", justify="right", no_wrap=True)
    table.add_column("ops", overflow="fold", ratio=1)
    table.add_column("max |err|", justify="right", no_wrap=True)
    table.add_column("accuracy", justify="right", no_wrap=True)
    for art in doc["artifacts"]:
        ops = " ".join(f"{k}×{v}" for k, v in sorted(art.get("ops", {}).items(), key=lambda kv: (-kv[1], kv[0])))
        err, acc = art.get("max_abs_error_vs_keras"), art.get("accuracy")
        table.add_row(art["path"], art["precision"], _size(art.get("bytes")), ops,
                      "-" if err is None else f"{err:.1e}", "-" if acc is None else f"{acc:.4f}")
    guard = (doc.get("equalize") or {}).get("guard")
    if guard:
        table.caption = (f"equalize guard: {guard['outcome']} ({guard['links_kept']}/{guard['links']} links "
                         f"equalized); int8 accuracy {guard['accuracy']:.4f}, without equalization "
                         f"{guard['accuracy_without_equalize']:.4f}, every link equalized {guard['accuracy_every_link']:.4f}")
    return table


# ---------------------------------------------------------------- bench results

def format_ms(value: Optional[float]) -> str:
    """Milliseconds with 3-4 significant digits and no exponent; ``-`` for None."""
    if value is None:
        return "-"
    for limit, digits in ((100.0, 0), (10.0, 1), (1.0, 2), (0.1, 3)):
        if abs(value) >= limit:
            return f"{value:.{digits}f}"
    return f"{value:.4f}"


def _short_model(path: str) -> str:
    return path.replace("\\", "/").rsplit("/", 1)[-1]


def bench_rows(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One dict of formatted cells per bench result (``BenchResult.to_dict()`` records), for any table format.

    Keys: model, device, p50 (with its 95 % interval), p90, p99, init, first, runs, accuracy, runtime,
    delegate, error.
    """
    rows = []
    for r in results:
        lat = r.get("latency_ms") or {}
        ci = lat.get("ci95_p50")
        p50 = format_ms(lat.get("p50"))
        if ci:
            p50 += f" [{format_ms(ci[0])}, {format_ms(ci[1])}]"
        delegate = r.get("delegate") or "-"
        if r.get("fully_delegated") is False and delegate not in ("none", "-"):
            delegate += " (partial)"
        acc = r.get("accuracy")
        rows.append({"model": _short_model(str(r.get("model", "?"))), "device": str(r.get("device") or "-"),
                     "p50": p50 if lat else "-", "p90": format_ms(lat.get("p90")), "p99": format_ms(lat.get("p99")),
                     "init": format_ms(r.get("init_ms")), "first": format_ms(r.get("first_ms")),
                     "runs": str(lat.get("n", len(r.get("samples_ms") or []))) if lat else "-",
                     "accuracy": "-" if acc is None else f"{acc:.4f}", "runtime": r.get("runtime") or "-",
                     "delegate": delegate, "error": r.get("error") or ""})
    return rows


_BENCH_COLUMNS = (("model", "model", "left"), ("device", "device", "left"), ("p50", "p50 ms [95% CI]", "right"),
                  ("p90", "p90 ms", "right"), ("p99", "p99 ms", "right"), ("init", "init ms", "right"),
                  ("first", "first ms", "right"), ("runs", "runs", "right"), ("accuracy", "accuracy", "right"),
                  ("runtime", "runtime", "left"), ("delegate", "delegate", "left"))


def _bench_columns(results: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    devices = {r.get("device") for r in results}
    with_acc = any(r.get("accuracy") is not None for r in results)
    return [c for c in _BENCH_COLUMNS
            if (c[0] != "device" or len(devices) > 1) and (c[0] != "accuracy" or with_acc)]


def bench_table(results: list[dict[str, Any]], title: Optional[str] = None):
    """A rich Table of bench results: p50 with its interval, p90, p99, init, first, runtime, delegate.

    A failed model gets a row saying ``failed`` (its error is in the result and on the CLI's stderr).
    """
    from rich.table import Table

    devices = sorted({str(r.get("device")) for r in results})
    table = Table(title=title or f"latency on {', '.join(devices)}")
    columns = _bench_columns(results)
    for key, header, justify in columns:
        table.add_column(header, justify=justify, no_wrap=key != "model", overflow="fold")
    for row in bench_rows(results):
        if row["error"]:
            row = dict(row, p50="[red]failed[/red]")
        table.add_row(*(row[key] for key, _, _ in columns))
    return table


def bench_markdown(results: list[dict[str, Any]]) -> str:
    """The bench table as GitHub Markdown (errors in the p50 column)."""
    columns = _bench_columns(results)
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---:" if j == "right" else "---" for _, _, j in columns) + "|"]
    for row in bench_rows(results):
        if row["error"]:
            row = dict(row, p50="error: " + row["error"].replace("|", "\\|"))
        lines.append("| " + " | ".join(row[k] for k, _, _ in columns) + " |")
    return "\n".join(lines) + "\n"


def edgetpu_table(facts: dict[str, Any]):
    """A rich Table of a model's Edge TPU facts (``converters.edgetpu.inspect_edgetpu``): compiler report or problems."""
    from rich.table import Table

    table = Table(title="Edge TPU", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    report = facts.get("report") or {}
    if not facts.get("compiled"):
        problems = facts.get("problems") or []
        table.add_row("compiled", "no")
        table.add_row("compilable", "yes" if not problems else "no: " + "; ".join(problems))
        return table
    table.add_row("compiled", "yes")
    for key, label in (("on_chip_bytes", "on-chip memory"), ("off_chip_bytes", "off-chip memory")):
        if report.get(key) is not None:
            table.add_row(label, _size(report[key]))
    for key, label in (("subgraphs", "Edge TPU subgraphs"), ("total_ops", "operations"),
                       ("ops_on_edgetpu", "mapped to Edge TPU"), ("ops_on_cpu", "run on the CPU")):
        if report.get(key) is not None:
            table.add_row(label, str(report[key]))
    for op in report.get("operators") or []:
        table.add_row(f"{op['operator']} x{op['count']}", op["status"])
    if not report:
        table.add_row("compiler report", "no log beside the model")
    return table


# ---------------------------------------------------------------- compare: verdicts

NEGLIGIBLE_RATIO = 0.02  # a speed-up whose whole interval is under 2% is called negligible


def latency_verdict(a: str, b: str, ratio: float, lo: float, hi: float,
                    negligible: float = NEGLIGIBLE_RATIO) -> str:
    """The verdict on the latency ratio ``median(a) / median(b)`` and its interval ``[lo, hi]``.

    ``fused is 1.08x faster than split (1.03–1.12)`` when the whole interval lies below 1 (the speed-up and its
    interval are the inverted ratio), the mirror sentence above 1, ``no significant difference`` when it holds 1.
    A significant speed-up whose interval stays within ``1 + negligible`` gets ``; under 2%, negligible``: the
    interval covers one session's sampling noise only, and on a shared 2-core CPU separate runs moved the ratio
    by about 1%.
    """
    if lo <= 1.0 <= hi:
        r, low, high = _ratio_text(ratio, lo, hi)
        return f"no significant difference ({a}/{b} = {r}, 95% CI {low}–{high})"
    faster, slower, speedup = (a, b, (1.0 / ratio, 1.0 / hi, 1.0 / lo)) if hi < 1.0 else (b, a, (ratio, lo, hi))
    r, low, high = _ratio_text(*speedup)
    small = f"; under {negligible:.0%}, negligible" if speedup[2] < 1.0 + negligible else ""
    return f"{faster} is {r}x faster than {slower} ({low}–{high}){small}"


def _ratio_text(ratio: float, lo: float, hi: float) -> tuple[str, str, str]:
    """Ratio and bounds with 2 decimals, or more (up to 4) while an interval that excludes 1 would print as 1.00
    or two different bounds would print alike."""
    excludes_one = not lo <= 1.0 <= hi
    for digits in (2, 3, 4):
        texts = tuple(f"{v:.{digits}f}" for v in (ratio, lo, hi))
        if not (excludes_one and f"{1:.{digits}f}" in texts) and not (texts[1] == texts[2] and hi - lo > 1e-6):
            break
    return texts  # type: ignore[return-value]


def _pp(value: float) -> str:
    return f"{value * 100:.2f} pp"


def accuracy_verdict(a: str, b: str, drops_a: list[float], drops_b: list[float]) -> str:
    """The verdict on the int8 accuracy drops (Keras minus int8, one per seed) of two forms.

    A difference is called only when the gap between the mean drops exceeds the seed-to-seed spread (the larger
    of the two forms' max-min ranges); one seed has no spread, so nothing is called.
    """
    mean_a, mean_b = sum(drops_a) / len(drops_a), sum(drops_b) / len(drops_b)
    gap = mean_a - mean_b
    means = f"mean int8 drop {a} {_pp(mean_a)}, {b} {_pp(mean_b)}"
    if min(len(drops_a), len(drops_b)) < 2:
        return f"one seed: no seed-to-seed spread to judge against ({means}); use --seeds 3 or more"
    spread = max(max(drops_a) - min(drops_a), max(drops_b) - min(drops_b))
    if abs(gap) <= spread:
        return f"no difference beyond the seed-to-seed spread ({means}; spread {_pp(spread)})"
    better, worse = (a, b) if gap < 0 else (b, a)
    return (f"{better} keeps int8 accuracy better: its drop is {_pp(abs(gap))} smaller than {worse}'s "
            f"({means}; seed-to-seed spread {_pp(spread)})")


# ---------------------------------------------------------------- compare: tables (Markdown and rich)

def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{value * 100:.2f}%"


def _ops_text(ops: dict[str, int]) -> str:
    return " ".join(f"{k}×{v}" for k, v in sorted(ops.items(), key=lambda kv: (-kv[1], kv[0])))


def _count(n: Optional[int]) -> str:
    if n is None:
        return "-"
    return f"{n / 1e6:.2f} M" if n >= 1e6 else (f"{n / 1e3:.1f} k" if n >= 1e3 else str(n))


def _variant_rows(doc: dict[str, Any]) -> dict[str, Any]:
    variants = doc.get("variants") or []
    with_keras = any(v.get("keras_accuracy") is not None for v in variants)
    columns = [("variant", "left"), ("params", "right"), ("MACs", "right"), ("size", "right"), ("ops", "left")]
    if with_keras:
        columns += [("Keras acc", "right"), ("acc", "right"), ("drop", "right")]
    rows = []
    for v in variants:
        row = [v["name"], _count(v.get("params")), _count(v.get("macs")), _size(v.get("bytes")), _ops_text(v["ops"])]
        if with_keras:
            drop = v.get("accuracy_drop")
            row += [_pct(v.get("keras_accuracy")), _pct(v.get("accuracy")), "-" if drop is None else _pp(drop)]
        rows.append(row)
    note = ["acc: top-1 of the artifact on the host (export verification); drop: Keras minus artifact"] \
        if with_keras else []
    return {"title": "Variants", "columns": columns, "rows": rows, "notes": note}


def _seed_rows(doc: dict[str, Any]) -> Optional[dict[str, Any]]:
    acc = doc.get("accuracy")
    if not acc or not any("int8_drop" in f for f in acc["forms"].values()):
        return None

    def ms(s: dict[str, Any]) -> str:
        return _pct(s["mean"]) + (f" ± {s['std'] * 100:.2f} pp" if s["n"] > 1 else "")

    rows = []
    for form, f in acc["forms"].items():
        d = f.get("int8_drop")
        if d is None:
            continue
        rows.append([form, ms(f["keras_accuracy"]), ms(f["int8_accuracy"]), _pp(d["mean"]),
                     _pp(d["std"]) if d["n"] > 1 else "-", f"{_pp(d['min'])} .. {_pp(d['max'])}"])
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
    with_acc = any(r.get("accuracy") is not None for r in results.values())
    columns = [("variant", "left"), ("p50 ms [95% CI]", "right"), ("p90 ms", "right"), ("runs", "right")]
    columns += [("device acc", "right")] if with_acc else []
    columns += [("runtime", "left")]
    rows = []
    for vid, name in names.items():
        r = results.get(vid)
        if r is None:
            continue
        cells = bench_rows([r])[0]
        p50 = cells["p50"] if not r.get("error") else "failed: " + str(r["error"])[:120]
        rows.append([name, p50, cells["p90"], cells["runs"]] + ([_pct(r.get("accuracy"))] if with_acc else [])
                    + [cells["runtime"]])
    latency = {"title": f"{target}: latency ({status})", "columns": columns, "rows": rows, "notes": notes}
    ratio_rows = []
    for c in section.get("comparisons") or []:
        ratio = "-" if c.get("ratio") is None else f"{c['ratio']:.3f} [{c['lo']:.3f}, {c['hi']:.3f}]"
        pairs = "-" if c.get("ratio") is None else (
            "unpaired" if not c.get("paired") else (
                str(c["pairs"]) if c["pairs"] == c.get("rounds") else f"{c['pairs']} of {c['rounds']}"))
        ratio_rows.append([c["label"], ratio, pairs, c.get("verdict") or "-"])
    first = (section.get("comparisons") or [{}])[0]
    ratio_name = f"{first.get('a_name')}/{first.get('b_name')}" if doc.get("kind") == "builtin" else "a/b"
    ratios = {"title": f"{target}: latency ratio {ratio_name} (< 1: {ratio_name.split('/')[0]} is faster)",
              "columns": [("comparison", "left"), ("ratio [95% CI]", "right"), ("paired rounds", "right"),
                          ("verdict", "left")], "rows": ratio_rows,
              "notes": ["ratio of median latencies; interval: bootstrap over the paired rounds of one session, or "
                        "independent bootstraps when unpaired (it does not include session-to-session variation)"]
              if ratio_rows else []}
    return [latency, ratios] if ratio_rows else [latency]


def compare_sections(doc: dict[str, Any]) -> list[dict[str, Any]]:
    """The compare report as format-free sections: ``title``, ``columns`` (header, justify), ``rows``, ``notes``."""
    sections = [_variant_rows(doc)]
    seeds = _seed_rows(doc)
    if seeds:
        sections.append(seeds)
    for target in doc.get("devices") or {}:
        sections.extend(_device_rows(doc, target))
    return sections


def compare_verdicts(doc: dict[str, Any]) -> list[str]:
    """One line per device and comparison (``local, TFLite int8: fused is 1.08x faster than split (...)``),
    then the int8 accuracy verdict."""
    lines = []
    for target, section in (doc.get("devices") or {}).items():
        if section.get("status") == "failed":
            lines.append(f"{target}: failed ({section.get('error')})")
            continue
        for c in section.get("comparisons") or []:
            lines.append(f"{target}, {c['label']}: {c.get('verdict')}")
    acc = doc.get("accuracy")
    if acc:
        lines.append(f"int8 accuracy: {acc['verdict']}")
    return lines


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def _md_table(section: dict[str, Any]) -> list[str]:
    cols = section["columns"]
    lines = ["| " + " | ".join(h for h, _ in cols) + " |",
             "|" + "|".join("---:" if j == "right" else "---" for _, j in cols) + "|"]
    lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in section["rows"]]
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
            "Latency is measured on seed 0's artifacts; all TFLite artifacts of a device run interleaved round by "
            "round in one session (ONNX in a second one), and each fused/split ratio is a paired bootstrap over "
            "those rounds."]


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
        lines += [f"| {_md_cell(k)} | {s.get('status')} | {s.get('seconds', '-')} |" for k, s in stages.items()]
        lines.append("")
    return "\n".join(lines)


def compare_tables(doc: dict[str, Any]) -> list:
    """The report's sections as rich renderables (tables, then notes), and the verdicts."""
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
        out += [Text("  " + n) for n in section["notes"]]
    verdicts = compare_verdicts(doc)
    if verdicts:
        out.append(Text("Verdicts", style="bold"))
        out += [Text("  " + v) for v in verdicts]
    return out


# ---------------------------------------------------------------- compare: plots (matplotlib, Agg)

PLOT_DPI = 100
PLOT_SIZES = {"latency": (8.0, 5.0), "accuracy_vs_latency": (8.0, 5.0), "ratios": (8.0, 4.0)}  # inches
_FORM_COLORS = {"fused": "#1f77b4", "split": "#ff7f0e", None: "#2ca02c"}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _plot_slug(text: str) -> str:
    import re

    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "device"


def _save_figure(fig, out_dir, name: str) -> dict[str, Any]:
    """Write ``fig`` as ``out_dir/name`` (PNG) through a temp file; returns its file name and pixel size."""
    import os

    path = os.path.join(out_dir, name)
    tmp = os.path.join(out_dir, f".{name}.tmp")
    fig.savefig(tmp, dpi=PLOT_DPI, format="png")
    os.replace(tmp, path)
    width, height = (int(round(v * PLOT_DPI)) for v in fig.get_size_inches())
    return {"file": name, "width": width, "height": height}


def _measured(doc: dict[str, Any], target: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    results = doc["devices"][target].get("results") or {}
    return [(v, results[v["id"]]) for v in doc.get("variants") or []
            if v["id"] in results and results[v["id"]].get("samples_ms") and not results[v["id"]].get("error")]


def _latency_plot(plt, doc: dict[str, Any], target: str, out_dir) -> Optional[dict[str, Any]]:
    rows = _measured(doc, target)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=PLOT_SIZES["latency"])
    data = [r["samples_ms"] for _, r in rows]
    box = ax.boxplot(data, vert=False, whis=(1, 99), showfliers=False, patch_artist=True, widths=0.6,
                     medianprops={"color": "black"})
    for patch, (v, _) in zip(box["boxes"], rows):
        patch.set_facecolor(_FORM_COLORS.get(v.get("form"), _FORM_COLORS[None]))
        patch.set_alpha(0.55)
    for i, (_, r) in enumerate(rows, start=1):
        lo, hi = r["latency_ms"]["ci95_p50"]
        ax.plot([lo, hi], [i, i], color="black", linewidth=3, solid_capstyle="butt")
    ax.set_yticks(range(1, len(rows) + 1), [v["name"] for v, _ in rows])
    ax.set_xlabel("latency per inference, ms (box: quartiles, whiskers: 1st-99th percentile, bar: p50 95% CI)")
    ax.set_title(f"Latency on {target}")
    ax.invert_yaxis()
    lows = min(min(d) for d in data)
    if lows > 0 and max(max(d) for d in data) / lows > 20:
        ax.set_xscale("log")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    info = _save_figure(fig, out_dir, f"latency_{_plot_slug(target)}.png")
    plt.close(fig)
    return {**info, "kind": "latency", "device": target, "title": f"latency on {target}"}


def _accuracy_plot(plt, doc: dict[str, Any], out_dir) -> Optional[dict[str, Any]]:
    points = []
    for i, target in enumerate(doc.get("devices") or {}):
        for v, r in _measured(doc, target):
            acc = r.get("accuracy") if r.get("accuracy") is not None else v.get("accuracy")
            if acc is not None:
                points.append((target, _MARKERS[i % len(_MARKERS)], v, r["latency_ms"], acc))
    if not points:
        return None
    fig, ax = plt.subplots(figsize=PLOT_SIZES["accuracy_vs_latency"])
    seen = set()
    for target, marker, v, lat, acc in points:
        lo, hi = lat["ci95_p50"]
        label = f"{v.get('form') or v['name']} on {target}"
        ax.errorbar(lat["p50"], acc * 100, xerr=[[lat["p50"] - lo], [hi - lat["p50"]]], fmt=marker,
                    color=_FORM_COLORS.get(v.get("form"), _FORM_COLORS[None]), markersize=8, capsize=3,
                    label=None if label in seen else label)
        seen.add(label)
        ax.annotate(v.get("label") or v["name"], (lat["p50"], acc * 100), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    ax.set_xlabel("p50 latency, ms (bars: 95% CI)")
    ax.set_ylabel("top-1 accuracy, % (on device when measured)")
    ax.set_title("Accuracy vs latency per variant")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    info = _save_figure(fig, out_dir, "accuracy_vs_latency.png")
    plt.close(fig)
    return {**info, "kind": "accuracy_vs_latency", "device": None, "title": "accuracy vs latency"}


def _ratio_plot(plt, doc: dict[str, Any], out_dir) -> Optional[dict[str, Any]]:
    rows = [(f"{target}\n{c['label']}", c) for target, s in (doc.get("devices") or {}).items()
            for c in s.get("comparisons") or [] if c.get("ratio") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=PLOT_SIZES["ratios"])
    for i, (_, c) in enumerate(rows):
        color = "#2ca02c" if c["hi"] < 1 else ("#d62728" if c["lo"] > 1 else "#7f7f7f")
        ax.errorbar(c["ratio"], i, xerr=[[c["ratio"] - c["lo"]], [c["hi"] - c["ratio"]]], fmt="o", color=color,
                    capsize=4)
    ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax.invert_yaxis()
    first = rows[0][1]
    ax.set_xlabel(f"median latency ratio {first['a_name']}/{first['b_name']} with 95% CI (< 1: "
                  f"{first['a_name']} faster)" if doc.get("kind") == "builtin" else
                  "median latency ratio a/b with 95% CI (< 1: a faster)")
    ax.set_title("Latency ratios")
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    info = _save_figure(fig, out_dir, "ratios.png")
    plt.close(fig)
    return {**info, "kind": "ratios", "device": None, "title": "latency ratios"}


def compare_plots(doc: dict[str, Any], out_dir) -> list[dict[str, Any]]:
    """PNG plots of a compare report in ``out_dir``: latency distributions per device, accuracy vs latency,
    latency ratios. Returns one record per file (``file``, ``kind``, ``device``, ``title``, ``width``,
    ``height`` in pixels)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    plots = [_latency_plot(plt, doc, target, out_dir) for target in doc.get("devices") or {}]
    plots += [_accuracy_plot(plt, doc, out_dir), _ratio_plot(plt, doc, out_dir)]
    return [p for p in plots if p is not None]
