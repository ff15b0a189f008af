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

from edgesep.devices import roofline
from edgesep.devices.base import BenchConfig, BenchResult, DeviceError
from edgesep.devices.onnxprofile import from_onnx
from edgesep.devices.opcut import CutOp, cut_model, model_precision
from edgesep.devices.oprecords import OpRecord, ProfileRecord, block_of, failed, finish, profile_failed  # noqa: F401

PROFILE_MIN_RUNS = 10
PROFILE_MAX_RUNS = 100
ISOLATION_NOTE = ("per-op in isolation: each op timed as its own single-op model (its real tensors, quantization, "
                  "delegate and threads), interleaved; no fusion with neighbours, no caches they warmed, one "
                  "invoke each")
BENCHMARK_MODEL_NOTE = "benchmark_model --enable_op_profiling, in a second tool run after the timed run"


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
    record = finish(records, result, "single-op models", True, cost_s, min(runs) if runs else None, notes, peak,
                    session, again=again)
    fastest = [min(timed[op.path].samples_ms) for op in ops if op.path in timed and timed[op.path].samples_ms]
    if whole is not None and whole.samples_ms and len(fastest) == len(ops):  # best against best: see ProfileRecord
        record = dataclasses.replace(record, best_ratio=round(sum(fastest) / min(whole.samples_ms), 4))
        result.profile = record.to_dict()
    return record


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
        failed(result, "benchmark_model op profile", again[0].error or "benchmark_model printed no op profile")
        return
    try:
        ops = cut_model(path, None)
    except DeviceError:  # a model this host cannot read: the rows stand without MACs
        ops = []
    from_benchmark_model(result, report, ops, time.monotonic() - t0, peaks.get(key))
