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


def _md(header: list[str], body: list[list[str]]) -> list[str]:
    cells = [[c.replace("|", "\\|") for c in row] for row in [header, *body]]
    return (["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in cells[1:]] + [""])


def report_markdown(rows: list[dict[str, Any]], plots: list[str]) -> str:
    """report.md of a sweep's rows."""
    from edgesep.compare.analysis import latency_verdict
    from edgesep.report import format_ms

    counts: dict[str, int] = {}
    for r in rows:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    lines = ["# Sweep report", "", "Jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(counts.items())) + ".", ""]
    labels, devices, p50 = latency_table(rows)
    if labels:
        lines += ["## Median latency (ms)", ""]
        lines += _md(["model", *devices], [[lab, *(format_ms(p50.get((lab, d))) for d in devices)] for lab in labels])
    ratios = fused_split_ratios(rows)
    if ratios:
        lines += ["## Fused vs split latency per device", ""]
        lines += _md(["device", "model", "artifact", "fused/split (95% CI)", "verdict"],
                     [[r["device"], r["model"], f"{r['format']} {r['precision']}",
                       f"{r['ratio']:.3f} ({r['lo']:.3f}-{r['hi']:.3f})",
                       latency_verdict("fused", "split", r["ratio"], r["lo"], r["hi"]) + " (unpaired, no A/A control)"]
                      for r in ratios])
        lines += [f"Verdicts: {UNPAIRED}.", ""]
    drops = accuracy_drops(rows)
    if drops:
        lines += ["## Accuracy of the exported artifacts", ""]
        lines += _md(["model", "artifact", "Keras", "artifact", "drop (pp)"],
                     [[d["model"], f"{d['format']} {d['precision']}", f"{d['keras_accuracy']:.4f}",
                       f"{d['accuracy']:.4f}", f"{d['drop'] * 100:.2f}"] for d in drops])
        lines += [f"- **warning**: {w}" for w in chance_warnings(rows)]
        lines += [""] if lines[-1] != "" else []
    failed = [r for r in rows if r["status"] != "ok"]
    if failed:
        lines += ["## Jobs without a result", ""]
        lines += _md(["device", "model", "status", "error"],
                     [[r["device"], _label(r), r["status"], r["error"] or ""] for r in failed])
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines).rstrip() + "\n"


def _save(fig, path: Path) -> None:
    from edgesep.io import write_bytes

    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png", bbox_inches="tight")
    write_bytes(path, buffer.getvalue())


def plot_heatmap(rows: list[dict[str, Any]], out: Path) -> Optional[str]:
    """models x devices heatmap of median latency; None when nothing was measured."""
    labels, devices, p50 = latency_table(rows)
    if not labels:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    grid = np.array([[p50.get((lab, d), np.nan) for d in devices] for lab in labels])
    fig, ax = plt.subplots(figsize=(2.0 + 1.4 * len(devices), 1.2 + 0.4 * len(labels)))
    image = ax.imshow(grid, cmap="viridis", aspect="auto")
    ax.set_xticks(range(len(devices)), devices, rotation=30, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    for (i, j), value in np.ndenumerate(grid):
        if not np.isnan(value):
            r, g, b, _ = image.cmap(image.norm(value))  # dark text on the light (yellow) end, white on the dark
            ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=8,
                    color="black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white")
    fig.colorbar(image, ax=ax, label="median latency (ms)")
    ax.set_title("Median latency, models x devices")
    _save(fig, out / HEATMAP)
    plt.close(fig)
    return HEATMAP


def plot_ratios(rows: list[dict[str, Any]], out: Path) -> Optional[str]:
    """fused/split ratio with its interval, one point per device and pair; None without pairs."""
    ratios = fused_split_ratios(rows)
    if not ratios:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.35 * len(ratios)))
    for i, r in enumerate(ratios):
        ax.errorbar(r["ratio"], i, xerr=[[r["ratio"] - r["lo"]], [r["hi"] - r["ratio"]]], fmt="o", capsize=3)
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_yticks(range(len(ratios)), [f"{r['device']}: {r['model']} {r['precision']}" for r in ratios])
    ax.set_xlabel("fused / split median latency (95% CI; unpaired jobs, no A/A control)")
    _save(fig, out / RATIOS)
    plt.close(fig)
    return RATIOS


def write_report(out) -> list[str]:
    """report.md and the plots, from ``out/sweep.db``; returns the file names written."""
    from edgesep.io import write_text

    out = Path(out)
    rows = _rows(out)
    plots = [p for p in (plot_heatmap(rows, out), plot_ratios(rows, out)) if p]
    write_text(out / "report.md", report_markdown(rows, plots))
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
