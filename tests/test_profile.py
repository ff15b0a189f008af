"""``--profile``: single-op cutting, onnxruntime's trace, benchmark_model's table, one record, the CLI."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesep.devices.base import BenchResult
from edgesep.devices.benchmark_model import parse_benchmark_output
from edgesep.devices.opcut import cut_model
from edgesep.devices.profile import block_of, from_benchmark_model, from_onnx
from edgesep.devices.runner import parse_onnx_trace

DATA = Path(__file__).parent / "data"
FAST = ["--runs", "5", "--warmup", "1", "--warmup-secs", "0", "--min-secs", "0", "--max-secs", "2"]


def _interpreter(path):
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    interp = Interpreter(model_path=str(path),
                         experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    interp.allocate_tensors()
    return interp


@pytest.mark.parametrize("name", ["float.tflite", "int8.tflite", "prelu.tflite"])
def test_cut_ops_cover_the_graph_and_keep_tensors_and_quantization(bench_models, tmp_path, name):
    from edgesep.converters.inspect.tflite import read_tflite

    whole = _interpreter(bench_models[name])
    graph_ops = [op for op in whole._get_ops_details()]
    tensors = {t["name"]: t for t in whole.get_tensor_details()}
    ops = cut_model(bench_models[name], tmp_path)
    assert [op.type for op in ops] == [op["op_name"] for op in graph_ops]
    for op, original in zip(ops, graph_ops):
        single = _interpreter(op.path)
        assert [o["op_name"] for o in single._get_ops_details()] == [original["op_name"]]
        for detail in single.get_input_details() + single.get_output_details():
            same = tensors[detail["name"]]
            assert list(detail["shape"]) == list(same["shape"]) and detail["dtype"] == same["dtype"]
            assert detail["quantization"] == pytest.approx(same["quantization"])
        for detail in single.get_input_details():
            single.set_tensor(detail["index"], np.zeros(detail["shape"], detail["dtype"]))
        single.invoke()
    assert sum(op.macs or 0 for op in ops) == read_tflite(bench_models[name]).macs


def test_onnx_trace_takes_a_trimmed_mean_per_node_after_the_warmup_runs_less_the_measured_profiler_cost():
    def node(name, ts, dur, op="Conv"):
        return {"cat": "Node", "name": f"{name}_kernel_time", "ts": ts, "dur": dur,
                "args": {"op_name": op, "provider": "CPUExecutionProvider",
                         "input_type_shape": [{"float": [1, 8, 4, 4]}, {"float": [16, 8, 1, 1]}],
                         "output_type_shape": [{"float": [1, 16, 4, 4]}]}}
    events = []
    for run, (conv, relu) in enumerate([(900, 900), (10, 3), (12, 4), (500, 5)]):
        start = 1000 * run
        events += [{"cat": "Session", "name": "model_run", "ts": start, "dur": conv + relu + 2},
                   node("m/block1_pw/conv", start + 1, conv), node("m/relu", start + 1 + conv, relu, "Relu")]
    trace = parse_onnx_trace(events, skip_runs=1)
    assert trace["runs"] == 3 and [n["us"] for n in trace["nodes"]] == [12.0, 4.0]
    assert trace["run_mean_us"] == 18.0 and trace["gap_us"] == 0  # model_run 15, 18, 507: the middle one
    assert trace["between_us"] == 2.0  # each run's model_run less its nodes: 2 us in every run
    trace.update(whole={"us": 16.0, "clean_us": 15.0, "preempted": 0.25, "runs": 4, "cpu_us": 12.0, "min_us": 15.0},
                 calibration={"nodes": 40, "profiled_us": 2.5, "unprofiled_us": 0.5, "cost_us": 2.0,
                              "gap_us": 0.5, "gap_us_per_input": 0.25})
    result = BenchResult(model="m.onnx", device="local", latency_ms={"p50": 0.02}, extra={"profile": trace})
    record = from_onnx(result)
    conv = result.ops[0]
    assert conv["macs"] == 16 * 16 * 8 and conv["block"] == "block1" and conv["part"] == "pw"
    assert conv["ms"] == pytest.approx(0.010) and conv["raw_ms"] == pytest.approx(0.012)
    assert conv["gmacs"] == pytest.approx(16 * 16 * 8 / 0.010 / 1e6, rel=1e-3)
    assert record.sum_ms == pytest.approx(0.012) and record.ratio == pytest.approx(0.012 / 0.02)
    assert record.raw_sum_ms == pytest.approx(0.016) and record.raw_ratio == pytest.approx(0.016 / 0.02)
    assert record.correction_ms == pytest.approx(0.002) and record.session_ratio == pytest.approx(0.012 / 0.016)
    assert record.clean_ratio == pytest.approx(0.012 / 0.015) and record.preempted == 0.25
    assert record.cpu_whole_ms == pytest.approx(0.012)
    # fastest against fastest: nodes' fastest runs 10 and 3 us less 2 us each, against the whole's fastest 15 us;
    # with the executor's fastest remainder (2 us less the profiler's 1.5 us)
    assert record.best_ratio == pytest.approx(9 / 15) and record.executor["best_ratio"] == pytest.approx(9.5 / 15, abs=1e-4)
    assert "2 us inside each node" in " ".join(record.notes)
    executor = result.ops[-1]  # the time between nodes: its own row, not an op, not in sum_ms
    assert (executor["name"], executor["type"], executor["macs"], len(result.ops)) == ("(between ops)", "executor",
                                                                                       None, 3)
    # model_run 18 us - nodes 16 us = 2 us, less the profiler's records after each node (0.5 + 0.25 per further input)
    assert executor["raw_ms"] == pytest.approx(0.002) and executor["ms"] == pytest.approx(0.0005)
    assert record.executor["profiler_ms"] == pytest.approx(0.0015) and record.executor["run_ms"] == pytest.approx(0.018)
    assert record.executor["sum_ms"] == pytest.approx(0.0125) and record.executor["ratio"] == pytest.approx(0.0125 / 0.02)
    gaps = [{"cat": "Session", "name": "model_run", "ts": 0, "dur": 20}, node("a", 1, 5), node("b", 9, 5)]
    assert parse_onnx_trace(gaps, skip_runs=0)["gap_us"] == 3.0  # b starts 3 us after a ends
    many = [e for run, dur in enumerate([2, 3] * 9 + [1000, 0])
            for e in ({"cat": "Session", "name": "model_run", "ts": 2000 * run, "dur": dur + 1},
                      node("m/relu", 2000 * run + 1, dur, "Relu"))]
    assert parse_onnx_trace(many, skip_runs=0)["nodes"][0]["us"] == 2.5  # whole microseconds averaged, outliers cut


def check_executor_row(result: dict) -> None:
    """An ONNX profile's last row is the time between the nodes (not an op, outside the per-op sum), and ops +
    executor account for the profiled run: per run, model_run = its nodes' times + the time between them, so
    the executor's raw time is at most the profiled run's and, summed with the nodes' raw times, between a
    quarter and 1.5 times it (interquartile means over the runs do not add up: a run's wait for a CPU stays in
    the run's mean and is trimmed from the part it fell in); the corrections only take away (the profiler's
    cost inside and between the nodes)."""
    row, executor, profile = result["ops"][-1], result["profile"]["executor"], result["profile"]
    assert (row["name"], row["type"], row["macs"]) == ("(between ops)", "executor", None) and row["ms"] >= 0
    assert [op for op in result["ops"] if op["type"] == "executor"] == [row]
    assert profile["sum_ms"] == pytest.approx(sum(op["ms"] for op in result["ops"][:-1]), abs=1e-5)
    assert executor["ms"] == row["ms"] and executor["sum_ms"] == pytest.approx(profile["sum_ms"] + row["ms"], abs=1e-5)
    assert executor["raw_ms"] <= executor["run_ms"] + 1e-6
    assert executor["run_ms"] / 4 <= profile["raw_sum_ms"] + executor["raw_ms"] <= executor["run_ms"] * 1.5
    assert 0 <= executor["sum_ms"] <= profile["raw_sum_ms"] + executor["raw_ms"] + 1e-5 and executor["profiler_ms"] >= 0


def test_benchmark_model_rows_become_the_same_records():
    report = parse_benchmark_output((DATA / "bm_op_profiling.log").read_text()).to_dict()
    result = BenchResult(model="m.tflite", device="adb", latency_ms={"mean": 1.0, "p50": None})
    record = from_benchmark_model(result, report, [], cost_s=1.5)
    assert [op["type"] for op in result.ops][:2] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert result.ops[0]["name"] == "model/block0_conv/Relu6" and result.ops[0]["ms"] == pytest.approx(0.058)
    assert record.whole_ms == 1.0 and record.ratio == pytest.approx(sum(o["ms"] for o in result.ops))
    assert record.cost_s == 1.5 and not record.isolated


def test_block_of_reads_the_builders_layer_names():
    assert block_of("edgesep_split_1/block3_dw_relu_1/Relu6") == ("block3", "dw")
    assert block_of("m/block12_sep_1/separable_conv2d/depthwise1") == ("block12", "sep")
    assert block_of("m/block3_pwx/conv") == (None, None) and block_of("stem_conv") == (None, None)


def test_cli_profile_table_and_json_have_ops_covering_the_graph_and_a_checked_ratio(bench_models, tmp_path):
    models = [bench_models["int8.tflite"], bench_models["float.onnx"]]
    out = tmp_path / "bench.json"
    proc = subprocess.run([sys.executable, "-m", "edgesep", "bench", *map(str, models), *FAST, "--threads", "1",
                           "--profile", "--out", str(out)], capture_output=True, text=True, timeout=300,
                          env=dict(os.environ, EDGESEP_CACHE=str(tmp_path / "cache")))
    assert proc.returncode == 0, proc.stderr
    for text in ("where the time goes: int8.tflite (single-op models)", "where the time goes: float.onnx "
                 "(onnxruntime profiler)", "measured whole (p50)", "= ratio ", "not in samples_ms", "DEPTHWISE_CONV_2D"):
        assert text in proc.stdout
    tfl, onnx = json.loads(out.read_text())["results"]
    graph = [op["op_name"] for op in _interpreter(models[0])._get_ops_details()]
    assert [op["type"] for op in tfl["ops"]] == graph and [op["index"] for op in tfl["ops"]] == list(range(len(graph)))
    for result, method in ((tfl, "single-op models"), (onnx, "onnxruntime profiler")):
        profile = result["profile"]
        assert profile["method"] == method and profile["error"] is None
        assert 0 < profile["ratio"] < 1e3 and profile["cost_s"] >= 0 and profile["runs"] >= 10
        assert all(op["ms"] >= 0 and (op["raw_ms"] or op["ms"]) > 0 for op in result["ops"])
        assert profile["sum_ms"] == pytest.approx(sum(op["ms"] for op in result["ops"] if op["type"] != "executor"),
                                                  rel=1e-3)
        assert "profile" not in result["extra"]  # made a record, not left raw
    assert tfl["profile"]["isolated"] is True and "in isolation" in tfl["profile"]["notes"][0]
    assert tfl["profile"]["session_whole_ms"] > 0 and tfl["profile"]["session_ratio"] == pytest.approx(
        tfl["profile"]["sum_ms"] / tfl["profile"]["session_whole_ms"], rel=1e-3)
    assert any(op["type"] == "Conv" and op["macs"] for op in onnx["ops"])
    calibration = onnx["profile"]["calibration"]  # the profiler's cost per node, measured by the runner
    assert calibration["nodes"] == 40 and [c["inputs"] for c in calibration["chains"]] == [1, 9]
    assert all(c["profiled_us"] >= 0 for c in calibration["chains"])
    assert all(op["ms"] <= op["raw_ms"] for op in onnx["ops"])
    assert onnx["profile"]["correction_ms"] == pytest.approx(max(calibration["cost_us"], 0) / 1e3, abs=1e-6)
    assert onnx["profile"]["raw_sum_ms"] == pytest.approx(sum(op["raw_ms"] for op in onnx["ops"][:-1]), rel=1e-3)
    assert onnx["profile"]["session_whole_ms"] > 0 and "profiler's own cost" in proc.stdout
    check_executor_row(onnx)
    assert "ops + executor" in proc.stdout and "(between ops)" in proc.stdout
    for profile in (tfl["profile"], onnx["profile"]):  # the whole timed again, runs told preempted or not
        assert profile["preempted"] is None or 0 <= profile["preempted"] <= 1  # None: no getrusage (Windows)
        assert profile["clean_whole_ms"] is None or profile["clean_ratio"] > 0
        assert profile["cpu_whole_ms"] > 0  # --threads 1: the whole timed again in CPU time too
        assert "profile" not in tfl["extra"]
    assert 0 < tfl["profile"]["best_ratio"] < 1e3 and 0 < onnx["profile"]["best_ratio"] < 1e3
    assert onnx["profile"]["executor"]["best_ratio"] >= onnx["profile"]["best_ratio"]


@pytest.mark.parametrize("precision", ["float32", "int8"])
def test_peak_models_are_one_big_convolution_of_their_precision(tmp_path, precision):
    import onnxruntime as ort

    from edgesep.devices import roofline

    interp = _interpreter(roofline.peak_tflite(precision, tmp_path / "peak.tflite"))
    (op,) = interp._get_ops_details()
    assert op["op_name"] == "CONV_2D" and interp.get_input_details()[0]["dtype"] == np.dtype(
        "int8" if precision == "int8" else "float32")
    assert cut_model(tmp_path / "peak.tflite", None)[0].macs == roofline.PEAK_MACS
    session = ort.InferenceSession(str(roofline.peak_onnx(precision, tmp_path / "peak.onnx")),
                                   providers=["CPUExecutionProvider"])
    x = np.zeros(session.get_inputs()[0].shape, np.uint8 if precision == "int8" else np.float32)
    assert session.run(None, {"input": x})[0].shape == (1, roofline.CHANNELS, roofline.SIDE, roofline.SIDE)


@pytest.mark.slow
def test_cli_peak_is_measured_once_then_cached_per_device_runtime_and_threads(bench_models, tmp_path):
    from edgesep.devices.roofline import PeakKey

    env = dict(os.environ, EDGESEP_CACHE=str(tmp_path / "cache"))

    def peak(*extra):
        proc = subprocess.run([sys.executable, "-m", "edgesep", "bench", str(bench_models["int8.tflite"]), *FAST,
                               "--profile", "--json", *extra], capture_output=True, text=True, timeout=300, env=env)
        assert proc.returncode == 0, proc.stderr
        (result,) = json.loads(proc.stdout)["results"]
        return result

    first, again = peak("--threads", "1"), peak("--threads", "1")
    assert first["profile"]["peak"]["source"] == "measured" and first["profile"]["peak"]["precision"] == "int8"
    assert again["profile"]["peak"]["source"] == "cached"
    assert again["profile"]["peak_gmacs"] == first["profile"]["peak_gmacs"] > 0
    (stored,) = (tmp_path / "cache" / "roofline").glob("*.json")
    key = PeakKey(**json.loads(stored.read_text())["key"])
    assert key.threads == 1 and key.device == "local" and key.runtime == first["runtime"]
    assert PeakKey(**{**json.loads(stored.read_text())["key"], "threads": 2}).digest() != key.digest()
    conv = next(op for op in first["ops"] if op["type"] == "CONV_2D")
    assert conv["peak_share"] == pytest.approx(conv["gmacs"] / first["profile"]["peak_gmacs"], rel=1e-2)


@pytest.mark.slow
def test_compare_profile_writes_the_per_block_table_and_plot(bench_models, tmp_path):
    out = tmp_path / "report"
    models = [bench_models["blocks_split.tflite"], bench_models["blocks_fused.tflite"]]
    proc = subprocess.run([sys.executable, "-m", "edgesep", "compare", *map(str, models), "--sessions", "1",
                           "--runs", "5", "--min-secs", "0", "--max-secs", "2", "--warmup-secs", "0", "--profile",
                           "--out", str(out)], capture_output=True, text=True, timeout=600,
                          env=dict(os.environ, EDGESEP_CACHE=str(tmp_path / "cache")))
    assert proc.returncode == 0, proc.stderr
    doc = json.loads((out / "profile.json").read_text())
    section = doc["devices"]["local"]
    assert section["error"] is None and [r["label"] for r in section["results"]] == ["blocks_split.tflite",
                                                                                      "blocks_fused.tflite"]
    split, fused = section["results"]
    assert {(op["block"], op["part"], op["kind"]) for op in split["ops"] if op["block"]} == {
        ("block1", "dw", "depthwise"), ("block1", "pw", "pointwise"), ("block2", "dw", "depthwise"),
        ("block2", "pw", "pointwise")}
    assert {(op["block"], op["part"]) for op in fused["ops"] if op["block"]} == {("block1", "sep"), ("block2", "sep")}
    rows = {(r["label"], r["block"]): r for r in section["blocks"]}
    assert set(rows) == {(label, block) for label in ("blocks_split.tflite", "blocks_fused.tflite")
                         for block in ("block1", "block2", "all blocks")}
    for row in rows.values():  # the fused block's one SeparableConv2D still shows its two parts
        assert row["dw_ms"] > 0 and row["pw_ms"] > 0 and row["total_ms"] == pytest.approx(
            row["dw_ms"] + row["pw_ms"] + (row["other_ms"] or 0))
    png = out / section["plot"]
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = (out / "profile.md").read_text()
    assert "| block1 | blocks_fused.tflite |" in md and "ratio" in md
    assert "where the time goes per block on local" in proc.stdout


def test_onnx_graph_gives_macs_and_layer_names_the_trace_leaves_out(bench_models):
    from edgesep.converters.inspect.onnx import read_onnx
    from edgesep.devices import onnxgraph

    nodes = onnxgraph.graph_nodes(bench_models["float.onnx"])
    convs = {e["name"]: e for e in nodes.values() if e["macs"]}
    assert sum(e["macs"] for e in convs.values()) == read_onnx(bench_models["float.onnx"]).macs
    assert sorted(e["kind"] for e in convs.values()).count("depthwise") == 1
    name, entry = next((n, e) for n, e in convs.items() if e["kind"] == "depthwise")
    assert onnxgraph.original(f"{name}_token_33", nodes) is entry
    assert onnxgraph.original(entry["output"].split(":")[0] + ":0_nchwc", nodes)["output"] == entry["output"]
    assert onnxgraph.graph_nodes(bench_models["float.tflite"]) == {}  # not ONNX: the trace's shapes stand


def test_block_rows_split_a_fused_block_by_kind_and_pair_the_forms():
    from edgesep.report.profile import block_rows

    def op(block, part, kind, ms, macs):
        return {"block": block, "part": part, "kind": kind, "ms": ms, "macs": macs}

    reports = [{"label": "split TFLite int8", "profile": {"peak_gmacs": 100.0},
                "ops": [op("block1", "dw", "depthwise", 0.01, 1e5), op("block1", "pw", "pointwise", 0.02, 1e6),
                        op(None, None, "conv", 0.5, 1e7)]},
               {"label": "fused TFLite float32", "profile": {"peak_gmacs": 50.0},
                "ops": [op("block1", "sep", "depthwise", 0.01, 1e5), op("block1", "sep", "pointwise", 0.04, 1e6)]},
               {"label": "fused TFLite int8", "profile": {}, "ops": [op("block1", "sep", "depthwise", 0.02, 1e5)]}]
    rows = block_rows(reports)
    assert [(r["block"], r["label"]) for r in rows][:3] == [("block1", "fused TFLite int8"),
                                                           ("block1", "split TFLite int8"),
                                                           ("block1", "fused TFLite float32")]
    split = next(r for r in rows if r["label"] == "split TFLite int8" and r["block"] == "block1")
    assert split["dw_ms"] == 0.01 and split["pw_ms"] == 0.02 and split["total_ms"] == pytest.approx(0.03)
    assert split["pw_gmacs"] == pytest.approx(50.0) and split["pw_peak_share"] == pytest.approx(0.5)
    fused = next(r for r in rows if r["label"] == "fused TFLite float32" and r["block"] == "all blocks")
    assert fused["dw_ms"] == 0.01 and fused["pw_ms"] == 0.04 and fused["pw_peak_share"] == pytest.approx(0.5)
