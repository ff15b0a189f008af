"""The export front door: fold, run the artifact writers the config names, verify, write export.json.

``export(model, out_dir, config, dataset)`` holds a lock on ``out_dir`` (a second export into it refuses at
once), checks it is writable before any conversion, writes every artifact into a staging folder inside it
and moves the set in only when every step succeeded; the artifacts an earlier export.json listed there and
this export did not make again are removed, so the folder always describes one export. The artifacts come
from the writer registry (``edgesep.converters.writers``); the options from ``ExportConfig``
(``edgesep.converters.export_config``), which owns every rule between them.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgesep.converters import ConversionError
from edgesep.converters._quiet import import_tensorflow
from edgesep.converters.export_config import PRECISIONS, ExportConfig  # re-exported here
from edgesep.converters.graph import check_exportable, load_model, output_names  # load_model re-exported here
from edgesep.converters.records import (EXPORT_JSON, ArtifactRecord, DatasetSummary, ExportResult, ModelSummary,
                                        OutputCheck, read_export)
from edgesep.converters.writers import ExportJob, artifact_record, check_output, writers_for
from edgesep.errors import DataError, UsageError

__all__ = ["ExportConfig", "ExportResult", "PRECISIONS", "check_export", "export", "load_model", "model_and_data"]

RANDOM_VERIFY_SAMPLES = 64
QUANT_ERROR_SAMPLES = 100


def model_and_data(model_path: Optional[str] = None, *, form: str = "split", data: Optional[str] = None,
                   train_cfg=None, progress: Optional[Callable[[str], None]] = None, preprocess=None,
                   resize: bool = False, note: Optional[Callable[[str], None]] = None,
                   input_size: Optional[tuple[int, int]] = None, trust_model: bool = False,
                   custom_objects: Optional[str] = None):
    """The model to export and the data to calibrate and verify it with (``input_size``, ``trust_model``,
    ``custom_objects``: see ``load_model``).

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
        return _user_model_and_data(model_path, input_size, trust_model, custom_objects, data,
                                    (recipe, resize, note or (lambda text: None)), say)
    if trust_model or custom_objects:
        raise UsageError("--trust-model and --custom-objects are for a --model file; add --model")
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


def _user_model_and_data(model_path, input_size, trust_model: bool, custom_objects: Optional[str], data, how, say):
    """The user's model file loaded and ``data`` read for it (``how``: recipe, resize, note)."""
    say("load model")
    model = load_model(model_path, input_size=input_size, trust_model=trust_model, custom_objects=custom_objects)
    dataset = None
    if data is not None:
        say("load data")
        dataset = _user_data(model, data, *how)
    source = {"model": str(model_path), **({"input_size": list(input_size)} if input_size else {})}
    return model, dataset, {"source": source}


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


def check_export(config: ExportConfig, out_dir) -> None:
    """Fail before any work when ``out_dir`` cannot be written or a writer's tool is missing on this host."""
    from edgesep.io import check_writable_dir, locked_dir

    check_writable_dir(out_dir)
    writers_for(config.artifact_keys())
    if Path(out_dir).is_dir():
        with locked_dir(out_dir):  # another export writing there: refuse now, not after the conversions
            pass


def export(model, out_dir, config: ExportConfig = ExportConfig(), dataset=None, *,
           progress: Optional[Callable[[str], None]] = None, extra: Optional[dict] = None, preprocess=None,
           note: Optional[Callable[[str], None]] = None) -> ExportResult:
    """Fold, export and verify ``model`` into ``out_dir``; returns the export (``to_dict()`` is export.json,
    also written).

    Args:
        model: a ``keras.Model`` with one NHWC float input.
        out_dir: output folder (created).
        config: what to produce.
        dataset: an ``edgesep.data.Dataset`` for calibration, verification and accuracy; int8 needs it.
        progress: called with a short stage name before each stage.
        extra: more top-level fields for export.json: ``source`` (where the model came from) and caller
            sections (e.g. ``compare``).
        preprocess: without ``dataset``: how the seeded random verification images are made (a preset name
            or ``edgesep.data.Preprocess``); default: what the model tells (``suggest_preprocess``), else unit.
        note: called with one line when export chooses something the user did not say.

    Raises:
        UsageError, ConversionError, EdgeTpuError, OutputError: with nothing half-written left in ``out_dir``.
    """
    from edgesep.io import StagedDir, locked_dir, write_json

    say = progress or (lambda stage: None)
    if config.quantized and dataset is None:
        raise ConversionError(f"{config.quantized[0]} export needs data for calibration (--data, or the built-in "
                              "digits)")
    if dataset is not None and tuple(dataset.x_test.shape[1:]) != tuple(model.input_shape[1:]):
        raise ConversionError(f"data images are {tuple(dataset.x_test.shape[1:])}, the model takes "
                              f"{tuple(model.input_shape[1:])}")
    check_export(config, out_dir)
    check_exportable(model)  # a dynamic input size, several outputs, broken weights: one line, nothing written
    if config.onnx:
        from edgesep.converters.onnx import refuse_unsupported

        refuse_unsupported(model)  # before any conversion work
    out_dir = Path(out_dir)
    extra = dict(extra or {})
    with locked_dir(out_dir), StagedDir(out_dir) as stage:
        inputs = _inputs(model, dataset, config.seed, preprocess, note or (lambda text: None))
        result = _export_into(model, stage.path, out_dir, config, dataset, inputs, say)
        result = dataclasses.replace(result, source=extra.pop("source", None), extra=extra)
        write_json(stage.path / EXPORT_JSON, result.to_dict())
        stage.commit(replaces=_previous_artifacts(out_dir))
    return result


def _previous_artifacts(out_dir: Path) -> list[str]:
    """The files an export.json already in ``out_dir`` lists (and their Edge TPU compiler logs)."""
    previous = read_export(out_dir)
    names = [a.path for a in previous.artifacts] if previous is not None else []
    return names + [str(Path(n).with_suffix(".log")) for n in names if n.endswith("_edgetpu.tflite")]


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


def _export_into(model, folder: Path, out_dir: Path, config: ExportConfig, dataset, inputs: _Inputs,
                 say) -> ExportResult:
    """Fold (and equalize), write and verify every artifact into ``folder``; the export's record."""
    from edgesep import __version__
    from edgesep.converters.fold import fold_with_report
    from edgesep.converters.grouped import depthwise_grouped
    from edgesep.converters.verify import predict_keras, top1

    say("fold")
    folded, fold_report = fold_with_report(depthwise_grouped(model))
    reference = predict_keras(model, inputs.x)
    int8_model, equalize_doc = folded, None
    calib = dataset.calibration(config.calib_samples, config.seed) if config.quantized else None
    if config.equalize and config.quantized:
        say("equalize")
        int8_model, equalize_doc, calib = _equalized(model, folded, dataset, config, say)
    ptq_doc = None
    if config.ptq:
        from edgesep.converters.ptq import ptq_for_export

        int8_model, ptq_doc = ptq_for_export(int8_model, dataset, config, calib, say)
    selection, selection_what = None, ""
    if config.keep_float == ("auto",):
        from edgesep.converters.keep_float import selection_images

        calib, selection, selection_what = selection_images(dataset, config)
    job = ExportJob(folder, out_dir, config, folded, int8_model, calib, inputs.x, inputs.y, reference,
                    outputs=tuple(output_names(model)), selection=selection, selection_what=selection_what)
    artifacts = _write_and_verify(job, say)
    result = ExportResult(
        edgesep_version=__version__, model=_model_summary(model, folder, artifacts),
        dataset=_dataset_summary(dataset, inputs, calib, config), artifacts=artifacts,
        keras_accuracy=None if inputs.y is None else top1(reference, inputs.y), config=config,
        fold=fold_report.to_dict(), equalize=equalize_doc, edgetpu=job.sections.get("edgetpu"),
        keep_float=job.sections.get("keep_float"), ptq=ptq_doc)
    if "int8" in config.precisions:
        say("int8 input range")
        int8_check = _int8_check(job, result.artifact("tflite:int8"))
        say("quantization error per layer")
        result = dataclasses.replace(result, int8_check=int8_check, warnings=tuple(int8_check["warnings"]),
                                     quant_error=_quant_error(job))
    return dataclasses.replace(result, warnings=result.warnings + tuple(job.warnings))


def _dataset_summary(dataset, inputs: _Inputs, calib, config: ExportConfig) -> DatasetSummary:
    if dataset is None:
        return DatasetSummary("random", int(len(inputs.x)), None, inputs.doc)
    calibrated = int(len(calib)) if calib is not None else min(config.calib_samples, len(dataset.x_train))
    return DatasetSummary(dataset.name, int(len(inputs.x)), calibrated, inputs.doc)


def _quant_error(job: ExportJob) -> dict[str, Any]:
    """Per-layer int8 error against the float model the int8 one came from: the written model.tflite when
    that is it (no second conversion), else the equalized Keras model. Paths recorded as artifact names."""
    from edgesep.converters.quant_error import quant_error_report

    written = job.written.get("tflite:float32")
    reference = written if written is not None and job.int8_model is job.folded else job.int8_model
    section = quant_error_report(reference, job.written["tflite:int8"], job.x, max_samples=QUANT_ERROR_SAMPLES)
    section["model"] = job.written["tflite:int8"].name
    if isinstance(reference, Path):
        section["reference"] = reference.name
    return section


def _write_and_verify(job: ExportJob, say) -> tuple[ArtifactRecord, ...]:
    """Run every writer of the config, then verify what each wrote; the artifacts' records."""
    writers = writers_for(job.config.artifact_keys())
    records = []
    for writer in writers:
        say(writer.key.replace(":", " "))
        path = writer.write(job)
        check_output(job, writer, path)
        job.written[writer.key] = path
        records.append(artifact_record(writer, job, path))
    for i, writer in enumerate(writers):
        if writer.verify is None:
            continue
        say(f"verify {records[i].path}")
        records[i] = dataclasses.replace(records[i], checks=tuple(writer.verify(job, job.written[writer.key])))
    return tuple(records)


def _int8_check(job: ExportJob, art: ArtifactRecord) -> dict:
    """The int8 model on inputs it was not calibrated on: agreement with Keras, input range and saturation."""
    from edgesep.converters.input_domain import int8_input_check

    path = job.written["tflite:int8"]
    figures = art.check() or OutputCheck(None, None)
    check = int8_input_check(path, job.calibration, job.x)
    return {"held_out_samples": int(len(job.x)), "calibration_samples": int(len(job.calibration)),
            "calibrated_on": "training split", "verified_on": "test split (not calibrated on)",
            "top1_agreement": figures.top1_agreement_vs_keras, "output_sqnr_db": figures.output_sqnr_db_vs_keras,
            **(check.to_dict() if check is not None else {"warnings": []})}


def _equalized(model, folded, dataset, config: ExportConfig, say):
    """(model to quantize, equalize section, calibration images): the guard chooses on training images held
    out from the calibration draw, and reports labelled accuracy on the test split it never chose on."""
    from edgesep.converters.equalize import equalize_with_report

    if config.equalize_guard:
        from edgesep.converters.guard import guarded_equalize, selection_split

        calib, selection, how = selection_split(dataset.x_train, config.calib_samples, config.seed)
        chosen, doc = guarded_equalize(model, folded, calib, selection, dataset.x_test, dataset.y_test,
                                       relu6=config.relu6, per_channel=config.per_channel,
                                       io_dtype=config.io_dtype, selection_what=f"training images {how}", say=say)
        return chosen, doc, calib
    calib = dataset.calibration(config.calib_samples, config.seed)
    equalized, report = equalize_with_report(model, relu6=config.relu6, calibration_data=calib,
                                             eval_data=(dataset.x_test, dataset.y_test))
    return equalized, report.to_dict(), calib


def _model_summary(model, folder: Path, artifacts: tuple[ArtifactRecord, ...]) -> ModelSummary:
    from edgesep.converters.inspect import inspect_model

    float_art = next((a for a in artifacts if a.precision == "float32"), artifacts[0])
    macs = inspect_model(folder / float_art.path).macs
    form = "fused" if any(type(l).__name__ == "SeparableConv2D" for l in model.layers) else (
        "split" if any(type(l).__name__ == "DepthwiseConv2D" for l in model.layers) else None)
    return ModelSummary(model.name, form, (1, *map(int, model.input_shape[1:])), int(model.count_params()),
                        int(macs))
