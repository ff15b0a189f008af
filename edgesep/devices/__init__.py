"""Device targets: ``local``, ``ssh://[user@]host[:port]``, ``adb``, ``adb:SERIAL``.

Never imports TensorFlow; each device module is imported only when its target is used.
"""
from __future__ import annotations

import importlib
from typing import Any

from edgesep.devices.base import BenchConfig, BenchResult, Device, DeviceError
from edgesep.errors import EXIT_USAGE

TARGET_FORMS = ("local", "ssh://[user@]host[:port]", "adb", "adb:SERIAL")

__all__ = ["BenchConfig", "BenchResult", "Device", "DeviceError", "TARGET_FORMS", "parse_target"]


def parse_target(target: str, **options: Any) -> Device:
    """A ``Device`` for a target string; ``options`` go to the device (e.g. ``ssh_config``, ``remote_python``).

    Raises:
        DeviceError: the target matches none of ``TARGET_FORMS`` (the message lists them).
    """
    target = (target or "").strip()
    if target == "local":
        module, cls, args = "local", "LocalDevice", {}
    elif target.startswith("ssh://"):
        module, cls, args = "ssh", "SSHDevice", {"url": target}
    elif target == "adb" or target.startswith("adb:"):
        serial = target[4:] or None
        if target.startswith("adb:") and not serial:
            raise DeviceError("adb target needs a serial after 'adb:' (or just 'adb' for the only device)",
                              exit_code=EXIT_USAGE)
        module, cls, args = "adb", "AdbDevice", {"serial": serial}
    else:
        raise DeviceError(f"unknown device target {target!r}; valid forms: {', '.join(TARGET_FORMS)}",
                          exit_code=EXIT_USAGE)
    device_cls = getattr(importlib.import_module(f"edgesep.devices.{module}"), cls)
    return device_cls(**args, **options)
