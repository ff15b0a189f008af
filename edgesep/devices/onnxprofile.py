"""``bench --profile`` of an .onnx model: the runner's onnxruntime trace (``runner.profile_onnx``) as op
records, each node less the profiler's own cost measured on chains of trivial nodes, and a last row for the
time between the nodes (onnxruntime's executor: not an op, outside the per-op sum, in ``executor``)."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from edgesep.devices import onnxgraph
from edgesep.devices.base import BenchResult
from edgesep.devices.oprecords import OpRecord, ProfileRecord, block_of, failed, finish

ONNX_NOTE = "onnxruntime's per-node profiler, in a second session after the timed runs"
ONNX_UNCORRECTED = "onnxruntime's profiler cost per node not measured ({}): per-node times include it"
EXECUTOR = "(between ops)"
EXECUTOR_NOTE = ("not an op: onnxruntime's own work between the nodes (the profiled run's model_run less its nodes' "
                 "traced times, less the profiler's records between nodes measured on the chains)")


def from_onnx(result: BenchResult, peak: Optional[dict[str, Any]] = None,
              path: Optional[Path] = None) -> Optional[ProfileRecord]:
    """The runner's onnxruntime profile (``extra["profile"]``) as the result's records; MACs, kind and layer
    name from the trace's shapes, else from the graph of ``path`` (``edgesep.devices.onnxgraph``); each node's
    time less the profiler's measured cost per node (``profiler_correction``)."""
    raw = result.extra.pop("profile", None)
    if not raw:
        return None
    if raw.get("error"):
        failed(result, "onnxruntime profiler", raw["error"])
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
    executor = executor_row(raw, len(ops))
    floored = sum(op.ms == 0 < op.raw_ms for op in ops)
    if floored:
        notes.append(f"{floored} node(s) no slower than the profiler's own cost count as 0 ms")
    if raw.get("run_us"):
        notes.append(f"the profiled session's own median run: {raw['run_us'] / 1e3:.4g} ms, {raw_sum * 1e5 / raw['run_us']:.0f}% "
                     "of it inside the nodes (the rest: the executor's row, the profiler's records between nodes, "
                     "and waits for a CPU that the per-node and per-run interquartile means leave out)")
    whole = (raw.get("whole") or {}).get("us")
    correction = {"correction_ms": round(max(cost_us, 0.0) / 1e3, 6), "raw_sum_ms": round(raw_sum, 6),
                  "calibration": raw.get("calibration")}
    best = fastest(raw, (cost_us, per_input), executor)
    record = finish(ops, result, "onnxruntime profiler", False, (raw.get("cost_ms") or 0) / 1e3, raw.get("runs"),
                    [ONNX_NOTE] + notes, peak, whole / 1e3 if whole else None, correction, raw.get("whole"), executor)
    if best is not None:
        record = dataclasses.replace(record, best_ratio=best)
        result.profile = record.to_dict()
    return record


def fastest(raw: dict[str, Any], cost: tuple[float, float],
            executor: Optional[tuple[OpRecord, dict[str, Any]]]) -> Optional[float]:
    """Fastest against fastest: the sum of each node's fastest profiled run (less the profiler's cost, as the
    op's time) / the whole's fastest run between the profiled runs (``best_ratio``), each part with a CPU to
    itself; with the executor's fastest run too, ``best_ratio`` in the executor's figures (set here)."""
    nodes, whole = raw.get("nodes") or [], (raw.get("whole") or {}).get("min_us")
    if not whole or not nodes or any(n.get("min_us") is None for n in nodes):
        return None
    ops = sum(max(n["min_us"] - max(cost[0] + cost[1] * (max(len(n.get("input_shapes") or []), 1) - 1), 0.0), 0.0)
              for n in nodes)
    if executor is not None and raw.get("between_min_us") is not None:
        between = max(raw["between_min_us"] - executor[1]["profiler_ms"] * 1e3, 0.0)
        executor[1]["best_ratio"] = round((ops + between) / whole, 4)
    return round(ops / whole, 4)


def executor_row(raw: dict[str, Any], index: int) -> Optional[tuple[OpRecord, dict[str, Any]]]:
    """The time between the nodes, from the profiled runs themselves: each run's model_run less its nodes' traced
    times (interquartile mean over the runs), less what the profiler spends between nodes writing each node's
    record (the gap between profiled trivial nodes on the calibration chains, ``gap_us`` plus
    ``gap_us_per_input`` per further input). The executor's own cost per trivial node is already inside each
    op's corrected time (the correction is profiled minus unprofiled per node), so nothing is subtracted twice:
    ops + executor = the profiled run less the profiler's whole cost per node. Floored at 0. Returns (its row,
    ``{"ms", "raw_ms", "profiler_ms", "run_ms"}``), or None without the profiled run's time."""
    nodes, run, between = raw.get("nodes") or [], raw.get("run_mean_us"), raw.get("between_us")
    if run is None or between is None or not nodes:
        return None
    calibration = raw.get("calibration") or {}
    gap, per_input = calibration.get("gap_us"), calibration.get("gap_us_per_input") or 0.0
    profiler = sum(max(gap + per_input * (max(len(n.get("input_shapes") or []), 1) - 1), 0.0) for n in nodes) \
        if gap is not None else 0.0
    figures = {"ms": round(max(between - profiler, 0.0) / 1e3, 6), "raw_ms": round(between / 1e3, 6),
                         "profiler_ms": round(profiler / 1e3, 6), "run_ms": round(run / 1e3, 6)}
    note = EXECUTOR_NOTE if gap is not None else EXECUTOR_NOTE.split(", less the")[0] + "; the profiler's records " \
        "between nodes not measured: included)"
    return OpRecord(index=index, name=EXECUTOR, type="executor", ms=figures["ms"], kind="executor", note=note,
                    raw_ms=figures["raw_ms"]), figures


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

