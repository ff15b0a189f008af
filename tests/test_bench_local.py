"""`edgesep bench` on this machine: the Python API, the CLI (table and --json) and every local fault."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from oneline import assert_one_error_line

from edgesep.devices import BenchConfig, DeviceError, parse_target

FAST = ["--runs", "5", "--warmup", "1", "--warmup-secs", "0", "--min-secs", "0", "--max-secs", "2"]
FAST_CONFIG = BenchConfig(runs=5, warmup=1, warmup_secs=0.0, min_secs=0.0, max_secs=2.0)
DESIGN_KEYS = {"model", "device", "runtime", "threads", "delegate", "init_ms", "first_ms", "latency_ms",
               "samples_ms", "accuracy", "host"}
LATENCY_KEYS = {"mean", "std", "min", "p50", "p90", "p99", "ci95_p50"}


def edgesep(*args, env=None, cwd=None):
    """Run the real console entry point in a subprocess; returns (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "edgesep", "bench", *map(str, args)], capture_output=True,
                          text=True, env=env, cwd=cwd, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_python_api_measures_all_models_in_order(bench_models):
    models = [bench_models[n] for n in ("float.tflite", "int8.tflite", "prelu.tflite", "float.onnx")]
    seen = []
    with parse_target("local") as device:
        device.prepare(models)
        results = device.run(BenchConfig(runs=8, warmup=1, warmup_secs=0.0, min_secs=0.0, max_secs=2.0, threads=1),
                             progress=lambda m, done, total: seen.append((m, done, total)))
    assert [r.model for r in results] == [str(m) for m in models]
    for r in results:
        assert r.error is None and r.device == "local" and r.threads == 1
        assert len(r.samples_ms) >= 8
        assert r.latency_ms["p50"] == pytest.approx(np.percentile(r.samples_ms, 50))
        assert r.latency_ms["min"] == min(r.samples_ms)
        lo, hi = r.latency_ms["ci95_p50"]
        assert lo <= r.latency_ms["p50"] <= hi
        assert r.host["cores"] >= 1 and "overhead" in r.extra
    assert results[0].fully_delegated is True and results[2].extra["ops"].count("PRELU") == 1
    assert {m for m, _, _ in seen} == {str(m) for m in models}
    assert any(done >= 8 for _, done, _ in seen)


def test_cli_json_is_exactly_the_design_document(bench_models, tmp_path):
    out = tmp_path / "sub" / "bench.json"
    code, stdout, stderr = edgesep(bench_models["int8.tflite"], bench_models["float.onnx"], *FAST, "--threads", "2",
                                   "--json", "--out", out)
    assert code == 0, stderr
    doc = json.loads(stdout)  # nothing but the document on stdout
    assert list(doc) == ["results", "sessions", "control", "comparisons"] and len(doc["results"]) == 2
    assert doc["sessions"] == 3 and doc["control"]["of"] == "int8.tflite"  # what the verdict rests on
    assert json.loads(out.read_text()) == doc
    for r in doc["results"]:
        assert DESIGN_KEYS <= set(r) and LATENCY_KEYS <= set(r["latency_ms"])
        assert {"cpu", "governor", "temp_c"} <= set(r["host"])
        assert r["device"] == "local" and r["threads"] == 2 and r["accuracy"] is None
        assert len(r["latency_ms"]["ci95_p50"]) == 2 and len(r["samples_ms"]) >= 5
    assert doc["results"][0]["runtime"].startswith("ai_edge_litert ")
    assert doc["results"][1]["runtime"].startswith("onnxruntime ")
    for r in doc["results"]:  # memory for TFLite and ONNX alike; two models and the A/A control shared a runner
        mem = r["memory_mb"]
        assert 0 < mem["baseline"] < mem["loaded"] <= mem["peak_startup"] and mem["peak"] > 0
        assert mem["model"] == pytest.approx(mem["loaded"] - mem["baseline"], abs=2e-3)
        assert mem["models_in_process"] == 3 and mem["reason"] is None


def test_cli_table(bench_models):
    code, stdout, stderr = edgesep(bench_models["float.tflite"], bench_models["prelu.tflite"], *FAST)
    assert code == 0, stderr
    assert "float.tflite" in stdout and "prelu.tflite" in stdout and "p50 ms [95% CI]" in stdout
    assert "prelu.tflite vs float.tflite: " in stdout  # the ratio against the first model, judged as compare does
    assert "ai_edge_litert" in stdout and "xnnpack" in stdout
    assert "peak MB (+model)" in stdout and "several models shared one process" in stdout
    code, stdout, stderr = edgesep(bench_models["float.tflite"], *FAST)
    assert code == 0 and "peak MB (+model)" in stdout and "shared one process" not in stdout


def test_cli_accuracy_from_npz_and_digits(bench_models, tmp_path):
    rng = np.random.default_rng(0)
    data = tmp_path / "labelled.npz"
    np.savez(data, x=rng.random((40, 16, 16, 3), dtype=np.float32), y=np.arange(40) % 10)
    code, stdout, stderr = edgesep(bench_models["int8.tflite"], *FAST, "--data", data, "--json")
    assert code == 0, stderr
    r = json.loads(stdout)["results"][0]
    from edgesep.data import load_dataset

    y = load_dataset(str(data), input_shape=(16, 16, 3)).y_test  # bench scores the test split, as export does
    assert len(r["predictions"]) == len(y) > 0 and 0.0 <= r["accuracy"] <= 1.0
    assert r["accuracy"] == pytest.approx(np.mean(np.array(r["predictions"]) == y))
    code, stdout, stderr = edgesep(bench_models["float.tflite"], bench_models["float.onnx"], *FAST,
                                   "--data", "digits", "--json")
    assert code == 0, stderr
    a, b = json.loads(stdout)["results"]
    assert len(a["predictions"]) == len(b["predictions"]) > 100
    agree = np.mean(np.array(a["predictions"]) == np.array(b["predictions"]))
    assert agree > 0.95  # the same Keras model through TFLite and ONNX Runtime


@pytest.mark.parametrize("case", ["missing", "empty", "text", "suffix", "directory"])
def test_bad_model_files_fail_in_one_line(case, tmp_path):
    path = {"missing": tmp_path / "gone.tflite", "empty": tmp_path / "empty.tflite",
            "text": tmp_path / "readme.tflite", "suffix": tmp_path / "model.pb", "directory": tmp_path / "out"}[case]
    if case == "empty":
        path.write_bytes(b"")
    elif case in ("text", "suffix"):
        path.write_text("not a model at all\n")
    elif case == "directory":  # an export folder given instead of its models: the line names them
        path.mkdir()
        (path / "model_int8.tflite").write_text("x")
    code, _, stderr = edgesep(path, *FAST)
    needle = {"missing": "model file not found", "empty": "model file is empty", "text": "not a TFLite model",
              "suffix": "use .tflite or .onnx", "directory": "a folder, not a model file: give the models in it"}[case]
    assert_one_error_line(code, stderr, needle, *(["model_int8.tflite"] if case == "directory" else []))


def test_truncated_model_is_one_line_and_others_survive(bench_models, tmp_path):
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(bench_models["float.tflite"].read_bytes()[:300])
    code, _, stderr = edgesep(truncated, *FAST)
    assert_one_error_line(code, stderr, "truncated.tflite", "cannot load truncated.tflite as a TFLite model")
    code, stdout, stderr = edgesep(bench_models["prelu.tflite"], truncated, *FAST, "--json")
    assert code == 1
    good, bad = json.loads(stdout)["results"]
    assert good["error"] is None and len(good["samples_ms"]) >= 5 and bad["error"]
    assert "Traceback" not in stderr


@pytest.mark.parametrize("target, needle", [
    ("bogus://host", "valid forms: local, ssh://[user@]host[:port], adb, adb:SERIAL"),
    ("pi@raspberrypi", "valid forms: local, ssh://[user@]host[:port], adb, adb:SERIAL"),
    ("ssh://", "bad ssh target 'ssh://'; use ssh://[user@]host[:port]"),
    ("ssh://host/path", "use ssh://[user@]host[:port]"),
    ("ssh://host:99999", "use ssh://[user@]host[:port]"),
    ("ssh://-oProxyCommand=x", "use ssh://[user@]host[:port]"),
    ("ssh://pi@host?x=1", "use ssh://[user@]host[:port]"),
    ("adb:", "serial")])
def test_unknown_target_syntax(target, needle, bench_models):
    code, _, stderr = edgesep(bench_models["float.tflite"], "--device", target, *FAST)
    assert_one_error_line(code, stderr, needle)


def test_delegate_library_that_does_not_exist(bench_models):
    code, _, stderr = edgesep(bench_models["float.tflite"], "--delegate", "/nonexistent/libdelegate.so", *FAST)
    assert_one_error_line(code, stderr, "cannot load delegate library /nonexistent/libdelegate.so")


def test_edgetpu_delegate_without_runtime_is_one_line(bench_models):
    import shutil

    from edgesep.devices.coral import find_runtime

    if find_runtime():
        pytest.skip("libedgetpu is installed here")
    code, _, stderr = edgesep(bench_models["int8.tflite"], "--delegate", "edgetpu", *FAST)
    assert_one_error_line(code, stderr, "libedgetpu.so.1 not found", "libedgetpu1-std")
    assert shutil.which("edgetpu_compiler") or "compil" not in stderr  # runtime reported before compiling


def test_adb_only_options_are_usage_errors_elsewhere(bench_models):
    for flag in (["--cpu-mask", "f0"], ["--benchmark-binary", "/bin/true"], ["--op-profiling"]):
        code, _, stderr = edgesep(bench_models["float.tflite"], *flag, *FAST)
        assert code == 2 and "adb targets only" in stderr and flag[0] in stderr


def test_delegate_none(bench_models):
    code, stdout, stderr = edgesep(bench_models["float.tflite"], "--delegate", "none", *FAST, "--json")
    r = json.loads(stdout)["results"][0]
    assert code == 0 and r["delegate"] == "none" and r["fully_delegated"] is False


def test_bad_options_are_usage_errors(bench_models):
    code, _, stderr = edgesep(bench_models["float.tflite"], "--min-secs", "5", "--max-secs", "1")
    assert code == 2 and "min_secs" in stderr and "Traceback" not in stderr
    code, _, stderr = edgesep(bench_models["float.tflite"], "--ssh-config", "x")
    assert code == 2 and "ssh://" in stderr
    code, _, stderr = edgesep(bench_models["float.tflite"], "--delegate", "warp")
    assert code == 2 and "unknown delegate" in stderr


def test_runner_crash_is_isolated_per_model(bench_models, tmp_path):
    """A runner process that dies (a real SIGSEGV) loses only the model that killed it."""
    crashy = tmp_path / "crash-me.tflite"
    crashy.write_bytes(bench_models["float.tflite"].read_bytes())
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys\nif sys.argv[0].endswith('runner.py') and any('crash-me' in a for a in sys.argv):\n"
        "    import ctypes, faulthandler\n    faulthandler.enable()\n    ctypes.string_at(0)\n")
    env = dict(os.environ, PYTHONPATH=str(hook))
    code, stdout, stderr = edgesep(bench_models["int8.tflite"], crashy, *FAST, "--json", env=env)
    assert code == 1
    good, bad = json.loads(stdout)["results"]
    assert good["error"] is None and good["extra"]["isolated"] is True and len(good["samples_ms"]) >= 5
    assert "runner crashed on local (killed by SIGSEGV)" in bad["error"]
    assert "Segmentation fault" in bad["error"]  # the stderr tail
    code, _, stderr = edgesep(crashy, *FAST, env=env)
    assert_one_error_line(code, stderr, "runner crashed on local (killed by SIGSEGV)", "Segmentation fault")


def test_prepare_rejects_bad_files_before_running(tmp_path):
    device = parse_target("local")
    with pytest.raises(DeviceError, match="model file not found"):
        device.prepare([tmp_path / "nope.onnx"])
    with pytest.raises(DeviceError, match="nothing to run"):
        device.run(FAST_CONFIG)


def test_tflite_runtime_on_numpy1_device_python(bench_models, tflite_runtime_python):
    """The runner on a Pi-like Python: numpy<2 and tflite-runtime 2.14.0 only."""
    from edgesep.devices.local import LocalDevice

    device = LocalDevice(python=str(tflite_runtime_python))
    device.prepare([bench_models["float.tflite"], bench_models["int8.tflite"], bench_models["prelu.tflite"]])
    results = device.run(FAST_CONFIG)
    assert [r.error for r in results] == [None, None, None]
    assert {r.runtime for r in results} == {"tflite_runtime 2.14.0"}
    assert results[0].host["numpy"].startswith("1.")
    assert results[0].fully_delegated is True and results[2].fully_delegated is True
    # tflite-runtime 2.14's default XNNPACK delegate does not take quantized ops: the int8 graph runs on
    # the builtin kernels, and the harness says so.
    assert results[1].fully_delegated is False and results[1].extra["delegate_nodes"] == 0


def _hang_hook(tmp_path: Path) -> dict:
    """An environment whose runner never answers when a model named hang-me is in its argv (real sleep)."""
    hook = tmp_path / "hang-hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys\nif sys.argv[0].endswith('runner.py') and any('hang-me' in a for a in sys.argv):\n"
        "    import time\n    time.sleep(3600)\n")
    return dict(os.environ, PYTHONPATH=str(hook))


def test_watchdog_kills_a_runner_that_stops_answering(bench_models, tmp_path, monkeypatch):
    """warm-up + max-secs + grace without a sign of life: the runner is killed and the run ends in one line."""
    import time

    hung = tmp_path / "hang-me.tflite"
    hung.write_bytes(bench_models["float.tflite"].read_bytes())
    for key, value in _hang_hook(tmp_path).items():
        monkeypatch.setenv(key, value)
    device = parse_target("local")
    device.watchdog_grace_s = 1.0
    config = BenchConfig(runs=5, warmup=1, warmup_secs=0.2, min_secs=0.0, max_secs=0.5)
    device.prepare([hung])
    t0 = time.monotonic()
    with pytest.raises(DeviceError) as e:
        device.run(config)
    assert time.monotonic() - t0 < 1.7 + 20  # the limit, plus the 1 s polling, the kill and a loaded machine
    assert str(e.value) == ("local: the runner stopped answering: nothing from it for 1.7 s (warm-up 0.2 s + "
                            "max-secs 0.5 s + grace 1 s), so it was killed")
    device.cleanup()


def test_runner_watchdog_ends_a_runner_blocked_before_any_progress(bench_models, tmp_path):
    """The device-side backstop: --watchdog ends the process (SIGALRM) even while it blocks in a system call
    (here: opening a FIFO as the accuracy data, which waits for a writer forever)."""
    import time

    fifo = tmp_path / "data.npz"
    os.mkfifo(fifo)
    runner = Path(__file__).parents[1] / "edgesep" / "devices" / "runner.py"
    t0 = time.monotonic()
    proc = subprocess.run([sys.executable, str(runner), "--watchdog", "1", "--data", str(fifo), "--progress",
                           str(bench_models["float.tflite"])], capture_output=True, text=True, timeout=60)
    assert proc.returncode == -14 and time.monotonic() - t0 < 30  # SIGALRM


def test_memory_cells_of_the_bench_tables():
    from edgesep.report.tables import bench_markdown, format_memory

    own = {"baseline": 40.0, "loaded": 46.25, "peak": 47.5, "model": 6.25, "models_in_process": 1}
    assert format_memory(own) == "47.5 (+6.2)" and format_memory(dict(own, models_in_process=3)) == "47.5 (+6.2)*"
    assert format_memory(None) == "-" and format_memory({"peak": None, "model": None, "reason": "no /proc"}) == "-"
    assert format_memory({"peak": 12.0, "model": None, "models_in_process": 1}) == "12.0"
    md = bench_markdown([{"model": "a.tflite", "latency_ms": {"p50": 1.0}, "memory_mb": own}])
    assert "peak MB (+model)" in md and "47.5 (+6.2)" in md
    assert "peak MB" not in bench_markdown([{"model": "a.tflite", "latency_ms": {"p50": 1.0}}])
