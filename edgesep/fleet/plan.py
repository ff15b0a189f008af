"""Sweep plans: a TOML file naming models, devices, export and bench settings; checked into typed records.

Keys mirror the CLI (``input_size`` for ``--input-size``, ``max_secs`` for ``--max-secs``), so nobody learns
two vocabularies. Every problem is one :class:`PlanError` line that names the file and the key, e.g.
``plan.toml: devices[2].target: unknown device target 'adbx'; ...``. Never imports Ray or TensorFlow.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
from pathlib import Path
from typing import Any, Optional

from edgesep.blocks import FORMS
from edgesep.devices import device_options, device_resource  # device_resource re-exported here
from edgesep.errors import UsageError

MODEL_SUFFIXES = (".tflite", ".onnx", ".keras", ".h5")
LOST_NODE_POLICIES = ("requeue", "fail")
BENCH_KEYS = ("threads", "runs", "warmup", "warmup_secs", "min_secs", "max_secs", "delegate", "seed")
# device keys besides target/host: the options the device schemes own, each handed to parse_target as is
DEVICE_OPTIONS = tuple(o.name for o in device_options())
DEVICE_PATH_OPTIONS = tuple(o.name for o in device_options() if o.kind == "path")
NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._-+=")


class PlanError(UsageError):
    """A plan that cannot run: one line naming the file and the key (exit 2)."""


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    """One ``[[models]]`` entry: a model file, or one point of the built-in network's table.

    Attributes:
        name: the label in the database and the report.
        path: a .tflite/.onnx (measured as is) or .keras/.h5 (exported) file; None for the built-in network.
        form: ``fused`` or ``split`` (built-in only).
        width: channel multiplier (built-in only).
        input_size: input height and width (built-in only).
        blocks: (filters, stride) per block (built-in only).
        seed: training seed (built-in only).
        epochs: training epochs (built-in only).
    """

    name: str
    path: Optional[str] = None
    form: Optional[str] = None
    width: float = 1.0
    input_size: int = 32
    blocks: tuple[tuple[int, int], ...] = ()
    seed: int = 0
    epochs: int = 8

    @property
    def exported(self) -> bool:
        """Whether this model goes through ``edgesep export`` (a Keras file or the built-in network)."""
        return self.path is None or Path(self.path).suffix in (".keras", ".h5")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["blocks"] = [list(b) for b in self.blocks]
        return d


@dataclasses.dataclass(frozen=True)
class DeviceSpec:
    """One ``[[devices]]`` entry: a target edgesep accepts, the host it is attached to, and its options."""

    target: str
    host: Optional[str] = None
    delegate: Optional[str] = None
    options: tuple[tuple[str, Any], ...] = ()

    @property
    def resource(self) -> str:
        """The Ray custom resource only the node owning this device offers (see ``device_resource``)."""
        return device_resource(self.target, self.host)

    def to_dict(self) -> dict[str, Any]:
        return {"target": self.target, "host": self.host, "delegate": self.delegate, "options": dict(self.options)}


@dataclasses.dataclass(frozen=True)
class ExportSpec:
    """``[export]``: what exported models produce (as ``edgesep export``)."""

    precisions: tuple[str, ...] = ("float32", "int8")
    onnx: bool = False
    data: str = "digits"
    calib_samples: int = 200

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "precisions": list(self.precisions)}


@dataclasses.dataclass(frozen=True)
class FaultSpec:
    """``[faults]``: what a lost worker node does to its devices' jobs.

    Attributes:
        lost_node: ``requeue`` (the running job once, when the node returns within ``requeue_timeout``;
            else its jobs fail) or ``fail`` (its jobs fail at once).
        requeue_timeout: seconds to wait for a lost device's node to return.
    """

    lost_node: str = "requeue"
    requeue_timeout: float = 60.0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class GroupSpec:
    """``[[groups]]``: two models measured together on each device as ``compare`` does (a vs b, b the baseline):
    ``sessions`` fresh runner processes, rounds interleaved, with an A/A control (b loaded twice)."""

    name: str
    a: str
    b: str
    sessions: int = 3
    by: Optional[str] = None  # "form" or "precision": one group per pair the plan's models make (a, b empty)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SweepPlan:
    """A checked plan: models, devices, export and bench settings, fault policy, paired groups; ``hash``."""

    file: str
    models: tuple[ModelSpec, ...]
    devices: tuple[DeviceSpec, ...]
    bench: dict[str, Any]
    export: ExportSpec
    faults: FaultSpec
    hash: str
    text: str
    groups: tuple[GroupSpec, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {"file": self.file, "hash": self.hash, "models": [m.to_dict() for m in self.models],
                "devices": [d.to_dict() for d in self.devices], "bench": dict(self.bench),
                "export": self.export.to_dict(), "faults": self.faults.to_dict(),
                "groups": [g.to_dict() for g in self.groups]}


def load_plan(path) -> SweepPlan:
    """Read and check a plan file.

    Raises:
        PlanError: the file is missing, not TOML, or a key is unknown, missing or invalid (one line).
    """
    from edgesep.fleet.planfile import read_plan_text

    return parse_plan(read_plan_text(path), Path(path))


def _toml_loads(text: str, where: str) -> dict[str, Any]:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        try:
            import tomli as tomllib  # type: ignore[no-redef]
        except ImportError:
            raise PlanError(f"{where}: reading TOML on Python 3.10 needs tomli (pip install tomli)") from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        raise PlanError(f"{where}: not valid TOML: {e}") from None


def parse_plan(text: str, path) -> SweepPlan:
    """A ``SweepPlan`` from TOML ``text``; relative paths in it are taken from ``path``'s folder."""
    path = Path(path)
    where = path.name
    doc = _toml_loads(text, where)
    _only(doc, ("models", "devices", "bench", "export", "faults", "groups"), where, "")
    base = path.resolve().parent
    models = _list(doc, "models", where)
    devices = _list(doc, "devices", where)
    specs = tuple(m for i, entry in enumerate(models) for m in _models(entry, f"models[{i + 1}]", where, base))
    names = [m.name for m in specs]
    dup = next((n for n in names if names.count(n) > 1), None)
    if dup:
        raise PlanError(f"{where}: models: two models are named {dup!r}; give each a distinct name")
    device_specs = tuple(_device(entry, f"devices[{i + 1}]", where, base) for i, entry in enumerate(devices))
    resources = [d.resource for d in device_specs]
    dup = next((r for r in resources if resources.count(r) > 1), None)
    if dup:
        raise PlanError(f"{where}: devices: {dup.split('/', 1)[1]} is listed twice")
    bench = _bench(_table(doc, "bench", where), where)
    export = _export(_table(doc, "export", where), where)
    if any(m.path and Path(m.path).suffix in (".keras", ".h5") for m in specs) and "int8" in export.precisions \
            and "data" not in _table(doc, "export", where):
        raise PlanError(f"{where}: export.data: int8 export of a Keras file needs data to calibrate")
    faults = _faults(_table(doc, "faults", where), where)
    digest = hashlib.sha256(text.encode()).hexdigest()[:16]
    groups = tuple(_group(g, f"groups[{i + 1}]", where, names)
                   for i, g in enumerate(_list(doc, "groups", where) if "groups" in doc else []))
    return SweepPlan(file=str(path), models=specs, devices=device_specs, bench=bench, export=export,
                     faults=faults, hash=digest, text=text, groups=groups)


def _group(entry: dict[str, Any], prefix: str, where: str, names: list[str]) -> GroupSpec:
    _only(entry, ("name", "models", "sessions", "by"), where, prefix + ".")
    sessions = _typed(entry.get("sessions", 3), int, f"{prefix}.sessions", where, minimum=2)
    if "by" in entry:
        by = _typed(entry["by"], str, f"{prefix}.by", where)
        if by not in ("form", "precision") or "models" in entry or "name" in entry:
            raise PlanError(f"{where}: {prefix}.by: 'form' (fused vs split) or 'precision' (int8 vs float32), "
                            "without models or name")
        return GroupSpec(name=f"by-{by}", a="", b="", sessions=sessions, by=by)
    models = entry.get("models")
    if not isinstance(models, list) or len(models) != 2:
        raise PlanError(f"{where}: {prefix}.models: two model names, [A, B] (B is the baseline)")
    a, b = (_typed(m, str, f"{prefix}.models", where) for m in models)
    unknown = next((m for m in (a, b) if m not in names), None)
    if unknown is not None:
        raise PlanError(f"{where}: {prefix}.models: no model is named {unknown!r}; models: {', '.join(names)}")
    name = _name(_typed(entry.get("name", f"{a}-vs-{b}"), str, f"{prefix}.name", where), f"{prefix}.name", where)
    return GroupSpec(name=name, a=a, b=b, sessions=sessions)


# ---------------------------------------------------------------- sections

def _only(table: dict[str, Any], allowed, where: str, prefix: str) -> None:
    extra = sorted(set(table) - set(allowed))
    if extra:
        raise PlanError(f"{where}: {prefix}{extra[0]}: unknown key; valid: {', '.join(allowed)}")


def _list(doc: dict[str, Any], key: str, where: str) -> list[dict[str, Any]]:
    value = doc.get(key)
    if not isinstance(value, list) or not value or not all(isinstance(v, dict) for v in value):
        raise PlanError(f"{where}: {key}: need at least one [[{key}]] table")
    return value


def _table(doc: dict[str, Any], key: str, where: str) -> dict[str, Any]:
    value = doc.get(key, {})
    if not isinstance(value, dict):
        raise PlanError(f"{where}: {key}: must be a table ([{key}])")
    return value


def _typed(value: Any, kind, key: str, where: str, minimum: Optional[float] = None) -> Any:
    ok = isinstance(value, kind) and not (isinstance(value, bool) and kind is not bool)
    if kind is float and isinstance(value, int) and not isinstance(value, bool):
        value, ok = float(value), True
    if not ok:
        names = {int: "an integer", float: "a number", str: "a string", bool: "true or false"}
        raise PlanError(f"{where}: {key}: must be {names[kind]}, got {value!r}")
    if kind is float and not math.isfinite(value):
        raise PlanError(f"{where}: {key}: must be a finite number, got {value!r}")
    if minimum is not None and value < minimum:
        raise PlanError(f"{where}: {key}: must be >= {minimum:g}, got {value!r}")
    return value


def _values(entry: dict[str, Any], key: str, kind, default: Any, where: str, prefix: str,
            minimum: Optional[float] = None) -> list[Any]:
    """A key of the built-in table: one value or a list of them (lists multiply)."""
    value = entry.get(key, default)
    items = value if isinstance(value, list) else [value]
    if not items:
        raise PlanError(f"{where}: {prefix}.{key}: empty list")
    return [_typed(v, kind, f"{prefix}.{key}", where, minimum) for v in items]


def _models(entry: dict[str, Any], prefix: str, where: str, base: Path) -> list[ModelSpec]:
    if "path" in entry:
        _only(entry, ("path", "name", "form"), where, prefix + ".")
        raw = _typed(entry["path"], str, f"{prefix}.path", where)
        path = (base / Path(raw).expanduser()).resolve()
        if path.suffix not in MODEL_SUFFIXES:
            raise PlanError(f"{where}: {prefix}.path: {raw}: expected one of {', '.join(MODEL_SUFFIXES)}")
        if not path.is_file():
            raise PlanError(f"{where}: {prefix}.path: model file not found: {raw}")
        name = _name(_typed(entry.get("name", path.name), str, f"{prefix}.name", where), f"{prefix}.name", where)
        form = entry.get("form")
        if form is not None and form not in FORMS:
            raise PlanError(f"{where}: {prefix}.form: unknown form {form!r}; valid: {', '.join(FORMS)}")
        return [ModelSpec(name=name, path=str(path), form=form)]
    return _builtin(entry, prefix, where)


def _name(name: str, key: str, where: str) -> str:
    """A model name: it becomes part of a folder name under --out, so no path separators, no leading dot."""
    bad = sorted(set(name) - NAME_CHARS)
    if not name or name.startswith(".") or bad or len(name) > 100:
        why = f"character {bad[0]!r}" if bad else "a leading dot" if name else "empty"
        raise PlanError(f"{where}: {key}: {name!r}: {why} not allowed; use letters, digits and . _ - + = "
                        f"(up to 100, not starting with a dot)")
    return name


def _builtin(entry: dict[str, Any], prefix: str, where: str) -> list[ModelSpec]:
    from edgesep.models import DEFAULT_BLOCKS

    _only(entry, ("form", "width", "input_size", "blocks", "seeds", "epochs", "name"), where, prefix + ".")
    forms = _values(entry, "form", str, list(FORMS), where, prefix)
    bad = next((f for f in forms if f not in FORMS), None)
    if bad:
        raise PlanError(f"{where}: {prefix}.form: unknown form {bad!r}; valid: {', '.join(FORMS)}")
    widths = _values(entry, "width", float, 1.0, where, prefix, minimum=0.01)
    sizes = _values(entry, "input_size", int, 32, where, prefix, minimum=8)
    seeds_value = entry.get("seeds", 1)
    if isinstance(seeds_value, list):
        seeds = _values(entry, "seeds", int, 1, where, prefix, minimum=0)
    else:
        seeds = list(range(_typed(seeds_value, int, f"{prefix}.seeds", where, minimum=1)))
    epochs = _typed(entry.get("epochs", 8), int, f"{prefix}.epochs", where, minimum=1)
    blocks = DEFAULT_BLOCKS
    if "blocks" in entry:
        blocks = _blocks(_typed(entry["blocks"], str, f"{prefix}.blocks", where), f"{prefix}.blocks", where)
    stem = _name(_typed(entry.get("name", "builtin"), str, f"{prefix}.name", where), f"{prefix}.name", where)
    return [ModelSpec(name=f"{stem}-{form}-w{width:g}-i{size}-s{seed}", form=form, width=width, input_size=size,
                      blocks=blocks, seed=seed, epochs=epochs)
            for form in forms for width in widths for size in sizes for seed in seeds]


def _blocks(spec: str, key: str, where: str) -> tuple[tuple[int, int], ...]:
    from edgesep.compare import parse_blocks

    try:
        return parse_blocks(spec)
    except ValueError as e:
        raise PlanError(f"{where}: {key}: {e}") from None


def _device(entry: dict[str, Any], prefix: str, where: str, base: Path) -> DeviceSpec:
    from edgesep.devices import parse_target
    from edgesep.errors import EdgesepError

    _only(entry, ("target", "host", "delegate", *DEVICE_OPTIONS), where, prefix + ".")
    if "target" not in entry:
        raise PlanError(f"{where}: {prefix}.target: missing (local, ssh://[user@]host[:port], adb or adb:SERIAL)")
    target = _typed(entry["target"], str, f"{prefix}.target", where).strip()
    host = _typed(entry["host"], str, f"{prefix}.host", where) if "host" in entry else None
    options = {k: entry[k] for k in DEVICE_OPTIONS if k in entry}
    for key in DEVICE_PATH_OPTIONS:
        if key in options:
            given = Path(_typed(options[key], str, f"{prefix}.{key}", where)).expanduser()
            options[key] = str((base / given).resolve())
    try:
        parse_target(target, **options)  # no connection: checks the target form and the options
    except TypeError as e:  # an option this kind of device does not take
        key = next((k for k in sorted(options) if repr(k) in str(e)), "options")
        raise PlanError(f"{where}: {prefix}.{key}: a {target.split(':', 1)[0]} device does not take {key}") from None
    except (EdgesepError, ValueError) as e:
        key = "target" if "target" in str(e) or not options else "options"
        raise PlanError(f"{where}: {prefix}.{key}: {e}") from None
    delegate = entry.get("delegate")
    if delegate is not None:
        _bench({"delegate": _typed(delegate, str, f"{prefix}.delegate", where)}, where, prefix=f"{prefix}.")
    return DeviceSpec(target=target, host=host, delegate=delegate, options=tuple(sorted(options.items())))


def _bench(table: dict[str, Any], where: str, prefix: str = "bench.") -> dict[str, Any]:
    from edgesep.devices.base import BenchConfig

    _only(table, BENCH_KEYS, where, prefix)
    try:
        return BenchConfig(**table).to_dict()
    except (TypeError, ValueError) as e:
        key = next((k for k in table if k in str(e).replace(" ", "_")), next(iter(table), "?"))
        raise PlanError(f"{where}: {prefix}{key}: {e}") from None


def _export(table: dict[str, Any], where: str) -> ExportSpec:
    _only(table, ("precisions", "onnx", "data", "calib_samples"), where, "export.")
    precisions = _values(table, "precisions", str, ["float32", "int8"], where, "export")
    bad = next((p for p in precisions if p not in ("float32", "float16", "int8")), None)
    if bad:
        raise PlanError(f"{where}: export.precisions: unknown precision {bad!r}; valid: float32, float16, int8")
    return ExportSpec(precisions=tuple(dict.fromkeys(precisions)),
                      onnx=_typed(table.get("onnx", False), bool, "export.onnx", where),
                      data=_typed(table.get("data", "digits"), str, "export.data", where),
                      calib_samples=_typed(table.get("calib_samples", 200), int, "export.calib_samples", where, 1))


def _faults(table: dict[str, Any], where: str) -> FaultSpec:
    _only(table, ("lost_node", "requeue_timeout"), where, "faults.")
    policy = _typed(table.get("lost_node", "requeue"), str, "faults.lost_node", where)
    if policy not in LOST_NODE_POLICIES:
        raise PlanError(f"{where}: faults.lost_node: {policy!r}; valid: {', '.join(LOST_NODE_POLICIES)}")
    timeout = _typed(table.get("requeue_timeout", 60.0), float, "faults.requeue_timeout", where, minimum=0)
    return FaultSpec(lost_node=policy, requeue_timeout=timeout)
