"""Shared pytest setup: integration markers become skips by probing the environment (the reason is printed).

Each section registers its probes in ``MARKER_PROBES`` (marker name -> function returning a skip reason or
None); the one ``pytest_collection_modifyitems`` below applies them. Markers named in
``EDGESEP_REQUIRE_MARKERS`` (comma-separated; .ci/run sets it) must not be skipped: their probe's reason
stops the session instead.
"""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
# The same words and widths on every machine: tools' messages in the C locale, and no terminal width inherited
# from the shell that started pytest (a test that cares about width sets COLUMNS itself).
os.environ.update(LC_ALL="C.UTF-8", LANG="C.UTF-8")
for _name in ("COLUMNS", "LINES", "LANGUAGE"):
    os.environ.pop(_name, None)

# Everything the suite caches (device venvs, tiny bench models, trained built-in networks) lives in a folder of
# this run's own, removed at the end: nothing is shared through ~/.cache with another run, job or checkout.
# A developer may opt in to reuse across runs with EDGESEP_TEST_CACHE=DIR (never set by .ci/run).
_OWN_TEST_CACHE = None if os.environ.get("EDGESEP_TEST_CACHE") else tempfile.mkdtemp(prefix="edgesep-test-cache-")
os.environ.setdefault("EDGESEP_TEST_CACHE", _OWN_TEST_CACHE or "")
os.environ.setdefault("EDGESEP_CACHE", os.path.join(os.environ["EDGESEP_TEST_CACHE"], "models"))


def pytest_sessionfinish(session, exitstatus):
    if _OWN_TEST_CACHE:
        shutil.rmtree(_OWN_TEST_CACHE, ignore_errors=True)

MARKER_PROBES: dict[str, Callable[[], Optional[str]]] = {}


def pytest_collection_modifyitems(config, items):
    reasons: dict[str, Optional[str]] = {}
    required = set(filter(None, os.environ.get("EDGESEP_REQUIRE_MARKERS", "").split(",")))  # set by .ci/run
    for item in items:
        for marker, probe in MARKER_PROBES.items():
            if item.get_closest_marker(marker) is None:
                continue
            if marker not in reasons:
                reasons[marker] = probe()
                if reasons[marker] and marker in required:
                    raise pytest.UsageError(f"{marker} tests are required (EDGESEP_REQUIRE_MARKERS) but would be "
                                            f"skipped: {reasons[marker]}")
            if reasons[marker]:
                item.add_marker(pytest.mark.skip(reason=f"{marker}: {reasons[marker]}"))


# ---------------------------------------------------------------- device harness: tiny models, sshd, device venvs

def _probe_ssh() -> Optional[str]:
    missing = [tool for tool in ("/usr/sbin/sshd", "ssh", "scp", "ssh-keygen") if not shutil.which(tool)]
    return f"OpenSSH not installed ({', '.join(missing)} missing; apt-get install openssh-server)" if missing else None


MARKER_PROBES["ssh"] = _probe_ssh


# ---------------------------------------------------------------- adb: Debian's real client (tests/adbd_emu.py is the phone)

def _probe_adb() -> Optional[str]:
    return None if shutil.which("adb") else "Debian's adb client is not on PATH (apt-get install adb)"


MARKER_PROBES["adb"] = _probe_adb


# ---------------------------------------------------------------- ray: the fleet's engine (an optional extra)

def _probe_ray() -> Optional[str]:
    import importlib.util

    return None if importlib.util.find_spec("ray") else "Ray is not installed (pip install 'edgesep[fleet]')"


MARKER_PROBES["ray"] = _probe_ray


# ---------------------------------------------------------------- pi64: the emulated Pi (scripts/emulated_pi.py)

EMULATED_PI = Path(__file__).resolve().parent.parent / "scripts" / "emulated_pi.py"


def _pi64_status() -> dict:
    """``emulated_pi.py status --json`` (state up/down/stale, target, ssh_config, pythons, rootfs)."""
    proc = subprocess.run([sys.executable, str(EMULATED_PI), "status", "--json"], capture_output=True, text=True,
                          timeout=60)
    try:
        return json.loads(proc.stdout)
    except ValueError:
        return {"state": f"unknown ({(proc.stderr.strip().splitlines() or ['no output'])[-1]})"}


def _probe_pi64() -> Optional[str]:
    if os.geteuid() != 0:
        return "needs root (the emulated Pi is a chroot with its own mounts)"
    if not os.path.exists("/usr/bin/qemu-aarch64-static"):
        return "qemu-user-static not installed (apt-get install qemu-user-static binfmt-support mmdebstrap arch-test zstd)"
    entry = Path("/proc/sys/fs/binfmt_misc/qemu-aarch64")
    if not entry.exists() or "enabled" not in entry.read_text():
        return "qemu-aarch64 is not registered with binfmt_misc (python scripts/emulated_pi.py up does it)"
    state = _pi64_status().get("state")
    if state != "up":
        return f"the emulated Pi is {state} (start it: python scripts/emulated_pi.py up; .ci/run does)"
    return None


MARKER_PROBES["pi64"] = _probe_pi64


@pytest.fixture(scope="session")
def pi64() -> dict:
    """The running emulated Pi: target, ssh_config, pythons {runtime: path}, machine, rootfs (host path)."""
    doc = _pi64_status()
    if doc.get("state") != "up":
        pytest.skip(f"pi64: the emulated Pi is {doc.get('state')}")
    return doc


@pytest.fixture(scope="session")
def bench_models():
    """{name: Path} of tiny real models (float/int8/prelu .tflite, float .onnx), built once with TF and cached."""
    from bench_models import bench_models as build

    return build()


@pytest.fixture(scope="session")
def sshd(tmp_path_factory):
    """A real OpenSSH server on 127.0.0.1 with throw-away keys (see tests/sshd.py)."""
    from sshd import start_sshd

    server = start_sshd(tmp_path_factory.mktemp("sshd"))
    yield server
    server.stop()


def _device_venv(name: str, requirements: tuple[str, ...]):
    from sshd import device_venv

    try:
        return device_venv(name, requirements)
    except RuntimeError as e:  # no registry / no wheel for this Python: say why and skip
        pytest.skip(f"device venv {name} unavailable: {e}")


@pytest.fixture(scope="session")
def tflite_runtime_python():
    """Python of a venv with only numpy<2 and tflite-runtime 2.14.0 (a Raspberry Pi-like device)."""
    return _device_venv("tflite-runtime", ("numpy<2", "tflite-runtime==2.14.0"))


@pytest.fixture(scope="session")
def litert_python():
    """Python of a venv with only ai-edge-litert (and its numpy)."""
    return _device_venv("litert", ("ai-edge-litert",))


@pytest.fixture(scope="session")
def numpy_only_python():
    """Python of a venv with numpy and no interpreter package."""
    return _device_venv("numpy-only", ("numpy",))


# ---------------------------------------------------------------- export: the trained built-in model

# Trained models are cached by config + data hash in this run's EDGESEP_CACHE (set at the top of this file).


@pytest.fixture(scope="session")
def digits():
    """The built-in dataset at the built-in input size."""
    from edgesep.data import load_dataset

    return load_dataset("digits", (32, 32, 3))


@pytest.fixture(scope="session")
def trained_split(digits):
    """The built-in split-form network trained on digits (cached)."""
    from edgesep.models import ModelConfig
    from edgesep.train import train_builtin

    model, info = train_builtin(ModelConfig(form="split"), dataset=digits)
    return model, info


@pytest.fixture(scope="session")
def split_export(trained_split, digits, tmp_path_factory):
    """export.json document and folder of the trained split model: float32, fp16, int8 and ONNX."""
    from edgesep.converters.export import ExportConfig, export

    out = tmp_path_factory.mktemp("export")
    doc = export(trained_split[0], out, ExportConfig(precisions=("float32", "float16", "int8")), digits).to_dict()
    return doc, out


# ---------------------------------------------------------------- adb: a private adb server and emulated phones

@pytest.fixture(scope="session")
def adb_server(tmp_path_factory):
    """A private adb server (own port and HOME; the default 5037 one is never touched)."""
    from adbd_emu import AdbServer

    server = AdbServer(tmp_path_factory.mktemp("adbhome"))
    server.adb("start-server")
    yield server
    server.adb("kill-server", check=False)


@pytest.fixture
def make_phone(adb_server, tmp_path):
    """Starts emulated phones and connects them; all disconnected and stopped afterwards."""
    from adbd_emu import AdbdEmulator

    phones = []

    def make(connect: bool = True, **kwargs) -> AdbdEmulator:
        emu = AdbdEmulator(tmp_path / f"phone{len(phones)}", **kwargs).start()
        phones.append(emu)
        if connect:
            adb_server.adb("connect", emu.serial, check=False)
            adb_server.wait_state(emu.serial, {"device": "device", "unauthorized": "unauthorized"}[emu.mode])
        return emu

    yield make
    for emu in phones:
        adb_server.adb("disconnect", emu.serial, check=False)
        emu.stop()
