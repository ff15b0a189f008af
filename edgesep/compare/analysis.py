"""The statistics and verdicts of a compare run: latency ratios with their intervals, the accuracy spread
over seeds, and the sentences that judge them.

Rendering (tables, Markdown, plots) lives in ``edgesep.report``; this module decides what is true.
"""
from __future__ import annotations

from typing import Mapping, Sequence

from edgesep.compare.config import FORMS
from edgesep.compare.pipeline import Job
from edgesep.compare.records import (AccuracySummary, ComparisonSpec, FormAccuracy, LatencyComparison, Measurement,
                                     Spread)

MAX_PAIRS = 10_000  # paired rounds resampled per ratio (more are thinned evenly)
NEGLIGIBLE_RATIO = 0.02  # a speed-up whose whole interval is under 2% is called negligible


# ---------------------------------------------------------------- latency

def latency_comparisons(results: Mapping[str, Measurement],
                        comparisons: Sequence[ComparisonSpec]) -> tuple[LatencyComparison, ...]:
    """The a/b ratio of median latencies per comparison, with its bootstrap interval and the verdict.

    When both were measured in the same session the first ``min(n_a, n_b)`` samples are paired round by round
    (the runner interleaves A B A B ... until each model is done) and resampled together; more than
    ``MAX_PAIRS`` rounds are thinned to every k-th round (evenly over the session) to bound the bootstrap's
    cost. Across sessions the medians are bootstrapped independently (``paired`` false). The interval covers
    sampling noise within the session, not session-to-session variation.
    """
    return tuple(_compare(results.get(c.a), results.get(c.b), c) for c in comparisons)


def _compare(a: Measurement | None, b: Measurement | None, spec: ComparisonSpec) -> LatencyComparison:
    from edgesep.devices.stats import ratio_of_medians

    if a is None or b is None or not a.samples or not b.samples:
        return LatencyComparison(spec=spec, verdict="not measured")
    xa, xb = a.samples, b.samples
    paired = a.session is not None and a.session == b.session
    rounds = None
    if paired:
        rounds = min(len(xa), len(xb))
        step = -(-rounds // MAX_PAIRS)
        xa, xb = xa[:rounds:step], xb[:rounds:step]
    ci = ratio_of_medians(xa, xb, paired=paired)
    return LatencyComparison(spec=spec, ratio=ci.ratio, lo=ci.lo, hi=ci.hi, paired=ci.paired, rounds=rounds,
                             pairs=len(xa) if paired else None, confidence=ci.confidence,
                             verdict=latency_verdict(spec.a_name, spec.b_name, ci.ratio, ci.lo, ci.hi))


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
        r, low, high = ratio_text(ratio, lo, hi)
        return f"no significant difference ({a}/{b} = {r}, 95% CI {low}–{high})"
    faster, slower, speedup = (a, b, (1.0 / ratio, 1.0 / hi, 1.0 / lo)) if hi < 1.0 else (b, a, (ratio, lo, hi))
    r, low, high = ratio_text(*speedup)
    small = f"; under {negligible:.0%}, negligible" if speedup[2] < 1.0 + negligible else ""
    return f"{faster} is {r}x faster than {slower} ({low}–{high}){small}"


def ratio_text(ratio: float, lo: float, hi: float) -> tuple[str, str, str]:
    """Ratio and bounds with 2 decimals, or more (up to 4) while an interval that excludes 1 would print as 1.00
    or two different bounds would print alike."""
    excludes_one = not lo <= 1.0 <= hi
    for digits in (2, 3, 4):
        texts = tuple(f"{v:.{digits}f}" for v in (ratio, lo, hi))
        if not (excludes_one and f"{1:.{digits}f}" in texts) and not (texts[1] == texts[2] and hi - lo > 1e-6):
            break
    return texts  # type: ignore[return-value]


# ---------------------------------------------------------------- accuracy over seeds

def spread(values: Sequence[float]) -> Spread:
    """Mean, std (n-1; 0 for one value), min and max of ``values``."""
    import numpy as np

    x = np.asarray(values, dtype=np.float64)
    return Spread(values=tuple(float(v) for v in x), n=int(x.size), mean=float(x.mean()),
                  std=float(x.std(ddof=1)) if x.size > 1 else 0.0, min=float(x.min()), max=float(x.max()))


def _form_accuracy(jobs: Sequence[Job], int8: bool) -> FormAccuracy:
    keras = [job.keras_accuracy for job in jobs]
    quant = []
    for job in jobs:
        art = job.artifact("int8") if int8 else None
        if art is not None and art.get("accuracy") is not None:
            quant.append(art["accuracy"])
    if not quant or len(quant) != len(keras):
        return FormAccuracy(keras_accuracy=spread(keras))
    return FormAccuracy(keras_accuracy=spread(keras), int8_accuracy=spread(quant),
                        int8_drop=spread([k - q for k, q in zip(keras, quant)]))


def accuracy_summary(seeds: Sequence[Mapping[str, Job]], int8: bool) -> AccuracySummary:
    """Keras and int8 accuracy per form over the seeds, the int8 drop's spread and the verdict."""
    forms = {form: _form_accuracy([seed[form] for seed in seeds], int8) for form in FORMS}
    a, b = forms["fused"].int8_drop, forms["split"].int8_drop
    if a is None or b is None:
        return AccuracySummary(seeds=len(seeds), forms=forms, verdict="int8 not exported (--no-int8)")
    return AccuracySummary(seeds=len(seeds), forms=forms, difference=a.mean - b.mean,
                           spread=max(a.max - a.min, b.max - b.min),
                           verdict=accuracy_verdict("fused", "split", list(a.values), list(b.values)))


def _pp(value: float) -> str:
    return f"{value * 100:.2f} pp"


def accuracy_verdict(a: str, b: str, drops_a: Sequence[float], drops_b: Sequence[float]) -> str:
    """The verdict on the int8 accuracy drops (Keras minus int8, one per seed) of two forms.

    A difference is called only when the gap between the mean drops exceeds the seed-to-seed spread (the larger
    of the two forms' max-min ranges); one seed has no spread, so nothing is called.
    """
    mean_a, mean_b = sum(drops_a) / len(drops_a), sum(drops_b) / len(drops_b)
    gap = mean_a - mean_b
    means = f"mean int8 drop {a} {_pp(mean_a)}, {b} {_pp(mean_b)}"
    if min(len(drops_a), len(drops_b)) < 2:
        return f"one seed: no seed-to-seed spread to judge against ({means}); use --seeds 3 or more"
    width = max(max(drops_a) - min(drops_a), max(drops_b) - min(drops_b))
    if abs(gap) <= width:
        return f"no difference beyond the seed-to-seed spread ({means}; spread {_pp(width)})"
    better, worse = (a, b) if gap < 0 else (b, a)
    return (f"{better} keeps int8 accuracy better: its drop is {_pp(abs(gap))} smaller than {worse}'s "
            f"({means}; seed-to-seed spread {_pp(width)})")
