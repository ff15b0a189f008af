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
