"""The records of ``bench --profile`` (``OpRecord`` per op, ``ProfileRecord`` per model) and how a source's ops
become them (``finish``: shares, GMAC/s, peak shares, the ratios against the measured whole). The sources are in
``edgesep.devices.profile`` (single-op models, benchmark_model) and ``edgesep.devices.onnxprofile``."""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional

from edgesep.devices.base import BenchResult

BLOCK_PART = re.compile(r"(block\d+)_(dw|pw|sep)(?![a-z])")


@dataclasses.dataclass(frozen=True)
class OpRecord:
    """One op: ``ms`` per run, ``share`` of the measured whole (p50), ``macs``, achieved ``gmacs`` (GMAC/s)
    and ``peak_share`` (of the device's measured peak); ``block``/``part`` from the builders' layer names
    (``block3`` / ``dw``, ``pw``, ``sep``) where the op's name carries one; ``kind`` what it computes:
    ``depthwise``, ``pointwise`` (1x1 convolution), ``conv`` (other convolutions, matrix products) or ``other``
    (a fused ``block3_sep`` holds a depthwise and a pointwise op), or ``executor`` for the ONNX row of the time
    between the nodes (not an op)."""

    index: int
    name: str
    type: str
    ms: Optional[float]
    share: Optional[float] = None
    macs: Optional[int] = None
    gmacs: Optional[float] = None
    peak_share: Optional[float] = None
    block: Optional[str] = None
    part: Optional[str] = None
    kind: str = "other"
    note: Optional[str] = None
    raw_ms: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class ProfileRecord:
    """How the ops were timed and how well their sum matches the whole (``ratio`` = ``sum_ms`` / ``whole_ms``,
    the timed runs' p50). The whole model is also timed again in the profile session, interleaved with its ops
    or profiled runs (``session_whole_ms``, ``session_ratio``): the same load and heat on both sides.
    ``correction_ms``: what was subtracted from the measured time of each op of one input (onnxruntime's
    profiler's own cost per node, measured: ``calibration``, which adds ``cost_us_per_input`` per further
    input; an op's ``raw_ms`` is its time before); ``raw_sum_ms``/``raw_ratio`` are the sum and ratio before it.
    ``executor`` (ONNX): the time between the nodes, also the last row of ``ops`` (type ``executor``, not an op,
    not in ``sum_ms``): ``{"ms", "raw_ms", "profiler_ms", "run_ms", "sum_ms": ops + executor, "ratio",
    "session_ratio", "clean_ratio"}`` (see ``executor_row``). ``cpu_whole_ms`` (one thread only): the whole
    timed again in the runner thread's CPU time per run, its work without the waits for a CPU (against
    ``clean_whole_ms``/``session_whole_ms``: how much of a run was waiting). ``best_ratio``: the sum of each
    op's fastest run / the whole's fastest run in the profile session, each with a CPU to itself."""

    method: str
    isolated: bool
    whole_ms: Optional[float]
    sum_ms: Optional[float]
    ratio: Optional[float]
    cost_s: Optional[float]
    runs: Optional[int] = None
    peak_gmacs: Optional[float] = None
    peak: Optional[dict[str, Any]] = None
    notes: tuple[str, ...] = ()
    error: Optional[str] = None
    session_whole_ms: Optional[float] = None
    session_ratio: Optional[float] = None
    correction_ms: Optional[float] = None
    raw_sum_ms: Optional[float] = None
    raw_ratio: Optional[float] = None
    calibration: Optional[dict[str, Any]] = None
    clean_whole_ms: Optional[float] = None
    clean_ratio: Optional[float] = None
    preempted: Optional[float] = None
    executor: Optional[dict[str, Any]] = None
    cpu_whole_ms: Optional[float] = None
    best_ratio: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["notes"] = list(self.notes)
        return d


def block_of(name: str) -> tuple[Optional[str], Optional[str]]:
    """(``block3``, ``dw``) from an op name holding a builder layer name such as ``block3_dw``, else (None, None)."""
    found = BLOCK_PART.search(name or "")
    return (found.group(1), found.group(2)) if found else (None, None)


def whole_ms(result: BenchResult) -> Optional[float]:
    """The timed whole-model latency a profile is checked against: the p50 (the mean where only it is known)."""
    latency = result.latency_ms or {}
    value = latency.get("p50") if latency.get("p50") is not None else latency.get("mean")
    return float(value) if value else None


def finish(ops: list[OpRecord], result: BenchResult, method: str, isolated: bool, cost_s: Optional[float],
           runs: Optional[int], notes: Sequence[str], peak: Optional[dict[str, Any]] = None,
           session_whole_ms: Optional[float] = None, correction: Optional[dict[str, Any]] = None,
           again: Optional[dict[str, Any]] = None,
           executor: Optional[tuple[OpRecord, dict[str, Any]]] = None) -> ProfileRecord:
    """Shares, GMAC/s and peak shares filled in; the records set on ``result`` (``ops``, ``profile``);
    ``correction``: the ProfileRecord's correction fields (``correction_ms``, ``raw_sum_ms``, ``calibration``);
    ``again``: the runner's whole timed again (``us``, ``clean_us``, ``preempted``); ``executor``: the row of
    the time between ops and its figures (ONNX, ``onnxprofile.executor_row``), last in ``ops``, not in ``sum_ms``."""
    whole = whole_ms(result)
    peak_gmacs = (peak or {}).get("gmacs")
    done = []
    for op in list(ops) + ([executor[0]] if executor else []):
        gmacs = op.macs / op.ms / 1e6 if op.macs and op.ms else None
        done.append(dataclasses.replace(
            op, share=round(op.ms / whole, 4) if op.ms is not None and whole else None,
            gmacs=float(f"{gmacs:.4g}") if gmacs else None,
            peak_share=round(gmacs / peak_gmacs, 4) if gmacs and peak_gmacs else None))
    timed = [op.ms for op in done[:len(ops)] if op.ms is not None]
    total = round(sum(timed), 6) if timed else None
    record = ProfileRecord(method=method, isolated=isolated, whole_ms=whole, sum_ms=total,
                           ratio=round(total / whole, 4) if total and whole else None,
                           cost_s=None if cost_s is None else round(cost_s, 3), runs=runs, peak_gmacs=peak_gmacs,
                           peak=peak, notes=tuple(notes), session_whole_ms=session_whole_ms,
                           session_ratio=round(total / session_whole_ms, 4) if total and session_whole_ms else None)
    if correction:
        raw = correction.get("raw_sum_ms")
        record = dataclasses.replace(record, **correction, raw_ratio=round(raw / whole, 4) if raw and whole else None)
    clean, cpu = (again or {}).get("clean_us"), (again or {}).get("cpu_us")
    if again:
        record = dataclasses.replace(record, preempted=again.get("preempted"),
                                     clean_whole_ms=clean / 1e3 if clean else None,
                                     clean_ratio=round(total * 1e3 / clean, 4) if total and clean else None,
                                     cpu_whole_ms=cpu / 1e3 if cpu else None)
    if executor is not None and total:
        record = dataclasses.replace(record, executor=_with_executor(record, executor[1], total))
    result.ops = [op.to_dict() for op in done]
    result.profile = record.to_dict()
    return record


def _with_executor(record: ProfileRecord, figures: dict[str, Any], total: float) -> dict[str, Any]:
    """The executor's ``figures`` with ops + executor (``sum_ms``) against the whole, the session's, the clean one."""
    both = total + figures["ms"]

    def ratio(whole: Optional[float]) -> Optional[float]:
        return round(both / whole, 4) if whole else None
    return {**figures, "sum_ms": round(both, 6), "ratio": ratio(record.whole_ms),
            "session_ratio": ratio(record.session_whole_ms), "clean_ratio": ratio(record.clean_whole_ms)}


def profile_failed(result: BenchResult, error: str) -> None:
    """Mark ``result``'s profile as failed with ``error`` (its timed figures stand)."""
    failed(result, "none", error)


def failed(result: BenchResult, method: str, error: str) -> None:
    result.extra.pop("profile", None)
    result.ops = []
    result.profile = ProfileRecord(method=method, isolated=False, whole_ms=whole_ms(result), sum_ms=None,
                                   ratio=None, cost_s=None, error=error).to_dict()

