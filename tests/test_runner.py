"""runner.py, the one file that runs on the device: run as a real script on tiny real models."""
from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesep.devices import runner as runner_mod
from edgesep.devices.harness import RUNNER_PATH

FAST = ["--runs", "5", "--warmup", "2", "--warmup-secs", "0", "--min-secs", "0", "--max-secs", "2"]
ALLOWED_IMPORTS = {"numpy", "ai_edge_litert", "tflite_runtime", "tensorflow", "onnxruntime"}


def run_runner(*args, env=None, python=sys.executable):
    proc = subprocess.run([python, str(RUNNER_PATH), *map(str, args)], capture_output=True, text=True, env=env,
                          timeout=120)
    doc = json.loads(proc.stdout.strip().splitlines()[-1]) if proc.stdout.strip() else None
    return proc, doc


def progress_events(stderr):
    prefix = runner_mod.PROGRESS_PREFIX
    return [json.loads(line[len(prefix):]) for line in stderr.splitlines() if line.startswith(prefix)]


def test_runner_is_self_contained_python39():
    source = RUNNER_PATH.read_text()
    tree = ast.parse(source, feature_version=(3, 9))
    roots = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            roots.update(a.name.split(".")[0] for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module:
            roots.add(node.module.split(".")[0])
        elif isinstance(node, ast.Call) and getattr(node.func, "id", None) == "__import__":
            roots.update(a.value.split(".")[0] for a in node.args if isinstance(a, ast.Constant))
    assert roots <= set(sys.stdlib_module_names) | ALLOWED_IMPORTS | {"__future__"}, roots
    assert "from __future__ import annotations" in source  # annotations stay strings on Python 3.9


def test_measures_every_model_interleaved(bench_models):
    models = [bench_models[n] for n in ("float.tflite", "int8.tflite", "prelu.tflite", "float.onnx")]
    proc, doc = run_runner(*FAST, "--progress", "--threads", "1", *models)
    assert proc.returncode == 0, proc.stderr
    import ai_edge_litert
    import onnxruntime

    assert doc["runtimes"] == {"tflite": f"ai_edge_litert {ai_edge_litert.__version__}",
                               "onnx": f"onnxruntime {onnxruntime.__version__}"}
    results = {Path(r["model"]).name: r for r in doc["results"]}
    for name, r in results.items():
        assert r["error"] is None, r
        assert len(r["samples_ms"]) >= 5 and all(v > 0 for v in r["samples_ms"])
        assert r["warmup_runs"] >= 2 and r["init_ms"] > 0 and r["first_ms"] > 0 and r["threads"] == 1
    assert results["float.tflite"]["delegate"] == "xnnpack" and results["float.tflite"]["fully_delegated"] is True
    assert results["int8.tflite"]["inputs"][0]["dtype"] == "int8" and results["int8.tflite"]["inputs"][0]["scale"] > 0
    assert {"PAD", "PRELU"} <= set(results["prelu.tflite"]["ops"])
    assert results["float.onnx"]["delegate"] in ("CPUExecutionProvider", "XnnpackExecutionProvider")
    host = doc["host"]
    assert host["cores"] >= 1 and host["cpu"] and host["python"] == ".".join(map(str, sys.version_info[:3]))
    assert "temp_c" in host and "governor" in host and len(host["loadavg_after"]) == 3
    assert doc["overhead"]["loop_us"] > 0 and doc["overhead"]["timer_us"] > 0
    events = progress_events(proc.stderr)
    assert {e["phase"] for e in events} >= {"load", "first", "steady"}
    assert all(e["model"] == str(models[e["index"]]) for e in events)


def test_round_robin_order():
    """Warm-up and steady state alternate between models (A B A B ...), each stopping on its own rule."""
    calls = []

    class Recorder:
        def __init__(self, name):
            self.name = name

        def invoke(self):
            calls.append(self.name)

    slots = [runner_mod.Slot(i, f"{n}.tflite") for i, n in enumerate("AB")]
    for slot, name in zip(slots, "AB"):
        slot.model = Recorder(name)

    class Cfg:
        runs, min_secs, max_secs = 4, 0.0, 10.0

    runner_mod._steady(slots, Cfg, runner_mod.Progress(False, ["A", "B"]))
    assert "".join(calls) == "ABABABAB"
    assert [len(s.entry["samples_ms"]) for s in slots] == [4, 4]


def test_min_and_max_secs_bound_the_steady_state(bench_models):
    model = bench_models["float.tflite"]
    proc, doc = run_runner("--runs", "1", "--warmup-secs", "0", "--min-secs", "0.3", "--max-secs", "5", model)
    samples = doc["results"][0]["samples_ms"]
    assert sum(samples) >= 300 and len(samples) > 1
    proc, doc = run_runner("--runs", "100000000", "--warmup-secs", "0", "--min-secs", "0", "--max-secs", "0.2", model)
    samples = doc["results"][0]["samples_ms"]
    # stops at the first run whose own inference time passes 0.2 s (no wall-clock bound: a loaded machine is fine)
    assert sum(samples) >= 200 and sum(samples[:-1]) < 200 and len(samples) < 100000000


def test_delegate_none_disables_xnnpack(bench_models):
    proc, doc = run_runner(*FAST, "--delegate", "none", bench_models["float.tflite"])
    r = doc["results"][0]
    assert r["error"] is None and r["delegate"] == "none"
    assert r["fully_delegated"] is False and r["delegate_nodes"] == 0
    assert "XNNPACK" not in proc.stderr


def test_missing_delegate_library_is_a_model_error(bench_models):
    proc, doc = run_runner(*FAST, "--delegate", "/nonexistent/libdelegate.so", bench_models["float.tflite"])
    assert proc.returncode == 0
    assert "cannot load delegate library /nonexistent/libdelegate.so" in doc["results"][0]["error"]


def test_bad_model_files_do_not_stop_the_others(bench_models, tmp_path):
    truncated = tmp_path / "truncated.tflite"
    truncated.write_bytes(bench_models["float.tflite"].read_bytes()[:200])
    text = tmp_path / "notes.onnx"
    text.write_text("this is not a model\n")
    proc, doc = run_runner(*FAST, truncated, bench_models["prelu.tflite"], text, tmp_path / "gone.tflite")
    assert proc.returncode == 0, proc.stderr
    errors = [r["error"] for r in doc["results"]]
    assert errors[0].startswith("cannot load truncated.tflite as a TFLite model")
    assert errors[1] is None and len(doc["results"][1]["samples_ms"]) >= 5
    assert errors[2].startswith("cannot load notes.onnx as an ONNX model")
    assert errors[3].startswith("model file not found")
    assert all("\n" not in e for e in errors if e)


def test_accuracy_quantizes_inputs_and_matches_the_interpreter(bench_models, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    rng = np.random.default_rng(5)
    x = rng.random((12, 16, 16, 3), dtype=np.float32)
    expected = {}
    for name in ("float.tflite", "int8.tflite"):
        interp = Interpreter(model_path=str(bench_models[name]))
        interp.allocate_tensors()
        inp, out = interp.get_input_details()[0], interp.get_output_details()[0]
        preds = []
        for sample in x:
            scale, zero = inp["quantization"]
            feed = sample if not scale else np.clip(np.round(sample / scale + zero), -128, 127).astype(np.int8)
            interp.set_tensor(inp["index"], feed[None])
            interp.invoke()
            preds.append(int(interp.get_tensor(out["index"]).argmax()))
        expected[name] = preds
    y = np.array(expected["float.tflite"])
    y[:3] = (y[:3] + 1) % 10  # three labels the float model gets wrong
    data = tmp_path / "data.npz"
    np.savez(data, x=x, y=y)
    proc, doc = run_runner(*FAST, "--progress", "--data", data, bench_models["float.tflite"],
                           bench_models["int8.tflite"], bench_models["float.onnx"])
    res = {Path(r["model"]).name: r for r in doc["results"]}
    assert res["float.tflite"]["predictions"] == expected["float.tflite"]
    assert res["float.tflite"]["accuracy"] == pytest.approx(9 / 12)
    assert res["int8.tflite"]["predictions"] == expected["int8.tflite"]
    assert res["int8.tflite"]["accuracy"] == pytest.approx(np.mean(np.array(expected["int8.tflite"]) == y))
    assert res["float.onnx"]["predictions"] == expected["float.tflite"]
    assert any(e["phase"] == "accuracy" and e["done"] == 12 for e in progress_events(proc.stderr))


def test_accuracy_picks_the_array_for_the_input_shape(bench_models, tmp_path):
    data = tmp_path / "data.npz"
    rng = np.random.default_rng(0)
    np.savez(data, x=rng.random((4, 8, 8, 1), dtype=np.float32),
             x_16x16x3=rng.random((4, 16, 16, 3), dtype=np.float32), y=np.arange(4))
    proc, doc = run_runner(*FAST, "--data", data, bench_models["float.tflite"])
    assert doc["results"][0]["error"] is None and len(doc["results"][0]["predictions"]) == 4
    np.savez(data, x=rng.random((4, 8, 8, 1), dtype=np.float32), y=np.arange(4))
    proc, doc = run_runner(*FAST, "--data", data, bench_models["float.tflite"])
    assert "data does not fit the model input [1, 16, 16, 3]" in doc["results"][0]["error"]


@pytest.mark.parametrize("labels, message", [
    ([0, 1, 2, 10], "labels must lie in [0, 10) for this model's 10 classes; 'y' holds 0 to 10"),
    ([0, -1, 2, 3], "labels must lie in [0, 10) for this model's 10 classes; 'y' holds -1 to 3"),
    ([0, 1, 2, 30_000_000], "labels must lie in [0, 10) for this model's 10 classes; 'y' holds 0 to 30000000"),
    ([0.5, 1, 2, 3], "labels must be whole class numbers; 'y' holds float64 values"),
])
def test_labels_are_checked_against_the_model_classes(bench_models, tmp_path, labels, message):
    """Out of range, negative, huge or fractional labels: one clear per-model error, never a silent 0.0."""
    data = tmp_path / "data.npz"
    np.savez(data, x=np.random.default_rng(0).random((4, 16, 16, 3), dtype=np.float32), y=np.array(labels))
    proc, doc = run_runner(*FAST, "--data", data, bench_models["float.tflite"], bench_models["float.onnx"])
    assert proc.returncode == 0
    for entry in doc["results"]:
        assert entry["error"] == message and entry["accuracy"] is None


def test_unreadable_data_is_fatal(bench_models, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_text("nope")
    proc, doc = run_runner(*FAST, "--json-errors", "--data", bad, bench_models["float.tflite"])
    assert proc.returncode == runner_mod.EXIT_FATAL
    assert proc.stderr.strip().splitlines()[-1].startswith("edgesep-runner: error: cannot read data file")
    assert doc["fatal"] is True and "cannot read data file" in doc["error"]


def test_no_interpreter_says_what_to_install(bench_models, tmp_path):
    """With the interpreter packages unimportable, the runner names the pip package in one line."""
    (tmp_path / "sitecustomize.py").write_text(
        "import sys\nsys.modules.update(dict.fromkeys(['ai_edge_litert', 'tflite_runtime', 'tensorflow']))\n")
    env = dict(__import__("os").environ, PYTHONPATH=str(tmp_path))
    proc, doc = run_runner(*FAST, "--json-errors", bench_models["float.tflite"], env=env)
    assert proc.returncode == runner_mod.EXIT_MISSING_PACKAGE
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no TFLite interpreter" in lines[0] and "pip install ai-edge-litert" in lines[0]
    assert doc["fatal"] and "pip install" in doc["error"]
    proc, doc = run_runner(*FAST, bench_models["float.onnx"], env=env)  # .onnx alone needs no TFLite
    assert proc.returncode == 0 and doc["results"][0]["error"] is None


def test_missing_numpy_says_what_to_install(bench_models):
    proc = subprocess.run([sys.executable, "-S", "-I", str(RUNNER_PATH), *FAST, str(bench_models["float.tflite"])],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == runner_mod.EXIT_MISSING_PACKAGE
    assert proc.stderr.strip() == (f"edgesep-runner: error: numpy is not installed for {sys.executable} "
                                   f"(Python {'.'.join(map(str, sys.version_info[:3]))}): pip install numpy")


def test_describe(bench_models):
    proc, doc = run_runner("--describe", bench_models["int8.tflite"], bench_models["float.onnx"])
    a, b = doc["results"]
    assert a["inputs"][0]["shape"] == [1, 16, 16, 3] and a["inputs"][0]["dtype"] == "int8"
    assert b["inputs"][0]["shape"] == [1, 16, 16, 3] and b["inputs"][0]["dtype"] == "float32"
    assert "samples_ms" not in a


def test_quantize_input_rounds_and_clips():
    info = {"dtype": "uint8", "scale": 0.5, "zero_point": 10}
    q = runner_mod.quantize_input(np.array([0.0, 1.0, 1.24, 1000.0, -100.0]), info)
    assert q.dtype == np.uint8 and q.tolist() == [10, 12, 12, 255, 0]


def test_bad_arguments_exit_2(bench_models):
    proc, _ = run_runner("--min-secs", "5", "--max-secs", "1", bench_models["float.tflite"])
    assert proc.returncode == 2
    proc, _ = run_runner("--delegate", "warp-drive", bench_models["float.tflite"])
    assert proc.returncode == 2 and "unknown delegate" in proc.stderr
    for value in ("inf", "nan"):
        proc, _ = run_runner("--max-secs", value, bench_models["float.tflite"])
        assert proc.returncode == 2 and "finite" in proc.stderr and "Traceback" not in proc.stderr


def test_run_config_is_the_one_bench_configuration():
    """BenchConfig is the runner's RunConfig; its argv round-trips through the runner's parser; the CLI's
    defaults are its defaults."""
    import click

    from edgesep.cli import cli
    from edgesep.devices import BenchConfig
    from edgesep.devices.harness import runner_args

    assert BenchConfig is runner_mod.RunConfig
    config = BenchConfig(threads=2, runs=7, warmup=3, warmup_secs=0.1, min_secs=0.2, max_secs=0.30000000000000004,
                         delegate="edgetpu", delegate_options={"device": "usb:0", "a": "b=c"}, seed=5)
    assert config.delegate_options == (("a", "b=c"), ("device", "usb:0"))
    parsed, args = runner_mod.parse_args(runner_args(config, ["m.tflite"], "/dev/data.npz"))
    assert parsed == BenchConfig.from_dict({**config.to_dict(), "data": "/dev/data.npz"})
    assert args.models == ["m.tflite"] and args.progress and args.json_errors
    assert BenchConfig.from_dict(config.to_dict()) == config
    for bad in ({"max_secs": float("inf")}, {"min_secs": float("nan")}, {"warmup_secs": float("inf")},
                {"threads": 0}, {"runs": 1.5}, {"min_secs": 2.0, "max_secs": 1.0}, {"delegate": "warp"}):
        with pytest.raises(ValueError):
            BenchConfig(**bad)
    defaults = BenchConfig()
    for command in ("bench", "compare"):
        params = {p.name: p.default for p in cli.commands[command].params if isinstance(p, click.Option)}
        for name in ("runs", "min_secs", "max_secs", "warmup_secs"):
            assert params[name] == getattr(defaults, name), (command, name)
    bench_params = {p.name: p.default for p in cli.commands["bench"].params}
    assert (bench_params["warmup"], bench_params["delegate"], bench_params["seed"]) == (
        defaults.warmup, defaults.delegate, defaults.seed)


def test_memory_without_proc_is_null_with_the_reason(monkeypatch):
    """Where /proc/self/status is missing (macOS, some sandboxes) only the process peak (ru_maxrss) is known."""
    probe = runner_mod.MemoryProbe()
    assert probe.source == "/proc/self/status" and probe.rss() > 1 and probe.peak() >= probe.rss()
    monkeypatch.setattr(runner_mod, "PROC_STATUS", "/nonexistent/status")
    probe = runner_mod.MemoryProbe()
    assert probe.rss() is None and probe.peak() > 1 and probe.source == "ru_maxrss"
    probe.reset_peak()
    entry = runner_mod.memory_entry(probe.rss(), probe.rss(), probe.peak(), probe, 1)
    assert entry["baseline"] is None and entry["model"] is None and entry["peak"] > 1
    assert entry["peak_scope"] == "process" and "only the process peak (ru_maxrss)" in entry["reason"]
