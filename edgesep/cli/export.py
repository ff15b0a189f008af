"""``edgesep export`` and ``edgesep inspect``: fold, convert and verify; read what a model file holds."""
from __future__ import annotations

from typing import Optional

import click

from edgesep.cli.app import check_out_dir, cli, input_options, note
from edgesep.converters.export_config import IO_DTYPES, RELU6_MODES


@cli.command()
@click.option("--model", "model_path", metavar="PATH", help="A Keras model (.keras/.h5). Default: the built-in network.")
@click.option("--form", type=click.Choice(["fused", "split"]), help="Block form of the built-in network [split].")
@click.option("--int8", is_flag=True, help="Also write a full-integer int8 model (needs data to calibrate).")
@click.option("--fp16", is_flag=True, help="Also write a float16-weights model.")
@click.option("--per-tensor", is_flag=True, help="int8 weights per tensor instead of per channel.")
@click.option("--equalize", is_flag=True, help="Cross-layer equalization + bias absorption before int8.")
@click.option("--relu6", type=click.Choice(RELU6_MODES),
              help="With --equalize: ReLU6 between convs gets per-channel caps (clip, exact), becomes ReLU "
                   "(replace) or stops equalization there (keep) [clip].")
@click.option("--no-guard", is_flag=True,
              help="With --equalize: keep every equalized link even where the int8 model loses test accuracy "
                   "against the same export without --equalize.")
@click.option("--io-dtype", type=click.Choice(IO_DTYPES), default="int8", show_default=True,
              help="Input/output type of the int8 model.")
@click.option("--no-onnx", is_flag=True, help="Skip the ONNX export.")
@click.option("--data", metavar="digits|DIR|FILE.npz",
              help="Calibration/verification data: 'digits', an ImageFolder dir or a .npz with x, y.")
@input_options
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True,
              help="Training images used to calibrate int8.")
@click.option("--edgetpu", is_flag=True, help="Also compile the int8 model with edgetpu_compiler (must be installed).")
@click.option("--out", "out_dir", default="out", show_default=True, metavar="DIR", help="Output folder.")
def export(model_path: Optional[str], form: Optional[str], int8: bool, fp16: bool, per_tensor: bool,
           equalize: bool, relu6: Optional[str], no_guard: bool, io_dtype: str, no_onnx: bool, data: Optional[str],
           preprocess: Optional[str], resize: bool, calib_samples: int, edgetpu: bool, out_dir: str) -> None:
    """Fold BatchNorm, export TFLite (float32/fp16/int8) and ONNX, verify each against Keras."""
    from edgesep.converters.export_config import ExportConfig

    config = ExportConfig.from_options(model=model_path, form=form, data=data, int8=int8, fp16=fp16,
                                       per_tensor=per_tensor, equalize=equalize, relu6=relu6, no_guard=no_guard,
                                       io_dtype=io_dtype, no_onnx=no_onnx, calib_samples=calib_samples,
                                       edgetpu=edgetpu)
    check_out_dir(out_dir)
    import shutil

    from rich.console import Console

    from edgesep.converters.export import check_export, export as run_export, model_and_data
    from edgesep.interrupt import checked
    from edgesep.report import edgetpu_table, export_table

    check_export(config, out_dir)  # --out writable, no other export writing there, the tools present
    with Console(stderr=True).status("starting") as status:
        step = checked(lambda stage: status.update(f"[bold]{stage}"))
        model, dataset, info = model_and_data(model_path, form=form or "split", data=data, progress=step,
                                              preprocess=preprocess, resize=resize, note=note)
        doc = run_export(model, out_dir, config, dataset, progress=step, extra=info, preprocess=preprocess,
                         note=note)
    Console(width=max(160, shutil.get_terminal_size().columns)).print(export_table(doc))
    for warning in doc.get("warnings") or []:
        click.echo(f"edgesep: warning: {warning}", err=True)
    if "edgetpu" in doc:
        Console().print(edgetpu_table({"compiled": True, "report": doc["edgetpu"]}))
    click.echo(f"wrote {len(doc['artifacts'])} artifacts and export.json to {out_dir}")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the findings as one JSON document.")
@click.option("--quant-error", is_flag=True, help="Per-layer int8 error (SQNR, RMSE/scale) against a float reference.")
@click.option("--data", metavar="digits|PATH.npz|DIR", help="Images for --quant-error (default: digits).")
@click.option("--reference", metavar="MODEL.tflite|MODEL.keras",
              help="Float reference for --quant-error (default: model.tflite beside MODEL).")
@click.option("--samples", type=click.IntRange(min=1), default=100, show_default=True,
              help="Test images used by --quant-error.")
def inspect(model: str, as_json: bool, quant_error: bool, data: Optional[str], reference: Optional[str],
            samples: int) -> None:
    """Ops by type, params, MACs, size, inputs/outputs and quantization of a .tflite/.onnx/.keras model."""
    import json

    from edgesep.io import require_regular_file

    require_regular_file(model, "model file")
    from edgesep.converters.inspect import inspect_model
    from edgesep.report.inspect import info_tables, quant_error_table

    info = inspect_model(model)
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
    from rich.console import Console

    console = Console()
    for section in sections:
        console.print(section)
