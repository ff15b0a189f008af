"""``edgesep compare``: fused vs split (or any models) on every device, with a report."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import click

from edgesep.cli.app import (
    BENCH_DEFAULTS, check_out_dir, cli, device_options, echo_rich, echo_wrapped, FiniteFloat, input_options,
    measure_options, note, UserError)

if TYPE_CHECKING:
    from pathlib import Path

    from edgesep.data import DataOptions


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
@input_options
@measure_options
@click.option("--warmup-secs", type=FiniteFloat(min=0), default=BENCH_DEFAULTS.warmup_secs, show_default=True,
              help="Minimum warm-up time per session, seconds.")
@device_options("compare")
@click.option("--out", "out_dir", default="report", show_default=True, metavar="DIR", help="Report folder.")
@click.option("--resume", is_flag=True, help="Reuse exports and device sessions an earlier run in --out finished.")
@click.option("--sessions", type=click.IntRange(min=1), default=5, show_default=True,
              help="Independent sessions per device and runtime (a fresh runner each, shuffled order).")
@click.option("--profile", is_flag=True,
              help="Then where the time goes: per block, depthwise vs pointwise (profile.md, profile.json, PNG).")
@click.option("--verbose", "-v", is_flag=True, help="Print every table of report.md, not only the summary.")
def compare(models: tuple[str, ...], targets: tuple[str, ...], int8: Optional[bool], seeds: Optional[int],
            width: Optional[float], input_size: Optional[int], blocks: Optional[str], epochs: Optional[int],
            data: Optional[str], preprocess: Optional[str], resize: bool, threads: Optional[int], runs: int,
            warmup_secs: float, min_secs: float, max_secs: float, device_options: dict, out_dir: str, resume: bool,
            sessions: int, profile: bool, verbose: bool) -> None:
    """Fused vs split: train both forms, export, benchmark on every device, write a report.

    Without MODEL: the built-in network in both forms, trained alike, exported (float32, int8, ONNX) and
    measured on every --device (concurrently), with on-device int8 accuracy. With two or more MODEL files
    (.tflite/.onnx): those are measured and each is compared with the first. The report (report.json,
    report.md, PNG plots) goes to --out.
    """
    from pathlib import Path

    from edgesep import compare as cmp
    from edgesep.data import DataOptions
    from edgesep.devices.harness import check_model_file

    _check_compare_options(models, data, preprocess, resize, {
        "--int8/--no-int8": int8, "--seeds": seeds, "--width": width, "--input-size": input_size, "--blocks": blocks,
        "--epochs": epochs})
    inputs = DataOptions(data, preprocess, resize) if models else None  # --preprocess parsed here, once
    bench, config = _compare_configs(models, dict(threads=threads, runs=runs, warmup_secs=warmup_secs,
                                                  min_secs=min_secs, max_secs=max_secs),
                                     width, input_size, epochs, seeds, int8, data, blocks)
    targets = tuple(t.strip() for t in targets or ("local",))
    options = _compare_device_options(targets, device_options)
    out = check_out_dir(out_dir)
    paths = [Path(m) for m in models]
    for path in paths:
        check_model_file(path)
    progress = _compare_progress()
    with progress:
        if models:
            data_file = _compare_models_data(inputs, paths, out) if data else None
            doc = cmp.run_models(paths, targets, bench, out, data_file=data_file, device_options=options,
                                 resume=resume, progress=progress, sessions=sessions)
        else:
            doc = cmp.run_builtin(config, targets, bench, out, device_options=options, resume=resume,
                                  progress=progress, sessions=sessions)
    profiled = _compare_profile(doc, out, targets, options, bench) if profile else None
    _compare_print(doc, out, verbose, resume, profiled)


def _check_compare_options(models: tuple[str, ...], data: Optional[str], preprocess: Optional[str], resize: bool,
                           builtin: dict[str, object]) -> None:
    """Usage errors: built-in-network options with MODEL files, one MODEL, input options without --data."""
    if models:
        given = [k for k, v in builtin.items() if v is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} shape the built-in network; they cannot be combined with "
                                   "MODEL files")
        if len(models) < 2:
            raise click.UsageError("compare needs two or more MODEL files (or none, for the built-in experiment)")
    elif preprocess or resize:
        raise click.UsageError("--preprocess and --resize apply to MODEL files; the built-in network is trained "
                               "on images in [0, 1] at --input-size")


def _compare_configs(models: tuple[str, ...], bench_fields: dict, width: Optional[float], input_size: Optional[int],
                     epochs: Optional[int], seeds: Optional[int], int8: Optional[bool], data: Optional[str],
                     blocks: Optional[str]):
    """(BenchConfig, CompareConfig or None for MODEL files); a bad value is a usage error."""
    from edgesep import compare as cmp
    from edgesep.devices.base import BenchConfig

    try:
        bench = BenchConfig(**bench_fields)
        config = None if models else cmp.CompareConfig(
            width=width or 1.0, input_size=input_size or 32, epochs=epochs or 8, seeds=seeds or 1,
            int8=int8 is not False, data=data or "digits",
            blocks=cmp.parse_blocks(blocks) if blocks else cmp.BLOCK_PRESETS["default"])
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    return bench, config


def _compare_device_options(targets: tuple[str, ...], given: dict) -> dict[str, dict[str, str]]:
    """Per target, the device options the user gave; every target is parsed once (no connection) to fail early."""
    from edgesep.devices import parse_target, split_options

    if len(set(targets)) != len(targets):
        raise click.UsageError("each --device may be given once")
    options = split_options(targets, given)
    for target, opts in options.items():
        parse_target(target, **opts)
    return options


def _compare_models_data(inputs: DataOptions, paths: list[Path], out: Path) -> Path:
    """The runner .npz for on-device accuracy of given models: ``out/data/models.npz``, written atomically."""
    from edgesep.bench import accuracy_npz

    return accuracy_npz(inputs, paths, out / "data", name="models.npz", note=note)


def _compare_progress():
    """The stages' bars on stderr; a SIGTERM whose exception was swallowed (e.g. in a GC callback) is raised
    again at the next update."""
    from edgesep.interrupt import checkpoint
    from edgesep.report.live import StageProgress

    return StageProgress(on_update=checkpoint)


def _compare_profile(doc: dict, out: Path, targets: tuple[str, ...], options: dict, bench) -> None:
    """compare --profile: profile.md/.json and the per-block plots in ``out``; returns the profile document."""
    from edgesep.compare.profile import profile_variants

    return profile_variants(doc, out, targets, options, bench)


def _print_profile(document: dict, out: Path) -> None:
    from edgesep.compare.profile import profile_tables

    echo_rich(*profile_tables(document), wide=140)
    plots = sum(1 for s in document["devices"].values() if s.get("plot"))
    click.echo(f"wrote profile.json, profile.md and {plots} per-block plot(s) to {out}")


def _compare_print(doc: dict, out: Path, verbose: bool, resume: bool, profiled: Optional[dict] = None) -> None:
    """The summary (or, with --verbose, every table) on stdout, then --profile's tables; each warning once on
    stderr; one error line per failed device and exit 1 if any failed."""
    from edgesep.report import compare_summary, compare_tables, resume_summary

    if verbose:
        echo_rich(*compare_tables(doc, warnings=False), wide=140)
    else:
        echo_wrapped(compare_summary(doc))
    echo_wrapped([resume_summary(doc)] if resume else [])
    echo_wrapped([f"wrote report.json, report.md and {len(doc.get('plots') or [])} plots to {out}"
                  + ("" if verbose else " (every table: report.md or --verbose)")])
    if profiled is not None:
        _print_profile(profiled, out)
    failed = [(t, s) for t, s in doc["devices"].items() if s["status"] == "failed"]
    warnings = [f"edgesep: warning: {target}: {section['error']}" for target, section in doc["devices"].items()
                if section["status"] == "partial"]  # e.g. no ONNX Runtime there: the TFLite session stands
    warnings += [f"edgesep: warning: {target}: {check['message']}" for target, section in doc["devices"].items()
                 for check in section.get("checks") or []]  # load, CPU time, temperature, speed modes, threads
    echo_wrapped(warnings, err=True)
    for target, section in failed:
        click.echo(f"edgesep: error: {target}: {section['error']}", err=True)
    if failed:
        raise UserError(f"{len(failed)} of {len(doc['devices'])} devices failed; the others' results are in {out}")
