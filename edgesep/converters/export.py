"""The export front door: fold, run the artifact writers the config names, verify, write export.json.

``export_source(source, out_dir, config)`` is ``edgesep export``: a ``ModelSource`` (``edgesep.source``) is
checked with the config, loaded, and exported; ``export(model, out_dir, config, dataset)`` exports a Keras
model already in hand. Both hold a lock on ``out_dir`` (a second export into it refuses at
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
from edgesep.converters.export_config import PRECISIONS, ExportConfig  # re-exported here
from edgesep.converters.graph import check_exportable, load_model  # load_model re-exported here
from edgesep.converters.records import (EXPORT_JSON, ArtifactRecord, DatasetSummary, ExportResult, ModelSummary,
                                        OutputCheck, read_export)
from edgesep.errors import UsageError
from edgesep.converters.writers import ArtifactWriter, WriteJob, artifact_record, check_output, writers_for

__all__ = ["ExportConfig", "ExportResult", "PRECISIONS", "check_export", "export", "export_source", "load_model"]

Say = Callable[[str], None]

RANDOM_VERIFY_SAMPLES = 64
QUANT_ERROR_SAMPLES = 100


def check_export(config: ExportConfig, out_dir, has_data: bool = True) -> tuple[ArtifactWriter, ...]:
    """Fail before any work when int8 has no data to calibrate, ``out_dir`` cannot be written or a writer's
    tool is missing on this host; the writers the config asks for, in the order they run."""
    from edgesep.io import check_writable_dir, locked_dir

    config.check_data(has_data)
    check_writable_dir(out_dir)
    writers = tuple(writers_for(config.artifact_keys()))
    uncalibrated = [w.key for w in writers if "calibration" in w.needs and not config.quantized]
    if uncalibrated:
        raise UsageError(f"artifact {uncalibrated[0]} is calibrated: add --int8 (or --int16x8)")
    if Path(out_dir).is_dir():
        with locked_dir(out_dir):  # another export writing there: refuse now, not after the conversions
            pass
    return writers


def export_source(source, out_dir, config: ExportConfig = ExportConfig(), *, progress: Optional[Say] = None,
                  note: Optional[Say] = None, extra: Optional[dict] = None) -> ExportResult:
    """The front door of ``edgesep export``: a model source and a config -> the export (also written).

    ``source`` is an ``edgesep.source.ModelSource`` (a Keras file or the built-in network, its data and
    preprocessing): everything is checked before it is loaded (or trained), then it is exported as
    :func:`export` does; export.json's ``source`` says where the model came from.
    """
    writers = check_export(config, out_dir, source.has_data)
    loaded = source.load(progress=progress, note=note)
    return _export_checked(loaded.model, Path(out_dir), config, loaded.dataset, writers, progress=progress,
                           extra={"source": loaded.doc, **(extra or {})}, preprocess=source.preprocess, note=note)


def export(model, out_dir, config: ExportConfig = ExportConfig(), dataset=None, *, progress: Optional[Say] = None,
           extra: Optional[dict] = None, preprocess=None, note: Optional[Say] = None) -> ExportResult:
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
        preprocess: without ``dataset``: how the seeded random verification images are made (an
            ``edgesep.data.Preprocess``, or a ``--preprocess`` spec); default: what the model tells (``suggest_preprocess``), else unit.
        note: called with one line when export chooses something the user did not say.

    Raises:
        UsageError, ConversionError, EdgeTpuError, OutputError: with nothing half-written left in ``out_dir``.
    """
    from edgesep.preprocess import parse_preprocess

    writers = check_export(config, out_dir, dataset is not None)
    return _export_checked(model, Path(out_dir), config, dataset, writers, progress=progress, extra=extra,
                           preprocess=parse_preprocess(preprocess), note=note)


def _export_checked(model, out_dir: Path, config: ExportConfig, dataset, writers: tuple[ArtifactWriter, ...], *,
                    progress: Optional[Say], extra: Optional[dict], preprocess, note: Optional[Say]) -> ExportResult:
    """:func:`export` after ``check_export``: the model checks, then the staged, locked export."""
    from edgesep.io import StagedDir, locked_dir, write_json

    if dataset is not None and tuple(dataset.x_test.shape[1:]) != tuple(model.input_shape[1:]):
        raise ConversionError(f"data images are {tuple(dataset.x_test.shape[1:])}, the model takes "
                              f"{tuple(model.input_shape[1:])}")
    check_exportable(model)  # a dynamic input size, several outputs, broken weights: one line, nothing written
    if config.onnx:
        from edgesep.converters.onnx import refuse_unsupported

        refuse_unsupported(model)  # before any conversion work
    extra = dict(extra or {})
    with locked_dir(out_dir), StagedDir(out_dir) as stage:
        inputs = _inputs(model, dataset, config.seed, preprocess, note or (lambda text: None))
        result = _export_into(model, stage.path, out_dir, config, dataset, inputs, writers,
                              progress or (lambda stage: None))
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
    from edgesep.preprocess import PRESETS

    recipe, source = preprocess, "given (--preprocess)"
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
                 writers: tuple[ArtifactWriter, ...], say) -> ExportResult:
    """Fold (and equalize), write and verify every artifact into ``folder``; the export's record."""
    from edgesep import __version__
    from edgesep.converters.fold import fold_with_report
    from edgesep.converters.grouped import depthwise_grouped
    from edgesep.converters.outputs import keras_outputs, plan_outputs
    from edgesep.converters.verify import top1

    say("fold")
    model_in = depthwise_grouped(model)  # the same function; Conv2D(groups == channels) as DepthwiseConv2D
    folded, fold_report = fold_with_report(model_in)
    plan = plan_outputs(model, getattr(dataset, "label_output", None))
    references = tuple(keras_outputs(model, inputs.x))
    reference = references[0]
    int8_model, equalize_doc = folded, None
    calib = dataset.calibration(config.calib_samples, config.seed) if config.quantized else None
    if config.equalize and config.quantized:
        say("equalize")
        int8_model, equalize_doc, calib = _equalized(model_in, folded, dataset, config, say)
    ptq_doc = None
    if config.ptq:
        from edgesep.converters.ptq import ptq_for_export

        int8_model, ptq_doc = ptq_for_export(int8_model, dataset, config, calib, say)
    selection, selection_what = None, ""
    if config.keep_float == ("auto",):
        from edgesep.converters.keep_float import selection_images

        calib, selection, selection_what = selection_images(dataset, config)
    job = WriteJob(folder, out_dir, config, folded, int8_model, calib, inputs.x, inputs.y, reference,
                    outputs=plan.names, references=references, plan=plan, selection=selection,
                    selection_what=selection_what)
    artifacts = _write_and_verify(job, writers, say)
    result = ExportResult(
        edgesep_version=__version__, model=_model_summary(model, folder, artifacts),
        dataset=_dataset_summary(dataset, inputs, calib, config), artifacts=artifacts,
        keras_accuracy=None if inputs.y is None or plan.label is None else top1(references[plan.label], inputs.y),
        config=config,
        fold=fold_report.to_dict(), equalize=equalize_doc, edgetpu=job.sections.get("edgetpu"),
        keep_float=job.sections.get("keep_float"), ptq=ptq_doc)
    if "int8" in config.precisions:
        say("int8 input range")
        int8_check = _int8_check(job, result.artifact("tflite:int8"))
        say("quantization error per layer")
        result = dataclasses.replace(result, int8_check=int8_check, warnings=tuple(int8_check["warnings"]),
                                     quant_error=_quant_error(job))
    truth = _truth(result, plan, references, inputs.y is not None)
    return dataclasses.replace(result, warnings=result.warnings + tuple(job.warnings) + truth)


def _truth(result: ExportResult, plan, references, labelled: bool) -> tuple[str, ...]:
    """Collapsed quantized outputs, a Keras accuracy at chance level, Keras outputs that are the same for every
    input (``edgesep.converters.truth``), and why a model with several outputs has no accuracy."""
    from edgesep.converters import truth

    notes = [truth.chance_level(result.keras_accuracy, plan.classes or 0), plan.note() if labelled else None]
    ties = truth.near_ties(references, plan.names)
    tied = truth.same_for_every_input(references, plan.names) + list(ties)
    count = len(references[0]) if len(references) else 0
    return (tuple(truth.collapsed_outputs(result.artifacts, tied))
            + tuple(truth.constant_outputs(references, plan.names))
            + tuple(truth.tie_lines(ties, result.artifacts, count, len(plan.names) > 1)) + tuple(n for n in notes if n))


def _dataset_summary(dataset, inputs: _Inputs, calib, config: ExportConfig) -> DatasetSummary:
    if dataset is None:
        return DatasetSummary("random", int(len(inputs.x)), None, inputs.doc)
    calibrated = int(len(calib)) if calib is not None else min(config.calib_samples, len(dataset.x_train))
    return DatasetSummary(dataset.name, int(len(inputs.x)), calibrated, inputs.doc)


def _quant_error(job: WriteJob) -> dict[str, Any]:
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


def _write_and_verify(job: WriteJob, writers: tuple[ArtifactWriter, ...], say) -> tuple[ArtifactRecord, ...]:
    """Run every writer of the config, then verify what each wrote; the artifacts' records."""
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


def _int8_check(job: WriteJob, art: ArtifactRecord) -> dict:
    """The int8 model on inputs it was not calibrated on: agreement with Keras, input range and saturation."""
    from edgesep.converters.input_domain import int8_input_check

    path = job.written["tflite:int8"]
    figures = art.check() or OutputCheck(None, None)
    check = int8_input_check(path, job.calibration, job.x)
    return {"held_out_samples": int(len(job.x)), "calibration_samples": int(len(job.calibration)),
            "calibrated_on": "training split", "verified_on": "test split (not calibrated on)",
            "top1_agreement": figures.top1_agreement_vs_keras, "output_sqnr_db": figures.output_sqnr_db_vs_keras,
            **({"outputs": [c.to_dict() for c in art.checks]} if len(art.checks) > 1 else {}),
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
                                             eval_data=(dataset.x_test, dataset.y_test) if dataset.labelled else None)
    return equalized, report.to_dict(), calib


def _model_summary(model, folder: Path, artifacts: tuple[ArtifactRecord, ...]) -> ModelSummary:
    from edgesep.converters.inspect import inspect_model

    float_art = next((a for a in artifacts if a.precision == "float32"), artifacts[0])
    macs = inspect_model(folder / float_art.path).macs
    form = "fused" if any(type(l).__name__ == "SeparableConv2D" for l in model.layers) else (
        "split" if any(type(l).__name__ == "DepthwiseConv2D" for l in model.layers) else None)
    return ModelSummary(model.name, form, (1, *map(int, model.input_shape[1:])), int(model.count_params()),
                        int(macs))
