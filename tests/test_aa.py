"""Verdicts that survive an A/A test (issue 12), measured on this machine with real runner sessions.

Each "run" is what ``edgesep compare A B --device local`` does on the device, called through the library with
tiny sessions to keep the suite short: several sessions (a fresh runner process each, shuffled order,
interleaved rounds), the A/A control inside them, the two-level bootstrap and the noise-floor verdict.

- A/A: the built-in split float32 model against a byte copy of itself, under a bursty one-core background
  load (``loadgen.bursty_load``): "significant difference" in at most 1 of 20 runs.
- A real difference: the built-in network at width 1.0 against width 1.5 (about 2x the MACs): the right
  direction in 20 of 20 runs, with and without the load.
"""
from __future__ import annotations

import contextlib
import shutil

import pytest

from edgesep.compare import BenchPlan, DeviceBench, latency_comparisons, model_comparisons, model_variants
from edgesep.devices import BenchConfig
from loadgen import bursty_load

RUNS = 20
SESSIONS = 3
# default threads; per session (the budget is shared among the sessions): 20 runs, 0.05-0.5 s, no warm-up time
TINY = BenchConfig(runs=20 * SESSIONS, warmup=1, warmup_secs=0.0, min_secs=0.05 * SESSIONS, max_secs=0.5 * SESSIONS)


def _tflite(model, path):
    import tensorflow as tf

    path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    return path


@pytest.fixture(scope="module")
def widths(tmp_path_factory):
    """The built-in split network (untrained: latency does not depend on the weights) at width 1.0 and 1.5."""
    from edgesep.models import build_model

    folder = tmp_path_factory.mktemp("widths")
    return [_tflite(build_model("split", width=w), folder / f"width{w}.tflite") for w in (1.0, 1.5)]


def compare_once(paths, folder, seed):
    """One short compare of ``paths[1]`` against ``paths[0]`` on the local CPU; returns the comparison."""
    variants = model_variants(paths)
    specs = model_comparisons(variants)
    plan = BenchPlan(tuple(variants), tuple(specs), BenchConfig.from_dict({**TINY.to_dict(), "seed": seed}),
                     None, False, SESSIONS)
    section = DeviceBench("local", {}, plan.variants, plan.bench, None, folder, False, lambda *_: None,
                          comparisons=plan.comparisons, sessions=plan.sessions).run()
    assert section.status == "done", section.error
    (comparison,) = latency_comparisons(section.results, specs, section.controls)
    assert comparison.details["sessions"] == SESSIONS and comparison.details["control"] is not None
    return comparison


@pytest.mark.slow
def test_aa_under_bursty_load_calls_a_difference_at_most_once_in_20(split_export, tmp_path):
    _, folder = split_export
    a = folder / "model.tflite"
    b = shutil.copyfile(a, tmp_path / "copy.tflite")
    with bursty_load(600, seed=12):
        results = [compare_once([a, b], tmp_path / f"bench{i}", seed=i) for i in range(RUNS)]
    called = [c for c in results if c.details["significant"]]
    summary = [(round(c.ratio, 4), round(c.lo, 4), round(c.hi, 4), round(c.details["noise_floor"], 4))
               for c in results]
    print("A/A ratio, lo, hi, floor:", summary)
    print("A/A intervals excluding 1:", sum(not c.lo <= 1 <= c.hi for c in results), "of", RUNS,
          "; called significant:", len(called))
    assert len(called) <= 1, [c.verdict for c in called]
    assert all("faster" not in c.verdict for c in results if not c.details["significant"])


@pytest.mark.slow
@pytest.mark.parametrize("load", [False, True], ids=["idle", "bursty-load"])
def test_width_1_5_is_found_slower_than_width_1_0_in_20_of_20(widths, tmp_path, load):
    runs = []
    with bursty_load(600, seed=13) if load else contextlib.nullcontext():
        for i in range(RUNS):
            runs.append(compare_once(widths, tmp_path / f"bench{i}", seed=i))
    print("width 1.5 / 1.0 ratio, lo, hi, floor:",
          [(round(c.ratio, 3), round(c.lo, 3), round(c.hi, 3), round(c.details["noise_floor"], 3)) for c in runs])
    assert all(c.details["significant"] and c.lo > 1.0 for c in runs), [c.verdict for c in runs]
    assert all(c.verdict.startswith("width1.0.tflite is") for c in runs)

