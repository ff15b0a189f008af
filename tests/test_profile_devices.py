"""``bench --profile`` on every device kind: real sshd, the emulated Pi, adb with the Python runner and with
benchmark_model (the stand-in speaking the tool's log format). Each leaves nothing behind on the device."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))

from test_profile import check_executor_row  # noqa: E402

FAST = ["--runs", "5", "--warmup-secs", "0", "--min-secs", "0", "--max-secs", "2", "--threads", "1"]
STANDIN = Path(__file__).parent / "data" / "benchmark_model_standin.sh"


def bench(*args, env_cache: Path, timeout: float = 900, **env):
    proc = subprocess.run([sys.executable, "-m", "edgesep", "bench", *map(str, args), "--profile", "--json"],
                          capture_output=True, text=True, timeout=timeout,
                          env=dict(os.environ, EDGESEP_CACHE=str(env_cache), **env))
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["results"]


def graph_ops(path: Path) -> list[str]:
    from edgesep.devices.opcut import cut_model

    return [op.type for op in cut_model(path, None)]


def check_profile(result: dict, method: str, ops: list[str] | None = None) -> None:
    profile = result["profile"]
    assert result["error"] is None and profile["error"] is None and profile["method"] == method
    assert 0 < profile["ratio"] < 1e3 and profile["cost_s"] > 0 and result["latency_ms"]
    assert all(op["ms"] is not None and op["ms"] >= 0 and (op.get("raw_ms") or op["ms"]) > 0 for op in result["ops"])
    if ops is not None:
        assert [op["type"] for op in result["ops"]] == ops
    assert profile["peak"]["gmacs"] > 0
    if method == "onnxruntime profiler":
        check_executor_row(result)
    if method != "benchmark_model op profile":  # --threads 1: the whole timed again in CPU time too
        assert profile["cpu_whole_ms"] > 0


@pytest.mark.ssh
def test_profile_over_ssh_on_a_tflite_runtime_device_and_onnx(sshd, bench_models, tflite_runtime_python, tmp_path):
    """tflite_runtime 2.14 (no schema module there) runs the host-cut single-op models and the peak model."""
    assert list(sshd.device_tmp.iterdir()) == []
    (tfl,) = bench(bench_models["int8.tflite"], "--device", sshd.target, "--ssh-config", sshd.config,
                   "--remote-python", tflite_runtime_python, *FAST, env_cache=tmp_path)
    assert tfl["runtime"] == "tflite_runtime 2.14.0"
    check_profile(tfl, "single-op models", graph_ops(bench_models["int8.tflite"]))
    (onnx,) = bench(bench_models["float.onnx"], "--device", sshd.target, "--ssh-config", sshd.config,
                    "--remote-python", sys.executable, *FAST, env_cache=tmp_path)
    check_profile(onnx, "onnxruntime profiler")
    assert list(sshd.device_tmp.iterdir()) == [], "edgesep left files on the device"


@pytest.mark.pi64
@pytest.mark.slow  # onnxruntime, ai-edge-litert and every single-op model under qemu: 12-22 s, most of it emulated CPU
def test_profile_on_the_emulated_pi_is_flagged_emulated(pi64, bench_models, tmp_path):
    """One bench of a .tflite and an .onnx under the Pi's ai-edge-litert venv (which also has onnxruntime):
    single-op models and onnxruntime's profiler (its own cost per node measured there), flagged emulated."""
    tmp = Path(pi64["rootfs"]) / "tmp"
    before = set(os.listdir(tmp))
    tfl, onnx = bench(bench_models["blocks_split.tflite"], bench_models["float.onnx"], "--device", pi64["target"],
                      "--ssh-config", pi64["ssh_config"], "--remote-python", pi64["pythons"]["ai-edge-litert"], *FAST,
                      env_cache=tmp_path)
    check_profile(tfl, "single-op models", graph_ops(bench_models["blocks_split.tflite"]))
    check_profile(onnx, "onnxruntime profiler")
    assert onnx["runtime"].startswith("onnxruntime ") and onnx["profile"]["calibration"]["nodes"] == 40
    from edgesep.report.profile import profile_lines

    for r in (tfl, onnx):
        assert r["host"]["emulated"] is True and r["host"]["machine"] == "aarch64"
        assert r["profile"]["peak"]["key"]["device"] == pi64["target"]
        assert any("under emulation" in line for line in profile_lines(r))
    assert set(os.listdir(tmp)) - before == set(), "edgesep left files on the emulated Pi"


@pytest.mark.adb
def test_profile_over_adb_with_the_python_runner(adb_server, make_phone, bench_models, tmp_path):
    emu = make_phone(python=True)
    results = bench(bench_models["int8.tflite"], bench_models["float.onnx"], "--device", "adb", *FAST,
                    env_cache=tmp_path, ANDROID_ADB_SERVER_PORT=str(adb_server.port))
    check_profile(results[0], "single-op models", graph_ops(bench_models["int8.tflite"]))
    check_profile(results[1], "onnxruntime profiler")
    assert results[0]["extra"]["runner"] == "python"
    assert sorted(emu.paths.host_path("/data/local/tmp").glob("edgesep.*")) == []


@pytest.mark.adb
def test_profile_over_adb_with_benchmark_model_reruns_it_with_the_op_profiler(adb_server, make_phone, bench_models,
                                                                             tmp_path):
    emu = make_phone(python=False)
    (r,) = bench(bench_models["int8.tflite"], "--device", "adb", "--benchmark-binary", str(STANDIN), *FAST,
                 env_cache=tmp_path, ANDROID_ADB_SERVER_PORT=str(adb_server.port))
    check_profile(r, "benchmark_model op profile")
    assert r["extra"]["runner"] == "benchmark_model" and "--enable_op_profiling=true" not in r["extra"]["command"]
    assert [op["type"] for op in r["ops"]][:2] == ["CONV_2D", "DEPTHWISE_CONV_2D"]
    assert r["profile"]["peak"]["key"]["runtime"] == "TFLite benchmark_model"
    runs = [line for line in (emu.paths.host_path("/data/local/tmp") / "standin_trace.txt").read_text().splitlines()
            if line.startswith("argv:") and "/int8.tflite " in line]
    assert len(runs) == 2 and ["--enable_op_profiling=true" in line for line in runs] == [False, True]
