"""`edgesep bench` over a real SSH connection (OpenSSH's sshd on 127.0.0.1), against real device Pythons.

The "devices" are virtualenvs on this machine: numpy<2 + tflite-runtime 2.14.0 (a Raspberry Pi-like Python),
ai-edge-litert alone, and numpy alone. Host-key checking stays on throughout (the client config pins the
server's real host key).
"""
from __future__ import annotations

import dataclasses
import json
import os
import shlex
import stat
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from oneline import assert_one_error_line

from edgesep.devices import BenchConfig, DeviceError, parse_target

pytestmark = pytest.mark.ssh

# Bounds on hangs are the limit under test plus this slack: a loaded 2-core machine starts ssh slowly, and
# what the bound catches (waiting for TCP's or ssh's own minutes-long defaults, or forever) is far longer.
LOAD_SLACK_S = 20.0
FAST = ["--runs", "5", "--warmup", "1", "--warmup-secs", "0", "--min-secs", "0", "--max-secs", "2"]
FAST_CONFIG = BenchConfig(runs=5, warmup=1, warmup_secs=0.0, min_secs=0.0, max_secs=2.0)


def edgesep(*args, env=None):
    proc = subprocess.run([sys.executable, "-m", "edgesep", "bench", *map(str, args)], capture_output=True,
                          text=True, env=env, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture()
def device_tmp(sshd):
    """The device's TMPDIR; every test must leave it empty."""
    assert list(sshd.device_tmp.iterdir()) == []
    yield sshd.device_tmp
    assert list(sshd.device_tmp.iterdir()) == [], "edgesep left files on the device"


def test_tflite_runtime_device_over_ssh(sshd, device_tmp, bench_models, tflite_runtime_python, tmp_path):
    rng = np.random.default_rng(1)
    data = tmp_path / "data.npz"
    np.savez(data, x=rng.random((60, 16, 16, 3), dtype=np.float32), y=np.arange(60) % 10)
    code, stdout, stderr = edgesep(bench_models["float.tflite"], bench_models["int8.tflite"],
                                   "--device", sshd.target, "--ssh-config", sshd.config,
                                   "--remote-python", tflite_runtime_python, "--data", data, "--threads", "1",
                                   *FAST, "--json")
    assert code == 0, stderr
    results = json.loads(stdout)["results"]
    for r in results:
        assert r["error"] is None and r["device"] == sshd.target
        assert r["runtime"] == "tflite_runtime 2.14.0" and r["threads"] == 1
        assert r["host"]["numpy"].startswith("1.") and len(r["samples_ms"]) >= 5
        assert 0.0 <= r["accuracy"] <= 1.0 and len(r["predictions"]) > 0
    assert results[0]["fully_delegated"] is True


def test_litert_device_through_an_ssh_config_alias(sshd, device_tmp, bench_models, litert_python):
    import shutil
    import tempfile

    # a remote Python given as ~/... is found in the device user's home (a wrapper in a folder of our own there)
    home_dir = Path(tempfile.mkdtemp(prefix=".edgesep-test-", dir=Path.home()))
    try:
        wrapper = home_dir / "python"
        wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(str(litert_python))} \"$@\"\n")
        wrapper.chmod(0o755)
        code, stdout, stderr = edgesep(bench_models["prelu.tflite"], bench_models["int8.tflite"],
                                       "--device", sshd.alias_target, "--ssh-config", sshd.config,
                                       "--remote-python", "~/" + str(wrapper.relative_to(Path.home())), *FAST)
    finally:
        shutil.rmtree(home_dir, ignore_errors=True)
    assert code == 0, stderr
    assert "prelu.tflite" in stdout and "ai_edge_litert" in stdout and "ssh://edgesep-device" in stdout


def test_temp_dir_is_private_pushed_once_and_removed(sshd, device_tmp, bench_models, litert_python, tmp_path):
    twin = tmp_path / "same-content.tflite"
    twin.write_bytes(bench_models["float.tflite"].read_bytes())
    device = parse_target(sshd.target, ssh_config=str(sshd.config), remote_python=str(litert_python))
    with device:
        device.prepare([bench_models["float.tflite"], twin])
        remote = Path(device.remote_dir)
        assert remote.parent == device_tmp and stat.S_IMODE(remote.stat().st_mode) == 0o700
        files = sorted(p.name for p in remote.iterdir())
        assert len(files) == 2 and any(f.endswith("-runner.py") for f in files)  # one copy of the twin models
        before = {p.name: p.stat().st_mtime_ns for p in remote.iterdir()}
        device.prepare([twin, bench_models["float.tflite"]])  # nothing new: nothing pushed
        assert {p.name: p.stat().st_mtime_ns for p in remote.iterdir()} == before
        results = device.run(FAST_CONFIG)
        assert [r.model for r in results] == [str(twin), str(bench_models["float.tflite"])]
        assert all(r.error is None for r in results)
    assert not remote.exists()
    device.cleanup()  # twice is fine


def test_hostile_file_names(sshd, device_tmp, bench_models, litert_python, tmp_path):
    """Spaces, quotes, ; and $(...) in local paths and in the remote Python path never reach a shell unquoted."""
    folder = tmp_path / "my models; $(touch pwned-dir)"
    folder.mkdir()
    model = folder / "it's a \"model\" $(touch pwned) `touch pwned2`; rm -rf x.tflite"
    model.write_bytes(bench_models["float.tflite"].read_bytes())
    py_dir = tmp_path / "py dir $(touch pwned3)"
    py_dir.mkdir()
    wrapper = py_dir / "python"  # a wrapper, not a symlink: a symlinked venv python would lose its venv
    wrapper.write_text(f"#!/bin/sh\nexec {shlex.quote(str(litert_python))} \"$@\"\n")
    wrapper.chmod(0o755)
    code, stdout, stderr = edgesep(model, "--device", sshd.target, "--ssh-config", sshd.config,
                                   "--remote-python", shlex.quote(str(py_dir / "python")), *FAST, "--json")
    assert code == 0, stderr
    r = json.loads(stdout)["results"][0]
    assert r["model"] == str(model) and r["error"] is None
    home = Path(os.path.expanduser("~"))
    for place in (tmp_path, folder, home, Path.cwd(), device_tmp):
        assert not [p for p in place.iterdir() if p.name.startswith("pwned")], place


def test_runner_crash_on_device_shows_stderr_tail(sshd, device_tmp, bench_models, litert_python, tmp_path):
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys\nif sys.argv[0].endswith('runner.py') and any('crash' in a for a in sys.argv):\n"
        "    import ctypes, faulthandler\n    faulthandler.enable()\n    ctypes.string_at(0)\n")
    wrapper = tmp_path / "crashy-python"
    wrapper.write_text(f"#!/bin/sh\nPYTHONPATH={shlex.quote(str(hook))} exec {shlex.quote(str(litert_python))} \"$@\"\n")
    wrapper.chmod(0o755)
    crashy = tmp_path / "crash.tflite"
    crashy.write_bytes(bench_models["int8.tflite"].read_bytes())
    common = ["--device", sshd.target, "--ssh-config", sshd.config, "--remote-python", wrapper, *FAST]
    code, _, stderr = edgesep(crashy, *common)
    assert_one_error_line(code, stderr, f"runner crashed on {sshd.target} (exit 139 (SIGSEGV))",
                          "Fatal Python error: Segmentation fault")
    code, stdout, stderr = edgesep(bench_models["float.tflite"], crashy, *common, "--json")
    assert code == 1
    good, bad = json.loads(stdout)["results"]
    assert good["error"] is None and good["extra"]["isolated"] is True and "SIGSEGV" in bad["error"]


def test_unreachable_host_fails_within_the_connect_timeout(sshd, bench_models):
    from sshd import closed_port

    started = time.monotonic()
    code, _, stderr = edgesep(bench_models["float.tflite"], "--device", f"ssh://127.0.0.1:{closed_port()}",
                              "--ssh-config", sshd.config, *FAST)
    assert_one_error_line(code, stderr, "cannot reach ssh://127.0.0.1:", "Connection refused")
    assert time.monotonic() - started < 10 + LOAD_SLACK_S


def test_authentication_refused(sshd, device_tmp, bench_models):
    code, _, stderr = edgesep(bench_models["float.tflite"], "--device", sshd.target,
                              "--ssh-config", sshd.wrong_key_config, *FAST)
    assert_one_error_line(code, stderr, f"authentication refused by {sshd.target}", "Permission denied")


def test_changed_host_key_is_refused_not_ignored(sshd, device_tmp, bench_models):
    code, _, stderr = edgesep(bench_models["float.tflite"], "--device", sshd.target,
                              "--ssh-config", sshd.wrong_host_key_config, *FAST)
    assert_one_error_line(code, stderr, f"host key of {sshd.target} is unknown or has changed",
                          "never disables host-key checking")


def test_remote_python_missing(sshd, device_tmp, bench_models):
    code, _, stderr = edgesep(bench_models["float.tflite"], "--device", sshd.target, "--ssh-config", sshd.config,
                              "--remote-python", "/nonexistent/python3", *FAST)
    assert_one_error_line(code, stderr, "remote Python '/nonexistent/python3' not found", "--remote-python")


def test_no_interpreter_package_on_device(sshd, device_tmp, bench_models, numpy_only_python, litert_python):
    code, _, stderr = edgesep(bench_models["float.tflite"], "--device", sshd.target, "--ssh-config", sshd.config,
                              "--remote-python", numpy_only_python, *FAST)
    assert_one_error_line(code, stderr, "no TFLite interpreter for", "pip install ai-edge-litert")
    code, _, stderr = edgesep(bench_models["float.onnx"], "--device", sshd.target, "--ssh-config", sshd.config,
                              "--remote-python", litert_python, *FAST)
    assert_one_error_line(code, stderr, "no ONNX Runtime for", "pip install onnxruntime")


def test_delegate_that_cannot_load_on_device(sshd, device_tmp, bench_models, litert_python):
    code, _, stderr = edgesep(bench_models["float.tflite"], "--device", sshd.target, "--ssh-config", sshd.config,
                              "--remote-python", litert_python, "--delegate", "/opt/none/libedgetpu-fake.so", *FAST)
    assert_one_error_line(code, stderr, "cannot load delegate library /opt/none/libedgetpu-fake.so")


def test_missing_ssh_config_file(bench_models, tmp_path):
    code, _, stderr = edgesep(bench_models["float.tflite"], "--device", "ssh://pi@raspberrypi.local",
                              "--ssh-config", tmp_path / "nope", *FAST)
    assert_one_error_line(code, stderr, "ssh config file not found")
    assert code == 2  # a usage error


def test_device_errors_are_device_errors(sshd, bench_models):
    device = parse_target(sshd.target, ssh_config=str(sshd.wrong_key_config))
    with pytest.raises(DeviceError, match="authentication refused"):
        device.prepare([bench_models["float.tflite"]])
    device.cleanup()  # nothing was created: a no-op


# ---------------------------------------------------------------- hosts without SFTP, servers that stall, signals

@pytest.fixture(scope="module")
def sshd_no_sftp(tmp_path_factory):
    """A real sshd started without an SFTP subsystem (as dropbear and minimal images come)."""
    from sshd import start_sshd

    server = start_sshd(tmp_path_factory.mktemp("sshd-no-sftp"), sftp=False)
    yield server
    server.stop()


@pytest.fixture(scope="module")
def sshd_no_sftp_no_scp(tmp_path_factory):
    """Neither SFTP nor an scp binary on the sessions' PATH: only the ssh channel itself carries files."""
    import shutil

    from sshd import start_sshd

    root = tmp_path_factory.mktemp("sshd-bare")
    bin_dir = root / "bin"
    bin_dir.mkdir()
    for tool in ("sh", "mkdir", "mktemp", "chmod", "cat", "rm", "tr", "kill", "printf", "bash", "env"):
        if shutil.which(tool):
            (bin_dir / tool).symlink_to(shutil.which(tool))
    (root / "server").mkdir()
    server = start_sshd(root / "server", sftp=False, path=str(bin_dir))
    yield server
    server.stop()


def _bench_over(server, model):
    device = parse_target(server.target, ssh_config=str(server.config), remote_python=sys.executable)
    try:
        device.prepare([model])
        (result,) = device.run(FAST_CONFIG)
    finally:
        device.cleanup()
    assert list(server.device_tmp.iterdir()) == [], "edgesep left files on the device"
    return device, result


def test_host_without_sftp_gets_the_legacy_scp_protocol(sshd_no_sftp, bench_models):
    device, result = _bench_over(sshd_no_sftp, bench_models["float.tflite"])
    assert result.error is None and len(result.samples_ms) >= FAST_CONFIG.runs
    assert device.transfer == "scp -O"


def test_host_without_sftp_or_scp_gets_the_files_over_the_ssh_channel(sshd_no_sftp_no_scp, bench_models):
    device, result = _bench_over(sshd_no_sftp_no_scp, bench_models["float.onnx"])
    assert result.error is None and result.runtime.startswith("onnxruntime")
    assert device.transfer == "ssh stream"


def test_server_that_never_speaks_fails_near_the_connect_timeout(bench_models):
    """A real listening socket that accepts and says nothing: ssh's ConnectTimeout (banner exchange) ends it."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []
    threading.Thread(target=lambda: [accepted.append(server.accept()[0]) for _ in range(8)], daemon=True).start()
    target = f"ssh://pi@127.0.0.1:{server.getsockname()[1]}"
    started = time.monotonic()
    try:
        with pytest.raises(DeviceError, match=f"^cannot reach {target} "):
            parse_target(target, connect_timeout=2).prepare([bench_models["float.tflite"]])
    finally:
        server.close()
        for conn in accepted:
            conn.close()
    assert time.monotonic() - started < 2 + LOAD_SLACK_S and accepted


def test_server_that_stalls_after_its_banner_fails_near_the_connect_timeout(bench_models):
    """OpenSSH's ConnectTimeout covers the TCP connect and the banner; a server that then says nothing would
    keep ssh waiting forever: the first contact is bounded on the host (ConnectTimeout + max(5 s, itself))."""
    import socket
    import threading

    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    accepted = []

    def accept():
        while True:
            try:
                conn = server.accept()[0]
            except OSError:
                return
            conn.sendall(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")  # the banner, then nothing
            accepted.append(conn)

    threading.Thread(target=accept, daemon=True).start()
    target = f"ssh://pi@127.0.0.1:{server.getsockname()[1]}"
    device = parse_target(target, connect_timeout=2)
    started = time.monotonic()
    try:
        with pytest.raises(DeviceError) as e:
            device.prepare([bench_models["float.tflite"]])
    finally:
        server.close()
        for conn in accepted:
            conn.close()
    assert time.monotonic() - started < 2 + 5 + LOAD_SLACK_S
    assert str(e.value).startswith(f"cannot reach {target}: ")
    assert "no SSH session within 7 s (ConnectTimeout 2 s + 5 s)" in str(e.value) and accepted


def _runner_processes(private_root: Path) -> list[int]:
    """PIDs of processes whose command line names a folder under ``private_root`` (the device's runners)."""
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if str(private_root) + "/edgesep." in cmdline:
                pids.append(int(entry.name))
    return pids


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_signal_mid_run_leaves_nothing_on_the_device(signame, sshd, device_tmp, bench_models, tmp_path):
    """Like Ctrl-C: the private folder is removed and the runner still running there is ended."""
    import signal

    proc = subprocess.Popen([sys.executable, "-m", "edgesep", "bench", str(bench_models["float.tflite"]), "--device",
                             sshd.target, "--ssh-config", str(sshd.config), "--remote-python", sys.executable,
                             "--runs", "1000000", "--warmup-secs", "0", "--min-secs", "60", "--max-secs", "60"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not _runner_processes(device_tmp) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)  # into the steady state
    proc.send_signal(getattr(signal, signame))
    _, stderr = proc.communicate(timeout=60)
    assert proc.returncode == 128 + getattr(signal, signame), stderr[-2000:]
    assert f"interrupted by {signame}" in stderr and "Traceback" not in stderr
    deadline = time.monotonic() + 10
    while _runner_processes(device_tmp) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _runner_processes(device_tmp) == [], "the runner still runs on the device"
    assert list(device_tmp.iterdir()) == []  # (device_tmp checks it again on teardown)


def test_runner_that_stops_answering_over_ssh_is_killed_there_too(sshd, device_tmp, bench_models, tmp_path):
    """The watchdog ends the ssh session; cleanup ends the runner left on the device (its PID file)."""
    python = tmp_path / "hanging-python"
    python.write_text(f"#!/bin/sh\n# a device Python whose runner never answers\nexec {sys.executable} -c "
                      "'import time; time.sleep(3600)' \"$@\"\n")
    python.chmod(0o755)
    device = parse_target(sshd.target, ssh_config=str(sshd.config), remote_python=str(python))
    device.watchdog_grace_s = 1.0
    device.prepare([bench_models["float.tflite"]])
    assert _runner_processes(device_tmp) == []
    started = time.monotonic()
    with pytest.raises(DeviceError, match="the runner stopped answering: nothing from it for 1.5 s"):
        device.run(dataclasses.replace(FAST_CONFIG, max_secs=0.5))
    assert time.monotonic() - started < 1.5 + LOAD_SLACK_S
    device.cleanup()
    deadline = time.monotonic() + 10
    while _runner_processes(device_tmp) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert _runner_processes(device_tmp) == []
