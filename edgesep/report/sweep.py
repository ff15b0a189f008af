"""A sweep's report.md and its two plots (median latency heatmap, fused/split ratios), from the document
``edgesep.fleet.report.report_document`` decides. Rendering only: plots come back as PNG bytes."""
from __future__ import annotations

import io
from typing import Any


def _md(header: list[str], body: list[list[str]]) -> list[str]:
    cells = [[c.replace("|", "\\|") for c in row] for row in [header, *body]]
    return (["| " + " | ".join(cells[0]) + " |", "|" + "---|" * len(header)]
            + ["| " + " | ".join(row) + " |" for row in cells[1:]] + [""])


def sweep_markdown(doc: dict[str, Any], plots: list[str]) -> str:
    """report.md of a sweep (``doc``: counts, labels, devices, p50, ratios with verdicts, drops, warnings, failed)."""
    from edgesep.report.text import format_ms

    lines = ["# Sweep report", "", "Jobs: " + ", ".join(f"{n} {s}" for s, n in sorted(doc["counts"].items())) + ".",
             ""]
    labels, devices, p50 = doc["labels"], doc["devices"], doc["p50"]
    if labels:
        lines += ["## Median latency (ms)", ""]
        lines += _md(["model", *devices], [[lab, *(format_ms(p50.get((lab, d))) for d in devices)] for lab in labels])
    if doc["ratios"]:
        lines += ["## Fused vs split latency per device", ""]
        lines += _md(["device", "model", "artifact", "fused/split (95% CI)", "verdict"],
                     [[r["device"], r["model"], f"{r['format']} {r['precision']}",
                       f"{r['ratio']:.3f} ({r['lo']:.3f}-{r['hi']:.3f})", r["verdict"]] for r in doc["ratios"]])
        lines += [f"Ratios: {doc['unpaired']}.", ""]
    if doc.get("paired"):
        lines += ["## Paired verdicts", ""]
        lines += _md(["group", "device", "node", "artifact", "sessions", "a/b (95% CI)", "A/A floor", "verdict"],
                     [[p["group"], p["device"] + (f" ({p['host']})" if p["host"] else ""), p["node_ip"] or "-",
                       p["artifact"], str(p["sessions"]), f"{p['ratio']:.3f} ({p['lo']:.3f}-{p['hi']:.3f})",
                       f"±{p['noise_floor']:.1%}" if p["noise_floor"] is not None else "-", p["verdict"]]
                      for p in doc["paired"]])
        lines += [f"Verdicts: {doc['paired_note']}.", ""]
    if doc["drops"]:
        lines += ["## Accuracy of the exported artifacts", ""]
        lines += _md(["model", "artifact", "Keras", "artifact", "drop (pp)"],
                     [[d["model"], f"{d['format']} {d['precision']}", f"{d['keras_accuracy']:.4f}",
                       f"{d['accuracy']:.4f}", f"{d['drop'] * 100:.2f}"] for d in doc["drops"]])
        lines += [f"- **warning**: {w}" for w in doc["warnings"]]
        lines += [""] if lines[-1] != "" else []
    if doc["failed"]:
        lines += ["## Jobs without a result", ""]
        lines += _md(["device", "model", "status", "error"],
                     [[r["device"], r["label"], r["status"], r["error"] or ""] for r in doc["failed"]])
    lines += [f"![{p}]({p})" for p in plots]
    return "\n".join(lines).rstrip() + "\n"


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=110, format="png", bbox_inches="tight")
    return buffer.getvalue()


def heatmap_png(labels: list[str], devices: list[str], p50: dict[tuple[str, str], float]) -> bytes:
    """models x devices heatmap of median latency, as PNG bytes."""
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
    data = _png(fig)
    plt.close(fig)
    return data


def ratios_png(ratios: list[dict[str, Any]]) -> bytes:
    """fused/split ratio with its interval, one point per device and pair, as PNG bytes."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.5, 1.2 + 0.35 * len(ratios)))
    for i, r in enumerate(ratios):
        ax.errorbar(r["ratio"], i, xerr=[[r["ratio"] - r["lo"]], [r["hi"] - r["ratio"]]], fmt="o", capsize=3)
    ax.axvline(1.0, color="grey", lw=0.8)
    ax.set_yticks(range(len(ratios)), [f"{r['device']}: {r['model']} {r['precision']}" for r in ratios])
    ax.set_xlabel("fused / split median latency (95% CI; unpaired jobs, no A/A control)")
    data = _png(fig)
    plt.close(fig)
    return data
