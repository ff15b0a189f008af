"""The system ``adb`` client (Debian package ``adb`` or Android platform-tools): running it, listing the
attached devices and choosing the one a target names. Used by ``edgesep.devices.adb`` and ``edgesep devices``.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any, Optional, Sequence

from edgesep.errors import DeviceError, last_line

ADB_MISSING = ("adb not found: install Debian's adb package (sudo apt-get install adb) or Android "
               "platform-tools, or give its path with the adb_path option")
STATE_HELP = {
    "unauthorized": "unlock the phone and accept the 'Allow USB debugging?' prompt, then retry",
    "offline": "reconnect the cable (or run 'adb reconnect'); the device is not answering",
    "authorizing": "wait for the phone to finish authorizing this computer, then retry",
    "connecting": "wait for the connection to complete, then retry",
    "recovery": "the phone is in recovery mode; boot it normally",
    "sideload": "the phone is in sideload mode; boot it normally",
    "bootloader": "the phone is in the bootloader; boot it normally",
    "rescue": "the phone is in rescue mode; boot it normally",
}
# what the adb client prints on stderr when a command found no server on its port and started one
SERVER_STARTED = "daemon started successfully"


# ------------------------------------------------------------------------------------------------
# the adb client

def find_adb(adb_path: Optional[str] = None) -> str:
    """The adb executable to use.

    Raises:
        DeviceError: no adb on PATH (or ``adb_path`` does not exist).
    """
    if adb_path:
        if Path(adb_path).is_file() and os.access(adb_path, os.X_OK):
            return str(adb_path)
        raise DeviceError(f"adb not found at {adb_path}")
    exe = shutil.which("adb")
    if not exe:
        raise DeviceError(ADB_MISSING)
    return exe


@dataclasses.dataclass(frozen=True)
class AttachedDevice:
    """One line of ``adb devices -l`` plus, for online devices, what ``getprop`` says."""

    serial: str
    state: str
    model: Optional[str] = None
    abi: Optional[str] = None
    android: Optional[str] = None
    product: Optional[str] = None
    transport_id: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


_DEVICE_KEYS = ("usb", "product", "model", "device", "transport_id")


def parse_devices_output(text: str) -> list[AttachedDevice]:
    """Devices from ``adb devices -l`` output (``SERIAL STATE [key:value ...]``, state may be several words)."""
    found = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith(("List of devices", "*", "adb server")):
            continue
        parts = line.split()
        serial, rest = parts[0], parts[1:]
        state_words, info = [], {}
        for tok in rest:
            key, sep, value = tok.partition(":")
            if sep and key in _DEVICE_KEYS and value:
                info[key] = value
            elif not info:
                state_words.append(tok)
        state = " ".join(state_words) or "unknown"
        found.append(AttachedDevice(serial, state, model=info.get("model", "").replace("_", " ") or None,
                                    product=info.get("product"), transport_id=info.get("transport_id")))
    return found


class AdbClient:
    """Runs the adb client against one server (``server_port`` None: adb's default / ANDROID_ADB_SERVER_PORT)."""

    def __init__(self, adb_path: Optional[str] = None, server_port: Optional[int] = None):
        self.exe = find_adb(adb_path)
        self.server_port = server_port
        self.started_server = False

    def command(self, *args: str, serial: Optional[str] = None) -> list[str]:
        """The adb argv for ``args`` against this server (and device ``serial``)."""
        cmd = [self.exe]
        if self.server_port:
            cmd += ["-P", str(self.server_port)]
        if serial:
            cmd += ["-s", serial]
        return cmd + list(args)

    def run(self, *args: str, serial: Optional[str] = None, timeout: float = 60.0) -> subprocess.CompletedProcess:
        """Runs one adb command; a hang past ``timeout`` or a missing executable is a ``DeviceError``."""
        try:
            proc = subprocess.run(self.command(*args, serial=serial), capture_output=True, text=True,
                                  timeout=timeout, stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            server = f" (adb server port {self.server_port})" if self.server_port else ""
            raise DeviceError(f"adb {' '.join(args[:2])}{server} did not answer within {timeout:g} s") from None
        except OSError as e:
            raise DeviceError(f"cannot run {self.exe}: {e.strerror}") from None
        self.started_server = self.started_server or SERVER_STARTED in (proc.stderr or "")
        return proc

    def stop_started_server(self) -> None:
        """Stops the adb server if one of this client's commands started it (a server that was already
        running on the port is the user's, and stays)."""
        if self.started_server:
            self.started_server = False
            try:
                self.run("kill-server", timeout=15)
            except DeviceError:
                pass

    def devices(self) -> list[AttachedDevice]:
        """Attached devices and their states (``adb devices -l``)."""
        proc = self.run("devices", "-l", timeout=30)
        if proc.returncode != 0:
            raise DeviceError(f"adb devices failed: {last_line(proc.stderr or proc.stdout, default='')}")
        return parse_devices_output(proc.stdout)


def adb_error(text: str) -> str:
    """The line of adb's output that says what went wrong (its ``error:`` line, else the last line)."""
    lines = [ln.strip() for ln in (text or "").splitlines() if ln.strip()]
    errors = [ln for ln in lines if "error:" in ln]
    return (errors[-1] if errors else lines[-1] if lines else "").replace("adb: error: ", "")


def props_script(keys: Sequence[str]) -> str:
    """A device shell script printing ``key=value`` for each system property in ``keys``."""
    return "; ".join(f"echo \"{k}=$(getprop {k})\"" for k in keys)


PROP_KEYS = ("ro.product.model", "ro.product.cpu.abi", "ro.build.version.release", "ro.build.version.sdk",
             "ro.serialno", "ro.product.manufacturer", "ro.board.platform")


def parse_kv(text: str) -> dict[str, str]:
    """``{key: value}`` of ``key=value`` lines."""
    out = {}
    for line in text.splitlines():
        key, sep, value = line.partition("=")
        if sep:
            out[key.strip()] = value.strip()
    return out


def describe_devices(adb_path: Optional[str] = None, server_port: Optional[int] = None) -> list[AttachedDevice]:
    """Attached devices; those online get model, ABI and Android version from ``getprop``. An adb server
    this call had to start (none ran on the port) is stopped again; one already running stays."""
    client = AdbClient(adb_path, server_port)
    out = []
    try:
        for dev in client.devices():
            if dev.state == "device":
                proc = client.run("shell", props_script(PROP_KEYS[:3]), serial=dev.serial, timeout=30)
                props = parse_kv(proc.stdout) if proc.returncode == 0 else {}
                dev = dataclasses.replace(dev, model=props.get("ro.product.model") or dev.model,
                                          abi=props.get("ro.product.cpu.abi") or None,
                                          android=props.get("ro.build.version.release") or None)
            out.append(dev)
    finally:
        client.stop_started_server()
    return out


def choose_device(devices: Sequence[AttachedDevice], serial: Optional[str]) -> AttachedDevice:
    """The device a target names (or the only one), ready to use.

    Raises:
        DeviceError: none attached, several without a serial, the serial unknown, or not in ``device`` state.
    """
    listing = ", ".join(f"{d.serial} ({d.state})" for d in devices)
    if serial is None:
        if not devices:
            raise DeviceError("no adb devices attached: connect a phone with USB debugging on "
                              "(or 'adb connect HOST:PORT'), then check 'edgesep devices'")
        if len(devices) > 1:
            raise DeviceError(f"{len(devices)} adb devices attached ({listing}); pick one with --device adb:SERIAL")
        dev = devices[0]
    else:
        matches = [d for d in devices if d.serial == serial]
        if not matches:
            raise DeviceError(f"adb device {serial!r} not found; attached: {listing or 'none'}")
        dev = matches[0]
    if dev.state != "device":
        help_ = STATE_HELP.get(dev.state.split()[0] if dev.state else "", "")
        if dev.state.startswith("no permissions"):
            help_ = ("the USB device is not accessible to you: add a udev rule "
                     "(Debian: android-sdk-platform-tools-common)")
        raise DeviceError(f"adb device {dev.serial} is {dev.state.split(' (')[0]}" + (f": {help_}" if help_ else ""))
    return dev
