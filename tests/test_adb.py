"""The adb device through Debian's real adb client against the emulated phone of tests/adbd_emu.py.

Every test here talks to a private adb server (its own port and HOME, killed at the end); the default
5037 server is never touched.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).parent))
from adbd_emu import AdbdEmulator  # noqa: E402

from edgesep.cli import main  # noqa: E402
from edgesep.devices import parse_target  # noqa: E402
from edgesep.devices.adb import (AdbDevice, AttachedDevice, choose_device, parse_devices_output,  # noqa: E402
                                 parse_temps, throttle_warning)
from edgesep.devices.base import BenchConfig, DeviceError  # noqa: E402

DATA = Path(__file__).parent / "data"
STANDIN = DATA / "benchmark_model_standin.sh"
FAST = BenchConfig(runs=7, warmup=2, warmup_secs=0.0, min_secs=0.0, max_secs=5.0, threads=2)


# ------------------------------------------------------------------------------------------------
# pure parsing (no adb needed)

def test_parse_devices_output_states_and_fields():
    text = ("List of devices attached\n"
            "R58M123ABC             device usb:1-1 product:a51nsxx model:SM_A515F device:a51 transport_id:3\n"
            "127.0.0.1:5555         unauthorized transport_id:4\n"
            "0123456789ABCDEF       no permissions (missing udev rules? user is in the plugdev group); "
            "see [http://developer.android.com/tools/device.html] usb:1-2 transport_id:5\n"
            "emulator-5554\toffline\n\n")
    devs = parse_devices_output(text)
    assert [d.serial for d in devs] == ["R58M123ABC", "127.0.0.1:5555", "0123456789ABCDEF", "emulator-5554"]
    assert devs[0].state == "device" and devs[0].model == "SM A515F" and devs[0].transport_id == "3"
    assert devs[1].state == "unauthorized" and devs[3].state == "offline"
    assert devs[2].state.startswith("no permissions (missing udev rules?")


def test_choose_device_errors_name_the_serials():
    a, b = AttachedDevice("AAA", "device"), AttachedDevice("BBB", "device")
    with pytest.raises(DeviceError, match=r"2 adb devices attached \(AAA \(device\), BBB \(device\)\); pick one"):
        choose_device([a, b], None)
    with pytest.raises(DeviceError, match="no adb devices attached"):
        choose_device([], None)
    with pytest.raises(DeviceError, match=r"adb device 'NOPE' not found; attached: AAA \(device\), BBB"):
        choose_device([a, b], "NOPE")
    assert choose_device([a, b], "BBB") is b
    with pytest.raises(DeviceError, match="is unauthorized: unlock the phone and accept"):
        choose_device([AttachedDevice("AAA", "unauthorized")], None)
    with pytest.raises(DeviceError, match="is no permissions.*udev"):
        choose_device([AttachedDevice("AAA", "no permissions (x); see [y]")], None)


def test_temps_and_throttle_warning():
    t = parse_temps("cpu-0-0 41000\nbattery 30\nbogus -273000\nskin x\ncpu-0-0 43000\n")
    assert t == {"cpu-0-0": 41.0, "battery": 30.0, "cpu-0-0#2": 43.0}
    assert throttle_warning({"cpu": 40.0}, {"cpu": 49.9}) is None
    assert "rose 12.0 °C" in throttle_warning({"cpu": 40.0, "bat": 30.0}, {"cpu": 52.0, "bat": 31.0})
    assert "ended at 85.0 °C" in throttle_warning({}, {"cpu": 85.0})


def test_bad_options():
    with pytest.raises(DeviceError, match="not a non-zero hex mask"):
        AdbDevice(cpu_mask="zz")
    with pytest.raises(DeviceError, match="benchmark binary .* not found"):
        AdbDevice(benchmark_binary="/nonexistent/benchmark_model")
    with pytest.raises(DeviceError, match="adb devices take no option ssh_config"):
        parse_target("adb", ssh_config="x")


# ------------------------------------------------------------------------------------------------
# the real adb client against the emulated phone

def _device(adb_server, target: str = "adb", **options) -> AdbDevice:
    return parse_target(target, adb_server_port=adb_server.port, **options)


def _measure(dev: AdbDevice, models: list[Path], config: BenchConfig = FAST) -> list:
    """prepare + run, with the device cleaned up whatever happens."""
    with dev:
        dev.prepare(models)
        return dev.run(config)


def _tmp_dirs(emu: AdbdEmulator) -> list[Path]:
    return sorted(emu.paths.host_path("/data/local/tmp").glob("edgesep.*"))


@pytest.fixture(scope="module")
def tiny_tflite(tmp_path_factory) -> Path:
    """A small file standing for a .tflite for the benchmark_model stand-in (which only reads its size)."""
    path = tmp_path_factory.mktemp("models") / "model_int8.tflite"
    path.write_bytes(b"\x1c\x00\x00\x00TFL3" + bytes(range(256)) * 40)  # header only: the stand-in reads no further
    return path


@pytest.mark.adb
def test_devices_cli_lists_the_phone(adb_server, make_phone, monkeypatch, capsys):
    emu = make_phone(props={"ro.product.model": "SM-A515F", "ro.build.version.release": "13"})
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(adb_server.port))
    assert main(["devices"]) == 0
    out = capsys.readouterr().out
    assert emu.serial in out and "SM-A515F" in out and "arm64-v8a" in out and "13" in out
    assert main(["devices", "--json", "--adb-server-port", str(adb_server.port)]) == 0
    (dev,) = json.loads(capsys.readouterr().out)
    assert dev == {"serial": emu.serial, "state": "device", "model": "SM-A515F", "abi": "arm64-v8a",
                   "android": "13", "product": "panther", "transport_id": dev["transport_id"]}


@pytest.mark.adb
def test_devices_cli_none_attached_and_adb_missing(adb_server, monkeypatch, capsys, tmp_path):
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(adb_server.port))
    assert main(["devices"]) == 0
    assert capsys.readouterr().out.strip().startswith("no adb devices attached")
    monkeypatch.setenv("PATH", str(tmp_path))
    assert main(["devices"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("edgesep: error: adb not found: install Debian's adb package") and "\n" not in err


@pytest.mark.adb
def test_benchmark_model_runner_push_taskset_pull_cleanup(adb_server, make_phone, tiny_tflite):
    emu = make_phone(python=False)
    dev = _device(adb_server, benchmark_binary=str(STANDIN), cpu_mask="1")
    dev.prepare([tiny_tflite])
    (private,) = _tmp_dirs(emu)
    assert stat.S_IMODE(private.stat().st_mode) == 0o700
    assert (private / "model_int8.tflite").read_bytes() == tiny_tflite.read_bytes()
    assert os.access(private / "benchmark_model", os.X_OK)
    (r,) = dev.run(FAST)
    dev.cleanup()
    assert _tmp_dirs(emu) == []
    dev.cleanup()  # safe twice

    assert r.error is None and r.device == f"adb:{emu.serial}" and r.extra["runner"] == "benchmark_model"
    assert r.latency_ms["n"] == 7 and r.samples_ms is None and "no per-run times" in r.extra["notes"][0]
    assert r.latency_ms["p50"] == pytest.approx(0.260) and r.latency_ms["mean"] == pytest.approx(0.259143)
    assert r.init_ms == pytest.approx(3.217) and r.first_ms == pytest.approx(1.204)
    assert r.fully_delegated is True  # the stand-in applied XNNPACK to the whole graph
    mem, printed = r.memory_mb, r.extra["benchmark_model"]["memory_mb"]  # the tool's lines, mapped
    assert mem["source"] == "benchmark_model" and mem["reason"] is None and mem["models_in_process"] == 1
    assert mem["peak"] == printed["peak"] > 0 and mem["model"] == printed["init"]
    assert mem["baseline"] == pytest.approx(printed["peak"] - printed["overall"], abs=1e-3)
    assert mem["loaded"] == pytest.approx(mem["baseline"] + printed["init"], abs=1e-3)
    params = r.extra["benchmark_model"]["params"]
    assert params["Num threads"] == "2" and params["Min num runs"] == "7" and params["Min warmup runs"] == "2"
    # (the emulator maps device paths in commands and their output, not inside files the tool writes)
    assert "/data/local/tmp/edgesep." in params["Graph"] and params["Graph"].endswith("/model_int8.tflite")
    assert r.extra["command"].startswith("/data/local/tmp/edgesep.")
    trace = (emu.paths.host_path("/data/local/tmp") / "standin_trace.txt").read_text()
    assert "Cpus_allowed_list:\t0\n" in trace  # taskset 1 pinned it to CPU 0
    assert "--use_xnnpack=true" in trace and "--num_runs=7" in trace and "--warmup_runs=2" in trace
    h = r.host
    assert (h["model"], h["abi"], h["android"], h["sdk"]) == ("Pixel 7", "arm64-v8a", "14", "34")
    assert h["cpu_max_khz"] == [1800000] * 4 + [2850000] * 4 and h["serialno"] == "EMU0001"
    assert h["temps_before"] == {"cpu-0-0": 41.0, "battery": 30.0} and h["temp_c"] == 41.0
    assert "warnings" not in r.extra
    services = " ".join(emu.services_opened)
    assert "sync:" in services and "shell,v2," in services  # real push/pull and shell protocol v2


@pytest.mark.adb
def test_gpu_delegate_op_profiling_and_binary_already_on_device(adb_server, make_phone, tiny_tflite):
    emu = make_phone(python=False)
    on_device = emu.paths.host_path("/data/local/tmp") / "benchmark_model"
    shutil.copy(STANDIN, on_device)
    on_device.chmod(0o755)
    dev = _device(adb_server, op_profiling=True)
    (r,) = _measure(dev, [tiny_tflite],
                    BenchConfig(runs=5, warmup=1, warmup_secs=0, min_secs=0, delegate="gpu"))
    assert r.error is None and dev.chosen_runner == "benchmark_model"
    assert r.extra["command"].startswith("/data/local/tmp/benchmark_model --graph=")
    report = r.extra["benchmark_model"]
    assert report["params"]["Use gpu"] == "1" and r.fully_delegated is False
    assert report["delegates"][0]["delegated_nodes"] == 6 and report["delegates"][0]["total_nodes"] == 8
    assert [row["node_type"] for row in report["op_profile"]] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D", "MEAN"]
    assert on_device.exists() and _tmp_dirs(emu) == []  # cleanup removed only edgesep's own folder


@pytest.mark.adb
def test_thermal_rise_warns_about_throttling(adb_server, make_phone, tiny_tflite, tmp_path):
    emu = make_phone(python=False)
    heater = tmp_path / "hot_benchmark_model"
    heater.write_text(f"#!/bin/sh\necho 63500 > {emu.thermal_file(0)}\nexec sh {STANDIN} \"$@\"\n")
    dev = _device(adb_server, benchmark_binary=str(heater))
    (r,) = _measure(dev, [tiny_tflite])
    assert r.error is None and r.host["temp_c_before"] == 41.0 and r.host["temp_c"] == 63.5
    assert r.extra["warnings"] == ["temperature rose 22.5 °C during the run (cpu-0-0: 41.0 -> 63.5 °C); "
                                   "the phone may have throttled its clocks: let it cool and rerun"]


@pytest.mark.adb
def test_benchmark_model_failure_is_a_per_model_error(adb_server, make_phone, tiny_tflite, tmp_path):
    emu = make_phone(python=False)
    broken = tmp_path / "broken_benchmark_model"
    broken.write_text(f"#!/bin/sh\nexec sh {STANDIN} --graph=/data/local/tmp/missing.tflite\n")
    dev = _device(adb_server, benchmark_binary=str(broken))
    (r,) = _measure(dev, [tiny_tflite])
    assert r.error == "benchmark_model failed (exit 1): Benchmarking failed."
    assert "Failed to mmap model /data/local/tmp/missing.tflite" in r.extra["benchmark_model"]["errors"]
    assert r.latency_ms is None and _tmp_dirs(emu) == []


@pytest.mark.adb
def test_benchmark_binary_for_another_abi(adb_server, make_phone, tiny_tflite, tmp_path):
    emu = make_phone(python=False, props={"ro.product.cpu.abi": "armeabi-v7a"})
    elf = tmp_path / "sparc64_benchmark_model"
    # a truncated SPARC ELF header: no phone runs it. The test host answers one of two ways, both real: the
    # kernel refuses it (ENOEXEC: the shell's exit 126, "Exec format error"), or, where Debian's qemu-user-static
    # + binfmt-support registered a sparc64 handler, qemu takes it and refuses it ("Invalid ELF image", exit 255)
    elf.write_bytes(b"\x7fELF\x02\x02\x01" + bytes(9) + b"\x00\x02\x00\x2b" + bytes(200))
    dev = _device(adb_server, benchmark_binary=str(elf))
    (r,) = _measure(dev, [tiny_tflite])
    assert re.match(r"benchmark_model failed \(exit (126|255)\): (/data/local/tmp/edgesep\.|.*sparc)", r.error), r.error
    assert r.error.endswith("is it built for armeabi-v7a?"), r.error
    assert "Exec format error" in r.error or "Invalid ELF image" in r.error, r.error
    assert "\n" not in r.error
    assert r.latency_ms is None and _tmp_dirs(emu) == []


@pytest.mark.adb
def test_phone_python_is_this_interpreter_with_its_environment(adb_server, make_phone):
    """The Termux-like phone's python3 runs this very interpreter with its virtualenv (a symlink to a venv's
    python would lose the venv, and with it the runtimes, when the suite runs inside a fresh venv)."""
    emu = make_phone(python=True)
    proc = adb_server.adb("-s", emu.serial, "shell", "python3 -c 'import sys; print(sys.prefix)'")
    assert proc.stdout.strip() == sys.prefix


@pytest.mark.adb
def test_python_runner_end_to_end(adb_server, make_phone, bench_models):
    models = bench_models
    emu = make_phone(python=True)
    dev = _device(adb_server, cpu_mask="1")
    config = BenchConfig(runs=20, warmup=2, warmup_secs=0, min_secs=0, threads=1)
    results = _measure(dev, [models["int8.tflite"], models["float.onnx"]], config)
    assert dev.chosen_runner == "python" and _tmp_dirs(emu) == []
    for r, name in zip(results, ("int8.tflite", "float.onnx")):
        assert r.error is None and Path(r.model).name == name and r.extra["runner"] == "python"
        assert len(r.samples_ms) >= 20 and all(s > 0 for s in r.samples_ms)
        assert r.latency_ms["min"] <= r.latency_ms["p50"] <= r.latency_ms["max"]
        assert r.latency_ms["ci95_p50"][0] <= r.latency_ms["p50"] <= r.latency_ms["ci95_p50"][1]
        assert r.host["model"] == "Pixel 7" and r.host["runner"] == "python"
    assert results[0].runtime.startswith(("ai_edge_litert", "tflite_runtime", "tensorflow"))


@pytest.mark.adb
def test_target_errors_are_one_line(adb_server, make_phone, tiny_tflite):
    with pytest.raises(DeviceError, match="no adb devices attached"):
        _device(adb_server).prepare([tiny_tflite])
    one = make_phone()
    with pytest.raises(DeviceError, match=rf"^adb device 'NOPE' not found; attached: {one.serial} \(device\)$"):
        _device(adb_server, "adb:NOPE").prepare([tiny_tflite])
    two = make_phone()
    with pytest.raises(DeviceError, match=rf"2 adb devices attached \(.*{one.port}.*{two.port}|"
                                          rf"2 adb devices attached \(.*{two.port}.*{one.port}"):
        _device(adb_server).prepare([tiny_tflite])


@pytest.mark.adb
def test_no_runner_on_the_phone(adb_server, make_phone, tiny_tflite):
    bare = make_phone(python=False)
    with pytest.raises(DeviceError, match=rf"^no runner on adb device {bare.serial}: it has no python3 and no "
                                          r"benchmark_model .*pass --benchmark-binary PATH"):
        _device(adb_server).prepare([tiny_tflite])
    assert _tmp_dirs(bare) == []


@pytest.mark.adb
def test_unauthorized_and_offline_phones(adb_server, make_phone, tiny_tflite):
    locked = make_phone(mode="unauthorized")
    with pytest.raises(DeviceError, match=rf"adb device {locked.serial} is unauthorized: unlock the phone"):
        _device(adb_server, f"adb:{locked.serial}").prepare([tiny_tflite])
    silent = make_phone(connect=False, mode="offline")
    connect = subprocess.Popen(["adb", "-P", str(adb_server.port), "connect", silent.serial], env=adb_server.env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        adb_server.wait_state(silent.serial, "offline")
        with pytest.raises(DeviceError, match=rf"adb device {silent.serial} is offline: reconnect the cable"):
            _device(adb_server, f"adb:{silent.serial}").prepare([tiny_tflite])
    finally:
        connect.kill()
        connect.wait()


@pytest.mark.adb
def test_disconnect_mid_run_and_cleanup_after_failed_prepare(adb_server, make_phone, tiny_tflite, tmp_path):
    emu = make_phone(python=True)
    emu.full_disk_on = "digits.npz"
    data = tmp_path / "digits.npz"
    data.write_bytes(b"PK\x03\x04" + bytes(100))
    dev = _device(adb_server)
    with pytest.raises(DeviceError, match=r"^adb push digits.npz to .* failed: .*No space left on device"):
        dev.prepare([tiny_tflite], data=data)
    assert _tmp_dirs(emu) == []  # the half-filled folder was removed

    dev = _device(adb_server, benchmark_binary=str(STANDIN))
    dev.prepare([tiny_tflite])
    emu.disconnect_on = "benchmark_model --graph="
    with pytest.raises(DeviceError) as lost:
        dev.run(BenchConfig(runs=5, warmup=1, warmup_secs=0, min_secs=2.0))
    assert str(lost.value).startswith(f"lost adb device {emu.serial} during the command (adb now says: ")
    with pytest.raises(DeviceError, match=f"lost adb device {emu.serial}"):
        dev.cleanup()  # the folder cannot be removed from a phone that is gone: said, not hidden
    dev.cleanup()  # and only once


@pytest.mark.adb
def test_python_runner_disconnect_is_one_line(adb_server, make_phone, bench_models):
    emu = make_phone(python=True)
    dev = _device(adb_server)
    dev.prepare([bench_models["int8.tflite"]])
    emu.disconnect_on = "runner.py"
    with pytest.raises(DeviceError) as lost:
        dev.run(BenchConfig(runs=10**6, warmup=1, warmup_secs=0, min_secs=3.0, max_secs=5.0))
    assert str(lost.value).startswith(f"lost adb device {emu.serial} during the command (adb now says: ")


@pytest.mark.adb
def test_bench_cli_unknown_serial_is_one_line(adb_server, make_phone, tiny_tflite, monkeypatch, capsys):
    one = make_phone()
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(adb_server.port))
    assert main(["bench", str(tiny_tflite), "--device", "adb:NOPE"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == f"edgesep: error: adb device 'NOPE' not found; attached: {one.serial} (device)"


@pytest.mark.adb
def test_bench_cli_maps_adb_options_to_benchmark_model(adb_server, make_phone, tiny_tflite, monkeypatch, capsys):
    emu = make_phone(python=False)
    monkeypatch.setenv("ANDROID_ADB_SERVER_PORT", str(adb_server.port))
    code = main(["bench", str(tiny_tflite), "--device", f"adb:{emu.serial}", "--benchmark-binary", str(STANDIN),
                 "--cpu-mask", "1", "--op-profiling", "--threads", "2", "--runs", "6", "--warmup", "1",
                 "--min-secs", "0", "--json"])
    assert code == 0, capsys.readouterr().err
    (r,) = json.loads(capsys.readouterr().out)["results"]
    assert r["model"] == str(tiny_tflite) and r["extra"]["runner"] == "benchmark_model"
    assert r["samples_ms"] is None and r["latency_ms"]["n"] == 6
    trace = (emu.paths.host_path("/data/local/tmp") / "standin_trace.txt").read_text()
    assert "Cpus_allowed_list:\t0\n" in trace and "--enable_op_profiling=true" in trace
    assert "--num_threads=2" in trace
    assert _tmp_dirs(emu) == []


@pytest.mark.adb
def test_an_adb_server_port_held_by_something_else_is_named_in_the_timeout(tmp_path, monkeypatch):
    """A port where something that is not an adb server listens (accepts, never answers): the real adb client
    waits; edgesep's timeout line names the port, so the user knows which server did not answer."""
    from edgesep.devices.adb_client import AdbClient

    monkeypatch.setenv("HOME", str(tmp_path))  # adb's own files stay in the test's folder
    with socket.socket() as held:
        held.bind(("127.0.0.1", 0))
        held.listen(8)
        port = held.getsockname()[1]
        with pytest.raises(DeviceError, match=rf"^adb devices -l \(adb server port {port}\) did not answer "
                                              r"within 2 s$"):
            AdbClient(server_port=port).run("devices", "-l", timeout=2)
