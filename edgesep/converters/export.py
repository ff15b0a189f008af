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
from edgesep.errors import DataError, UsageError
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
                   train_cfg=None, progress: Optional[Callable[[str], None]] = None, preprocess=None,
                   resize: bool = False, note: Optional[Callable[[str], None]] = None):
    """The model to export and the data to calibrate and verify it with.

    With ``model_path`` the user's Keras model is loaded and ``data`` (if any) is read at its input size with
    labels checked against its outputs. Images (a folder, digits) need ``preprocess``; without it the model is
    read (``input_domain.suggest_preprocess``) and the choice is passed to ``note``, or a UsageError asks for
    it. A ``.npz`` is used as given (resized only with ``resize``). Without ``model_path`` the built-in network
    of ``form`` is trained on ``data`` (default: the built-in digits, images in [0, 1]), or taken from the cache.

    Returns:
        ``(model, dataset_or_None, info)``; ``info`` describes where the model came from (for export.json).
    """
    from edgesep.data import BUILTIN, load_dataset, parse_preprocess

    say = progress or (lambda stage: None)
    recipe = parse_preprocess(preprocess)
    if resize and data is None:
        raise UsageError("--resize fits a .npz given with --data; add --data")
    if data is not None and data != BUILTIN and not Path(data).exists():  # before any slow import
        raise DataError(f"data not found: {data} (use 'digits', an image folder or a .npz file)")
    if model_path is not None:
        say("load model")
        model = load_model(model_path)
        dataset = None
        if data is not None:
            say("load data")
            dataset = _user_data(model, data, recipe, resize, note or (lambda text: None))
        return model, dataset, {"source": {"model": str(model_path)}}
    if recipe is not None and recipe.name != "unit":
        raise UsageError("--preprocess is for --model: the built-in network is trained on images in [0, 1] "
                         "(--preprocess unit)")
    from edgesep.models import ModelConfig
    from edgesep.train import train_builtin

    say("load data")
    dataset = load_dataset(data or BUILTIN, ModelConfig().input_shape, resize=resize)
    if dataset.preprocess is not None:
        dataset = dataclasses.replace(dataset, preprocess_source="the built-in network takes images in [0, 1]")
    say("train built-in model")
    import_tensorflow()
    model, info = train_builtin(ModelConfig(form=form, num_classes=max(dataset.num_classes, 2)), train_cfg,
                                dataset=dataset, on_progress=lambda p: say(f"train built-in model: {p.describe()}"))
    return model, dataset, {"source": {"builtin": form, "cached": info["cached"],
                                       "train_test_accuracy": info["test_accuracy"]}}


def _user_data(model, data: str, recipe, resize: bool, note: Callable[[str], None]):
    """The user's data at the user's model's input: images through the given or model-read preprocessing."""
    from edgesep.converters.input_domain import suggest_preprocess
    from edgesep.data import PREPROCESS_HELP, load_dataset

    shape, classes = model.input_shape[1:], int(model.output_shape[-1])
    is_npz = Path(data).suffix == ".npz" and Path(data).is_file()
    source = "given (--preprocess)"
    if recipe is None and not is_npz:
        recipe, reason = suggest_preprocess(model)
        if recipe is None:
            raise UsageError(f"--data {data} holds images: say how they become {model.name}'s input with "
                             f"--preprocess {PREPROCESS_HELP} ({reason})")
        source = f"read from the model: {reason}"
        note(f"{reason}; using --preprocess {recipe.name} ({recipe.families}); give --preprocess to override")
    dataset = load_dataset(data, shape, num_classes=classes, preprocess=recipe, resize=resize)
    return dataset if is_npz else dataclasses.replace(dataset, preprocess_source=source)


def export(model, out_dir, config: ExportConfig = ExportConfig(), dataset=None, *,
           progress: Optional[Callable[[str], None]] = None, extra: Optional[dict] = None, preprocess=None,
           note: Optional[Callable[[str], None]] = None) -> dict[str, Any]:
    """Fold, export and verify ``model`` into ``out_dir``; returns the export.json document (also written).

    Args:
        model: a ``keras.Model`` with one NHWC float input.
        out_dir: output folder (created).
        config: what to produce.
        dataset: an ``edgesep.data.Dataset`` for calibration, verification and accuracy; int8 needs it.
        progress: called with a short stage name before each stage.
        extra: more top-level fields for export.json (e.g. the model's training info).
        preprocess: without ``dataset``: how the seeded random verification images are made (a preset name
            or ``edgesep.data.Preprocess``); default: what the model tells (``suggest_preprocess``), else unit.
        note: called with one line when export chooses something the user did not say.
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
        inputs = _inputs(model, dataset, config.seed, preprocess, note or (lambda text: None))
        doc = _export_into(model, staging, config, dataset, inputs, say)
        doc.update(extra or {})
        _write_json(staging / "export.json", doc)
        for item in sorted(staging.iterdir()):
            os.replace(item, out_dir / item.name)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return doc


@dataclasses.dataclass(frozen=True)
class _Inputs:
    """The held-out tensors every artifact is verified on, their labels and how they were made."""

    x: np.ndarray
    y: Optional[np.ndarray]
    doc: dict[str, Any]


def _inputs(model, dataset, seed: int, preprocess, note: Callable[[str], None]) -> _Inputs:
    """The test split of ``dataset``, or seeded random images in the model's input domain (no labels)."""
    if dataset is not None:
        return _Inputs(dataset.x_test, dataset.y_test, dataset.input_doc())
    from edgesep.converters.input_domain import suggest_preprocess
    from edgesep.data import PRESETS, parse_preprocess

    recipe, source = parse_preprocess(preprocess), "given (--preprocess)"
    if recipe is None:
        recipe, reason = suggest_preprocess(model)
        source = f"read from the model: {reason}" if recipe else f"assumed: {reason}"
        recipe = recipe or PRESETS["unit"]
        note(f"no --data: verifying on random images through --preprocess {recipe.name} ({source})")
    rng = np.random.default_rng(seed)
    pixels = rng.random((RANDOM_VERIFY_SAMPLES, *model.input_shape[1:]), np.float32)
    x = pixels if recipe == PRESETS["unit"] else recipe.apply(pixels * np.float32(255.0))
    return _Inputs(x, None, {"kind": "random", "as_given": False, "preprocess": recipe.to_dict(),
                             "preprocess_source": source, "resized_from": None,
                             "range": [float(x.min()), float(x.max())]})


def _export_into(model, folder: Path, config: ExportConfig, dataset, inputs: _Inputs, say) -> dict[str, Any]:
    from edgesep import __version__
    from edgesep.converters.fold import fold_with_report
    from edgesep.converters.verify import predict_keras, top1

    say("fold")
    folded, fold_report = fold_with_report(model)
    reference = predict_keras(model, inputs.x)
    int8_model, equalize_doc = folded, None
    if config.equalize and "int8" in config.precisions:
        say("equalize")
        int8_model, equalize_doc = _equalized(model, folded, dataset, config, say)
    artifacts = _write_artifacts(folder, folded, int8_model, dataset, config, say)
    _verify(folder, artifacts, inputs, reference, say)
    doc = {
        "edgesep_version": __version__,
        "model": _model_summary(model, folder, artifacts),
        "dataset": {"name": "random", "test_samples": int(len(inputs.x))} if dataset is None else {
            "name": dataset.name, "test_samples": int(len(inputs.x)),
            "calibration_samples": min(config.calib_samples, len(dataset.x_train))},
        "artifacts": artifacts,
        "keras_accuracy": None if inputs.y is None else top1(reference, inputs.y),
        "export_config": config.to_dict(),
        "fold": fold_report.to_dict(),
    }
    doc["dataset"]["input"] = inputs.doc
    if equalize_doc is not None:
        doc["equalize"] = equalize_doc
    if "int8" in config.precisions:
        say("int8 input range")
        doc["int8_check"] = _int8_check(folder, artifacts, dataset, config, inputs)
        doc["warnings"] = list(doc["int8_check"]["warnings"])
        say("quantization error per layer")
        from edgesep.converters.quant_error import quant_error_report

        doc["quant_error"] = quant_error_report(int8_model, folder / ARTIFACT_NAMES["int8"], inputs.x,
                                                max_samples=QUANT_ERROR_SAMPLES)
    return doc


def _write_artifacts(folder: Path, folded, int8_model, dataset, config: ExportConfig, say) -> list[dict]:
    """Convert to every requested format; the export.json records of the written files."""
    from edgesep.converters.onnx import export_onnx
    from edgesep.converters.tflite import export_tflite

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
    return artifacts


def _verify(folder: Path, artifacts: list[dict], inputs: _Inputs, reference: np.ndarray, say) -> None:
    """Every artifact against the Keras outputs on the held-out inputs: max error, accuracy, agreement, SQNR."""
    from edgesep.converters.verify import verify_artifact

    for art in artifacts:
        say(f"verify {art['path']}")
        check = verify_artifact(folder / art["path"], inputs.x, reference, inputs.y)
        art["max_abs_error_vs_keras"] = check.max_abs_error_vs_keras
        art["accuracy"] = check.accuracy
        art["top1_agreement_vs_keras"] = check.agreement_top1
        art["output_sqnr_db_vs_keras"] = check.sqnr_db


def _int8_check(folder: Path, artifacts: list[dict], dataset, config: ExportConfig, inputs: _Inputs) -> dict:
    """The int8 model on inputs it was not calibrated on: agreement with Keras, input range and saturation."""
    from edgesep.converters.input_domain import int8_input_check

    calib = dataset.calibration(config.calib_samples, config.seed)
    art = next(a for a in artifacts if a["path"] == ARTIFACT_NAMES["int8"])
    check = int8_input_check(folder / art["path"], calib, inputs.x)
    return {"held_out_samples": int(len(inputs.x)), "calibration_samples": int(len(calib)),
            "calibrated_on": "training split", "verified_on": "test split (not calibrated on)",
            "top1_agreement": art["top1_agreement_vs_keras"], "output_sqnr_db": art["output_sqnr_db_vs_keras"],
            **(check.to_dict() if check is not None else {"warnings": []})}


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
