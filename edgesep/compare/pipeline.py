"""The built-in experiment's plan, training and export, and the variants (what is measured) of both kinds of
run: seed 0's artifacts of the built-in network, or given model files.

One ``Job`` per (seed, form): the model, training and export configs, the training cache key and the export
folder. An export made earlier from the same trained model and export config is reused with ``--resume``.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Optional, Sequence

from edgesep.compare.config import FORMS, KINDS, CompareConfig
from edgesep.compare.records import ComparisonSpec, SeedForm, Variant
from edgesep.compare.store import Progress, ReportStore, Stage

if TYPE_CHECKING:
    from edgesep.converters.records import ArtifactRecord, ExportResult


@dataclasses.dataclass(frozen=True)
class Job:
    """One training and export of one form with one seed; ``train`` and ``export`` fill in as it runs.

    ``export`` is the export's record (None: nothing exported); ``train`` the training facts (cached,
    test accuracy, cache path; ``resumed`` when the export was reused without training).
    """

    seed: int
    form: str
    model_config: Any
    train_config: Any
    export_config: Any
    export_key: Optional[str]
    folder: Path
    train: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    export: Optional["ExportResult"] = None

    def artifact(self, kind: str) -> Optional["ArtifactRecord"]:
        """The artifact of ``kind`` (``float32``, ``int8``, ``onnx``, ``onnx_int8``), if exported."""
        if self.export is None:
            return None
        fmt, precision = KINDS[kind][:2]
        return self.export.find(fmt, precision)

    @property
    def keras_accuracy(self) -> Optional[float]:
        """The Keras test accuracy (from the export, else from training)."""
        if self.export is not None:
            return self.export.keras_accuracy
        return self.train.get("test_accuracy")


def _export_key(train_cache_key: str, export_config: Any) -> str:
    blob = json.dumps({"train": train_cache_key, "export": export_config.to_dict()}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _export_config(config: CompareConfig, seed: int) -> Any:
    """Seed 0: every kind; other seeds: only int8 (they exist for the accuracy spread)."""
    from edgesep.converters.export import ExportConfig

    if seed == 0:
        return ExportConfig(precisions=("float32", "int8") if config.int8 else ("float32",), onnx=True)
    return ExportConfig(precisions=("int8",), onnx=False) if config.int8 else None


def reusable_export(folder: Path, key: str) -> Optional["ExportResult"]:
    """The export in ``folder`` if it was made from the same trained model and export config."""
    from edgesep.converters.records import read_export

    result = read_export(folder)
    if result is None or (result.extra.get("compare") or {}).get("key") != key:
        return None
    if not all((folder / a.path).is_file() for a in result.artifacts):
        return None
    return result


def plan(config: CompareConfig, dataset: Any, out: Path, resume: bool) -> list[Job]:
    """One job per (seed, form), with a reusable export when resuming."""
    from edgesep.models import ModelConfig
    from edgesep.train import TrainConfig, cache_key

    jobs = []
    for seed in range(config.seeds):
        for form in FORMS:
            model_cfg = ModelConfig(form=form, input_shape=(config.input_size, config.input_size, 3),
                                    num_classes=max(dataset.num_classes, 2), width=config.width, blocks=config.blocks)
            train_cfg = TrainConfig(epochs=config.epochs, seed=seed, data=config.data)
            export_cfg = _export_config(config, seed)
            key = _export_key(cache_key(model_cfg, train_cfg, dataset), export_cfg) if export_cfg else None
            folder = out / "artifacts" / f"seed{seed}" / form
            reused = reusable_export(folder, key) if resume and key else None
            train = {**reused.extra["compare"]["train"], "resumed": True} if reused else {}
            jobs.append(Job(seed, form, model_cfg, train_cfg, export_cfg, key, folder, train, reused))
    return jobs


def train_and_export(config: CompareConfig, dataset: Any, out: Path, resume: bool, store: ReportStore,
                     progress: Progress) -> list[dict[str, Job]]:
    """Per seed, per form: the finished job (trained, exported), stage by stage in the report.

    Training happens in the ``train`` stage and export in the ``export`` stage; each Keras model is dropped
    once exported so that at most one is held at a time.
    """
    from edgesep.converters.export import export
    from edgesep.converters._quiet import import_tensorflow
    from edgesep.train import train_builtin

    import_tensorflow()
    jobs = plan(config, dataset, out, resume)
    models: dict[int, Any] = {}
    with Stage(store, progress, "train", len(jobs)):
        for i, job in enumerate(jobs):
            if job.export is None:
                progress.update("train", i, note=f"{job.form} seed {job.seed}")
                note = f"{job.form} seed {job.seed}"
                models[i], info = train_builtin(
                    job.model_config, job.train_config, dataset=dataset,
                    on_progress=lambda p, i=i, note=note: progress.update(
                        "train", i + (p.epoch - 1 + p.step / p.steps) / p.epochs, note=f"{note}: {p.describe()}"))
                jobs[i] = dataclasses.replace(job, train={k: info.get(k) for k in ("cached", "test_accuracy",
                                                                                   "cache_path")})
            progress.update("train", i + 1)
    with Stage(store, progress, "export", len(jobs)):
        for i, job in enumerate(jobs):
            progress.update("export", i, note=f"{job.form} seed {job.seed}")
            if job.export is None and job.export_config is not None:
                extra = {"compare": {"key": job.export_key, "train": dict(job.train), "seed": job.seed,
                                     "form": job.form}}
                jobs[i] = dataclasses.replace(job, export=export(models[i], job.folder, job.export_config,
                                                                 dataset, extra=extra))
            models.pop(i, None)
            progress.update("export", i + 1)
    return [{job.form: job for job in jobs if job.seed == seed} for seed in range(config.seeds)]


def builtin_variants(seed0: Mapping[str, Job], kinds: Sequence[str], out: Path) -> list[Variant]:
    """One variant per (form, kind) of seed 0: file, size, ops, params, MACs, Keras and artifact accuracy."""
    variants = []
    for form in FORMS:
        job = seed0[form]
        doc = job.export
        for kind in kinds:
            art = job.artifact(kind)
            file = job.folder / art.path
            variants.append(Variant(
                id=f"{form}/{kind}", name=f"{form} {KINDS[kind][3]}", form=form, kind=kind, label=KINDS[kind][3],
                format=art.format, precision=art.precision, file=str(file.resolve()),
                path=str(file.relative_to(out)), bytes=art.bytes, sha256=art.sha256, ops=dict(art.ops),
                params=doc.model.params, macs=doc.model.macs, keras_accuracy=doc.keras_accuracy,
                accuracy=art.accuracy, max_abs_error_vs_keras=art.max_abs_error_vs_keras))
    return variants


def builtin_comparisons(kinds: Sequence[str]) -> list[ComparisonSpec]:
    """fused vs split, one pair per artifact kind."""
    return [ComparisonSpec(label=KINDS[k][3], kind=k, a=f"fused/{k}", b=f"split/{k}", a_name="fused",
                           b_name="split") for k in kinds]


def seed_records(seeds: Sequence[Mapping[str, Job]], out: Path, int8: bool) -> tuple[dict[str, SeedForm], ...]:
    """Per seed and form: the training facts, export folder and accuracies shown in the report."""
    def record(job: Job) -> SeedForm:
        art = job.artifact("int8") if int8 else None
        return SeedForm(seed=job.seed, train=job.train,
                        export=str(job.folder.relative_to(out)) if job.export is not None else None,
                        keras_accuracy=job.export.keras_accuracy if job.export is not None else None,
                        int8_accuracy=art.accuracy if art is not None else None)

    return tuple({form: record(s[form]) for form in FORMS} for s in seeds)


def model_variants(paths: Sequence[Path]) -> list[Variant]:
    """One variant per given model file: size, ops, params, MACs (read from the file)."""
    from edgesep.converters.inspect import inspect_model

    from edgesep.report.text import distinct_labels

    names = distinct_labels([str(p) for p in paths])
    variants = []
    for path, name in zip(paths, names):
        info = inspect_model(path)
        variants.append(Variant(id=name, name=name, label=name, format=info.format, precision=_precision(info),
                                file=str(Path(path).resolve()), path=str(path), bytes=info.bytes,
                                sha256=info.sha256, ops=info.ops, params=info.params, macs=info.macs))
    return variants


def model_comparisons(variants: Sequence[Variant]) -> list[ComparisonSpec]:
    """Each given model against the first."""
    base = variants[0]
    return [ComparisonSpec(label=f"{v.name} vs {base.name}", a=v.id, b=base.id, a_name=v.name, b_name=base.name)
            for v in variants[1:]]


def _precision(info: Any) -> str:
    dtypes = (info.quantization or {}).get("dtypes") or {}
    return "int8" if any(d in ("int8", "uint8") for d in dtypes) else "float32"
