"""The benchmark_model log parser on logs in the tool's exact format (tests/data/bm_*.log)."""
from __future__ import annotations

import math
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgesep.devices.base import BenchConfig
from edgesep.devices.benchmark_model import (NO_SAMPLES_NOTE, benchmark_args, parse_benchmark_output,
                                             parse_stats_line)

DATA = Path(__file__).parent / "data"


def _log(name: str):
    return parse_benchmark_output((DATA / name).read_text())


def test_android_xnnpack_log_with_percentiles():
    r = _log("bm_android_xnnpack.log")
    assert r.complete
    assert r.init_ms == pytest.approx(23.418) and r.first_ms == pytest.approx(1.208)
    assert (r.warmup.count, r.warmup.first_us, r.warmup.avg_us) == (1741, 1208, 286.947)
    inf = r.inference
    assert (inf.count, inf.first_us, inf.curr_us, inf.min_us, inf.max_us, inf.std_us) == (3512, 279, 271, 253, 912, 22)
    assert (inf.p5_us, inf.median_us, inf.p95_us) == (258, 280, 312)
    lat = r.latency_ms()
    assert lat["n"] == 3512 and lat["mean"] == pytest.approx(0.283541) and lat["p50"] == pytest.approx(0.280)
    assert lat["p5"] == pytest.approx(0.258) and lat["p95"] == pytest.approx(0.312)
    assert lat["p90"] is None and lat["p99"] is None and lat["ci95_p50"] is None  # not printed: never guessed
    assert r.inference_avg_ms == pytest.approx(0.283541) and r.warmup_avg_ms == pytest.approx(0.286947)
    assert r.memory_mb == {"init": 3.08984, "overall": 3.51953}
    assert r.model_size_mb == pytest.approx(0.061248)
    assert r.params["Num threads"] == "4" and r.params["Graph"].endswith("model_int8.tflite")
    assert [(d.delegate, d.fully_delegated) for d in r.delegates] == [("XNNPACK", True)]
    assert r.fully_delegated is True


def test_scientific_notation_all_same_warmup_and_memory_lines():
    r = _log("bm_slow_cpu_scientific.log")
    assert r.inference.avg_us == pytest.approx(2.95034e6)
    assert r.latency_ms()["mean"] == pytest.approx(2950.34)
    assert r.warmup_avg_ms == pytest.approx(3121.98)  # "Warmup (avg): 3.12198e+06"
    assert r.warmup.count == 1 and r.warmup.all_same and r.warmup.min_us == r.warmup.max_us == 3121977
    assert r.first_ms == pytest.approx(3121.977)
    assert r.memory_mb == {"init": 34.2148, "overall": 61.6406, "peak": 67.9727, "vm_rss": 72.0,
                           "rss_anon": 58.0, "rss_file_shmem": 14.0}
    assert r.delegates == [] and r.fully_delegated is None


def test_memory_lines_map_to_the_bench_memory_fields():
    from edgesep.devices.adb_benchmark import NO_PEAK, memory_from_report

    mem = memory_from_report(_log("bm_slow_cpu_scientific.log").memory_mb)
    assert mem["peak"] == 67.9727 and mem["model"] == 34.2148  # init delta: what loading the model cost
    assert mem["baseline"] == pytest.approx(67.9727 - 61.6406, abs=1e-3)
    assert mem["loaded"] == pytest.approx(6.3321 + 34.2148, abs=1e-3)
    assert mem["end_rss"] == 72.0 and mem["reason"] is None and mem["source"] == "benchmark_model"
    old_tool = memory_from_report(_log("bm_android_xnnpack.log").memory_mb)  # deltas only, no periodic peak
    assert old_tool["model"] == 3.08984 and old_tool["peak"] is old_tool["baseline"] is old_tool["loaded"] is None
    assert old_tool["reason"] == NO_PEAK
    assert memory_from_report({})["reason"] == "benchmark_model printed no memory lines"


def test_logcat_threadtime_prefix_and_partial_gpu_delegation():
    r = _log("bm_gpu_logcat.log")
    assert r.complete and r.inference.count == 1229 and r.inference.avg_us == pytest.approx(813.77)
    assert r.init_ms == pytest.approx(127.204)
    gpu = r.delegates[0]
    assert (gpu.delegate, gpu.delegated_nodes, gpu.total_nodes, gpu.partitions) == ("TfLiteGpuDelegateV2", 29, 31, 2)
    assert gpu.fully_delegated is False
    assert r.delegates[1].delegate_kernels == 2 and r.fully_delegated is False
    assert r.params["Use gpu"] == "1"


def test_logcat_brief_prefix_all_same_lines_and_nodes_delegated_out_of():
    r = _log("bm_nnapi_brief.log")
    assert r.inference.all_same and r.inference.count == 50
    assert r.inference.min_us == r.inference.max_us == r.inference.avg_us == 1520 and r.inference.std_us == 0
    assert r.inference.median_us is None and r.latency_ms()["p50"] is None
    nn = r.delegates[0]
    assert (nn.delegate, nn.delegated_nodes, nn.total_nodes, nn.partitions) == ("TfLiteNnapiDelegate", 27, 31, 3)
    assert r.init_ms == pytest.approx(412.5)


@pytest.mark.parametrize("name", ["bm_op_profiling.log", "bm_op_profiling_old.log"])
def test_op_profiling_tables(name):
    r = _log(name)
    assert r.complete and r.inference.count == 4723 and r.inference.median_us is None
    assert [row.node_type for row in r.op_profile] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "DEPTHWISE_CONV_2D",
                                                       "CONV_2D", "MEAN", "FULLY_CONNECTED", "SOFTMAX"]
    first = r.op_profile[0]
    assert (first.first_ms, first.avg_ms, first.times_called, first.name) == (0.061, 0.058, 1,
                                                                             "[model/block0_conv/Relu6]:0")
    assert r.op_profile[6].name == "[model/logits/MatMul;model/logits/BiasAdd]:6"
    assert r.op_profile[-1].cdf_percent == pytest.approx(100.0, abs=0.01)
    assert sum(row.percent for row in r.op_profile) == pytest.approx(100.0, abs=0.01)
    assert r.op_profile_top[0].avg_ms == max(row.avg_ms for row in r.op_profile)
    assert {t.node_type: t.count for t in r.op_types} == {"CONV_2D": 3, "DEPTHWISE_CONV_2D": 2, "MEAN": 1,
                                                          "FULLY_CONNECTED": 1, "SOFTMAX": 1}
    assert [row.node_type for row in r.init_profile] == ["ModifyGraphWithDelegate", "AllocateTensors"]
    assert ("start_ms" in r.to_dict()["op_profile"][0]) and ((r.op_profile[0].start_ms is None) == (name == "bm_op_profiling.log"))


def test_profile_rows_with_spaces_in_node_type_tabs_or_lost_tabs():
    head = "\t" + "\t".join(["[node type]".rjust(40), "[first]".rjust(9), "[avg ms]".rjust(9), "[%]".rjust(8),
                              "[cdf%]".rjust(8), "[mem KB]".rjust(10), "[times called]".rjust(9), "[Name]"])
    row = "\t" + "\t".join(["Convolution (NHWC, QC8) IGEMM".rjust(40), "0.398".rjust(9), "0.407".rjust(9),
                             " 2.658%", " 3.986%", "0.000".rjust(10), "1".rjust(9), "Delegate/Convolution (NHWC, QC8) IGEMM:0"])
    text = ("INFO: Operator-wise Profiling Info for Regular Benchmark Runs:\n"
            "============================== Run Order ==============================\n" + head + "\n" + row + "\n")
    for variant in (text, text.replace("\t", "    ")):
        rows = parse_benchmark_output(variant).op_profile
        assert len(rows) == 1
        assert rows[0].node_type == "Convolution (NHWC, QC8) IGEMM" and rows[0].avg_ms == 0.407
        assert rows[0].name == "Delegate/Convolution (NHWC, QC8) IGEMM:0" and rows[0].percent == 2.658


def test_failed_run_is_incomplete_with_the_tool_errors():
    r = _log("bm_gpu_failed.log")
    assert not r.complete and r.inference is None and r.latency_ms() is None
    assert r.errors[-2:] == ["Failed to apply GPU delegate.", "Benchmarking failed."]
    assert any("libOpenCL.so" in e for e in r.errors)


@pytest.mark.parametrize("line, kind", [
    ("Hexagon delegate: 5 nodes delegated out of 10 nodes.", ("Hexagon", 5, 10, None, False)),
    ("INFO: TfLiteFlexDelegate delegate: 5 nodes delegated out of 105 nodes", ("TfLiteFlexDelegate", 5, 105, None, False)),
    ("INFO: EthosuDelegate: 1 nodes delegated out of 1 nodes with 1 partitions.", ("Ethosu", 1, 1, 1, True)),
    ("INFO: Replacing 12 node(s) with delegate (TfLiteXNNPackDelegate) node, yielding 1 partitions.",
     ("TfLiteXNNPackDelegate", 12, None, 1, None)),
    ("INFO: Though GPU delegate is explicitly applied, the model graph will not be executed by the delegate.",
     ("GPU", 0, None, None, False)),
])
def test_delegate_coverage_line_forms(line, kind):
    d = parse_benchmark_output(line).delegates[0]
    assert (d.delegate, d.delegated_nodes, d.total_nodes, d.partitions, d.fully_delegated) == kind


def test_no_samples_are_ever_invented():
    for path in DATA.glob("bm_*.log"):
        r = parse_benchmark_output(path.read_text())
        assert r.samples_ms is None and r.to_dict()["samples_ms"] is None
        assert NO_SAMPLES_NOTE in r.notes


def test_garbage_is_not_a_result():
    r = parse_benchmark_output("segmentation fault\n\x00\x01 count=abc\n")
    assert not r.complete and r.init_ms is None and r.errors == []


def _stat_line(values: list[int], percentiles: bool) -> str:
    """What tsl::Stat<int64_t>/StatWithPercentiles print for these values (C++ ostream: %g for doubles)."""
    n, total = len(values), sum(values)
    avg = total / n
    if min(values) == max(values):
        out = f"count={n} curr={values[-1]}" + ("(all same)" if n > 1 else "")
    else:
        var = int(sum(v * v for v in values) / n - avg * avg)
        out = (f"count={n} first={values[0]} curr={values[-1]} min={min(values)} max={max(values)} "
               f"avg={avg:g} std={int(math.sqrt(var))}")
    if percentiles:
        s = sorted(values)
        out += f" p5={s[n * 5 // 100]} median={s[n * 50 // 100]} p95={s[n * 95 // 100]}"
    return out


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(1, 50_000_000), min_size=1, max_size=60), st.booleans(),
       st.sampled_from(["", "INFO: ", "03-12 10:14:03.942  9312  9312 I tflite  : ", "I/tflite  (12044): "]))
def test_stat_lines_round_trip(values, percentiles, prefix):
    s = parse_stats_line(prefix + _stat_line(values, percentiles))
    assert s.count == len(values) and s.curr_us == values[-1]
    assert s.min_us == min(values) and s.max_us == max(values)
    assert s.avg_us == pytest.approx(sum(values) / len(values), rel=1e-5)  # 6 significant digits as printed
    if percentiles:
        assert s.median_us == sorted(values)[len(values) // 2]
    else:
        assert s.median_us is None


def test_benchmark_args_map_edgesep_settings():
    cfg = BenchConfig(threads=4, runs=30, warmup=2, warmup_secs=0.25, min_secs=2, max_secs=20, delegate="gpu")
    args = benchmark_args("/data/local/tmp/x/m.tflite", cfg, op_profiling=True)
    assert args[0] == "--graph=/data/local/tmp/x/m.tflite"
    for flag in ("--num_threads=4", "--num_runs=30", "--warmup_runs=2", "--warmup_min_secs=0.25", "--min_secs=2",
                 "--max_secs=20", "--use_gpu=true", "--use_xnnpack=false", "--enable_op_profiling=true"):
        assert flag in args
    assert "--use_nnapi=true" in benchmark_args("m", BenchConfig(delegate="nnapi"))
    none = benchmark_args("m", BenchConfig(delegate="none"))
    assert "--use_xnnpack=false" in none and not any(a.startswith("--num_threads") for a in none)
    ext = benchmark_args("m", BenchConfig(delegate="/vendor/lib64/libqnn.so", delegate_options=(("backend", "htp"),)))
    assert "--external_delegate_path=/vendor/lib64/libqnn.so" in ext and "--external_delegate_options=backend:htp" in ext
    with pytest.raises(ValueError, match="edgetpu"):
        benchmark_args("m", BenchConfig(delegate="edgetpu"))
