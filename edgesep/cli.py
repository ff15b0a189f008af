"""The ``edgesep`` command line: parse, call the library, print. One function per subcommand.

Heavy modules (TensorFlow, the converters, the devices) are imported inside the subcommands, so
``edgesep --help`` answers at once.
"""
from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Optional, Sequence

import click

from edgesep import __version__

if TYPE_CHECKING:
    from pathlib import Path

    from edgesep.devices.base import BenchResult, Device

from edgesep.devices.base import BenchConfig
from edgesep.errors import EXIT_USAGE, EdgesepError, one_line

BENCH_DEFAULTS = BenchConfig()  # click defaults of bench/compare come from here, never repeated


class UserError(EdgesepError):
    """A failure the user can fix, raised by the CLI itself: one line, exit code 1."""


class FiniteFloat(click.FloatRange):
    """A float option in a range that also refuses inf and nan (exit 2, one line)."""

    name = "finite float range"

    def convert(self, value, param, ctx):
        import math

        if isinstance(value, str) and value.strip().lower() in ("nan", "+nan", "-nan"):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        converted = super().convert(value, param, ctx)
        if not math.isfinite(converted):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return converted


def _measure_options(command):
    """The steady-state options bench and compare share (defaults follow TFLite's benchmark_model)."""
    options = [
        click.option("--threads", type=click.IntRange(min=1), help="Interpreter threads (default: the runtime's own)."),
        click.option("--runs", type=click.IntRange(min=1), default=BENCH_DEFAULTS.runs, show_default=True,
                     help="Minimum steady-state runs per model."),
        click.option("--min-secs", type=FiniteFloat(min=0), default=BENCH_DEFAULTS.min_secs, show_default=True,
                     help="Minimum steady-state time per model, seconds."),
        click.option("--max-secs", type=FiniteFloat(min=0, min_open=True), default=BENCH_DEFAULTS.max_secs,
                     show_default=True,
                     help="Maximum steady-state time per model, seconds."),
    ]
    for option in reversed(options):
        command = option(command)
    return command


def _input_options(command):
    """How --data becomes model input: --preprocess for images, --resize for a .npz of another size."""
    command = click.option("--resize", is_flag=True,
                           help="Resize a .npz's x bilinearly (and fit its channels) to the model's input; "
                                "without it a .npz must already match (it is used as given).")(command)
    return click.option("--preprocess", metavar="unit|symmetric|raw|caffe|torch|scale=S,offset=O[,bgr]",
                        help="How images (a folder, digits) become the model's input: unit [0,1]; symmetric "
                             "[-1,1] (MobileNet/V2, Xception); raw [0,255] (EfficientNet, MobileNetV3); caffe "
                             "(ResNet, VGG); torch (ImageNet mean/std); or pixel*S+O. A .npz is used as given.")(command)


def _note(text: str) -> None:
    click.echo(f"edgesep: note: {text}", err=True)


_ssh_config_option = click.option("--ssh-config", type=click.Path(dir_okay=False), metavar="FILE",
                                  help="ssh_config for ssh:// targets (-F).")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgesep")
def cli() -> None:
    """edgesep: SeparableConv2D vs MobileNet's split block, from Keras to a measured edge deployment."""


@cli.command()
@click.option("--model", "model_path", metavar="PATH", help="A Keras model (.keras/.h5). Default: the built-in network.")
@click.option("--form", type=click.Choice(["fused", "split"]), help="Block form of the built-in network [split].")
@click.option("--int8", is_flag=True, help="Also write a full-integer int8 model (needs data to calibrate).")
@click.option("--fp16", is_flag=True, help="Also write a float16-weights model.")
@click.option("--per-tensor", is_flag=True, help="int8 weights per tensor instead of per channel.")
@click.option("--equalize", is_flag=True, help="Cross-layer equalization + bias absorption before int8.")
@click.option("--relu6", type=click.Choice(["clip", "replace", "keep"]),
              help="With --equalize: ReLU6 between convs gets per-channel caps (clip, exact), becomes ReLU "
                   "(replace) or stops equalization there (keep) [clip].")
@click.option("--no-guard", is_flag=True,
              help="With --equalize: keep every equalized link even where the int8 model loses test accuracy "
                   "against the same export without --equalize.")
@click.option("--io-dtype", type=click.Choice(["int8", "uint8", "float32"]), default="int8", show_default=True,
              help="Input/output type of the int8 model.")
@click.option("--no-onnx", is_flag=True, help="Skip the ONNX export.")
@click.option("--data", metavar="digits|DIR|FILE.npz",
              help="Calibration/verification data: 'digits', an ImageFolder dir or a .npz with x, y.")
@_input_options
@click.option("--calib-samples", type=click.IntRange(min=1), default=200, show_default=True,
              help="Training images used to calibrate int8.")
@click.option("--edgetpu", is_flag=True, help="Also compile the int8 model with edgetpu_compiler (must be installed).")
@click.option("--out", "out_dir", default="out", show_default=True, metavar="DIR", help="Output folder.")
def export(model_path: Optional[str], form: Optional[str], int8: bool, fp16: bool, per_tensor: bool,
           equalize: bool, relu6: Optional[str], no_guard: bool, io_dtype: str, no_onnx: bool, data: Optional[str],
           preprocess: Optional[str], resize: bool, calib_samples: int, edgetpu: bool, out_dir: str) -> None:
    """Fold BatchNorm, export TFLite (float32/fp16/int8) and ONNX, verify each against Keras."""
    if model_path and form:
        raise click.UsageError("--form builds the built-in network; it cannot be combined with --model")
    _check_out_dir(out_dir)
    if (per_tensor or equalize or edgetpu) and not int8:
        raise click.UsageError("--per-tensor, --equalize and --edgetpu shape the int8 model; add --int8")
    if relu6 and not equalize:
        raise click.UsageError("--relu6 says how --equalize treats ReLU6; add --equalize")
    if no_guard and not equalize:
        raise click.UsageError("--no-guard switches off the accuracy guard of --equalize; add --equalize")
    if edgetpu and io_dtype == "float32":
        raise click.UsageError("--edgetpu needs integer input/output: use --io-dtype int8 or uint8")
    if edgetpu:
        from edgesep.converters.edgetpu import COMPILER_MISSING, find_compiler

        if not find_compiler():  # fail before any work, so nothing is half done
            raise UserError(COMPILER_MISSING)
    if model_path and int8 and not data:
        raise click.UsageError("--int8 with --model needs --data to calibrate (a folder of images or a .npz)")
    from rich.console import Console

    from edgesep.converters.export import ExportConfig, export as run_export, model_and_data
    from edgesep.interrupt import checked

    precisions = ("float32",) + (("float16",) if fp16 else ()) + (("int8",) if int8 else ())
    config = ExportConfig(precisions=precisions, onnx=not no_onnx, per_channel=not per_tensor, io_dtype=io_dtype,
                          calib_samples=calib_samples, equalize=equalize, relu6=relu6 or "clip",
                          equalize_guard=not no_guard)
    err = Console(stderr=True)
    with err.status("starting") as status:
        step = checked(lambda stage: status.update(f"[bold]{stage}"))
        model, dataset, info = model_and_data(model_path, form=form or "split", data=data, progress=step,
                                              preprocess=preprocess, resize=resize, note=_note)
        doc = run_export(model, out_dir, config, dataset, progress=step, extra=info, preprocess=preprocess,
                         note=_note)
        if edgetpu:
            step("edgetpu_compiler")
            _compile_for_edgetpu(doc, out_dir)

    from edgesep.report import edgetpu_table, export_table

    Console().print(export_table(doc))
    for warning in doc.get("warnings") or []:
        click.echo(f"edgesep: warning: {warning}", err=True)
    if edgetpu:
        Console().print(edgetpu_table({"compiled": True, "report": doc["edgetpu"]}))
    click.echo(f"wrote {len(doc['artifacts'])} artifacts and export.json to {out_dir}")


def _compile_for_edgetpu(doc: dict, out_dir: str) -> None:
    """Compile out_dir/model_int8.tflite for the Edge TPU; add the artifact and report to export.json."""
    from pathlib import Path

    from edgesep.converters.export import artifact_record
    from edgesep.converters.edgetpu import compile_edgetpu
    from edgesep.io import write_json

    out = Path(out_dir)
    compiled, report = compile_edgetpu(out / "model_int8.tflite", out)
    doc["artifacts"].append({**artifact_record(compiled, "tflite", "int8"), "delegate": "edgetpu"})
    doc["edgetpu"] = report.to_dict()
    write_json(out / "export.json", doc)


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


@cli.command()
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--device", "target", default="local", show_default=True, metavar="TARGET",
              help="local, ssh://[user@]host[:port], adb or adb:SERIAL.")
@_measure_options
@click.option("--warmup", type=click.IntRange(min=0), default=BENCH_DEFAULTS.warmup, show_default=True,
              help="Minimum warm-up runs per model.")
@click.option("--warmup-secs", type=FiniteFloat(min=0), default=BENCH_DEFAULTS.warmup_secs, show_default=True,
              help="Minimum warm-up time (all models, interleaved), seconds.")
@click.option("--delegate", default=BENCH_DEFAULTS.delegate, show_default=True, metavar="xnnpack|none|edgetpu|PATH",
              help="TFLite delegate: XNNPACK (default CPU path), none, the Edge TPU, or a delegate library.")
@click.option("--delegate-option", "delegate_options", multiple=True, metavar="KEY=VALUE",
              help="Delegate option, repeatable (e.g. device=usb:0 for edgetpu).")
@click.option("--data", metavar="digits|PATH.npz|DIR",
              help="Also measure top-1 accuracy on the test split of this labelled data (as export does).")
@_input_options
@_ssh_config_option
@click.option("--remote-python", metavar="PATH", help="The device's Python (default: python3).")
@click.option("--benchmark-binary", type=click.Path(dir_okay=False), metavar="PATH",
              help="adb: TFLite's benchmark_model built for the phone, pushed and used as the runner.")
@click.option("--cpu-mask", metavar="HEX", help="adb: taskset CPU mask for the runner (e.g. f0: big cores).")
@click.option("--op-profiling", is_flag=True, help="adb with benchmark_model: per-op profile (--enable_op_profiling).")
@click.option("--seed", type=int, default=BENCH_DEFAULTS.seed, show_default=True,
              help="Seed of the random latency input.")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON document on stdout.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the JSON document to FILE.")
def bench(models: tuple[str, ...], target: str, threads: Optional[int], runs: int, warmup: int,
          warmup_secs: float, min_secs: float, max_secs: float, delegate: str, delegate_options: tuple[str, ...],
          data: Optional[str], preprocess: Optional[str], resize: bool, ssh_config: Optional[str],
          remote_python: Optional[str], benchmark_binary: Optional[str], cpu_mask: Optional[str], op_profiling: bool,
          seed: int, as_json: bool, out_file: Optional[str]) -> None:
    """Measure latency (and accuracy with --data) of .tflite/.onnx models on a device.

    Several models are measured in one session, interleaved round by round, so drift and heat hit all alike.
    """
    import tempfile
    from pathlib import Path

    from edgesep.bench import accuracy_npz, edgetpu_models
    from edgesep.devices import parse_target
    from edgesep.devices.harness import check_model_file

    paths = [Path(m) for m in models]
    for path in paths:
        check_model_file(path)
    target = target.strip()
    if out_file:
        _check_out_file(out_file)
    if (preprocess or resize) and not data:
        raise click.UsageError("--preprocess and --resize say how --data becomes model input; add --data")
    options = [tuple(o.split("=", 1)) for o in delegate_options]
    if any(len(o) != 2 or not o[0] for o in options):
        raise click.UsageError("--delegate-option takes KEY=VALUE")
    try:
        config = BenchConfig(threads=threads, runs=runs, warmup=warmup, warmup_secs=warmup_secs, min_secs=min_secs,
                             max_secs=max_secs, delegate=delegate, delegate_options=tuple(options), seed=seed)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    adb_options = {"benchmark_binary": benchmark_binary, "cpu_mask": cpu_mask, "op_profiling": op_profiling or None}
    device = parse_target(target, **_bench_device_options(target, ssh_config, remote_python, adb_options))
    with tempfile.TemporaryDirectory(prefix="edgesep-bench-") as tmp:
        data_file = accuracy_npz(data, paths, Path(tmp), preprocess=preprocess, resize=resize,
                                 note=_note) if data else None
        if data_file is not None:
            config = BenchConfig.from_dict({**config.to_dict(), "data": str(data_file)})
        run_paths, edgetpu_reports = edgetpu_models(paths, Path(tmp), target, delegate)
        results = _bench_run(device, run_paths, data_file, config)
        for result, path, report in zip(results, paths, edgetpu_reports):
            result.model = str(path)  # the user's file, also when a compiled copy ran
            if report is not None:
                result.extra["edgetpu"] = report.to_dict()
    from edgesep.io import dumps, write_text

    doc = {"results": [r.to_dict() for r in results]}
    text = dumps(doc, indent=None)
    if as_json:
        click.echo(text)
    else:
        _bench_print(doc["results"])
    if out_file:  # after printing: a file that cannot be written never loses the measurement
        write_text(Path(out_file), text + "\n")
    _bench_failures(results)


def _check_out_dir(out_dir: str) -> "Path":
    """--out as a Path, refused in one line before any work when it cannot become a writable folder."""
    from edgesep.io import check_writable_dir

    return check_writable_dir(out_dir)


def _check_out_file(out_file: str) -> "Path":
    """--out FILE as a Path, refused before any measurement when its folder cannot take a new file."""
    from pathlib import Path

    from edgesep.errors import OutputError
    from edgesep.io import check_writable_dir

    path = Path(out_file)
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give a file name")
    check_writable_dir(path.parent)
    return path


def _bench_device_options(target: str, ssh_config: Optional[str], remote_python: Optional[str],
                          adb_options: Optional[dict] = None) -> dict[str, str]:
    """Device options the user gave, checked against the target kind."""
    options = {}
    given = {k: v for k, v in (adb_options or {}).items() if v is not None}
    if given:
        if not target.strip().startswith("adb"):
            flags = ", ".join("--" + k.replace("_", "-") for k in given)
            raise click.UsageError(f"{flags}: for adb targets only")
        options.update(given)
    if ssh_config is not None:
        if not target.startswith("ssh://"):
            raise click.UsageError("--ssh-config applies to ssh:// targets only")
        options["ssh_config"] = ssh_config
    if remote_python is not None:
        if target.strip() == "local":
            raise click.UsageError("--remote-python applies to remote targets only")
        options["remote_python"] = remote_python
    return options


def _bench_run(device: Device, paths: list[Path], data_file: Optional[Path],
               config: BenchConfig) -> list[BenchResult]:
    """prepare + run with a progress bar on stderr; the device is cleaned up whatever happens."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    from edgesep.devices.base import DeviceError

    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=Console(stderr=True), transient=True)
    tasks: dict = {}

    def progress(model: str, done: int, total: int) -> None:
        if model not in tasks:
            tasks[model] = bar.add_task(model.replace("\\", "/").rsplit("/", 1)[-1], total=max(total, 1))
        bar.update(tasks[model], completed=done, total=max(total, done, 1))

    try:
        with bar:
            device.prepare(paths, data_file)
            results = device.run(config, progress=progress)
    except BaseException:
        try:
            device.cleanup()
        except DeviceError as e:
            click.echo(f"edgesep: warning: {e}", err=True)
        raise
    device.cleanup()
    return results


def _bench_print(results: list[dict]) -> None:
    import shutil

    from rich.console import Console

    from edgesep.report import bench_table

    table = bench_table(results)
    host = next((r.get("host") for r in results if r.get("host")), None)
    if host:
        temp = host.get("temp_c")
        table.caption = (f"{host.get('cpu')}, {host.get('cores')} cores, governor {host.get('governor') or '-'}, "
                         f"temp {'-' if temp is None else f'{temp:.0f} C'}"
                         + (f"\n{table.caption}" if table.caption else ""))
    Console(width=max(160, shutil.get_terminal_size().columns)).print(table)


def _bench_failures(results: list[BenchResult]) -> None:
    """One error line per failed model and exit code 1 (the other models' results are already out)."""
    failed = [r for r in results if r.error]
    if not failed:
        return
    if len(results) == 1:
        raise UserError(f"{failed[0].model}: {failed[0].error}")
    for r in failed:
        click.echo(f"edgesep: error: {r.model}: {r.error}", err=True)
    raise UserError(f"{len(failed)} of {len(results)} models failed; the others' results stand")


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list instead of a table.")
@click.option("--adb", "adb_path", metavar="PATH", help="The adb executable (default: adb on PATH).")
@click.option("--adb-server-port", type=click.IntRange(1, 65535), metavar="PORT",
              help="The adb server's port (default: adb's own, 5037 or $ANDROID_ADB_SERVER_PORT).")
def devices(as_json: bool, adb_path: Optional[str], adb_server_port: Optional[int]) -> None:
    """List attached Android devices (serial, model, ABI, Android version)."""
    import json

    from edgesep.devices.adb import describe_devices

    found = describe_devices(adb_path=adb_path, server_port=adb_server_port)
    if as_json:
        click.echo(json.dumps([d.to_dict() for d in found], indent=2))
        return
    if not found:
        click.echo("no adb devices attached (connect a phone with USB debugging on, or 'adb connect HOST:PORT')")
        return
    import shutil

    from rich.console import Console
    from rich.table import Table

    table = Table(title="adb devices")
    for column in ("serial", "state", "model", "ABI", "Android"):
        table.add_column(column)
    for d in found:
        table.add_row(d.serial, d.state, d.model or "-", d.abi or "-", d.android or "-")
    Console(width=max(100, shutil.get_terminal_size().columns)).print(table)


@cli.command()
@click.argument("models", nargs=-1, metavar="[MODEL...]")
@click.option("--device", "targets", multiple=True, metavar="TARGET",
              help="local, ssh://[user@]host[:port], adb or adb:SERIAL; repeat for several devices [local].")
@click.option("--int8/--no-int8", default=None, help="Export and compare full-integer int8 models too [on].")
@click.option("--seeds", type=click.IntRange(min=1), help="Trainings per form, seeds 0..N-1 [1].")
@click.option("--width", type=FiniteFloat(min=0, min_open=True), help="Channel multiplier [1.0].")
@click.option("--input-size", type=click.IntRange(min=8), help="Input height and width, 3 channels [32].")
@click.option("--blocks", metavar="SPEC", help="default, small, tiny or FILTERS[:STRIDE],... e.g. 32,64:2 [default].")
@click.option("--epochs", type=click.IntRange(min=1), help="Training epochs, the same for both forms [8].")
@click.option("--data", metavar="digits|DIR|FILE.npz",
              help="Built-in: training/test data [digits]. MODEL files: labelled data for on-device accuracy.")
@_input_options
@_measure_options
@click.option("--warmup-secs", type=FiniteFloat(min=0), default=BENCH_DEFAULTS.warmup_secs, show_default=True,
              help="Minimum warm-up time per session, seconds.")
@_ssh_config_option
@click.option("--remote-python", metavar="PATH", help="The Python of every remote device (default: python3).")
@click.option("--out", "out_dir", default="report", show_default=True, metavar="DIR", help="Report folder.")
@click.option("--resume", is_flag=True, help="Reuse exports and device sessions an earlier run in --out finished.")
@click.option("--sessions", type=click.IntRange(min=1), default=5, show_default=True,
              help="Independent sessions per device and runtime (a fresh runner each, shuffled order).")
def compare(models: tuple[str, ...], targets: tuple[str, ...], int8: Optional[bool], seeds: Optional[int],
            width: Optional[float], input_size: Optional[int], blocks: Optional[str], epochs: Optional[int],
            data: Optional[str], preprocess: Optional[str], resize: bool, threads: Optional[int], runs: int,
            warmup_secs: float, min_secs: float, max_secs: float, ssh_config: Optional[str],
            remote_python: Optional[str], out_dir: str, resume: bool, sessions: int) -> None:
    """Fused vs split: train both forms, export, benchmark on every device, write a report.

    Without MODEL: the built-in network in both forms, trained alike, exported (float32, int8, ONNX) and
    measured on every --device (concurrently), with on-device int8 accuracy. With two or more MODEL files
    (.tflite/.onnx): those are measured and each is compared with the first. The report (report.json,
    report.md, PNG plots) goes to --out.
    """
    from pathlib import Path

    from edgesep import compare as cmp
    from edgesep.devices.base import BenchConfig
    from edgesep.devices.harness import check_model_file

    targets = targets or ("local",)
    builtin = {"--int8/--no-int8": int8, "--seeds": seeds, "--width": width, "--input-size": input_size,
               "--blocks": blocks, "--epochs": epochs}
    if models:
        given = [k for k, v in builtin.items() if v is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} shape the built-in network; they cannot be combined with "
                                   "MODEL files")
        if len(models) < 2:
            raise click.UsageError("compare needs two or more MODEL files (or none, for the built-in experiment)")
        if (preprocess or resize) and not data:
            raise click.UsageError("--preprocess and --resize say how --data becomes model input; add --data")
    elif preprocess or resize:
        raise click.UsageError("--preprocess and --resize apply to MODEL files; the built-in network is trained "
                               "on images in [0, 1] at --input-size")
    try:
        bench = BenchConfig(threads=threads, runs=runs, warmup_secs=warmup_secs, min_secs=min_secs,
                            max_secs=max_secs)
        config = None if models else cmp.CompareConfig(
            width=width or 1.0, input_size=input_size or 32, epochs=epochs or 8, seeds=seeds or 1,
            int8=int8 is not False, data=data or "digits",
            blocks=cmp.parse_blocks(blocks) if blocks else cmp.BLOCK_PRESETS["default"])
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    targets = tuple(t.strip() for t in targets)
    options = _compare_device_options(targets, ssh_config, remote_python)
    out = _check_out_dir(out_dir)
    paths = [Path(m) for m in models]
    for path in paths:
        check_model_file(path)
    progress = _CompareProgress()
    with progress:
        if models:
            data_file = _compare_models_data(data, paths, out, preprocess, resize) if data else None
            doc = cmp.run_models(paths, targets, bench, out, data_file=data_file, device_options=options,
                                 resume=resume, progress=progress, sessions=sessions)
        else:
            doc = cmp.run_builtin(config, targets, bench, out, device_options=options, resume=resume,
                                  progress=progress, sessions=sessions)
    _compare_print(doc, out)


def _compare_device_options(targets: tuple[str, ...], ssh_config: Optional[str],
                            remote_python: Optional[str]) -> dict[str, dict[str, str]]:
    """Per target, the device options the user gave; every target is parsed once (no connection) to fail early."""
    from edgesep.devices import parse_target

    if len(set(targets)) != len(targets):
        raise click.UsageError("each --device may be given once")
    if ssh_config is not None and not any(t.startswith("ssh://") for t in targets):
        raise click.UsageError("--ssh-config applies to ssh:// targets only")
    if remote_python is not None and all(t.strip() == "local" for t in targets):
        raise click.UsageError("--remote-python applies to remote targets only")
    options = {}
    for target in targets:
        opts = {}
        if ssh_config is not None and target.startswith("ssh://"):
            opts["ssh_config"] = ssh_config
        if remote_python is not None and target.strip() != "local":
            opts["remote_python"] = remote_python
        parse_target(target, **opts)
        options[target] = opts
    return options


def _compare_models_data(spec: str, paths: list[Path], out: Path, preprocess: Optional[str],
                         resize: bool) -> Path:
    """The runner .npz for on-device accuracy of given models, in ``out/data`` (moved in when complete)."""
    import os
    import tempfile
    from pathlib import Path

    from edgesep.bench import accuracy_npz

    (out / "data").mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".edgesep-data-", dir=out / "data") as tmp:
        made = accuracy_npz(spec, paths, Path(tmp), preprocess=preprocess, resize=resize, note=_note)
        target = out / "data" / "models.npz"
        os.replace(made, target)
    return target


class _CompareProgress:
    """A rich progress bar on stderr, one row per stage (train, export, bench per device, plots)."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[note]}"), console=Console(stderr=True))
        self.tasks: dict[str, int] = {}

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def start(self, stage: str, total: float) -> None:
        self.tasks[stage] = self.bar.add_task(stage, total=max(total, 1), note="")

    def update(self, stage: str, completed: float, total: Optional[float] = None, note: str = "") -> None:
        from edgesep.interrupt import checkpoint

        checkpoint()  # a SIGTERM whose exception was swallowed (e.g. in a GC callback) is raised here again
        if stage in self.tasks:
            self.bar.update(self.tasks[stage], completed=completed, note=note,
                            **({"total": max(total, completed, 1)} if total is not None else {}))

    def finish(self, stage: str, ok: bool = True) -> None:
        if stage in self.tasks:
            self.bar.update(self.tasks[stage], completed=self._total(stage), note="done" if ok else "[red]failed")

    def _total(self, stage: str) -> float:
        return next(t.total for t in self.bar.tasks if t.id == self.tasks[stage]) or 1


def _compare_print(doc: dict, out: Path) -> None:
    """The report's tables on stdout; one error line per failed device and exit 1 if any failed."""
    import shutil

    from rich.console import Console

    from edgesep.report import compare_tables

    console = Console(width=max(140, shutil.get_terminal_size().columns))
    for renderable in compare_tables(doc):
        console.print(renderable)
    click.echo(f"wrote report.json, report.md and {len(doc.get('plots') or [])} plots to {out}")
    failed = [(t, s) for t, s in doc["devices"].items() if s["status"] == "failed"]
    for target, section in doc["devices"].items():
        if section["status"] == "partial":  # e.g. no ONNX Runtime there: the TFLite session stands
            click.echo(f"edgesep: warning: {target}: {section['error']}", err=True)
        for check in section.get("checks") or []:  # load, CPU time, temperature, speed modes, threads
            click.echo(f"edgesep: warning: {target}: {check['message']}", err=True)
    for target, section in failed:
        click.echo(f"edgesep: error: {target}: {section['error']}", err=True)
    if failed:
        raise UserError(f"{len(failed)} of {len(doc['devices'])} devices failed; the others' results are in {out}")

@cli.command()
@click.argument("plan", required=False, metavar="PLAN.toml")
@click.option("--out", "out_dir", metavar="DIR", help="Folder for sweep.db, the artifacts and the report.")
@click.option("--address", metavar="auto|HOST:PORT",
              help="Join a Ray cluster (default: an embedded Ray on 127.0.0.1, dashboard off).")
@click.option("--resume", is_flag=True, help="Skip every job already recorded ok in DIR/sweep.db.")
@click.option("--report", is_flag=True, help="Render DIR/report.md and plots from the database.")
@click.option("--csv", "as_csv", is_flag=True, help="Export the job rows to DIR/sweep.csv.")
@click.option("--parquet", is_flag=True, help="Export the job rows to DIR/sweep.parquet (needs pyarrow).")
def sweep(plan: Optional[str], out_dir: Optional[str], address: Optional[str], resume: bool, report: bool,
          as_csv: bool, parquet: bool) -> None:
    """Measure a fleet: every model of PLAN.toml on every device, on Ray; 'sweep --report DIR' only renders."""
    from edgesep.fleet.commands import sweep_command

    sweep_command(plan, out_dir, address, resume, report, as_csv, parquet, echo=click.echo)


@cli.command()
@click.option("--address", metavar="HOST:PORT", help="The head node to join.")
@click.option("--head", is_flag=True, help="Start the head node of a new cluster instead.")
@click.option("--port", type=click.IntRange(1, 65535), default=6379, show_default=True, help="With --head: its port.")
@click.option("--device", "targets", multiple=True, metavar="TARGET", help="A device attached here (repeatable).")
@click.option("--listen", metavar="ADDR", help="Bind Ray to this network address (default: 127.0.0.1 only).")
@click.option("--num-cpus", type=click.IntRange(min=0), help="CPUs this node offers to export work.")
@_ssh_config_option
@click.option("--adb-server-port", type=click.IntRange(1, 65535), metavar="PORT", help="adb server port.")
def worker(address: Optional[str], head: bool, port: int, targets: tuple[str, ...], listen: Optional[str],
           num_cpus: Optional[int], ssh_config: Optional[str], adb_server_port: Optional[int]) -> None:
    """Run a Ray node on this host that offers its devices to 'edgesep sweep --address' (until Ctrl-C)."""
    from edgesep.fleet.commands import worker_command

    options = {"ssh_config": ssh_config, "adb_server_port": adb_server_port}
    code = worker_command(address, head, port, targets, listen, num_cpus, options, echo=click.echo)
    if code:
        raise click.exceptions.Exit(code)


def _report_signal(e) -> int:
    click.echo("edgesep: interrupted" if e.name == "SIGINT" else f"edgesep: interrupted by {e.name}", err=True)
    return 128 + e.signum


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failure, 2 usage) and never lets a traceback out.

    SIGTERM and SIGHUP are handled like Ctrl-C (staging folders, temp files and device folders are removed);
    the exit code is then 128 + the signal number, 130 for Ctrl-C.
    """
    from edgesep import interrupt

    previous = interrupt.install()
    try:
        return _run_cli(argv)
    finally:
        interrupt.restore(previous)


def _run_cli(argv: Optional[Sequence[str]]) -> int:
    from edgesep.interrupt import Signalled

    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="edgesep", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.Abort as e:  # click turns KeyboardInterrupt (and our signals) into Abort
        cause = e.__cause__ or e.__context__
        if isinstance(cause, Signalled):
            return _report_signal(cause)
        click.echo("edgesep: interrupted" if isinstance(cause, KeyboardInterrupt) else "edgesep: aborted", err=True)
        return 130
    except click.UsageError as e:
        msg = e.format_message().splitlines()[0] if e.format_message() else "usage error"
        click.echo(f"edgesep: error: {msg} (see 'edgesep {e.ctx.info_name if e.ctx else ''} --help')".replace(
            "edgesep edgesep", "edgesep"), err=True)
        return EXIT_USAGE
    except click.ClickException as e:
        click.echo(f"edgesep: error: {one_line(e.format_message())}", err=True)
        return e.exit_code
    except Signalled as e:
        return _report_signal(e)
    except KeyboardInterrupt:
        click.echo("edgesep: interrupted", err=True)
        return 130
    except EdgesepError as e:  # the one place that turns errors into exit codes
        click.echo(f"edgesep: error: {e}", err=True)
        return e.exit_code
    return 0


if __name__ == "__main__":
    sys.exit(main())
