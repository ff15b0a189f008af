"""Coral Edge TPU on the device side: the ``libedgetpu`` runtime lookup and the delegate's options.

The runner loads ``libedgetpu.so.1`` as an external delegate (``--delegate edgetpu``) with the device option
``usb``, ``usb:N``, ``pci`` or ``pci:N``. Compiling models for the Edge TPU (``edgetpu_compiler``, its
report, the checks of what it accepts) happens on the host and lives in ``edgesep.converters.edgetpu``;
devices never import converters.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import re
from typing import Optional

from edgesep.devices import runner
from edgesep.errors import EdgeTpuError

__all__ = ["DEVICE_OPTION", "EdgeTpuError", "RUNTIME_LIBRARY", "RUNTIME_MISSING", "check_device_option",
           "delegate_options", "find_runtime", "require_runtime"]

RUNTIME_LIBRARY = runner.EDGETPU_LIBRARY["Linux"]
DEVICE_OPTION = re.compile(r"^(usb|pci)(:\d+)?$")
APT_REPO = ("Coral's apt repository (echo 'deb https://packages.cloud.google.com/apt coral-edgetpu-stable main' "
            "| sudo tee /etc/apt/sources.list.d/coral-edgetpu.list, then add its key and sudo apt-get update)")
RUNTIME_MISSING = (f"Edge TPU runtime {RUNTIME_LIBRARY} not found: install libedgetpu1-std (or libedgetpu1-max) "
                   f"from {APT_REPO}, and a tflite_runtime built for that libedgetpu (Coral's runtime needs a "
                   "matching tflite_runtime version)")


def check_device_option(device: Optional[str]) -> Optional[str]:
    """Validates the Edge TPU ``device`` delegate option (``usb``, ``usb:N``, ``pci``, ``pci:N`` or None).

    Raises:
        EdgeTpuError: any other value.
    """
    if device is None or device == "":
        return None
    if not DEVICE_OPTION.match(device):
        raise EdgeTpuError(f"unknown Edge TPU device {device!r}; use usb, usb:N, pci or pci:N")
    return device


def find_runtime() -> Optional[str]:
    """The loadable Edge TPU runtime library name/path, or None when ``libedgetpu.so.1`` cannot be loaded."""
    for name in (RUNTIME_LIBRARY, ctypes.util.find_library("edgetpu")):
        if not name:
            continue
        try:
            ctypes.CDLL(name)
        except OSError:
            continue
        return name
    return None


def require_runtime() -> str:
    """The Edge TPU runtime library, or ``EdgeTpuError`` with the install line."""
    lib = find_runtime()
    if lib is None:
        raise EdgeTpuError(RUNTIME_MISSING)
    return lib


def delegate_options(device: Optional[str]) -> dict[str, str]:
    """The ``BenchConfig.delegate_options`` for an Edge TPU device option."""
    device = check_device_option(device)
    return {"device": device} if device else {}
