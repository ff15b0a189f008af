"""One conformance suite that every Device implementation passes (ONNX backend style).

Each device runs the same tiny models (float and int8 .tflite, .onnx where the device has onnxruntime) with
the same accuracy set, and must give the same kind of result: the DESIGN.md bench fields, every sample,
statistics that agree with those samples, the configured thread count, and predictions that agree with the
host's own interpreter, and resident memory per model. What may differ between devices lives in one table,
``TOLERANCES``.
"""
from __future__ import annotations

import dataclasses
import statistics
import sys
from pathlib import Path

import numpy as np
import pytest

from edgesep.devices import BenchConfig, parse_target

DESIGN_KEYS = {"model", "device", "runtime", "threads", "delegate", "init_ms", "first_ms", "latency_ms",
               "samples_ms", "accuracy", "host"}
CONFIG = BenchConfig(threads=1, runs=6, warmup=1, warmup_secs=0.0, min_secs=0.0, max_secs=5.0)
SAMPLES = 48


@dataclasses.dataclass(frozen=True)
class Tolerance:
    """What one device may differ in: its runtime package, whether it runs .onnx, prediction agreement."""

    runtime: str
    onnx: bool
    min_agreement: dict  # model name -> fraction of predictions equal to the host's
    emulated: bool = False  # host.emulated the runner must report


TOLERANCES = {
    # same ai-edge-litert as the host: identical predictions
    "local": Tolerance("ai_edge_litert", True, {"float.tflite": 1.0, "int8.tflite": 1.0, "float.onnx": 1.0}),
    "ssh-litert": Tolerance("ai_edge_litert", False, {"float.tflite": 1.0, "int8.tflite": 1.0}),
    # this very Python over ssh: ONNX Runtime too
    "ssh-host-python": Tolerance("ai_edge_litert", True, {"float.tflite": 1.0, "int8.tflite": 1.0,
                                                         "float.onnx": 1.0}),
    # TFLite 2.14 kernels on numpy 1: float identical up to argmax ties, int8 may round a few logits apart
    "ssh-tflite-runtime": Tolerance("tflite_runtime", False, {"float.tflite": 0.98, "int8.tflite": 0.9}),
    # the emulated phone runs commands on this machine, so its python3 is the host's
    "adb-python": Tolerance("ai_edge_litert", True, {"float.tflite": 1.0, "int8.tflite": 1.0, "float.onnx": 1.0}),
    # the emulated aarch64 Pi (scripts/emulated_pi.py): ARM kernels of the same runtimes, under qemu-user
    "pi64-litert": Tolerance("ai_edge_litert", False, {"float.tflite": 1.0, "int8.tflite": 1.0}, emulated=True),
    "pi64-tflite-runtime": Tolerance("tflite_runtime", False, {"float.tflite": 0.98, "int8.tflite": 0.9},
                                     emulated=True),
}


@pytest.fixture(scope="module")
def accuracy_set(tmp_path_factory, bench_models):
    rng = np.random.default_rng(7)
    x = rng.random((SAMPLES, 16, 16, 3), dtype=np.float32)
    y = rng.integers(0, 10, SAMPLES)
    path = tmp_path_factory.mktemp("conformance") / "data.npz"
    np.savez(path, x=x, y=y)
    return path, x


def _host_predictions(model: Path, x: np.ndarray) -> np.ndarray:
    from edgesep.converters.verify import predict_onnx, predict_tflite

    predict = predict_onnx if model.suffix == ".onnx" else predict_tflite
    return np.argmax(predict(model, x), axis=-1)


@pytest.fixture
def device(request):
    """A Device for one row of TOLERANCES (the fixtures behind it start sshd, device venvs or a phone)."""
    name = request.param
    if name == "local":
        return parse_target("local")
    if name.startswith("ssh-"):
        sshd = request.getfixturevalue("sshd")
        python = (sys.executable if name == "ssh-host-python" else
                  request.getfixturevalue("litert_python" if name == "ssh-litert" else "tflite_runtime_python"))
        return parse_target(sshd.target, ssh_config=str(sshd.config), remote_python=str(python))
    if name.startswith("pi64-"):
        pi = request.getfixturevalue("pi64")
        runtime = "ai-edge-litert" if name == "pi64-litert" else "tflite-runtime"
        return parse_target(pi["target"], ssh_config=pi["ssh_config"], remote_python=pi["pythons"][runtime])
    server, make_phone = request.getfixturevalue("adb_server"), request.getfixturevalue("make_phone")
    phone = make_phone()
    return parse_target(f"adb:{phone.serial}", adb_server_port=server.port, runner="python")


DEVICE_MARKS = {"local": [], "ssh-litert": [pytest.mark.ssh], "ssh-tflite-runtime": [pytest.mark.ssh],
                "ssh-host-python": [pytest.mark.ssh],
                "adb-python": [pytest.mark.adb], "pi64-litert": [pytest.mark.pi64],
                "pi64-tflite-runtime": [pytest.mark.pi64]}


@pytest.mark.parametrize("device", [pytest.param(n, marks=DEVICE_MARKS[n], id=n) for n in TOLERANCES],
                         indirect=True)
def test_device_conformance(device, request, bench_models, accuracy_set):
    tol = TOLERANCES[request.node.callspec.id]
    data, x = accuracy_set
    names = [n for n in tol.min_agreement if n.endswith(".tflite") or tol.onnx]
    models = [bench_models[n] for n in names]
    config = dataclasses.replace(CONFIG, data=str(data))
    try:
        device.prepare(models, data)
        results = device.run(config)
    finally:
        device.cleanup()
    assert [Path(r.model).name for r in results] == names  # one result per model, in order
    for name, model, r in zip(names, models, results):
        d = r.to_dict()
        assert r.error is None, (name, r.error)
        assert DESIGN_KEYS <= set(d), name
        expected_runtime = "onnxruntime" if name.endswith(".onnx") else tol.runtime
        assert r.runtime.startswith(expected_runtime), (name, r.runtime)
        assert r.threads == 1 and r.delegate and r.init_ms > 0 and r.first_ms > 0
        samples = r.samples_ms
        assert len(samples) >= CONFIG.runs and min(samples) > 0
        lat = r.latency_ms
        assert lat["p50"] == pytest.approx(statistics.median(samples), rel=1e-9)
        assert lat["min"] == pytest.approx(min(samples)) and lat["mean"] == pytest.approx(statistics.fmean(samples))
        lo, hi = lat["ci95_p50"]
        assert lo <= lat["p50"] <= hi and lat["p50"] <= lat["p90"] <= lat["p99"]
        assert r.host.get("cpu"), "host facts name the CPU"
        assert r.host.get("emulated") is tol.emulated, r.host
        agreement = float(np.mean(np.asarray(r.predictions) == _host_predictions(model, x)))
        assert agreement >= tol.min_agreement[name], (name, agreement)
        assert r.accuracy == pytest.approx(float(np.mean(np.asarray(r.predictions) == np.load(data)["y"])))
        _check_memory(r.memory_mb, len(models), name, tol.emulated)


def _check_memory(mem: dict, models_in_process: int, name: str, emulated: bool = False) -> None:
    """Every device reports resident memory (MB) per model, consistently (these devices all have /proc).

    Under qemu-user the resident memory is the emulator's (guest memory plus its translated-code cache, which
    it also frees), so loading a tiny model need not raise it there.
    """
    assert {"baseline", "loaded", "peak", "model"} <= set(mem), name
    assert mem["reason"] is None and mem["source"] == "/proc/self/status", (name, mem)
    if emulated:
        assert 5 < mem["baseline"] < 4096 and 5 < mem["loaded"] < 4096, (name, mem)
    else:
        assert 5 < mem["baseline"] < mem["loaded"] < 4096, (name, mem)  # a Python with numpy and a runtime
    assert mem["model"] == pytest.approx(mem["loaded"] - mem["baseline"], abs=2e-3), name
    assert mem["peak"] >= mem["baseline"] and mem["peak_startup"] >= mem["loaded"] - 1e-3, (name, mem)
    assert mem["models_in_process"] == models_in_process and mem["peak_scope"] in ("steady", "process")


def test_device_schemes_are_a_registry():
    """A new kind of device is one registration; parse_target tries the schemes in order, errors list them."""
    import pytest as _pytest

    from edgesep.devices import Scheme, list_schemes, parse_target, register_scheme
    from edgesep.devices import _SCHEMES  # noqa: PLC2701 - the test removes what it registered

    assert list_schemes()[:3] == ["local", "ssh", "adb"]
    register_scheme(Scheme("loop", ("loop://NAME",), lambda t: {} if t.startswith("loop://") else None,
                           "edgesep.devices.local", "LocalDevice"))
    try:
        assert type(parse_target(" loop://x ")).__name__ == "LocalDevice"
        with _pytest.raises(Exception, match=r"unknown device target 'telnet://pi'; valid forms: .*loop://NAME"):
            parse_target("telnet://pi")
        with _pytest.raises(ValueError, match="already registered"):
            register_scheme(Scheme("loop", (), lambda t: None, "", ""))
    finally:
        _SCHEMES.pop("loop")
