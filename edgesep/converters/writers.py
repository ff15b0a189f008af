"""The artifact writers of ``edgesep export``: a registry, one registration per artifact.

A writer has a key (``tflite:int8``), a file name, what it needs (calibration data, another writer's file,
a tool on this host), ``write()`` and ``verify()``. ``export`` runs the writers its ``ExportConfig`` names,
in order, on one :class:`WriteJob`; a new artifact is one :func:`register_writer` call.
"""
from __future__ import annotations

import dataclasses
import hashlib
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgesep.converters.export_config import PRECISIONS, QUANTIZED, tflite_key
from edgesep.converters.records import ArtifactRecord, OutputCheck
from edgesep.errors import ConversionError, EdgeTpuError, UsageError
from edgesep.registry import Registry


@dataclasses.dataclass(frozen=True)
class WriteJob:
    """What the writers of one export share.

    Attributes:
        folder: the staging folder the artifacts are written into (moved to ``out_dir`` when complete).
        out_dir: the folder the artifacts end up in (for paths recorded in export.json).
        config: the ``ExportConfig``.
        folded: the BN-folded Keras model (float artifacts).
        int8_model: the model int8 artifacts are made from (folded, and equalized with ``--equalize``).
        calibration: the calibration images (None without int8).
        x, y, reference: held-out inputs, their labels (or None) and the Keras model's (first) output on them.
        outputs: the Keras model's output names, in its output order (the keys of the per-output checks).
        references: the Keras model's every output on ``x``, in its order.
        plan: the ``edgesep.converters.outputs.OutputPlan`` (class-score outputs, the labelled one).
        written: writer key -> written file, filled as the writers run.
        sections: export.json sections the writers add (e.g. ``edgetpu``: the compiler's report).
        warnings: one line per problem a writer found (export.json ``warnings``).
        selection, selection_what: images held out beside the calibration draw (``--keep-float auto`` chooses
            on them, never on the test split) and how they were drawn.
        float_layers: the Keras layers the int8 models keep float (``--keep-float``), set by tflite:int8.
    """

    folder: Path
    out_dir: Path
    config: Any
    folded: Any
    int8_model: Any
    calibration: Optional[np.ndarray]
    x: np.ndarray
    y: Optional[np.ndarray]
    reference: np.ndarray
    outputs: tuple[str, ...] = ()
    references: tuple[np.ndarray, ...] = ()
    plan: Any = None
    written: dict[str, Path] = dataclasses.field(default_factory=dict)
    sections: dict[str, Any] = dataclasses.field(default_factory=dict)
    warnings: list[str] = dataclasses.field(default_factory=list)
    selection: Optional[np.ndarray] = None
    selection_what: str = ""
    float_layers: list[str] = dataclasses.field(default_factory=list)


def _no_check() -> None:
    return None


def verify_against_keras(job: WriteJob, path: Path) -> tuple[OutputCheck, ...]:
    """The default check: the artifact's outputs on the held-out inputs against Keras' (``verify_artifact``),
    one :class:`OutputCheck` per model output, keyed by the output's name."""
    from edgesep.converters.verify import verify_artifact

    if job.plan is not None:
        from edgesep.converters.outputs import verify_outputs

        return verify_outputs(path, job.x, job.references, job.plan, job.y)
    name = job.outputs[0] if job.outputs else None
    return (OutputCheck.from_verification(name, verify_artifact(path, job.x, job.reference, job.y)),)


@dataclasses.dataclass(frozen=True)
class ArtifactWriter:
    """One kind of artifact.

    Attributes:
        key: registry key, ``format:precision`` (``tflite:int8``) or a name (``edgetpu``).
        file_name: the file it writes.
        format, precision: as recorded in export.json.
        runtime: what runs it (shown in the export table).
        needs: ``calibration`` and/or keys of writers whose files it reads (they run first).
        write: makes the file in ``job.folder``; returns its path.
        verify: compares it with Keras: one ``OutputCheck`` per model output (``job.outputs``), or None where
            this host cannot run it.
        check: fails early (before any conversion) when something on this host is missing.
        delegate: the delegate the artifact is for, recorded in export.json.
        describe: more export.json fields for the written file (e.g. the ops left in float).
    """

    key: str
    file_name: str
    format: str
    precision: str
    runtime: str
    write: Callable[[WriteJob], Path]
    verify: Optional[Callable[[WriteJob, Path], tuple[OutputCheck, ...]]] = verify_against_keras
    needs: tuple[str, ...] = ()
    check: Callable[[], None] = _no_check
    delegate: Optional[str] = None
    describe: Optional[Callable[[WriteJob, Path], dict[str, Any]]] = None


_WRITERS: Registry[ArtifactWriter] = Registry("artifact")


def register_writer(writer: ArtifactWriter) -> ArtifactWriter:
    """Add ``writer`` to the registry (a key is registered once)."""
    return _WRITERS.add(writer.key, writer)


def list_writers() -> tuple[str, ...]:
    """The registered writer keys."""
    return _WRITERS.names()


def get_writer(key: str) -> ArtifactWriter:
    """The writer registered under ``key``; an unknown key lists the known ones."""
    return _WRITERS.get(key)


def writers_for(keys: tuple[str, ...]) -> list[ArtifactWriter]:
    """The writers of ``keys`` in order, each one's needs met by an earlier one; host checks run here."""
    chosen = [get_writer(k) for k in keys]
    for i, writer in enumerate(chosen):
        missing = [n for n in writer.needs if n != "calibration" and n not in keys[:i]]
        if missing:
            raise UsageError(f"artifact {writer.key} needs {', '.join(missing)} written before it")
        writer.check()
    return chosen


def artifact_record(writer: ArtifactWriter, job: WriteJob, path: Path) -> ArtifactRecord:
    """The record of a file ``writer`` wrote (checks against Keras come later, from ``verify``)."""
    from edgesep.converters.inspect import op_counts

    data = path.read_bytes()
    return ArtifactRecord(key=writer.key, path=path.name, format=writer.format, precision=writer.precision,
                          runtime=writer.runtime, bytes=len(data), sha256=hashlib.sha256(data).hexdigest(),
                          ops=op_counts(path), delegate=writer.delegate,
                          details=writer.describe(job, path) if writer.describe else {})


# ------------------------------------------------------------------------------------------ the writers

def _tflite(precision: str) -> Callable[[WriteJob], Path]:
    quantized = precision in QUANTIZED

    def write(job: WriteJob) -> Path:
        from edgesep.converters.tflite import export_tflite

        if precision == "int8" and job.config.keep_float:
            from edgesep.converters.keep_float import write_keep_float

            return write_keep_float(job, job.folder / TFLITE_NAMES[precision])
        model = job.int8_model if quantized else job.folded
        return export_tflite(model, job.folder / TFLITE_NAMES[precision], precision=precision,
                             representative_data=job.calibration if quantized else None,
                             per_channel=job.config.per_channel, io_dtype=job.config.io_dtype, fold=False)
    return write


def _float_ops(job: WriteJob, path: Path) -> dict[str, Any]:
    """int16x8: the ops TFLite has no 16x8 kernel for stay float; one warning line names them."""
    from edgesep.converters.tflite import float_ops

    ops = float_ops(path)
    if ops:
        job.warnings.append(f"{path.name}: {', '.join(ops)} ha{'s' if len(ops) == 1 else 've'} no 16x8 kernel "
                            "in TFLite and run(s) in float32 between QUANTIZE/DEQUANTIZE ops")
    return {"float_ops": ops}


def _onnx(job: WriteJob) -> Path:
    from edgesep.converters.onnx import export_onnx

    return export_onnx(job.folded, job.folder / "model.onnx", opset=job.config.opset, fold=False)


def _onnx_int8(job: WriteJob) -> Path:
    """QDQ int8 from the float ONNX of the int8 model: model.onnx itself unless equalization changed it."""
    import tempfile

    from edgesep.converters.onnx import export_onnx

    target = job.folder / "model_int8.onnx"
    if job.int8_model is job.folded:  # convert nothing twice
        return _quantize_onnx(job, job.written["onnx:float32"], target)
    with tempfile.TemporaryDirectory(prefix="edgesep-equalized-onnx-") as tmp:
        source = export_onnx(job.int8_model, Path(tmp) / "equalized.onnx", opset=job.config.opset, fold=False)
        return _quantize_onnx(job, source, target)


def _quantize_onnx(job: WriteJob, source: Path, target: Path) -> Path:
    """onnxruntime's static int8 of ``source``; the nodes of the layers tflite:int8 kept float stay float."""
    from edgesep.converters.onnx import quantize_onnx

    exclude: list[str] = []
    if job.float_layers:
        from edgesep.converters.keep_float import onnx_nodes

        exclude = onnx_nodes(source, job.float_layers)
        job.sections["keep_float"]["onnx_float_nodes"] = len(exclude)
    return quantize_onnx(source, target, job.calibration, per_channel=job.config.per_channel, exclude=exclude)


def _edgetpu_check() -> None:
    from edgesep.converters.edgetpu import COMPILER_MISSING, find_compiler

    if not find_compiler():
        raise EdgeTpuError(COMPILER_MISSING)


def _edgetpu(job: WriteJob) -> Path:
    """Compile the written int8 model; the compiler's report (paths as in ``out_dir``) joins export.json."""
    from edgesep.converters.edgetpu import compile_edgetpu

    compiled, report = compile_edgetpu(job.written["tflite:int8"], job.folder)
    report.output_model = str(job.out_dir / compiled.name)
    if report.log_path:
        report.log_path = str(job.out_dir / Path(report.log_path).name)
    job.sections["edgetpu"] = report.to_dict()
    return compiled


TFLITE_NAMES = {"float32": "model.tflite", "float16": "model_fp16.tflite", "int8": "model_int8.tflite",
                "int16x8": "model_int16x8.tflite"}
for _precision in PRECISIONS:
    register_writer(ArtifactWriter(tflite_key(_precision), TFLITE_NAMES[_precision], "tflite", _precision, "TFLite",
                                   _tflite(_precision), needs=("calibration",) if _precision in QUANTIZED else (),
                                   describe=_float_ops if _precision == "int16x8" else None))
register_writer(ArtifactWriter("onnx:float32", "model.onnx", "onnx", "float32", "ONNX Runtime", _onnx))
register_writer(ArtifactWriter("onnx:int8", "model_int8.onnx", "onnx", "int8", "ONNX Runtime", _onnx_int8,
                               needs=("calibration", "onnx:float32")))
register_writer(ArtifactWriter("edgetpu", "model_int8_edgetpu.tflite", "tflite", "int8", "Edge TPU (libedgetpu)",
                               _edgetpu, verify=None, needs=("tflite:int8",), check=_edgetpu_check,
                               delegate="edgetpu"))


def check_output(job: WriteJob, writer: ArtifactWriter, path: Path) -> None:
    """A writer must write the file it is registered with, inside the staging folder."""
    if path.parent != job.folder or path.name != writer.file_name:
        raise ConversionError(f"artifact writer {writer.key} wrote {path}, expected {writer.file_name}")
