"""The compare plots read at a glance (issue 22): axes follow the bulk of the data, accuracy axes show the test
set's noise, every colour has a legend entry. Figures are inspected before they are closed."""
from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def figures(monkeypatch, tmp_path):
    """compare_plots(doc) -> {kind: matplotlib Figure}, the files written to tmp_path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgesep.report import compare_plots

    monkeypatch.setattr(plt, "close", lambda fig=None: None)

    def render(doc):
        before = set(plt.get_fignums())
        records = compare_plots(doc, tmp_path)
        figs = [plt.figure(n) for n in sorted(set(plt.get_fignums()) - before)]
        assert all((tmp_path / r["file"]).read_bytes()[:4] == b"\x89PNG" for r in records)
        return {r["kind"]: fig for r, fig in zip(records, figs)}

    yield render
    matplotlib.pyplot.close("all")


def _doc(accuracies=(0.985, 0.989)):
    rng = np.random.default_rng(0)
    variants, results = [], {}
    for i, (form, acc) in enumerate(zip(("fused", "split"), accuracies)):
        samples = list(0.05 + 0.01 * i + 0.002 * rng.random(400))
        samples[::50] = [30.0] * len(samples[::50])  # a few 30 ms stalls, as on a loaded machine
        p50 = float(np.median(samples))
        variants.append({"id": f"{form}/int8", "name": f"{form} TFLite int8", "form": form, "accuracy": acc})
        results[f"{form}/int8"] = {"samples_ms": samples, "accuracy": acc,
                                   "latency_ms": {"p50": p50, "ci95_p50": [p50 * 0.99, p50 * 1.01]}}
    comparison = {"label": "TFLite int8", "a_name": "fused", "b_name": "split", "ratio": 0.83, "lo": 0.8, "hi": 0.86,
                  "noise_floor": 0.02, "significant": True}
    return {"kind": "builtin", "variants": variants, "dataset": {"test_samples": 540},
            "devices": {"local": {"results": results, "comparisons": [comparison]}}}


def test_latency_axis_follows_the_whiskers_not_the_stalls(figures):
    ax = figures(_doc())["latency"].axes[0]
    low, high = ax.get_xlim()
    assert high < 0.1, f"x axis reaches {high} ms: the 30 ms stalls flatten the 0.05 ms boxes"
    assert low < 0.05 and ax.get_legend() is not None
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert any("fused" in t for t in legend) and any("split" in t for t in legend)


def test_accuracy_axis_does_not_magnify_a_few_images(figures):
    ax = figures(_doc((0.985, 0.989)))["accuracy_vs_latency"].axes[0]
    low, high = ax.get_ylim()
    assert high - low >= 2.0 * 1.9, (low, high)  # twice the 95% interval on 540 images at 98.7% (1.9 pp)
    assert low <= 98.5 and high >= 98.9 and high <= 101.0


def test_every_ratio_colour_has_a_legend_entry(figures):
    ax = figures(_doc())["ratios"].axes[0]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert legend == ["fused faster", "split faster", "no difference called", "A/A noise floor"]
    point = [line for line in ax.get_lines() if line.get_marker() == "o"][0]
    assert point.get_color() == "#2ca02c"  # significant and < 1: the "fused faster" colour
