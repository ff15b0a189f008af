"""The statistics and verdicts of a compare run: latency ratios with their intervals, the accuracy spread
over seeds, and the sentences that judge them.

Rendering (tables, Markdown, plots) lives in ``edgesep.report``; this module decides what is true.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

from edgesep.compare.config import CONTROL_PREFIX, FORMS
from edgesep.compare.pipeline import Job
from edgesep.compare.records import (AccuracySummary, ComparisonSpec, DeviceSection, FormAccuracy,
                                     LatencyComparison, Measurement, Spread)

MAX_PAIRS = 10_000  # unpaired samples resampled per ratio (more are thinned evenly)
LOAD_BUSY = 0.75  # load average per core above which the CPU counts as shared
THREADS_BUSY = 0.5  # ... above which default threads (all cores) compete with other processes
CPU_SHARE_MIN = 0.8  # a runner with less CPU time per wall second waited for the CPU
TEMP_RISE_C = 5.0  # temperature rise within one session worth a warning


# ---------------------------------------------------------------- latency

def latency_comparisons(results: Mapping[str, Measurement], comparisons: Sequence[ComparisonSpec],
                        controls: Optional[Mapping[str, Measurement]] = None) -> tuple[LatencyComparison, ...]:
    """The a/b latency ratio per comparison, with its interval, the A/A noise floor and the verdict.

    Variants measured in the same session group (one runtime) are compared session by session:
    ``edgesep.stats.session_ratio`` (geometric mean of the per-session ratios of medians; interval
    from resampling sessions, then blocks of consecutive paired rounds). The group's A/A control (its
    baseline loaded twice) gives the noise floor a difference must clear (``noise_floor``). Variants of
    different groups (e.g. a .tflite against an .onnx file) get independent bootstraps of the pooled medians
    (``paired`` false) and no floor.
    """
    floors = control_floors(results, controls or {})
    return tuple(_compare(results.get(c.a), results.get(c.b), c, floors) for c in comparisons)


def judge_sessions(spec: ComparisonSpec, a: Sequence[Sequence[float]], b: Sequence[Sequence[float]],
                   control: Optional[Sequence[Sequence[float]]] = None) -> LatencyComparison:
    """The same judgement from raw samples (for ``bench`` with several models and fleet sweeps).

    ``a[i]``, ``b[i]`` (and ``control[i]``, the A/A copy of ``b``) are the samples of session ``i``, whose
    rounds ran interleaved in one runner process.
    """
    def measured(vid: str, sessions: Sequence[Sequence[float]]) -> Measurement:
        from edgesep.devices.base import BenchResult

        samples = [float(x) for s in sessions for x in s]
        return Measurement(result=BenchResult(model=vid, device="-", samples_ms=samples), variant=vid, model=vid,
                           session="s", session_rounds=tuple(len(s) for s in sessions),
                           session_index=tuple(range(len(sessions))))

    results = {spec.a: measured(spec.a, a), spec.b: measured(spec.b, b)}
    controls = {"-": measured(CONTROL_PREFIX + spec.b, control)} if control is not None else {}
    (comparison,) = latency_comparisons(results, [spec], controls)
    return comparison


def bench_ratios(results: Sequence[Any], sessions: Optional[Sequence[Sequence[Any]]] = None,
                 control: Optional[Sequence[Any]] = None) -> tuple[LatencyComparison, ...]:
    """``edgesep bench`` with several models: each model's latency against the first one's, judged as compare
    judges: over the sessions, against the floor of the A/A control (a copy of the first model measured as if
    it were another). A verdict needs two sessions or more and the control; without them the ratio and its
    interval are printed, none called significant (``details["significant"]`` false, the verdict says why).

    Args:
        results: ``BenchResult`` records, one per model in the order given (pooled over the sessions).
        sessions: per session, the models' results in the same order (default: ``results`` as one session).
        control: per session, the A/A control's result (default: no control).
    """
    from edgesep.report.text import distinct_labels

    names = distinct_labels([str(r.model) for r in results])
    runs = [list(s) for s in sessions] if sessions is not None else [list(results)]
    out = []
    for i in range(1, len(results)):
        spec = ComparisonSpec(label=f"{names[i]} vs {names[0]}", a=str(i), b="0", a_name=names[i], b_name=names[0])
        both = [k for k, s in enumerate(runs) if _measured(s[i]) and _measured(s[0])
                and (control is None or _measured(control[k]))]
        if not both:
            out.append(LatencyComparison(spec=spec, verdict="not measured"))
            continue
        judged = judge_sessions(spec, [runs[k][i].samples_ms for k in both], [runs[k][0].samples_ms for k in both],
                                [control[k].samples_ms for k in both] if control is not None else None)
        out.append(_bench_verdict(judged, len(both)))
    return tuple(out)


def _measured(result: Any) -> bool:
    return not result.error and bool(result.samples_ms)


def _bench_verdict(judged: LatencyComparison, sessions: int) -> LatencyComparison:
    """What a bench verdict rests on, in its sentence: N sessions and the A/A floor, or why it is none."""
    import dataclasses

    floor = judged.details.get("noise_floor")
    if sessions >= 2 and floor is not None:
        text = judged.verdict if "A/A control ±" in judged.verdict else f"{judged.verdict}; A/A floor ±{floor:.1%}"
        return dataclasses.replace(judged, verdict=f"{text}; {sessions} sessions")
    r, lo, hi = ratio_text(judged.ratio, judged.lo, judged.hi)
    why = "one session, no A/A control" if sessions < 2 else f"{sessions} sessions but no A/A control measured"
    spec = judged.spec
    return dataclasses.replace(judged, details={**judged.details, "significant": False},
                               verdict=f"{spec.a_name}/{spec.b_name} = {r} (95% CI {lo}–{hi}); {why}: not a verdict")


def control_floors(results: Mapping[str, Measurement],
                   controls: Mapping[str, Measurement]) -> dict[str, dict[str, Any]]:
    """Per session group key: the A/A control's ratio against its original, its interval and the floor."""
    from edgesep.stats import noise_floor

    floors = {}
    for control in controls.values():
        base = results.get(control.variant[len(CONTROL_PREFIX):])
        ratio = _session_ratio(control, base) if base is not None else None
        if ratio is not None:
            floors[control.session] = {"variant": control.variant, "ratio": ratio.ratio, "lo": ratio.lo,
                                       "hi": ratio.hi, "sessions": ratio.sessions, "floor": noise_floor(ratio)}
    return floors


def _session_ratio(a: Measurement, b: Measurement) -> Any:
    """``session_ratio`` over the sessions both measured, or None."""
    from edgesep.stats import session_ratio

    sa, sb = a.session_samples(), b.session_samples()
    common = sorted(set(sa) & set(sb))
    if not common:
        return None
    return session_ratio([sa[i] for i in common], [sb[i] for i in common])


def _compare(a: Optional[Measurement], b: Optional[Measurement], spec: ComparisonSpec,
             floors: Mapping[str, Mapping[str, Any]]) -> LatencyComparison:
    if a is None or b is None or not a.samples or not b.samples:
        return LatencyComparison(spec=spec, verdict="not measured")
    paired = a.session is not None and a.session == b.session
    ci = _session_ratio(a, b) if paired else None
    if ci is None:
        return _unpaired(a, b, spec)
    control = floors.get(a.session)
    floor = control["floor"] if control else None
    details = {"sessions": ci.sessions, "per_session": list(ci.per_session), "session_rounds": list(ci.rounds),
               "blocks": list(ci.blocks), "control": dict(control) if control else None, "noise_floor": floor,
               "significant": significant(ci.lo, ci.hi, floor)}
    return LatencyComparison(spec=spec, ratio=ci.ratio, lo=ci.lo, hi=ci.hi, paired=True, rounds=sum(ci.rounds),
                             pairs=sum(ci.rounds), confidence=ci.confidence, details=details,
                             verdict=latency_verdict(spec.a_name, spec.b_name, ci.ratio, ci.lo, ci.hi, floor,
                                                     ci.sessions))


def _unpaired(a: Measurement, b: Measurement, spec: ComparisonSpec) -> LatencyComparison:
    from edgesep.stats import ratio_of_medians

    xa, xb = a.samples, b.samples
    xa, xb = xa[::-(-len(xa) // MAX_PAIRS)], xb[::-(-len(xb) // MAX_PAIRS)]
    ci = ratio_of_medians(xa, xb, paired=False)
    return LatencyComparison(spec=spec, ratio=ci.ratio, lo=ci.lo, hi=ci.hi, paired=False,
                             confidence=ci.confidence,
                             details={"sessions": None, "significant": significant(ci.lo, ci.hi, None)},
                             verdict=latency_verdict(spec.a_name, spec.b_name, ci.ratio, ci.lo, ci.hi))


def significant(lo: float, hi: float, floor: Optional[float] = None) -> bool:
    """Whether ``[lo, hi]`` excludes 1 and, given a noise floor, lies wholly beyond ``1 ± floor``."""
    if lo <= 1.0 <= hi:
        return False
    if floor is None:
        return True
    return hi < 1.0 / (1.0 + floor) or lo > 1.0 + floor


def latency_verdict(a: str, b: str, ratio: float, lo: float, hi: float, floor: Optional[float] = None,
                    sessions: Optional[int] = None) -> str:
    """The verdict on the latency ratio ``median(a) / median(b)`` and its interval ``[lo, hi]``.

    ``fused is 1.08x faster than split (1.03–1.12)`` when the whole interval lies below 1 (the speed-up and its
    interval are the inverted ratio) and beyond the A/A noise ``floor``, the mirror sentence above 1;
    ``no significant difference`` when the interval holds 1; ``no difference beyond the A/A noise floor``
    when it excludes 1 but not the control's spread. With ``sessions`` 1 the sentence says that the
    interval cannot include session-to-session variation.
    """
    if significant(lo, hi, floor):
        faster, slower, speedup = (a, b, (1 / ratio, 1 / hi, 1 / lo)) if hi < 1.0 else (b, a, (ratio, lo, hi))
        r, low, high = ratio_text(*speedup)
        text = f"{faster} is {r}x faster than {slower} ({low}–{high})"
    else:
        r, low, high = ratio_text(ratio, lo, hi)
        text = f"no significant difference ({a}/{b} = {r}, 95% CI {low}–{high})"
        if not lo <= 1.0 <= hi:
            text = (f"no difference beyond the A/A noise floor ({a}/{b} = {r}, 95% CI {low}–{high}; "
                    f"A/A control ±{floor:.1%})")
    if sessions == 1:
        text += "; one session only: the interval omits session-to-session variation"
    return text


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
        if art is not None and art.accuracy is not None:
            quant.append(art.accuracy)
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


# ---------------------------------------------------------------- stability of a device's sessions

def _warning(check: str, message: str) -> dict[str, Any]:
    return {"check": check, "level": "warning", "message": message}


def _load_checks(hosts: Sequence[Mapping[str, Any]], cores: Optional[int],
                 threads: Optional[int]) -> list[dict[str, Any]]:
    loads = [h["loadavg_before"][0] for h in hosts if h.get("loadavg_before")]
    if not loads or not cores:
        return []
    out = []
    peak = max(loads)
    if peak >= LOAD_BUSY * cores:
        out.append(_warning("load", f"load average up to {peak:.1f} on {cores} cores before a session: other "
                                    "processes shared the CPU (edgesep's own previous session counts too)"))
    if threads is None and cores > 1 and peak >= THREADS_BUSY * cores:
        out.append(_warning("threads", f"--threads left at its default (the runtime may use all {cores} cores) "
                                       f"while the load average was up to {peak:.1f}: its threads compete with "
                                       "other processes; --threads 1 measures more steadily"))
    return out


def _host_checks(hosts: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    out = []
    shares = [(h["cpu_s"] / h["wall_s"], h) for h in hosts if h.get("cpu_s") is not None and h.get("wall_s")]
    if shares and min(s for s, _ in shares) < CPU_SHARE_MIN:
        share, h = min(shares, key=lambda sh: sh[0])
        out.append(_warning("cpu_time", f"a runner got {h['cpu_s']:.1f} s of CPU in {h['wall_s']:.1f} s "
                                        f"({share:.0%}): it waited for the CPU"))
    rises = [(h["temp_c"] - h["temp_c_before"], h) for h in hosts
             if h.get("temp_c") is not None and h.get("temp_c_before") is not None]
    if rises and max(r for r, _ in rises) >= TEMP_RISE_C:
        rise, h = max(rises, key=lambda rh: rh[0])
        out.append(_warning("temperature", f"temperature rose {rise:.0f} C within a session ({h['temp_c_before']:.0f}"
                                           f" to {h['temp_c']:.0f} C): later rounds may be throttled"))
    return out


def host_checks(hosts: Sequence[Mapping[str, Any]], threads: Optional[int]) -> tuple[dict[str, Any], ...]:
    """The load, threads, CPU-time and temperature warnings of a bench's sessions' host records (as compare's:
    each check once, for the worst session)."""
    hosts = [h for h in hosts if h]
    cores = next((h.get("cores") for h in hosts if h.get("cores")), None)
    return tuple(_load_checks(hosts, cores, threads) + _host_checks(hosts))


def stability_checks(section: DeviceSection, threads: Optional[int]) -> tuple[dict[str, Any], ...]:
    """Warnings on how steady a device's sessions were: load average, runner CPU time vs wall time,
    temperature rise, two speed modes in a variant's samples, default threads on a busy machine."""
    from edgesep.stats import bimodality

    hosts = [e.host for e in section.sessions if e.host] or ([section.host] if section.host else [])
    cores = next((h.get("cores") for h in hosts if h.get("cores")), None) or section.host.get("cores")
    out = _load_checks(hosts, cores, threads) + _host_checks(hosts)
    for vid, m in section.results.items():
        modes = bimodality(m.samples) if len(m.samples) >= 20 else None
        if modes:
            out.append(_warning("bimodal", f"{vid}: two speed modes ({modes['fast_ms']:.3g} ms and "
                                           f"{modes['slow_ms']:.3g} ms, {modes['slow_share']:.0%} slow): the "
                                           "machine switched speed or another process interfered"))
    return tuple(out)
