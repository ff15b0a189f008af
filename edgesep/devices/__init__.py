"""Device targets: ``local``, ``ssh://[user@]host[:port]``, ``adb``, ``adb:SERIAL``, from a registry of schemes.

Device kinds are known only here: nothing outside ``devices/`` compares a target string's prefix, it asks the
target's scheme. A :class:`Scheme` is a name, its target forms, a matcher that turns a target string into
constructor arguments (or None), the module and class that implement it, and what it owns:

- ``options``: the :class:`DeviceOption` s its devices take (``ssh_config``, ``cpu_mask``, ...), with their
  CLI flag, help and which commands offer them; the CLI builds its device flags from them
  (``edgesep.cli.app.device_options``), a sweep plan accepts them as ``[[devices]]`` keys;
- ``this_machine``: the device is the host edgesep runs on (``local``);
- ``edgetpu_on_host``: models for ``--delegate edgetpu`` are compiled on this host before they are sent;
- ``resource``: the Ray custom resource id of a device of this kind (``edgesep/adb:SERIAL``).

A new kind of device is one :func:`register_scheme` call (and its module). Never imports TensorFlow; each
device module is imported only when its target is used.
"""
from __future__ import annotations

import dataclasses
import importlib
import socket
from typing import Any, Callable, Mapping, Optional, Sequence

from edgesep.devices.base import BenchConfig, BenchResult, Device, DeviceError
from edgesep.errors import EXIT_USAGE
from edgesep.registry import Registry

__all__ = ["BenchConfig", "BenchResult", "Device", "DeviceError", "DeviceOption", "Scheme", "TARGET_FORMS",
           "check_device", "device_options", "device_resource", "key_options", "list_schemes", "options_for",
           "parse_target", "register_scheme", "scheme_of", "split_options"]


@dataclasses.dataclass(frozen=True)
class DeviceOption:
    """One option a kind of device takes (a constructor keyword of its class).

    Attributes:
        name: the keyword (``ssh_config``); the CLI flag is ``--ssh-config``, the plan key the name.
        help: one line for ``--help``.
        applies_to: which targets take it, for messages (``ssh://``, ``adb``, ``remote``).
        kind: ``str``, ``path`` (a file: a plan resolves it from the plan's folder), ``port`` or ``flag``.
        metavar: the CLI metavar.
        commands: the CLI commands that offer it as a flag (``bench``, ``compare``, ``worker``).
        in_key: False for connection details that do not change what is measured (left out of result keys).
    """

    name: str
    help: str
    applies_to: str
    kind: str = "str"
    metavar: str = ""
    commands: tuple[str, ...] = ("bench",)
    in_key: bool = True

    @property
    def flag(self) -> str:
        return "--" + self.name.replace("_", "-")


def _resource_as_target(target: str, host: Optional[str]) -> str:
    return f"edgesep/{target}"


@dataclasses.dataclass(frozen=True)
class Scheme:
    """One kind of device target: ``match(target)`` gives the device's constructor arguments, or None."""

    name: str
    forms: tuple[str, ...]
    match: Callable[[str], Optional[dict[str, Any]]]
    module: str
    cls: str
    options: tuple[DeviceOption, ...] = ()
    this_machine: bool = False
    edgetpu_on_host: bool = True
    resource: Callable[[str, Optional[str]], str] = _resource_as_target


_SCHEMES: Registry[Scheme] = Registry("device scheme")


def register_scheme(scheme: Scheme) -> Scheme:
    """Add a kind of device target (later registrations are tried after earlier ones)."""
    return _SCHEMES.add(scheme.name, scheme)


def list_schemes() -> list[str]:
    """The registered scheme names, in the order they are tried."""
    return list(_SCHEMES.names())


def _unknown(target: str) -> DeviceError:
    forms = ", ".join(form for s in _SCHEMES for form in s.forms)
    return DeviceError(f"unknown device target {target!r}; valid forms: {forms}", exit_code=EXIT_USAGE)


def _matched(target: str) -> tuple[Scheme, dict[str, Any]]:
    target = (target or "").strip()
    for scheme in _SCHEMES:
        args = scheme.match(target)
        if args is not None:
            return scheme, args
    raise _unknown(target)


def scheme_of(target: str) -> Scheme:
    """The scheme of a target string; DeviceError (exit 2) listing the valid forms when none matches."""
    return _matched(target)[0]


def parse_target(target: str, **options: Any) -> Device:
    """A ``Device`` for a target string; ``options`` go to the device (e.g. ``ssh_config``, ``remote_python``).

    Raises:
        DeviceError: the target matches no registered scheme (exit 2; the message lists the valid forms).
    """
    scheme, args = _matched(target)
    device_cls = getattr(importlib.import_module(scheme.module), scheme.cls)
    return device_cls(**args, **options)


def device_options(command: Optional[str] = None) -> tuple[DeviceOption, ...]:
    """Every option a registered scheme takes (once each, in registration order); with ``command``, those the
    CLI command offers."""
    found: dict[str, DeviceOption] = {}
    for scheme in _SCHEMES:
        for option in scheme.options:
            found.setdefault(option.name, option)
    return tuple(o for o in found.values() if command is None or command in o.commands)


def options_for(target: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``given`` (None values dropped) that the target's scheme takes."""
    names = {o.name for o in scheme_of(target).options}
    return {k: v for k, v in given.items() if v is not None and k in names}


def split_options(targets: Sequence[str], given: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Per target, the given options its scheme takes; an option no target takes is a usage error (exit 2)."""
    taken = {o.name for t in targets for o in scheme_of(t).options}
    unused = [o for o in device_options() if given.get(o.name) is not None and o.name not in taken]
    if unused:
        flags = ", ".join(o.flag for o in unused)
        applies = sorted({o.applies_to for o in unused})
        raise DeviceError(f"{flags} appl{'ies' if len(unused) == 1 else 'y'} to {' and '.join(applies)} targets "
                          "only", exit_code=EXIT_USAGE)
    return {t: options_for(t, given) for t in targets}


def key_options(options: Mapping[str, Any]) -> dict[str, Any]:
    """The options that change what a device measures (connection details left out)."""
    known = {o.name: o for o in device_options()}
    return {k: v for k, v in options.items() if k not in known or known[k].in_key}


def device_resource(target: str, host: Optional[str] = None) -> str:
    """The Ray custom resource only the node owning the device offers: ``edgesep/<scheme>:<id>``
    (``adb:SERIAL``, ``ssh:user@host:port``, ``local:<host>``, default host: this machine)."""
    target = (target or "").strip()
    return scheme_of(target).resource(target, host)


def check_device(target: str, options: Mapping[str, Any]) -> None:
    """Raise a one-line ``DeviceError`` unless the device answers (adb: attached and online; ssh: logs in)."""
    device = parse_target(target, **options)
    answers = getattr(device, "check_answers", None)
    if answers is not None:
        answers()


# ------------------------------------------------------------------------------------------------ the schemes

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


REMOTE_PYTHON = DeviceOption("remote_python", "The device's Python (default: python3).", "remote",
                             metavar="PATH", commands=("bench", "compare"))
SSH_OPTIONS = (DeviceOption("ssh_config", "ssh_config for ssh:// targets (-F).", "ssh://", "path", "FILE",
                            ("bench", "compare", "worker"), in_key=False), REMOTE_PYTHON)
ADB_OPTIONS = (
    REMOTE_PYTHON,
    DeviceOption("benchmark_binary", "adb: TFLite's benchmark_model built for the phone, pushed and used as the "
                 "runner.", "adb", "path", "PATH"),
    DeviceOption("cpu_mask", "adb: taskset CPU mask for the runner (e.g. f0: big cores).", "adb", metavar="HEX"),
    DeviceOption("adb_path", "adb: the adb executable (default: adb on PATH).", "adb", metavar="PATH", commands=(),
                 in_key=False),
    DeviceOption("adb_server_port", "adb server port.", "adb", "port", "PORT", ("worker",), in_key=False),
    DeviceOption("runner", "adb: python, benchmark_model or auto.", "adb", commands=()),
    DeviceOption("op_profiling", "adb with benchmark_model: per-op profile (--enable_op_profiling).", "adb", "flag"))


def _local_resource(target: str, host: Optional[str]) -> str:
    return f"edgesep/local:{host or socket.gethostname()}"


def _ssh_resource(target: str, host: Optional[str]) -> str:
    return "edgesep/ssh:" + target[len("ssh://"):]


register_scheme(Scheme("local", ("local",), _match_local, "edgesep.devices.local", "LocalDevice",
                       this_machine=True, resource=_local_resource))
register_scheme(Scheme("ssh", ("ssh://[user@]host[:port]",), _match_ssh, "edgesep.devices.ssh", "SSHDevice",
                       options=SSH_OPTIONS, resource=_ssh_resource))
register_scheme(Scheme("adb", ("adb", "adb:SERIAL"), _match_adb, "edgesep.devices.adb", "AdbDevice",
                       options=ADB_OPTIONS, edgetpu_on_host=False))

TARGET_FORMS = tuple(form for scheme in _SCHEMES for form in scheme.forms)
