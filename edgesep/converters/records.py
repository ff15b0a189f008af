"""export.json as typed records: :class:`ExportResult` holds the export, :class:`ArtifactRecord` each file.

``ExportResult.to_dict()`` *is* export.json (the keys and meanings of DESIGN.md's contract), and
:func:`ExportResult.from_dict` / :func:`read_export` are the one way to read it back: bench, compare, fleet
and the CLI use attributes of these records, never string keys of the document.

The checks of an artifact against Keras are per model output::

    ArtifactRecord(..., checks=(OutputCheck("dense", max_abs_error_vs_keras=1e-6, accuracy=0.97,
                                            top1_agreement_vs_keras=1.0, output_sqnr_db_vs_keras=80.0),))

- ``checks`` is a tuple with one :class:`OutputCheck` per model output, in the model's output order, each
  keyed by the output's name (``OutputCheck.output``); ``()`` for an artifact this host does not verify
  (the Edge TPU model).
- export.json keeps the per-output list as ``checks: [{"output": ..., ...}]``. With ONE output the
  artifact's top-level keys ``max_abs_error_vs_keras``, ``accuracy``, ``top1_agreement_vs_keras``,
  ``output_sqnr_db_vs_keras`` are that output's figures, as before; with several outputs they are null
  (no single figure describes several outputs) and only ``checks`` holds them.
- Readers: ``record.check()`` (the only output's check, None when unverified or several outputs),
  ``record.check("name")`` (one output's), ``record.accuracy`` / ``record.max_abs_error_vs_keras``
  (the top-level figures, as export.json has them).

Sections other stages write stay JSON-ready mappings (``fold``, ``equalize``, ``int8_check``,
``quant_error``, ``edgetpu``, ``source``); sections a caller adds (compare's and fleet's keys) are ``extra``.
Imports nothing heavy (no TensorFlow): ``edgesep bench`` reads export.json through it.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any, Mapping, Optional

from edgesep.converters.export_config import ExportConfig
from edgesep.errors import DataError
from edgesep.preprocess import Preprocess

EXPORT_JSON = "export.json"
CHECK_KEYS = ("max_abs_error_vs_keras", "accuracy", "top1_agreement_vs_keras", "output_sqnr_db_vs_keras")
_ARTIFACT_KEYS = ("path", "format", "precision", "bytes", "sha256", "ops", "runtime", "delegate", "checks",
                  "key") + CHECK_KEYS
_SECTIONS = ("equalize", "int8_check", "quant_error", "edgetpu", "source", "keep_float", "ptq")
_KNOWN = ("edgesep_version", "model", "dataset", "artifacts", "keras_accuracy", "export_config", "fold",
          "warnings") + _SECTIONS


def _float(value: Any) -> Optional[float]:
    return None if value is None else float(value)


@dataclasses.dataclass(frozen=True)
class OutputCheck:
    """One artifact output against the Keras model's same output, on the held-out inputs.

    Attributes:
        output: the model output's name (None in export.json files written before checks were per output).
        max_abs_error_vs_keras: largest absolute difference of the outputs.
        accuracy: top-1 accuracy against the labels (None without labels).
        top1_agreement_vs_keras: fraction of inputs whose argmax equals Keras'.
        output_sqnr_db_vs_keras: output signal-to-quantization-noise ratio in dB (None: identical outputs).
    """

    output: Optional[str]
    max_abs_error_vs_keras: Optional[float]
    accuracy: Optional[float] = None
    top1_agreement_vs_keras: Optional[float] = None
    output_sqnr_db_vs_keras: Optional[float] = None

    @classmethod
    def from_verification(cls, output: Optional[str], verification: Any) -> "OutputCheck":
        """The check of ``edgesep.converters.verify.Verification`` for the output named ``output``."""
        return cls(output, _float(verification.max_abs_error_vs_keras), _float(verification.accuracy),
                   _float(verification.agreement_top1), _float(verification.sqnr_db))

    def figures(self) -> dict[str, Optional[float]]:
        """The four figures by their export.json keys."""
        return {k: getattr(self, k) for k in CHECK_KEYS}

    def to_dict(self) -> dict[str, Any]:
        return {"output": self.output, **self.figures()}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "OutputCheck":
        return cls(d.get("output"), *(_float(d.get(k)) for k in CHECK_KEYS))


@dataclasses.dataclass(frozen=True)
class ArtifactRecord:
    """One written artifact: what it is, its bytes and ops, and its checks against Keras (one per output).

    Attributes:
        key: the writer's registry key (``tflite:int8``, ``onnx:float32``, ``edgetpu``).
        path: the file name inside the export folder.
        format, precision, runtime: what it is and what runs it; ``delegate`` the delegate it is for.
        bytes, sha256, ops: the file's size, hash and op counts.
        checks: one :class:`OutputCheck` per model output; ``()`` when this host does not verify it.
        details: more fields the writer recorded (e.g. ``float_ops`` of int16x8), flat in export.json.
    """

    key: str
    path: str
    format: str
    precision: str
    runtime: Optional[str]
    bytes: int
    sha256: str
    ops: Mapping[str, int]
    checks: tuple[OutputCheck, ...] = ()
    delegate: Optional[str] = None
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def check(self, output: Optional[str] = None) -> Optional[OutputCheck]:
        """The check of output ``output``; without a name, the only output's (None: unverified or several)."""
        if output is None:
            return self.checks[0] if len(self.checks) == 1 else None
        return next((c for c in self.checks if c.output == output), None)

    @property
    def accuracy(self) -> Optional[float]:
        """Top-1 accuracy of the only output (export.json's ``accuracy``)."""
        return None if self.check() is None else self.check().accuracy

    @property
    def max_abs_error_vs_keras(self) -> Optional[float]:
        """Largest output difference from Keras of the only output (export.json's key of that name)."""
        return None if self.check() is None else self.check().max_abs_error_vs_keras

    def to_dict(self) -> dict[str, Any]:
        only = self.check()
        figures = only.figures() if only else dict.fromkeys(CHECK_KEYS)
        d = {"path": self.path, "format": self.format, "precision": self.precision, "bytes": int(self.bytes),
             "sha256": self.sha256, "ops": dict(self.ops), "max_abs_error_vs_keras": figures.pop(CHECK_KEYS[0]),
             "accuracy": figures.pop(CHECK_KEYS[1]), "runtime": self.runtime, **self.details}
        if self.delegate:
            d["delegate"] = self.delegate
        if self.checks:
            d.update(figures)
            d["checks"] = [c.to_dict() for c in self.checks]
        d["key"] = self.key
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ArtifactRecord":
        if "checks" in d:
            checks = tuple(OutputCheck.from_dict(c) for c in d["checks"])
        elif "top1_agreement_vs_keras" in d or d.get("max_abs_error_vs_keras") is not None:
            checks = (OutputCheck.from_dict(d),)  # written before checks were per output
        else:
            checks = ()
        key = d.get("key") or d.get("delegate") or f"{d['format']}:{d['precision']}"
        return cls(key=key, path=d["path"], format=d["format"], precision=d["precision"], runtime=d.get("runtime"),
                   bytes=int(d["bytes"]), sha256=d["sha256"], ops=dict(d.get("ops") or {}), checks=checks,
                   delegate=d.get("delegate"), details={k: v for k, v in d.items() if k not in _ARTIFACT_KEYS})


@dataclasses.dataclass(frozen=True)
class ModelSummary:
    """export.json ``model``: name, block form (``fused``, ``split`` or None), input shape, params, MACs."""

    name: str
    form: Optional[str]
    input_shape: tuple[int, ...]
    params: int
    macs: int

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "form": self.form, "input_shape": list(self.input_shape),
                "params": int(self.params), "macs": int(self.macs)}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ModelSummary":
        return cls(d["name"], d.get("form"), tuple(d["input_shape"]), int(d["params"]), int(d["macs"]))


@dataclasses.dataclass(frozen=True)
class DatasetSummary:
    """export.json ``dataset``: its name, test and calibration sample counts and how the inputs were made.

    ``input`` is ``edgesep.data.Dataset.input_doc()`` (kind, preprocess, preprocess_source, resized_from,
    range); ``calibration_samples`` is None where nothing was calibrated on (random verification inputs).
    """

    name: str
    test_samples: int
    calibration_samples: Optional[int] = None
    input: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    @property
    def preprocess(self) -> Optional[Preprocess]:
        """The preprocessing the images went through (None: tensors used as given, or not recorded)."""
        recipe = self.input.get("preprocess")
        try:
            return Preprocess.from_dict(recipe) if isinstance(recipe, Mapping) else None
        except (KeyError, TypeError, ValueError):
            return None

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"name": self.name, "test_samples": int(self.test_samples)}
        if self.calibration_samples is not None:
            d["calibration_samples"] = int(self.calibration_samples)
        d["input"] = dict(self.input)
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "DatasetSummary":
        calib = d.get("calibration_samples")
        return cls(d["name"], int(d["test_samples"]), None if calib is None else int(calib),
                   dict(d.get("input") or {}))


def _config(d: Mapping[str, Any]) -> ExportConfig:
    """The ExportConfig of export.json, ignoring fields this version does not know."""
    names = {f.name for f in dataclasses.fields(ExportConfig)}
    return ExportConfig.from_dict({k: v for k, v in d.items() if k in names})


@dataclasses.dataclass(frozen=True)
class ExportResult:
    """One export: the model, the data, the config, the fold report, the artifacts and their checks.

    Attributes:
        edgesep_version: the version that wrote it.
        model, dataset: :class:`ModelSummary`, :class:`DatasetSummary`.
        artifacts: one :class:`ArtifactRecord` per written file, in the order they were written.
        keras_accuracy: the Keras model's top-1 accuracy on the held-out inputs (None without labels).
        config: the :class:`ExportConfig` it was made with.
        fold: the BatchNorm fold report (``FoldReport.to_dict()``).
        warnings: one line per problem found (int8 input range, ops left in float, ...).
        equalize, int8_check, quant_error, edgetpu, source, keep_float: the sections of those stages (None: not
            run); ``keep_float`` is the ``--keep-float`` recipe (``KeepFloatRecipe.to_dict()``), ``ptq`` the
            ``--ptq`` report (``PtqReport.to_dict()``).
        extra: top-level sections a caller added (``compare``, ``fleet``), written after the others.
    """

    edgesep_version: str
    model: ModelSummary
    dataset: DatasetSummary
    artifacts: tuple[ArtifactRecord, ...]
    keras_accuracy: Optional[float]
    config: ExportConfig
    fold: Mapping[str, Any]
    warnings: tuple[str, ...] = ()
    equalize: Optional[Mapping[str, Any]] = None
    int8_check: Optional[Mapping[str, Any]] = None
    quant_error: Optional[Mapping[str, Any]] = None
    edgetpu: Optional[Mapping[str, Any]] = None
    source: Optional[Mapping[str, Any]] = None
    keep_float: Optional[Mapping[str, Any]] = None
    ptq: Optional[Mapping[str, Any]] = None
    extra: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def artifact(self, key: str) -> Optional[ArtifactRecord]:
        """The artifact written by writer ``key`` (``tflite:int8``), if any."""
        return next((a for a in self.artifacts if a.key == key), None)

    def find(self, format: str, precision: str) -> Optional[ArtifactRecord]:
        """The first artifact of ``format`` and ``precision`` without a delegate (``tflite``, ``int8``)."""
        return next((a for a in self.artifacts if a.format == format and a.precision == precision
                     and not a.delegate), None)

    @property
    def equalized(self) -> bool:
        """Was the int8 model equalized (and not reverted by the guard)?"""
        if not isinstance(self.equalize, Mapping) or not self.equalize:
            return bool(self.equalize)
        guard = self.equalize.get("guard")
        return not (isinstance(guard, Mapping) and guard.get("outcome") == "reverted")

    def with_extra(self, **sections: Any) -> "ExportResult":
        """A copy with more caller sections (e.g. ``compare={...}``)."""
        return dataclasses.replace(self, extra={**self.extra, **sections})

    def to_dict(self) -> dict[str, Any]:
        """export.json."""
        d: dict[str, Any] = {"edgesep_version": self.edgesep_version, "model": self.model.to_dict(),
                             "dataset": self.dataset.to_dict(), "artifacts": [a.to_dict() for a in self.artifacts],
                             "keras_accuracy": self.keras_accuracy, "export_config": self.config.to_dict(),
                             "fold": dict(self.fold)}
        if self.equalize is not None:
            d["equalize"] = self.equalize
        if self.int8_check is not None:
            d["int8_check"] = self.int8_check
        if self.warnings or self.int8_check is not None:  # an int8 export always says, others when they warn
            d["warnings"] = list(self.warnings)
        for name in ("quant_error", "source", "keep_float", "ptq"):
            if getattr(self, name) is not None:
                d[name] = getattr(self, name)
        d.update(self.extra)
        if self.edgetpu is not None:
            d["edgetpu"] = self.edgetpu
        return json.loads(json.dumps(d))  # plain JSON types only, and a copy nothing else holds

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "ExportResult":
        """The record of an export.json document; DataError when it is not one."""
        try:
            return cls(
                edgesep_version=str(d.get("edgesep_version", "")), model=ModelSummary.from_dict(d["model"]),
                dataset=DatasetSummary.from_dict(d["dataset"]),
                artifacts=tuple(ArtifactRecord.from_dict(a) for a in d["artifacts"]),
                keras_accuracy=_float(d.get("keras_accuracy")), config=_config(d.get("export_config") or {}),
                fold=dict(d.get("fold") or {}), warnings=tuple(d.get("warnings") or ()),
                **{name: d.get(name) for name in _SECTIONS},
                extra={k: v for k, v in d.items() if k not in _KNOWN})
        except (KeyError, TypeError, ValueError, AttributeError) as e:
            raise DataError(f"not an edgesep export.json ({type(e).__name__}: {e})") from None


def load_export(folder) -> ExportResult:
    """The export.json in ``folder``; DataError when it is missing or not one."""
    path = Path(folder) / EXPORT_JSON
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"cannot read {path}: {e}") from None
    try:
        return ExportResult.from_dict(doc)
    except DataError as e:
        raise DataError(f"{path}: {e}") from None


def read_export(folder) -> Optional[ExportResult]:
    """The export.json in ``folder``, or None when there is none or it is not readable as one."""
    try:
        return load_export(folder)
    except DataError:
        return None
