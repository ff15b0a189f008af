"""Where the time goes: per-op records (``bench --profile``) from every way a device can time its ops.

Three sources, one record (``OpRecord``, ``ProfileRecord``):

* ``.onnx`` under the runner: onnxruntime's own per-node profiler, run by ``runner.py --profile`` in a second
  session after the timed runs (``profile`` in its result entry), each profiled run followed by an unprofiled
  one (the whole under the same machine state); the profiler's own cost inside each node's time, measured in
  the same process on chains of trivial nodes (of 1 and 9 inputs), is subtracted from every node and stated;
* ``.tflite`` under the runner: the model cut into single-op models on the host (``edgesep.devices.opcut``),
  shipped and timed on the same device with the same delegate and threads in a session of their own,
  interleaved round by round: per-op *in isolation* (each op alone, no fusion with its neighbours, no cache
  a neighbour warmed, one invoke per op);
* ``benchmark_model`` over adb: its ``--enable_op_profiling`` table, from a second tool run with the profiler
  on (the timed run stays unprofiled).

Profiling always runs apart from the timed runs and never touches ``samples_ms``; its wall time is ``cost_s``.
Every profile is checked against the timed whole: ``ratio`` = sum of the per-op times / the measured p50; and
against the whole timed again in the profile session, between the profiled runs (``session_ratio``): the
like-for-like check when the machine's load changed between the timed runs and the profile. On a busy machine
the whole's p50 holds the time it waited for a CPU (a run of milliseconds is often preempted, an op of
microseconds seldom, and the per-op medians drop those runs): the runner times the whole again telling each run
preempted or not (involuntary context switches), and ``clean_ratio`` checks the sum against the median of the
runs nobody preempted (``clean_whole_ms``; ``preempted``: the share that were).
"""
from __future__ import annotations

import dataclasses
import re
import statistics
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from edgesep.devices import onnxgraph, roofline
from edgesep.devices.base import BenchConfig, BenchResult, DeviceError
from edgesep.devices.opcut import CutOp, cut_model, model_precision

PROFILE_MIN_RUNS = 10
PROFILE_MAX_RUNS = 100
BLOCK_PART = re.compile(r"(block\d+)_(dw|pw|sep)(?![a-z])")
ISOLATION_NOTE = ("per-op in isolation: each op timed as its own single-op model (its real tensors, quantization, "
                  "delegate and threads), interleaved; no fusion with neighbours, no caches they warmed, one "
                  "invoke each")
ONNX_NOTE = "onnxruntime's per-node profiler, in a second session after the timed runs"
ONNX_UNCORRECTED = "onnxruntime's profiler cost per node not measured ({}): per-node times include it"
BENCHMARK_MODEL_NOTE = "benchmark_model --enable_op_profiling, in a second tool run after the timed run"


@dataclasses.dataclass(frozen=True)
class OpRecord:
    """One op: ``ms`` per run, ``share`` of the measured whole (p50), ``macs``, achieved ``gmacs`` (GMAC/s)
    and ``peak_share`` (of the device's measured peak); ``block``/``part`` from the builders' layer names
    (``block3`` / ``dw``, ``pw``, ``sep``) where the op's name carries one; ``kind`` what it computes:
    ``depthwise``, ``pointwise`` (1x1 convolution), ``conv`` (other convolutions, matrix products) or ``other``
    (a fused ``block3_sep`` holds a depthwise and a pointwise op)."""

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
    input; an op's ``raw_ms`` is its time before); ``raw_sum_ms``/``raw_ratio`` are the sum and ratio before it."""

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
           again: Optional[dict[str, Any]] = None) -> ProfileRecord:
    """Shares, GMAC/s and peak shares filled in; the records set on ``result`` (``ops``, ``profile``);
    ``correction``: the ProfileRecord's correction fields (``correction_ms``, ``raw_sum_ms``, ``calibration``);
    ``again``: the runner's whole timed again (``us``, ``clean_us``, ``preempted``)."""
    whole = whole_ms(result)
    peak_gmacs = (peak or {}).get("gmacs")
    done = []
    for op in ops:
        gmacs = op.macs / op.ms / 1e6 if op.macs and op.ms else None
        done.append(dataclasses.replace(
            op, share=round(op.ms / whole, 4) if op.ms is not None and whole else None,
            gmacs=float(f"{gmacs:.4g}") if gmacs else None,
            peak_share=round(gmacs / peak_gmacs, 4) if gmacs and peak_gmacs else None))
    timed = [op.ms for op in done if op.ms is not None]
    total = round(sum(timed), 6) if timed else None
    record = ProfileRecord(method=method, isolated=isolated, whole_ms=whole, sum_ms=total,
                           ratio=round(total / whole, 4) if total and whole else None,
                           cost_s=None if cost_s is None else round(cost_s, 3), runs=runs, peak_gmacs=peak_gmacs,
                           peak=peak, notes=tuple(notes), session_whole_ms=session_whole_ms,
                           session_ratio=round(total / session_whole_ms, 4) if total and session_whole_ms else None)
    if correction:
        raw = correction.get("raw_sum_ms")
        record = dataclasses.replace(record, **correction, raw_ratio=round(raw / whole, 4) if raw and whole else None)
    clean = (again or {}).get("clean_us")
    if again:
        record = dataclasses.replace(record, preempted=again.get("preempted"),
                                     clean_whole_ms=clean / 1e3 if clean else None,
                                     clean_ratio=round(total * 1e3 / clean, 4) if total and clean else None)
    result.ops = [op.to_dict() for op in done]
    result.profile = record.to_dict()
    return record


def profile_failed(result: BenchResult, error: str) -> None:
    """Mark ``result``'s profile as failed with ``error`` (its timed figures stand)."""
    _failed(result, "none", error)


def _failed(result: BenchResult, method: str, error: str) -> None:
    result.extra.pop("profile", None)
    result.ops = []
    result.profile = ProfileRecord(method=method, isolated=False, whole_ms=whole_ms(result), sum_ms=None,
                                   ratio=None, cost_s=None, error=error).to_dict()


# ------------------------------------------------------------------ onnx: the runner's trace

def from_onnx(result: BenchResult, peak: Optional[dict[str, Any]] = None,
              path: Optional[Path] = None) -> Optional[ProfileRecord]:
    """The runner's onnxruntime profile (``extra["profile"]``) as the result's records; MACs, kind and layer
    name from the trace's shapes, else from the graph of ``path`` (``edgesep.devices.onnxgraph``); each node's
    time less the profiler's measured cost per node (``profiler_correction``)."""
    raw = result.extra.pop("profile", None)
    if not raw:
        return None
    if raw.get("error"):
        _failed(result, "onnxruntime profiler", raw["error"])
        return None
    graph = onnxgraph.graph_nodes(path) if path is not None else {}
    (cost_us, per_input), notes = profiler_correction(raw.get("calibration"))
    ops = []
    for i, node in enumerate(raw.get("nodes") or []):
        shapes = (str(node.get("type")), node.get("input_shapes") or [], node.get("output_shapes") or [])
        macs, kind = onnxgraph.macs(*shapes), onnxgraph.kind(*shapes)
        known = onnxgraph.original(node["name"], graph) or {}
        if macs is None and shapes[0] in onnxgraph.CONVS + onnxgraph.MATMULS:  # weights not in the trace
            macs, kind = known.get("macs"), known.get("kind", kind)
        block, part = block_of(node["name"])
        if block is None:
            block, part = block_of(known.get("output", ""))
        cost = max(cost_us + per_input * (max(len(shapes[1]), 1) - 1), 0.0)
        ops.append(OpRecord(index=i, name=node["name"], type=shapes[0], ms=max(node["us"] - cost, 0.0) / 1e3,
                            macs=macs, block=block, part=part, kind=kind, raw_ms=node["us"] / 1e3))
    raw_sum = sum(op.raw_ms for op in ops)
    floored = sum(op.ms == 0 < op.raw_ms for op in ops)
    if floored:
        notes.append(f"{floored} node(s) no slower than the profiler's own cost count as 0 ms")
    if raw.get("run_us"):
        notes.append(f"the profiled session's own median run: {raw['run_us'] / 1e3:.4g} ms, {raw_sum * 1e5 / raw['run_us']:.0f}% "
                     "of it inside the nodes (the rest: onnxruntime between them, and the profiler's own records)")
    whole = (raw.get("whole") or {}).get("us")
    correction = {"correction_ms": round(max(cost_us, 0.0) / 1e3, 6), "raw_sum_ms": round(raw_sum, 6),
                  "calibration": raw.get("calibration")}
    return finish(ops, result, "onnxruntime profiler", False, (raw.get("cost_ms") or 0) / 1e3, raw.get("runs"),
                  [ONNX_NOTE] + notes, peak, whole / 1e3 if whole else None, correction, raw.get("whole"))


def profiler_correction(calibration: Optional[dict[str, Any]]) -> tuple[tuple[float, float], list[str]]:
    """onnxruntime's profiler's cost inside each node's traced time, as the runner measured it on chains of
    trivial nodes: (microseconds per node, more per input beyond the first), and the notes that say so."""
    if not calibration or calibration.get("error") or calibration.get("cost_us") is None:
        why = (calibration or {}).get("error") or "an older runner"
        return (0.0, 0.0), [ONNX_UNCORRECTED.format(why)]
    cost, per_input = float(calibration["cost_us"]), float(calibration.get("cost_us_per_input") or 0.0)
    chains = "; ".join(f"{c['inputs']} input(s): {c['profiled_us']} us profiled, {c['unprofiled_us']} us unprofiled"
                       for c in calibration.get("chains") or [])
    return (cost, per_input), [
        f"onnxruntime's profiler adds {cost:.3g} us inside each node's time, {per_input:+.2g} us per input beyond the "
        f"first (measured here on chains of {calibration.get('nodes')} trivial nodes, per node: {chains})"]


# ------------------------------------------------------------------ benchmark_model's op profile

_ROW_NAME = re.compile(r"^\[(?P<name>.*)\]:(?P<index>\d+)$")


def from_benchmark_model(result: BenchResult, report: dict[str, Any], ops: Sequence[CutOp], cost_s: float,
                         peak: Optional[dict[str, Any]] = None) -> ProfileRecord:
    """benchmark_model's ``Run Order`` rows (a parsed report's ``op_profile``) as op records; MACs from the
    model's own ops where a row names one (``[tensor]:index``)."""
    by_index = {op.index: op for op in ops}
    records = []
    for i, row in enumerate(report.get("op_profile") or []):
        found = _ROW_NAME.match(row.get("name") or "")
        name = found.group("name") if found else (row.get("name") or row.get("node_type") or f"op{i}")
        op = by_index.get(int(found.group("index"))) if found else None
        if op is not None and op.type != row.get("node_type"):
            op = None  # a delegate kernel's row, not the model's op of that index
        block, part = block_of(name)
        records.append(OpRecord(index=op.index if op else i, name=name, type=str(row.get("node_type")),
                                ms=row.get("avg_ms"), macs=op.macs if op else None, block=block, part=part,
                                kind=op.kind if op else "other"))
    runs = (report.get("inference") or {}).get("count")
    return finish(records, result, "benchmark_model op profile", False, cost_s, runs, [BENCHMARK_MODEL_NOTE], peak)


# ------------------------------------------------------------------ tflite: single-op models

def profile_config(config: BenchConfig) -> BenchConfig:
    """The profile session's config: the same delegate, threads and seed; fewer, shorter runs; no data."""
    min_secs = min(config.min_secs, 0.1)
    return dataclasses.replace(config, runs=max(PROFILE_MIN_RUNS, min(config.runs, PROFILE_MAX_RUNS)),
                               warmup=1, warmup_secs=min(config.warmup_secs, 0.2), min_secs=min_secs,
                               max_secs=max(min(config.max_secs, 30.0), min_secs, 1.0), data=None, profile=False)


def cut_all(paths: Sequence[Path], tmp: Path) -> list[list[CutOp]]:
    """Each .tflite model cut into single-op models under ``tmp`` (an empty list for other models)."""
    return [cut_model(p, tmp / f"model_{i}") if Path(p).suffix.lower() == ".tflite" else []
            for i, p in enumerate(paths)]


def time_single_ops(make_device: Callable[[], Any], cuts: list[list[CutOp]], config: BenchConfig,
                    extra: Sequence[Path] = ()) -> tuple[dict[Path, BenchResult], float]:
    """Every single-op model (and the ``extra`` models) timed in one session on a fresh device.

    Returns ({model path: its result}, wall seconds of the whole session: the profile's cost).
    """
    files = [op.path for ops in cuts for op in ops if op.path is not None] + list(extra)
    if not files:
        return {}, 0.0
    t0 = time.monotonic()
    device = make_device()
    try:
        device.prepare(files)
        results = device.run(profile_config(config))
    finally:
        device.cleanup()
    return {Path(f): r for f, r in zip(files, results)}, time.monotonic() - t0


def from_single_ops(result: BenchResult, ops: Sequence[CutOp], timed: dict[Path, BenchResult], cost_s: float,
                    peak: Optional[dict[str, Any]] = None, whole: Optional[BenchResult] = None) -> ProfileRecord:
    """The single-op timings of one model as its records (each op's median of its runs); ``whole`` is the
    whole model timed in the same session (its median: ``session_whole_ms``); the runner's whole timed again
    after the timed runs (``extra["profile"]["whole"]``, popped) gives ``clean_whole_ms``."""
    records = []
    runs = []
    for op in ops:
        got = timed.get(op.path) if op.path is not None else None
        ms, note = None, op.reason
        if got is not None and got.samples_ms:
            ms, note = statistics.median(got.samples_ms), None
            runs.append(len(got.samples_ms))
        elif got is not None:
            note = got.error or "no samples"
        block, part = block_of(op.name)
        records.append(OpRecord(index=op.index, name=op.name, type=op.type, ms=ms, macs=op.macs, block=block,
                                part=part, kind=op.kind, note=note))
    notes = [ISOLATION_NOTE] + [f"op {r.index} ({r.type}) not timed: {r.note}" for r in records if r.ms is None]
    session = statistics.median(whole.samples_ms) if whole is not None and whole.samples_ms else None
    again = (result.extra.pop("profile", None) or {}).get("whole")
    cost_s += ((again or {}).get("cost_ms") or 0) / 1e3  # the whole timed again by the timed session's runner
    return finish(records, result, "single-op models", True, cost_s, min(runs) if runs else None, notes, peak,
                  session, again=again)


def profile_results(results: Sequence[BenchResult], paths: Sequence[Path], make_device: Callable[..., Any],
                    config: BenchConfig, tmp: Path, cache_root: Optional[Path] = None) -> None:
    """Fill ``ops`` and ``profile`` of every measured result (see the module docstring for the sources), with
    the roofline peak of each result's device, runtime, precision, threads and delegate (cached under
    ``cache_root``, measured in the same profile session when not cached).

    ``make_device(**options)`` gives a fresh device of the bench's target (``op_profiling=True`` for a
    benchmark_model rerun).
    """
    keys = {i: peak_key(r, p, config) for i, (r, p) in enumerate(zip(results, paths)) if not r.error}
    peaks = {k: roofline.cached(cache_root, k) if cache_root else None for k in set(keys.values())}
    python_keys = {keys[i] for i in keys if results[i].extra.get("runner") != "benchmark_model"}
    peak_files = {k: roofline.peak_model(k, tmp / "peak" / k.digest()) for k in python_keys
                  if peaks[k] is None and k.precision != "unknown"}
    tflite = [i for i in keys if paths[i].suffix.lower() == ".tflite" and results[i].extra.get("runner") !=
              "benchmark_model"]
    cuts = cut_all([paths[i] for i in tflite], tmp)
    wholes = [paths[i] for i in tflite]  # each whole model again, interleaved with its ops: the same load on both
    timed, cost = time_single_ops(make_device, cuts, config, [f for f in peak_files.values() if f] + wholes)
    for key in peaks:
        if key in peak_files or key.precision == "unknown":
            peaks[key] = _peak_from(key, timed.get(peak_files[key]) if key in peak_files else None, cache_root)
    for i, ops in zip(tflite, cuts):
        from_single_ops(results[i], ops, timed, cost, peaks[keys[i]], timed.get(paths[i]))
    for i in keys:
        if results[i].extra.get("runner") == "benchmark_model":
            _rerun_benchmark_model(results[i], paths[i], make_device, config, tmp, keys[i], peaks, cache_root)
        elif paths[i].suffix.lower() == ".onnx":
            from_onnx(results[i], peaks[keys[i]], paths[i])


def peak_key(result: BenchResult, path: Path, config: BenchConfig) -> roofline.PeakKey:
    """What the roofline peak of ``result`` depends on (its precision read from the model or its profile)."""
    fmt = "onnx" if path.suffix.lower() == ".onnx" else "tflite"
    if fmt == "onnx":
        nodes = (result.extra.get("profile") or {}).get("nodes") or []
        precision = roofline.precision_of("onnx", [str(n.get("type")) for n in nodes])
    else:
        try:
            precision = model_precision(path)
        except DeviceError:  # not readable here (the device judges the model): no peak for an unknown precision
            precision = "unknown"
    return roofline.PeakKey(device=result.device, cpu=str((result.host or {}).get("cpu")),
                            runtime=str(result.runtime), format=fmt, precision=precision,
                            threads=result.threads if result.threads is not None else config.threads,
                            delegate=str(result.delegate or config.delegate))


def _peak_from(key: roofline.PeakKey, timed: Optional[BenchResult], cache_root: Optional[Path]) -> dict[str, Any]:
    """The peak record of the peak model's run (stored in the cache), or one saying why there is none."""
    if timed is None:
        return {"precision": key.precision, "gmacs": None,
                "error": f"no peak model for {key.precision} {key.format} models"}
    # the peak is the best the device did: the fastest run, not the median a busy machine drags down
    best = min(timed.samples_ms) if timed.samples_ms else (timed.latency_ms or {}).get("min")  # benchmark_model: its min
    if not best:
        return {"precision": key.precision, "gmacs": None, "error": timed.error or "the peak model gave no times"}
    doc = roofline.record(key, best)
    if cache_root is not None:
        roofline.store(cache_root, key, doc)
    return doc


def _rerun_benchmark_model(result: BenchResult, path: Path, make_device: Callable[..., Any], config: BenchConfig,
                           tmp: Path, key: roofline.PeakKey, peaks: dict, cache_root: Optional[Path]) -> None:
    """benchmark_model once more on ``path`` with its op profiler on (and on the peak model when it is not
    cached); its table as ``result``'s records."""
    t0 = time.monotonic()
    peak_file = (roofline.peak_model(key, tmp / "peak" / key.digest())
                 if peaks.get(key) is None and key.precision != "unknown" else None)
    device = make_device(op_profiling=True)
    try:
        device.prepare([path] + ([peak_file] if peak_file else []))
        again = device.run(profile_config(config))
    finally:
        device.cleanup()
    if peak_file is not None:
        peaks[key] = _peak_from(key, again[1], cache_root)
    report = again[0].extra.get("benchmark_model") or {}
    if again[0].error or not report.get("op_profile"):
        _failed(result, "benchmark_model op profile", again[0].error or "benchmark_model printed no op profile")
        return
    try:
        ops = cut_model(path, None)
    except DeviceError:  # a model this host cannot read: the rows stand without MACs
        ops = []
    from_benchmark_model(result, report, ops, time.monotonic() - t0, peaks.get(key))
