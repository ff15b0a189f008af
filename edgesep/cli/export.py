"""``edgesep export`` and ``edgesep inspect``: fold, convert and verify; read what a model file holds."""
from __future__ import annotations

from typing import Optional

import click

from edgesep.cli.app import check_out_dir, cli, echo_rich, input_options, note
from edgesep.converters.export_config import IO_DTYPES, KEEP_PRECISIONS, RELU6_MODES


class InputSize(click.ParamType):
    """``H,W``: two positive integers."""

    name = "H,W"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        parts = str(value).replace("x", ",").split(",")
        if len(parts) != 2 or not all(p.strip().isdigit() and int(p) > 0 for p in parts):
            self.fail(f"{value!r} is not H,W (two positive integers, e.g. 224,224)", param, ctx)
        return int(parts[0]), int(parts[1])


@cli.command()
@click.option("--model", "model_path", metavar="PATH",
              help="A Keras model (.keras/.h5/.hdf5). Default: the built-in network.")
@click.option("--input-size", type=InputSize(), metavar="H,W",
              help="With --model: the input height and width to export at, for a model that takes any size.")
@click.option("--label-output", metavar="NAME",
              help="With --model and --data: for a model with several outputs, the output the labels belong to "
                   "(default: its one softmax output; none: no accuracy).")
@click.option("--trust-model", is_flag=True,
              help="With --model: load it outside Keras' safe mode, so Lambda layers load. A Lambda runs Python "
                   "code stored in the file: use only for files you trust.")
@click.option("--custom-objects", metavar="FILE.py", type=click.Path(dir_okay=False),
              help="With --model: a Python file imported before loading, defining the model's custom layers "
                   "(classes registered with keras.saving.register_keras_serializable, or found by name).")
@click.option("--form", type=click.Choice(["fused", "split"]), help="Block form of the built-in network [split].")
@click.option("--int8", is_flag=True, help="Also write a full-integer int8 model (needs data to calibrate).")
@click.option("--fp16", is_flag=True, help="Also write a float16-weights model.")
@click.option("--int16x8", is_flag=True,
              help="Also write model_int16x8.tflite: 16-bit activations, 8-bit weights (needs data to calibrate).")
@click.option("--per-tensor", is_flag=True, help="int8 weights per tensor instead of per channel.")
@click.option("--equalize", is_flag=True, help="Cross-layer equalization + bias absorption before int8.")
@click.option("--relu6", type=click.Choice(RELU6_MODES),
              help="With --equalize: ReLU6 between convs gets per-channel caps (clip, exact), becomes ReLU "
                   "(replace) or stops equalization there (keep) [clip].")
@click.option("--no-guard", is_flag=True,
              help="With --equalize: keep every equalized link even where the int8 model loses test accuracy "
                   "against the same export without --equalize.")
@click.option("--io-dtype", type=click.Choice(IO_DTYPES),
              help="Input/output type of the int8 model [int8; float32 with --keep-float].")
@click.option("--keep-float", metavar="NAME[,NAME...]|auto",
              help="With --int8: keep these ops (Keras layer names; see inspect --sensitivity) and the ops reading "
                   "their outputs in float; auto: the fewest that meet --target-sqnr/--target-agreement, chosen "
                   "on training images held out from calibration.")
@click.option("--keep-precision", type=click.Choice(KEEP_PRECISIONS),
              help="How --keep-float keeps its ops: float (float32 between DEQUANTIZE/QUANTIZE) or int16 (16-bit "
                   "activations, 8-bit weights, by ai-edge-quantizer; auto then chooses with int16; runs on "
                   "ai-edge-litert, not tflite-runtime 2.14) [float].")
@click.option("--target-sqnr", type=float, metavar="DB", help="--keep-float auto's goal: output SQNR in dB [30].")
@click.option("--ptq", metavar="bias-correction,adaround",
              help="With --int8: empirical bias correction and/or AdaRound (on the converter's weight grid) after "
                   "folding/CLE; a guard keeps the variant (or none) with the best int8 SQNR on held-out training "
                   "images.")
@click.option("--target-agreement", type=float, metavar="A",
              help="--keep-float auto's goal instead: top-1 agreement with the float model (0..1).")
@click.option("--no-onnx", is_flag=True, help="Skip the ONNX exports (model.onnx and, with --int8, model_int8.onnx).")
@click.option("--data", metavar="digits|DIR|FILE.npz",
              help="Calibration/verification data: 'digits', an ImageFolder dir or a .npz with x (and labels y for "
                   "accuracy).")
@input_options
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True,
              help="Training images used to calibrate int8.")
@click.option("--edgetpu", is_flag=True, help="Also compile the int8 model with edgetpu_compiler (must be installed).")
@click.option("--artifact", "writers", multiple=True, metavar="KEY",
              help="Also run this registered artifact writer (e.g. onnx:int8); repeatable.")
@click.option("--out", "out_dir", default="out", show_default=True, metavar="DIR", help="Output folder.")
def export(model_path: Optional[str], input_size: Optional[tuple[int, int]], label_output: Optional[str],
           trust_model: bool,
           custom_objects: Optional[str], form: Optional[str], int8: bool,
           fp16: bool, int16x8: bool, per_tensor: bool, equalize: bool, relu6: Optional[str], no_guard: bool,
           io_dtype: Optional[str], keep_float: Optional[str], keep_precision: Optional[str],
           target_sqnr: Optional[float],
           target_agreement: Optional[float], ptq: Optional[str], no_onnx: bool, data: Optional[str],
           preprocess: Optional[str], resize: bool, calib_samples: int, edgetpu: bool, writers: tuple[str, ...],
           out_dir: str) -> None:
    """Fold BatchNorm, export TFLite (float32/fp16/int8/int16x8) and ONNX (float32/int8), verify each against Keras."""
    from edgesep.converters.export_config import ExportConfig
    from edgesep.source import ModelSource

    source = ModelSource.from_options(model=model_path, form=form, data=data, preprocess=preprocess, resize=resize,
                                      input_size=input_size, trust_model=trust_model, custom_objects=custom_objects,
                                      label_output=label_output)
    config = ExportConfig.from_options(int8=int8, fp16=fp16,
                                       per_tensor=per_tensor, equalize=equalize, relu6=relu6, no_guard=no_guard,
                                       io_dtype=io_dtype, no_onnx=no_onnx, calib_samples=calib_samples,
                                       edgetpu=edgetpu, int16x8=int16x8, keep_float=keep_float,
                                       target_sqnr=target_sqnr, target_agreement=target_agreement,
                                       keep_precision=keep_precision, ptq=ptq, writers=writers)
    if model_path:
        from edgesep.converters.graph import check_model_path

        check_model_path(model_path)  # before the watched child and TensorFlow's start-up
    check_out_dir(out_dir)
    if (code := _watched(out_dir)) is not None:  # the work ran in a watched child, which printed everything
        raise click.exceptions.Exit(code)

    from edgesep.converters.export import export_source
    from edgesep.interrupt import checked
    from edgesep.report.live import status as live_status
    from edgesep.supervise import recording

    with live_status("starting") as status:
        step = recording(checked(lambda stage: status.update(f"[bold]{stage}")))
        result = export_source(source, out_dir, config, progress=step, note=note)
    _print_result(result, out_dir)


def _print_result(result, out_dir: str) -> None:
    """The export table, what --ptq and --keep-float did, the warnings and the Edge TPU report."""
    from edgesep.report import edgetpu_table, export_table

    echo_rich(export_table(result), wide=160)
    if result.ptq is not None:
        from edgesep.report.ptq import ptq_line

        click.echo(ptq_line(result.ptq))
    if result.keep_float is not None:
        from edgesep.report.ptq import keep_float_table

        echo_rich(keep_float_table(result.keep_float), wide=160)
    for warning in result.warnings:
        click.echo(f"edgesep: warning: {warning}", err=True)
    if result.edgetpu is not None:
        echo_rich(edgetpu_table({"compiled": True, "report": result.edgetpu}), wide=160)
    count = len(result.artifacts)
    click.echo(f"wrote {count} artifact{'s' if count != 1 else ''} and export.json to {out_dir}")


def _watched(out_dir: str) -> Optional[int]:
    """Quiet warnings for this command, and run its work in a watched child at the top level (see
    ``edgesep.supervise``): the child's exit code, or None where this process does the work."""
    import warnings

    from edgesep.supervise import supervise

    click.get_current_context().with_resource(warnings.catch_warnings())  # restored when the command ends
    warnings.simplefilter("ignore")  # Keras' input-structure and PIL's decompression-bomb warnings are noise
    return supervise(out_dir)


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the findings as one JSON document.")
@click.option("--quant-error", is_flag=True, help="Per-layer int8 error (SQNR, RMSE/scale) against a float reference.")
@click.option("--data", metavar="digits|PATH.npz|DIR", help="Images for --quant-error (default: digits).")
@click.option("--reference", metavar="MODEL.tflite|MODEL.keras",
              help="Float reference for --quant-error (default: model.tflite beside MODEL).")
@click.option("--samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Test images used by --quant-error and --sensitivity.")
@click.option("--sensitivity", is_flag=True,
              help="With a Keras MODEL and --data: rank the int8 model's ops by how much keeping each float raises "
                   "the output SQNR, with its share of the MACs.")
@click.option("--quick", is_flag=True,
              help="With --sensitivity: measure only the ops the per-layer statistics rate worst (8).")
@click.option("--trust-model", is_flag=True,
              help="Load a Keras MODEL outside Keras' safe mode, so that its Lambda layers (Python code in the file) "
                   "load: only for a file you trust.")
def inspect(model: str, as_json: bool, quant_error: bool, data: Optional[str], reference: Optional[str],
            samples: int, sensitivity: bool, quick: bool, trust_model: bool) -> None:
    """Ops by type, params, MACs, size, inputs/outputs and quantization of a .tflite/.onnx/.keras/.h5 model."""
    import json

    from edgesep.io import require_regular_file

    require_regular_file(model, "model file")
    if sensitivity or quick:
        _sensitivity(model, as_json, data, samples, quick, quant_error or reference is not None or not sensitivity,
                     trust_model)
        return
    from edgesep.converters.inspect import inspect_model
    from edgesep.report.inspect import info_tables, quant_error_table

    info = inspect_model(model, trust_model=trust_model)
    document = info.to_dict()  # further sections add their own keys to `document` ...
    sections = info_tables(document)  # ... and their rich renderables to `sections`
    if info.format == "tflite":
        from edgesep.converters.edgetpu import inspect_edgetpu
        from edgesep.report import edgetpu_table

        document["edgetpu"] = inspect_edgetpu(model)
        sections.append(edgetpu_table(document["edgetpu"]))
    if quant_error:
        from edgesep.converters.quant_error import quant_error_cli

        document["quant_error"] = quant_error_cli(model, info.inputs, data, reference, samples)
        sections.append(quant_error_table(document["quant_error"]))
    elif data or reference:
        raise click.UsageError("--data and --reference go with --quant-error")
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    echo_rich(*sections, wide=120)


def _sensitivity(model: str, as_json: bool, data: Optional[str], samples: int, quick: bool, misused: bool,
                 trust_model: bool = False) -> None:
    """``inspect --sensitivity``: the ranking as a table (or JSON), a time estimate on stderr before it starts."""
    import json

    if misused:
        raise click.UsageError("--quick goes with --sensitivity, which goes without --quant-error/--reference")
    if not data:
        raise click.UsageError("--sensitivity needs --data (images to calibrate and measure on)")
    from pathlib import Path

    if Path(model).suffix not in (".keras", ".h5", ".hdf5"):
        raise click.UsageError(f"--sensitivity quantizes a Keras model (.keras/.h5/.hdf5), not {Path(model).name}")
    from edgesep.converters.sensitivity import model_sensitivity
    from edgesep.source import ModelSource
    from edgesep.report.ptq import sensitivity_table

    def estimate(count: int, seconds: float) -> None:
        click.echo(f"edgesep: measuring {count} ops kept float, about {seconds:.0f} s", err=True)

    loaded = ModelSource(model=model, data=data, trust_model=trust_model).load(note=note)
    keras_model, dataset = loaded.model, loaded.dataset
    report = model_sensitivity(keras_model, dataset, samples=samples, quick=quick, on_estimate=estimate)
    if as_json:
        click.echo(json.dumps(report.to_dict(), indent=2))
        return
    echo_rich(sensitivity_table(report.to_dict()), wide=160)
