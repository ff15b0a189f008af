"""The export front door: fold, convert to every requested format, verify, write export.json.

``export(model, out_dir, config, dataset)`` writes all artifacts into a private temp folder inside
``out_dir`` and moves them into place only when every step succeeded, so a failure leaves no model file.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgesep.converters import ConversionError
from edgesep.converters._quiet import import_tensorflow
from edgesep.converters.graph import load_model  # re-exported: edgesep.converters.export.load_model

PRECISIONS = ("float32", "float16", "int8")
RANDOM_VERIFY_SAMPLES = 64
QUANT_ERROR_SAMPLES = 100
ARTIFACT_NAMES = {"float32": "model.tflite", "float16": "model_fp16.tflite", "int8": "model_int8.tflite",
                  "onnx": "model.onnx"}


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What ``export`` produces.

    Attributes:
        precisions: TFLite precisions to write (``float32``, ``float16``, ``int8``).
        onnx: also write ``model.onnx``.
        per_channel: int8 weights per output channel (False: per tensor).
        io_dtype: int8 model input/output type (``int8``, ``uint8``, ``float32``).
        calib_samples: training images used to calibrate int8.
        equalize: cross-layer equalization + bias absorption before int8 export.
        relu6: how equalization treats ReLU6 between two convolutions: ``clip`` (exact, per-channel caps),
            ``replace`` (ReLU instead: no extra op, a slightly different function) or ``keep`` (skip).
        equalize_guard: with ``equalize``, leave out links (or all of them) where the equalized int8 model is
            less accurate on the evaluation data than the int8 model without equalization
            (``edgesep.converters.guard``).
        opset: ONNX opset.
        seed: seed for drawing calibration images.
    """

    precisions: tuple[str, ...] = ("float32",)
    onnx: bool = True
    per_channel: bool = True
    io_dtype: str = "int8"
    calib_samples: int = 200
    equalize: bool = False
    relu6: str = "clip"
    equalize_guard: bool = True
    opset: int = 17
    seed: int = 0

    def __post_init__(self):
        object.__setattr__(self, "precisions", tuple(dict.fromkeys(self.precisions)))
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise ValueError(f"unknown precision {bad[0]!r}; valid: {', '.join(PRECISIONS)}")
        if not self.precisions and not self.onnx:
            raise ValueError("nothing to export: no TFLite precision and no ONNX")
        if self.io_dtype not in ("int8", "uint8", "float32"):
            raise ValueError(f"unknown io_dtype {self.io_dtype!r}; valid: int8, uint8, float32")
        if self.relu6 not in ("clip", "replace", "keep"):
            raise ValueError(f"unknown relu6 mode {self.relu6!r}; valid: clip, replace, keep")
        if self.calib_samples < 1:
            raise ValueError(f"calib_samples must be >= 1, got {self.calib_samples}")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["precisions"] = list(self.precisions)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExportConfig":
        return cls(**{**d, "precisions": tuple(d.get("precisions", ("float32",)))})


def model_and_data(model_path: Optional[str] = None, *, form: str = "split", data: Optional[str] = None,
                   train_cfg=None, progress: Optional[Callable[[str], None]] = None):
    """The model to export and the data to calibrate and verify it with.

    With ``model_path`` the user's Keras model is loaded and ``data`` (if any) is read at its input size with
    labels checked against its outputs. Without it the built-in network of ``form`` is trained on ``data``
    (default: the built-in digits), or taken from the cache.

    Returns:
        ``(model, dataset_or_None, info)``; ``info`` describes where the model came from (for export.json).
    """
    from edgesep.data import BUILTIN, load_dataset

    say = progress or (lambda stage: None)
    import_tensorflow()
    if model_path is not None:
        say("load model")
        model = load_model(model_path)
        dataset = None
        if data is not None:
            say("load data")
            dataset = load_dataset(data, model.input_shape[1:], num_classes=int(model.output_shape[-1]))
        return model, dataset, {"source": {"model": str(model_path)}}
    from edgesep.models import ModelConfig
    from edgesep.train import train_builtin

    say("load data")
    dataset = load_dataset(data or BUILTIN, ModelConfig().input_shape)
    say("train built-in model")
    model, info = train_builtin(ModelConfig(form=form, num_classes=max(dataset.num_classes, 2)), train_cfg,
                                dataset=dataset, on_progress=lambda p: say(f"train built-in model: {p.describe()}"))
    return model, dataset, {"source": {"builtin": form, "cached": info["cached"],
                                       "train_test_accuracy": info["test_accuracy"]}}


def export(model, out_dir, config: ExportConfig = ExportConfig(), dataset=None, *,
           progress: Optional[Callable[[str], None]] = None, extra: Optional[dict] = None) -> dict[str, Any]:
    """Fold, export and verify ``model`` into ``out_dir``; returns the export.json document (also written).

    Args:
        model: a ``keras.Model`` with one NHWC float input.
        out_dir: output folder (created).
        config: what to produce.
        dataset: an ``edgesep.data.Dataset`` for calibration, verification and accuracy; int8 needs it.
        progress: called with a short stage name before each stage.
        extra: more top-level fields for export.json (e.g. the model's training info).
    """
    say = progress or (lambda stage: None)
    if "int8" in config.precisions and dataset is None:
        raise ConversionError("int8 export needs data for calibration (--data, or the built-in digits)")
    if dataset is not None and tuple(dataset.x_test.shape[1:]) != tuple(model.input_shape[1:]):
        raise ConversionError(f"data images are {tuple(dataset.x_test.shape[1:])}, the model takes "
                              f"{tuple(model.input_shape[1:])}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".edgesep-export-", dir=out_dir))
    try:
        doc = _export_into(model, staging, config, dataset, say)
        doc.update(extra or {})
        _write_json(staging / "export.json", doc)
        for item in sorted(staging.iterdir()):
            os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return doc


def _export_into(model, folder: Path, config: ExportConfig, dataset, say) -> dict[str, Any]:
    from edgesep import __version__
    from edgesep.converters.fold import fold_with_report
    from edgesep.converters.onnx import export_onnx
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import predict_keras, top1, verify_artifact

    say("fold")
    folded, fold_report = fold_with_report(model)
    if dataset is not None:
        x_test, y_test = dataset.x_test, dataset.y_test
    else:  # no labelled data: parity on seeded random images in [0, 1], no accuracy
        x_test = np.random.default_rng(config.seed).random((RANDOM_VERIFY_SAMPLES, *model.input_shape[1:]),
                                                           np.float32)
        y_test = None
    reference = predict_keras(model, x_test)
    int8_model, equalize_doc = folded, None
    if config.equalize and "int8" in config.precisions:
        say("equalize")
        int8_model, equalize_doc = _equalized(model, folded, dataset, config, say)
    artifacts = []
    for precision in config.precisions:
        say(f"tflite {precision}")
        path = folder / ARTIFACT_NAMES[precision]
        calib = dataset.calibration(config.calib_samples, config.seed) if precision == "int8" else None
        export_tflite(int8_model if precision == "int8" else folded, path, precision=precision,
                      representative_data=calib, per_channel=config.per_channel, io_dtype=config.io_dtype,
                      fold=False)
        artifacts.append(artifact_record(path, "tflite", precision))
    if config.onnx:
        say("onnx")
        path = export_onnx(folded, folder / ARTIFACT_NAMES["onnx"], opset=config.opset, fold=False)
        artifacts.append(artifact_record(path, "onnx", "float32"))
    for art in artifacts:
        say(f"verify {art['path']}")
        check = verify_artifact(folder / art["path"], x_test, reference, y_test)
        art["max_abs_error_vs_keras"] = check.max_abs_error_vs_keras
        art["accuracy"] = check.accuracy
    doc = {
        "edgesep_version": __version__,
        "model": _model_summary(model, folder, artifacts),
        "dataset": {"name": "random", "test_samples": int(len(x_test))} if dataset is None else {
            "name": dataset.name, "test_samples": int(len(x_test)),
            "calibration_samples": min(config.calib_samples, len(dataset.x_train))},
        "artifacts": artifacts,
        "keras_accuracy": None if dataset is None else top1(reference, y_test),
        "export_config": config.to_dict(),
        "fold": fold_report.to_dict(),
    }
    if equalize_doc is not None:
        doc["equalize"] = equalize_doc
    if "int8" in config.precisions:
        say("quantization error per layer")
        from edgesep.converters.quant_error import quant_error_report

        doc["quant_error"] = quant_error_report(int8_model, folder / ARTIFACT_NAMES["int8"], x_test,
                                                max_samples=QUANT_ERROR_SAMPLES)
    return doc


def _equalized(model, folded, dataset, config: ExportConfig, say):
    from edgesep.converters.equalize import equalize_with_report

    calib = dataset.calibration(config.calib_samples, config.seed)
    if config.equalize_guard:
        from edgesep.converters.guard import guarded_equalize

        return guarded_equalize(model, folded, calib, dataset.x_test, dataset.y_test, relu6=config.relu6,
                                per_channel=config.per_channel, io_dtype=config.io_dtype, say=say)
    equalized, report = equalize_with_report(model, relu6=config.relu6, calibration_data=calib,
                                             eval_data=(dataset.x_test, dataset.y_test))
    return equalized, report.to_dict()


def artifact_record(path: Path, fmt: str, precision: str) -> dict[str, Any]:
    """An export.json artifact entry for a written file (figures from verification left empty)."""
    from edgesep.converters.inspect import op_counts

    data = path.read_bytes()
    return {"path": path.name, "format": fmt, "precision": precision, "bytes": len(data),
            "sha256": hashlib.sha256(data).hexdigest(), "ops": op_counts(path),
            "max_abs_error_vs_keras": None, "accuracy": None}


def _model_summary(model, folder: Path, artifacts: list[dict]) -> dict[str, Any]:
    from edgesep.converters.inspect import inspect_model

    float_art = next((a for a in artifacts if a["precision"] == "float32"), artifacts[0])
    macs = inspect_model(folder / float_art["path"]).macs
    form = "fused" if any(type(l).__name__ == "SeparableConv2D" for l in model.layers) else (
        "split" if any(type(l).__name__ == "DepthwiseConv2D" for l in model.layers) else None)
    return {"name": model.name, "form": form, "input_shape": [1, *map(int, model.input_shape[1:])],
            "params": int(model.count_params()), "macs": int(macs)}


def _write_json(path: Path, doc: dict) -> None:
    path.write_text(json.dumps(doc, indent=2, default=_jsonable) + "\n")


def _jsonable(value):
    if isinstance(value, (np.integer, np.floating)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"not JSON serializable: {type(value).__name__}")
