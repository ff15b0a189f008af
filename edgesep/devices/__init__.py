"""Device targets: ``local``, ``ssh://[user@]host[:port]``, ``adb``, ``adb:SERIAL``, from a registry of schemes.

Never imports TensorFlow; each device module is imported only when its target is used. A new kind of device
is one :func:`register_scheme` call: a name, its target forms, a matcher that turns a target string into
constructor arguments (or None), and the module and class that implement it.
"""
from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable, Optional

from edgesep.devices.base import BenchConfig, BenchResult, Device, DeviceError
from edgesep.errors import EXIT_USAGE

__all__ = ["BenchConfig", "BenchResult", "Device", "DeviceError", "Scheme", "TARGET_FORMS", "list_schemes",
           "parse_target", "register_scheme"]


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One kind of device target: ``match(target)`` gives the device's constructor arguments, or None."""

    name: str
    forms: tuple[str, ...]
    match: Callable[[str], Optional[dict[str, Any]]]
    module: str
    cls: str


_SCHEMES: dict[str, Scheme] = {}


def register_scheme(scheme: Scheme) -> Scheme:
    """Add a kind of device target (later registrations are tried after earlier ones)."""
    if scheme.name in _SCHEMES:
        raise ValueError(f"device scheme {scheme.name!r} is already registered")
    _SCHEMES[scheme.name] = scheme
    return scheme


def list_schemes() -> list[str]:
    """The registered scheme names, in the order they are tried."""
    return list(_SCHEMES)


def _match_local(target: str) -> Optional[dict[str, Any]]:
    return {} if target == "local" else None


def _match_ssh(target: str) -> Optional[dict[str, Any]]:
    return {"url": target} if target.startswith("ssh://") else None


def _match_adb(target: str) -> Optional[dict[str, Any]]:
    if target != "adb" and not target.startswith("adb:"):
        return None
    serial = target[4:] or None
    if target.startswith("adb:") and not serial:
        raise DeviceError("adb target needs a serial after 'adb:' (or just 'adb' for the only device)",
                          exit_code=EXIT_USAGE)
    return {"serial": serial}


register_scheme(Scheme("local", ("local",), _match_local, "edgesep.devices.local", "LocalDevice"))
register_scheme(Scheme("ssh", ("ssh://[user@]host[:port]",), _match_ssh, "edgesep.devices.ssh", "SSHDevice"))
register_scheme(Scheme("adb", ("adb", "adb:SERIAL"), _match_adb, "edgesep.devices.adb", "AdbDevice"))

TARGET_FORMS = tuple(form for scheme in _SCHEMES.values() for form in scheme.forms)


def parse_target(target: str, **options: Any) -> Device:
    """A ``Device`` for a target string; ``options`` go to the device (e.g. ``ssh_config``, ``remote_python``).

    Raises:
        DeviceError: the target matches no registered scheme (exit 2; the message lists the valid forms).
    """
    target = (target or "").strip()
    for scheme in _SCHEMES.values():
        args = scheme.match(target)
        if args is not None:
            device_cls = getattr(importlib.import_module(scheme.module), scheme.cls)
            return device_cls(**args, **options)
    forms = ", ".join(form for s in _SCHEMES.values() for form in s.forms)
    raise DeviceError(f"unknown device target {target!r}; valid forms: {forms}", exit_code=EXIT_USAGE)
