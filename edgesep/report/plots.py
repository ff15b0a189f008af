"""PNG plots of a compare report (matplotlib, Agg): latency per device, accuracy vs latency, ratios."""
from __future__ import annotations

import io
import os
import re
from typing import Any, Optional

from edgesep.io import write_bytes

PLOT_DPI = 100
PLOT_SIZES = {"latency": (8.0, 5.0), "accuracy_vs_latency": (8.0, 5.0), "ratios": (8.0, 4.0)}  # inches
_FORM_COLORS = {"fused": "#1f77b4", "split": "#ff7f0e", None: "#2ca02c"}
_MARKERS = ("o", "s", "^", "D", "v", "P", "X")


def _plot_slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.-]+", "_", text).strip("_") or "device"


def _save_figure(fig: Any, out_dir: Any, name: str) -> dict[str, Any]:
    """Write ``fig`` as ``out_dir/name`` (PNG, atomically); returns its file name and pixel size."""
    buffer = io.BytesIO()
    fig.savefig(buffer, dpi=PLOT_DPI, format="png")
    write_bytes(os.path.join(out_dir, name), buffer.getvalue())
    width, height = (int(round(v * PLOT_DPI)) for v in fig.get_size_inches())
    return {"file": name, "width": width, "height": height}


def _measured(doc: dict[str, Any], target: str) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    results = doc["devices"][target].get("results") or {}
    return [(v, results[v["id"]]) for v in doc.get("variants") or []
            if v["id"] in results and results[v["id"]].get("samples_ms") and not results[v["id"]].get("error")]


def _form_legend(ax, forms, extra=()) -> None:
    """A legend naming every box colour (one per form) and the extra handles."""
    from matplotlib.patches import Patch

    names = {"fused": "fused (SeparableConv2D)", "split": "split (depthwise + pointwise)", None: "model"}
    handles = [Patch(facecolor=_FORM_COLORS.get(f, _FORM_COLORS[None]), alpha=0.55, label=names.get(f, str(f)))
               for f in dict.fromkeys(forms)]
    ax.legend(handles=handles + list(extra), fontsize=8, loc="best", framealpha=0.9)


def _latency_plot(plt, doc: dict[str, Any], target: str, out_dir) -> Optional[dict[str, Any]]:
    import numpy as np
    from matplotlib.lines import Line2D

    rows = _measured(doc, target)
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=PLOT_SIZES["latency"])
    data = [r["samples_ms"] for _, r in rows]
    import matplotlib

    sideways = {"orientation": "horizontal"} if tuple(map(int, matplotlib.__version__.split(".")[:2])) >= (3, 10) \
        else {"vert": False}  # 'vert' is deprecated from Matplotlib 3.11
    box = ax.boxplot(data, whis=(5, 95), showfliers=False, patch_artist=True, widths=0.6,
                     medianprops={"color": "black"}, **sideways)
    for patch, (v, _) in zip(box["boxes"], rows):
        patch.set_facecolor(_FORM_COLORS.get(v.get("form"), _FORM_COLORS[None]))
        patch.set_alpha(0.55)
    for i, (_, r) in enumerate(rows, start=1):
        lo, hi = r["latency_ms"]["ci95_p50"]
        ax.plot([lo, hi], [i, i], color="black", linewidth=3, solid_capstyle="butt")
    ax.set_yticks(range(1, len(rows) + 1), [v["name"] for v, _ in rows])
    ax.set_xlabel("latency per inference, ms (box: quartiles, whiskers: 5th-95th percentile)")
    ax.set_title(f"Latency on {target}")
    ax.invert_yaxis()
    whiskers = [float(np.percentile(d, q)) for d in data for q in (5, 95)]
    low, high = min(whiskers), max(whiskers)  # the axis follows the whiskers, never the slowest outlier
    if low > 0 and high / low > 5:  # variants several times apart: each box keeps its own width
        from matplotlib.ticker import FuncFormatter

        ax.set_xscale("log")
        ax.set_xlim(low / 1.2, high * 1.2)
        ax.xaxis.set_major_formatter(FuncFormatter(lambda x, _: f"{x:g}"))  # 0.01, not 10^-2
        ax.xaxis.set_minor_formatter(FuncFormatter(lambda x, _: f"{x:g}" if f"{x:.0e}"[0] in "25" else ""))
    else:
        ax.set_xlim(max(0.0, low - 0.05 * (high - low)), high + 0.05 * (high - low))
    ax.grid(axis="x", alpha=0.3)
    _form_legend(ax, [v.get("form") for v, _ in rows],
                 [Line2D([], [], color="black", linewidth=3, label="p50 95% CI")])
    fig.tight_layout()
    info = _save_figure(fig, out_dir, f"latency_{_plot_slug(target)}.png")
    plt.close(fig)
    return {**info, "kind": "latency", "device": target, "title": f"latency on {target}"}


def _accuracy_limits(points, n: Optional[int]) -> tuple[float, float]:
    """y limits (%) that show the test set's sampling noise for what it is: at least 2 pp, and at least
    twice the widest 95% binomial interval, so a difference of a few images never fills the axis."""
    accs = [p[4] * 100 for p in points]
    half = max((_binomial_half_width(p[4], n) for p in points), default=0.0)
    span = max(max(accs) - min(accs) + 2 * half, 2.0, 4 * half)
    mid = (max(accs) + min(accs)) / 2
    low, high = mid - span * 0.6, mid + span * 0.6
    shift = min(0.0, 101.0 - high) or max(0.0, -low)  # keep within [0, 101] without shrinking the span
    return low + shift, high + shift


def _binomial_half_width(acc: float, n: Optional[int]) -> float:
    """Half the 95% normal interval of a top-1 accuracy on ``n`` test images, in percentage points."""
    return 196 * (acc * (1 - acc) / n) ** 0.5 if n else 0.0


def _accuracy_plot(plt, doc: dict[str, Any], out_dir) -> Optional[dict[str, Any]]:
    points = []
    for i, target in enumerate(doc.get("devices") or {}):
        for v, r in _measured(doc, target):
            acc = r.get("accuracy") if r.get("accuracy") is not None else v.get("accuracy")
            if acc is not None:
                points.append((target, _MARKERS[i % len(_MARKERS)], v, r["latency_ms"], acc))
    if not points:
        return None
    n = (doc.get("dataset") or {}).get("test_samples")
    fig, ax = plt.subplots(figsize=PLOT_SIZES["accuracy_vs_latency"])
    seen = set()
    for target, marker, v, lat, acc in points:
        lo, hi = lat["ci95_p50"]
        label = f"{v.get('form') or v['name']} on {target}"
        ax.errorbar(lat["p50"], acc * 100, xerr=[[lat["p50"] - lo], [hi - lat["p50"]]],
                    yerr=_binomial_half_width(acc, n) or None, fmt=marker,
                    color=_FORM_COLORS.get(v.get("form"), _FORM_COLORS[None]), markersize=8, capsize=3,
                    label=None if label in seen else label)
        seen.add(label)
        ax.annotate(v.get("label") or v["name"], (lat["p50"], acc * 100), textcoords="offset points",
                    xytext=(6, 4), fontsize=8)
    ax.set_ylim(*_accuracy_limits(points, n))
    ax.set_xlabel("p50 latency, ms (bars: 95% CI)")
    ax.set_ylabel("top-1 accuracy, %" + (f" (bars: 95% CI on {n} images)" if n else ""))
    ax.set_title("Accuracy vs latency per variant")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    info = _save_figure(fig, out_dir, "accuracy_vs_latency.png")
    plt.close(fig)
    return {**info, "kind": "accuracy_vs_latency", "device": None, "title": "accuracy vs latency"}


_VERDICT_COLORS = {"a": "#2ca02c", "b": "#d62728", None: "#7f7f7f"}


def _ratio_plot(plt, doc: dict[str, Any], out_dir) -> Optional[dict[str, Any]]:
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    rows = [(f"{target}\n{c['label']}", c) for target, s in (doc.get("devices") or {}).items()
            for c in s.get("comparisons") or [] if c.get("ratio") is not None]
    if not rows:
        return None
    fig, ax = plt.subplots(figsize=PLOT_SIZES["ratios"])
    for i, (_, c) in enumerate(rows):
        if c.get("noise_floor"):
            ax.barh(i, 2 * c["noise_floor"], left=1 - c["noise_floor"], height=0.5, color="#dddddd", zorder=0)
        faster = ("a" if c["ratio"] < 1 else "b") if c.get("significant") else None
        ax.errorbar(c["ratio"], i, xerr=[[c["ratio"] - c["lo"]], [c["hi"] - c["ratio"]]], fmt="o",
                    color=_VERDICT_COLORS[faster], capsize=4)
    ax.axvline(1.0, color="black", linewidth=1, linestyle="--")
    ax.set_yticks(range(len(rows)), [name for name, _ in rows], fontsize=8)
    ax.invert_yaxis()
    first = rows[0][1]
    a, b = (first["a_name"], first["b_name"]) if doc.get("kind") == "builtin" else ("a", "b")
    ax.set_xlabel(f"median latency ratio {a}/{b} with 95% CI (< 1: {a} faster)")
    ax.set_title("Latency ratios")
    ax.grid(axis="x", alpha=0.3)
    dot = {"marker": "o", "linestyle": "none"}
    ax.legend(handles=[Line2D([], [], color=_VERDICT_COLORS["a"], label=f"{a} faster", **dot),
                       Line2D([], [], color=_VERDICT_COLORS["b"], label=f"{b} faster", **dot),
                       Line2D([], [], color=_VERDICT_COLORS[None], label="no difference called", **dot),
                       Patch(color="#dddddd", label="A/A noise floor")], fontsize=8, loc="best", framealpha=0.9)
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
