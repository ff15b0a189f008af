"""A plan's work as typed records: export jobs (train + export), artifacts, and measure jobs (artifact, device).

``run_export`` is the export work itself (plain Python; the sweep runs it as a Ray task on any node with a
free CPU): it returns the export.json document and the artifact bytes, so the node doing the work needs no
shared folder with the driver. Keys are content hashes: a measure job's key is what decides its result (the
artifact's bytes, the device and its options, the bench settings), so ``--resume`` finds it again.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Optional, Sequence

from edgesep.fleet.plan import DeviceSpec, ExportSpec, GroupSpec, ModelSpec, SweepPlan

if TYPE_CHECKING:
    from edgesep.converters.records import ExportResult



def _digest(doc: Any) -> str:
    return hashlib.sha256(json.dumps(doc, sort_keys=True).encode()).hexdigest()[:16]


def file_sha256(path) -> str:
    """sha256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class ExportJob:
    """Train (built-in) or load (Keras file) one model and export it; ``folder`` is relative to the sweep DIR."""

    key: str
    model: ModelSpec
    export: ExportSpec
    folder: str

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "model": self.model.to_dict(), "export": self.export.to_dict(),
                "folder": self.folder}


@dataclasses.dataclass(frozen=True)
class Artifact:
    """One model file to measure: where it is on the driver, what it is, and the export's accuracy figures."""

    model: str
    model_hash: str
    form: Optional[str]
    seed: Optional[int]
    path: str
    format: str
    precision: str
    sha256: str
    bytes: int
    accuracy: Optional[float] = None
    keras_accuracy: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class MeasureJob:
    """One artifact on one device with one bench config; ``key`` decides whether ``--resume`` skips it."""

    key: str
    artifact: Artifact
    device: DeviceSpec
    bench: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "artifact": self.artifact.to_dict(), "device": self.device.to_dict(),
                "bench": dict(self.bench)}


@dataclasses.dataclass(frozen=True)
class GroupJob:
    """Two artifacts (same format and precision) of a ``[[groups]]`` entry measured together on one device."""

    key: str
    group: GroupSpec
    a: Artifact
    b: Artifact
    device: DeviceSpec
    bench: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"key": self.key, "group": self.group.to_dict(), "a": self.a.to_dict(), "b": self.b.to_dict(),
                "device": self.device.to_dict(), "bench": dict(self.bench)}


def expand_groups(plan: SweepPlan) -> list[GroupSpec]:
    """The plan's groups with the ``by`` ones made explicit: ``form``: fused vs split of each built-in point
    (same width, size, blocks, seed, epochs); ``precision``: each exported model's int8 vs its float32."""
    out = []
    for g in plan.groups:
        if g.by is None:
            out.append(g)
        elif g.by == "form":
            for m in (m for m in plan.models if m.path is None and m.form == "fused"):
                twin = next((o for o in plan.models if o.path is None and o.form == "split"
                             and dataclasses.replace(o, name=m.name, form="fused") == m), None)
                if twin is not None:
                    out.append(GroupSpec(name=f"{m.name}-vs-split", a=m.name, b=twin.name, sessions=g.sessions))
        else:
            out += [GroupSpec(name=f"{m.name}-int8-vs-float32", a=m.name, b=m.name, sessions=g.sessions,
                              by="precision") for m in plan.models if m.exported]
    return out


def group_jobs(group: GroupSpec, arrived: dict[str, list[Artifact]], plan: SweepPlan) -> list[GroupJob]:
    """One job per device and artifact pair of ``group``, once both models have arrived: artifacts of the same
    format and precision, or (``by = "precision"``) the model's int8 against its float32 of one format."""
    if group.by == "precision":
        floats = {x.format: x for x in arrived[group.b] if x.precision == "float32"}
        pairs = [(x, floats[x.format]) for x in arrived[group.a] if x.precision == "int8" and x.format in floats]
    else:
        kinds = {(x.format, x.precision): x for x in arrived[group.b]}
        pairs = [(x, kinds[(x.format, x.precision)]) for x in arrived[group.a] if (x.format, x.precision) in kinds]
    jobs = []
    for device in plan.devices:
        bench = {**plan.bench, **({"delegate": device.delegate} if device.delegate else {})}
        for a, b in pairs:
            key = _digest({"group": group.to_dict(), "a": a.sha256, "b": b.sha256,
                           "device": measure_key(a, device, bench)})
            jobs.append(GroupJob(key=key, group=group, a=a, b=b, device=device, bench=bench))
    return jobs


def export_jobs(plan: SweepPlan) -> list[ExportJob]:
    """One export job per built-in point and Keras file of the plan."""
    jobs = []
    for model in plan.models:
        if not model.exported:
            continue
        blob = {"model": {**model.to_dict(), "name": None}, "export": plan.export.to_dict()}
        if model.path:
            blob["file"] = file_sha256(model.path)
        key = _digest(blob)
        jobs.append(ExportJob(key=key, model=model, export=plan.export, folder=f"artifacts/{model.name}-{key[:8]}"))
    return jobs


def file_artifacts(model: ModelSpec) -> list[Artifact]:
    """A .tflite/.onnx model file of the plan as an artifact (format and precision read from the file)."""
    from edgesep.converters.inspect import inspect_model

    info = inspect_model(model.path)
    dtypes = (info.quantization or {}).get("dtypes") or {}
    precision = "int8" if any(d in ("int8", "uint8") for d in dtypes) else "float32"
    return [Artifact(model=model.name, model_hash=info.sha256, form=model.form, seed=None, path=str(model.path),
                     format=info.format, precision=precision, sha256=info.sha256, bytes=info.bytes)]


def export_artifacts(job: ExportJob, result: "ExportResult", out: Path) -> list[Artifact]:
    """The artifacts an export job wrote into ``out / job.folder`` (from its export's record)."""
    folder = Path(out) / job.folder
    return [Artifact(model=job.model.name, model_hash=job.key, form=job.model.form or result.model.form,
                     seed=job.model.seed if job.model.path is None else None, path=str(folder / a.path),
                     format=a.format, precision=a.precision, sha256=a.sha256, bytes=a.bytes,
                     accuracy=a.accuracy, keras_accuracy=result.keras_accuracy)
            for a in result.artifacts]


def reusable_export(out: Path, job: ExportJob) -> Optional["ExportResult"]:
    """The export of ``job`` left by an earlier run, if complete and made by the same job key."""
    from edgesep.converters.records import read_export as read

    folder = Path(out) / job.folder
    try:
        result = read(folder)
        if result is None or (result.extra.get("fleet") or {}).get("key") != job.key or not result.artifacts:
            return None
        if not all((folder / a.path).is_file() and file_sha256(folder / a.path) == a.sha256
                   for a in result.artifacts):
            return None
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return None  # damaged or from elsewhere: exported again
    return result


def measure_key(artifact: Artifact, device: DeviceSpec, bench: dict[str, Any]) -> str:
    """What decides a measurement: the artifact bytes, the device and its options, the bench settings."""
    from edgesep.devices import key_options

    options = key_options(dict(device.options))
    return _digest({"artifact": artifact.sha256, "target": device.target, "host": device.host,
                    "options": options, "bench": bench})


def measure_jobs(artifacts: Sequence[Artifact], plan: SweepPlan) -> list[MeasureJob]:
    """Every (artifact, device) pair, devices outermost so each device's queue keeps the artifact order."""
    jobs = []
    for device in plan.devices:
        bench = {**plan.bench, **({"delegate": device.delegate} if device.delegate else {})}
        for artifact in artifacts:
            jobs.append(MeasureJob(key=measure_key(artifact, device, bench), artifact=artifact, device=device,
                                   bench=bench))
    return jobs


def run_export(job: dict[str, Any], keras_bytes: Optional[bytes] = None) -> dict[str, Any]:
    """Do one export job (``ExportJob.to_dict()``): train or load, export, verify.

    Returns:
        ``{"doc": export.json document, "files": {artifact name: bytes}}``; export.json gets ``fleet.key``.
    """
    from edgesep.converters.export import ExportConfig, export_source

    spec, exp = job["model"], job["export"]
    config = ExportConfig(precisions=tuple(exp["precisions"]), onnx=exp["onnx"], calib_samples=exp["calib_samples"])
    extra: dict[str, Any] = {"fleet": {"key": job["key"], "model": spec}}
    with tempfile.TemporaryDirectory(prefix="edgesep-fleet-export-") as tmp:
        if spec["path"] is None:
            source = _builtin_source(spec, exp["data"])
        else:
            from edgesep.io import write_bytes
            from edgesep.source import ModelSource

            path = Path(tmp) / Path(spec["path"]).name
            write_bytes(path, keras_bytes or b"")
            data = exp["data"] if "int8" in config.precisions or exp["data"] != "digits" else None
            source = ModelSource(model=str(path), data=data)
            extra["source"] = {"model": spec["path"]}  # the plan's path, not this temporary copy
        out = Path(tmp) / "out"
        result = export_source(source, out, config, extra=extra)
        files = {a.path: (out / a.path).read_bytes() for a in result.artifacts}
    return {"doc": result.to_dict(), "files": files}


def _builtin_source(spec: dict[str, Any], data: str):
    """The plan's built-in network point as a ModelSource (trained by ``edgesep.train`` when loaded)."""
    from edgesep.models import ModelConfig
    from edgesep.source import ModelSource
    from edgesep.train import TrainConfig

    network = ModelConfig(form=spec["form"], input_shape=(spec["input_size"], spec["input_size"], 3),
                          width=spec["width"], blocks=tuple(tuple(b) for b in spec["blocks"]))
    return ModelSource(network=network, train=TrainConfig(epochs=spec["epochs"], seed=spec["seed"], data=data),
                       data=data)
