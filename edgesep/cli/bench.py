"""``edgesep bench`` and ``edgesep devices``: measure models on one device; list attached phones."""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import dataclasses

import click

from edgesep.cli.app import (
    BENCH_DEFAULTS, check_out_file, cli, device_options, echo_rich, echo_wrapped, FiniteFloat, input_options,
    measure_options, note, UserError)
from edgesep.devices.base import BenchConfig

if TYPE_CHECKING:
    from pathlib import Path

    from edgesep.compare.records import LatencyComparison
    from edgesep.data import DataOptions
    from edgesep.devices.base import BenchResult, Device

DEFAULT_SESSIONS = 3  # sessions of a bench of several models (a verdict needs two or more and the A/A control)


@cli.command()
@click.argument("models", nargs=-1, required=True, metavar="MODEL...")
@click.option("--device", "target", default="local", show_default=True, metavar="TARGET",
              help="local, ssh://[user@]host[:port], adb or adb:SERIAL.")
@measure_options
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
@input_options
@device_options("bench")
@click.option("--sessions", type=click.IntRange(min=1), metavar="N",
              help="Sessions, each a fresh runner with the models' order alternating; with several models an A/A "
                   "control (a copy of the first) is measured too, and a verdict needs 2 or more. "
                   "[default: 3 with several models, else 1]")
@click.option("--seed", type=int, default=BENCH_DEFAULTS.seed, show_default=True,
              help="Seed of the random latency input.")
@click.option("--label-output", metavar="NAME",
              help="With --data and a model with several outputs: the output the labels belong to (default: the "
                   "one output that is a vector of class scores; none: no accuracy, and a note).")
@click.option("--profile", is_flag=True,
              help="Where the time goes: per-op ms, MACs, GMAC/s and share of the device's peak, after the timed runs.")
@click.option("--json", "as_json", is_flag=True, help="Print only the JSON document on stdout.")
@click.option("--out", "out_file", type=click.Path(dir_okay=False), metavar="FILE",
              help="Also write the JSON document to FILE.")
def bench(models: tuple[str, ...], target: str, threads: Optional[int], runs: int, warmup: int,
          warmup_secs: float, min_secs: float, max_secs: float, delegate: str, delegate_options: tuple[str, ...],
          data: Optional[str], preprocess: Optional[str], resize: bool, device_options: dict,
          sessions: Optional[int], seed: int, label_output: Optional[str], profile: bool, as_json: bool,
          out_file: Optional[str]) -> None:
    """Measure latency (and accuracy with --data) of .tflite/.onnx models on a device.

    Several models are measured together, interleaved round by round, so drift and heat hit all alike, in
    several sessions with an A/A control; each is judged against the first beyond the control's noise floor.
    """
    from pathlib import Path

    from edgesep.data import DataOptions
    from edgesep.devices import parse_target, split_options
    from edgesep.devices.harness import check_model_file

    paths = [Path(m) for m in models]
    for path in paths:
        check_model_file(path)
    target = target.strip()
    if out_file:
        check_out_file(out_file)
    inputs = DataOptions(data, preprocess, resize)  # --preprocess parsed here, once
    config = _bench_config(delegate_options, threads=threads, runs=runs, warmup=warmup, warmup_secs=warmup_secs,
                           min_secs=min_secs, max_secs=max_secs, delegate=delegate, seed=seed,
                           label_output=label_output)
    if label_output and not data:
        raise click.UsageError("--label-output names the output --data's labels belong to; add --data")
    options = split_options([target], device_options)[target]
    device = parse_target(target, **options)
    if profile:
        config = BenchConfig.from_dict({**config.to_dict(), "profile": True})
    count = sessions or (DEFAULT_SESSIONS if len(paths) > 1 else 1)
    measured = _bench_measure(device, paths, target, config, inputs, options, count)
    _bench_output(measured.results, as_json, out_file, config.threads, measured)


def _bench_config(delegate_options: tuple[str, ...], **fields) -> BenchConfig:
    """The BenchConfig of the options (a bad value is a usage error)."""
    options = [tuple(o.split("=", 1)) for o in delegate_options]
    if any(len(o) != 2 or not o[0] for o in options):
        raise click.UsageError("--delegate-option takes KEY=VALUE")
    try:
        return BenchConfig(delegate_options=tuple(options), **fields)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


@dataclasses.dataclass(frozen=True)
class Measured:
    """What a bench measured: one result per model (pooled over the sessions), each session's results and the
    A/A control's per session (None without a control)."""

    results: list[BenchResult]
    sessions: list[list[BenchResult]]
    control: Optional[list[BenchResult]]


def _bench_measure(device: Device, paths: list[Path], target: str, config: BenchConfig, inputs: DataOptions,
                   options: dict, count: int = 1) -> Measured:
    """Accuracy data, Edge TPU copies and the A/A control's copy staged in a private temp folder (removed at
    the end), then the sessions."""
    import tempfile
    from pathlib import Path

    from edgesep.bench import accuracy_npz, edgetpu_models, profile_session
    from edgesep.compare.sessions import pool_results

    with tempfile.TemporaryDirectory(prefix="edgesep-bench-") as tmp:
        data_file = accuracy_npz(inputs, paths, Path(tmp), note=note,
                                 label_output=config.label_output) if inputs.data else None
        if data_file is not None:
            config = BenchConfig.from_dict({**config.to_dict(), "data": str(data_file)})
        run_paths, edgetpu_reports = edgetpu_models(paths, Path(tmp), target, config.delegate)
        control = _control_copy(run_paths[0], Path(tmp)) if len(paths) > 1 and count > 1 else None
        runs = _bench_run(device, run_paths + ([control] if control else []), data_file, config, count)
        sessions = [s[:len(paths)] for s in runs]
        results = [pool_results([s[i] for s in sessions], config.seed) if count > 1 else sessions[0][i]
                   for i in range(len(paths))]
        if config.profile:
            profile_session(results, run_paths, target, options, config, Path(tmp), note=note)
        for result, path, report in zip(results, paths, edgetpu_reports):
            result.model = str(path)  # the user's file, also when a compiled copy ran
            if report is not None:
                result.extra["edgetpu"] = report.to_dict()
    return Measured(results, sessions, [s[-1] for s in runs] if control else None)


def _control_copy(path: Path, tmp: Path) -> Path:
    """The A/A control: a byte copy of ``path`` under its own name, measured as if it were another model."""
    from edgesep.io import write_bytes

    return write_bytes(tmp / "aa-control" / path.name, path.read_bytes())


def _bench_output(results: list[BenchResult], as_json: bool, out_file: Optional[str],
                  threads: Optional[int] = None, measured: Optional[Measured] = None) -> None:
    """Print the results (JSON or a table), then write --out: a file that cannot be written loses nothing."""
    from edgesep.compare.analysis import bench_ratios
    from edgesep.io import dumps, write_text
    from edgesep.report.text import bench_control_line, distinct_labels

    labels = distinct_labels([str(r.model) for r in results])  # tells same-named files in other folders apart
    doc: dict = {"results": [{**r.to_dict(), "label": label} for r, label in zip(results, labels)]}
    comparisons = bench_ratios(results, measured.sessions if measured else None,
                               measured.control if measured else None) if len(results) > 1 else ()
    if measured is not None:  # what the verdicts rest on
        doc["sessions"] = len(measured.sessions)
    if comparisons:
        control = next((c.details["control"] for c in comparisons if c.details.get("control")), None)
        doc["control"] = {"of": labels[0], **{k: control[k] for k in ("ratio", "lo", "hi", "sessions", "floor")}
                          } if control else None
        doc["comparisons"] = [_comparison_doc(c, f"{labels[0]} (A/A control)") for c in comparisons]
    text = dumps(doc, indent=None)
    if as_json:
        click.echo(text)
    else:
        _bench_print(doc["results"])
        _bench_print_profiles(doc["results"])
        # each model against the first, as compare; a long line wraps between words on a terminal
        echo_wrapped(([bench_control_line(doc["control"])] if doc.get("control") else [])
                     + [f"{c.spec.label}: {c.verdict}" for c in comparisons])
    for result, label in zip(results, labels):  # several outputs and none known to hold the labels' classes
        if (result.extra or {}).get("accuracy_note"):
            note(f"{label}: {result.extra['accuracy_note']}")
    if len(results) > 1:  # a verdict from a loaded machine may not hold on an idle one
        from edgesep.compare.analysis import host_checks

        runs = measured.sessions if measured else [results]
        hosts = [next((r.host for r in session if r.host), {}) for session in runs]  # one record per session
        echo_wrapped([f"edgesep: warning: {check['message']}" for check in host_checks(hosts, threads)], err=True)
    if out_file:
        write_text(out_file, text + "\n")
    _bench_failures(results)


def _comparison_doc(comparison: LatencyComparison, control_name: str) -> dict:
    """A comparison's JSON, its control named for a person (compare's internal variant id means nothing here)."""
    doc = comparison.to_dict()
    if doc.get("control"):
        doc["control"] = {**doc["control"], "variant": control_name}
    return doc


def _bench_run(device: Device, paths: list[Path], data_file: Optional[Path], config: BenchConfig,
               count: int = 1) -> list[list[BenchResult]]:
    """``count`` sessions with a progress bar on stderr; the device is cleaned up whatever happens."""
    from edgesep.compare.sessions import alternating_sessions
    from edgesep.devices.base import DeviceError
    from edgesep.report.live import model_bars
    from edgesep.report.text import distinct_labels

    names = [str(p) for p in paths]
    bar, progress = model_bars(dict(zip(names, distinct_labels(names))))

    try:
        with bar:
            results = alternating_sessions(device, paths, data_file, config, count, progress)
    except BaseException:
        try:
            device.cleanup()
        except DeviceError as e:
            click.echo(f"edgesep: warning: {e}", err=True)
        raise
    device.cleanup()
    return results


def _bench_print(results: list[dict]) -> None:
    from edgesep.report import bench_table

    table = bench_table(results)
    host = next((r.get("host") for r in results if r.get("host")), None)
    if host:
        temp = host.get("temp_c")
        table.caption = (f"{host.get('cpu')}, {host.get('cores')} cores, governor {host.get('governor') or '-'}, "
                         f"temp {'-' if temp is None else f'{temp:.0f} C'}"
                         + (f"\n{table.caption}" if table.caption else ""))
    echo_rich(table, wide=160)


def _bench_print_profiles(results: list[dict]) -> None:
    from edgesep.report.profile import profile_table

    for result in results:
        if result.get("profile"):
            echo_rich(profile_table(result), wide=160)


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

    from edgesep.report.tables import devices_table

    echo_rich(devices_table([d.to_dict() for d in found]), wide=100)
