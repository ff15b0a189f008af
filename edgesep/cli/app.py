"""The ``edgesep`` command group, its shared options and the one place errors become exit codes.

Heavy modules (TensorFlow, the converters, the devices) are imported inside the subcommands, so
``edgesep --help`` answers at once. Subcommands live beside this module, one module per family.
"""
from __future__ import annotations

import errno
from typing import TYPE_CHECKING, Optional, Sequence

import click

from edgesep import __version__
from edgesep.devices.base import BenchConfig
from edgesep.errors import EXIT_USAGE, EdgesepError, one_line

if TYPE_CHECKING:
    from pathlib import Path

BENCH_DEFAULTS = BenchConfig()  # click defaults of bench/compare come from here, never repeated
OUTPUT_ERRNOS = (errno.EPIPE, errno.ENOSPC, errno.EDQUOT, errno.EIO)  # writing standard output failed


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


def measure_options(command):
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


def input_options(command):
    """How --data becomes model input: --preprocess for images, --resize for a .npz of another size."""
    command = click.option("--resize", is_flag=True,
                           help="Resize a .npz's x bilinearly (and fit its channels) to the model's input; "
                                "without it a .npz must already match (it is used as given).")(command)
    return click.option("--preprocess", metavar="unit|symmetric|raw|caffe|torch|scale=S,offset=O[,bgr]",
                        help="How images (a folder, digits) become the model's input: unit [0,1]; symmetric "
                             "[-1,1] (MobileNet/V2, Xception); raw [0,255] (EfficientNet, MobileNetV3); caffe "
                             "(ResNet, VGG); torch (ImageNet mean/std); or pixel*S+O. A .npz is used as given.")(command)


def note(text: str) -> None:
    click.echo(f"edgesep: note: {text}", err=True)


def _click_kind(kind: str) -> dict:
    if kind == "flag":
        return {"is_flag": True, "default": None}
    if kind == "port":
        return {"type": click.IntRange(1, 65535)}
    return {"type": click.Path(dir_okay=False)} if kind == "path" else {}


def device_options(command_name: str):
    """The device flags the registered device schemes offer on ``command_name`` (``--ssh-config``,
    ``--cpu-mask``, ...; see ``edgesep.devices.DeviceOption``). The command receives them as one
    ``device_options`` dict, option name -> value (None: not given)."""
    import functools

    from edgesep.devices import device_options as offered

    options = offered(command_name)

    def decorate(fn):
        @functools.wraps(fn)
        def command(*args, **kwargs):
            given = {o.name: kwargs.pop(o.name, None) or None for o in options}  # an unset flag is not given
            return fn(*args, device_options=given, **kwargs)

        for option in reversed(options):
            command = click.option(option.flag, option.name, metavar=option.metavar or None, help=option.help,
                                   **_click_kind(option.kind))(command)
        return command
    return decorate


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgesep")
def cli() -> None:
    """edgesep: SeparableConv2D vs MobileNet's split block, from Keras to a measured edge deployment."""


def table_console(wide: int):
    """The console tables print on (``edgesep.report.live.table_console``)."""
    from edgesep.report.live import table_console as console

    return console(wide)


def echo_rich(*renderables, wide: int = 160) -> None:
    """Print rich renderables on stdout through ``table_console(wide)``; a pipe or file gets them without the
    trailing spaces rich pads lines with."""
    import sys

    console = table_console(wide)
    if sys.stdout.isatty():
        for renderable in renderables:
            console.print(renderable, markup=False, highlight=False)
        return
    with console.capture() as captured:
        for renderable in renderables:
            console.print(renderable, markup=False, highlight=False)
    click.echo("\n".join(line.rstrip() for line in captured.get().splitlines()))


def echo_wrapped(lines, indent: str = "    ", err: bool = False) -> None:
    """Print plain lines on stdout (``err``: stderr); on a terminal a line longer than its width wraps between
    words (the rest indented), in a pipe or file each stays one line."""
    import shutil
    import sys
    import textwrap

    width = shutil.get_terminal_size().columns if (sys.stderr if err else sys.stdout).isatty() else 0
    for line in lines:
        if width and len(line) > width:
            lead = line[:len(line) - len(line.lstrip())]
            line = "\n".join(textwrap.wrap(line, width=width, initial_indent="", subsequent_indent=lead + indent,
                                           break_on_hyphens=False))
        click.echo(line, err=err)


def check_out_dir(out_dir: str) -> "Path":
    """--out as a Path, refused in one line before any work when it cannot become a writable folder."""
    from edgesep.io import check_writable_dir

    return check_writable_dir(out_dir)


def check_out_file(out_file: str) -> "Path":
    """--out FILE as a Path, refused before any measurement when its folder cannot take a new file."""
    from pathlib import Path

    from edgesep.errors import OutputError
    from edgesep.io import check_writable_dir

    path = Path(out_file)
    if path.is_dir():
        raise OutputError(f"--out {path} is a folder; give a file name")
    check_writable_dir(path.parent)
    return path


def _report_signal(e) -> int:
    click.echo("edgesep: interrupted" if e.name == "SIGINT" else f"edgesep: interrupted by {e.name}", err=True)
    return 128 + e.signum


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failure, 2 usage) and never lets a traceback out.

    SIGTERM and SIGHUP are handled like Ctrl-C (staging folders, temp files and device folders are removed);
    the exit code is then 128 + the signal number, 130 for Ctrl-C.
    """
    from edgesep import interrupt

    if argv is None:  # the console script: export may run its work in a watched child (edgesep.supervise)
        from edgesep import supervise

        supervise.top_level = True
    previous = interrupt.install()
    try:
        return _run_cli(argv)
    finally:
        interrupt.restore(previous)


def _help_command(ctx: Optional[click.Context], argv: Optional[Sequence[str]]) -> str:
    """``edgesep COMMAND`` whose --help a usage error points to: the context's, else the command named first
    in ``argv`` (click gives no context for an option missing its value), else ``edgesep``."""
    import sys

    if ctx is not None:
        return ctx.command_path
    words = list(argv if argv is not None else sys.argv[1:])
    return f"edgesep {words[0]}" if words and words[0] in cli.commands else "edgesep"


def _check_option_values(words: Sequence[str]) -> None:
    """UsageError when an option that takes a value is followed by another option of the same command
    (``--out --int8``): click would take ``--int8`` as the folder's name and write there."""
    command = cli.commands.get(words[0]) if words else None
    if command is None:
        return
    params = [p for p in command.params if isinstance(p, click.Option)]
    names = {name for p in params for name in (*p.opts, *p.secondary_opts)} | {"-h", "--help"}
    takes_value = {name for p in params if not p.is_flag and not p.count for name in p.opts}
    for option, value in zip(words[1:], words[2:]):
        if option == "--":
            return
        if option in takes_value and value in names:
            raise click.UsageError(f"{option} needs a value, not the option {value}")


def _run_cli(argv: Optional[Sequence[str]]) -> int:
    import sys

    from edgesep.interrupt import Signalled

    try:
        _check_option_values(list(argv if argv is not None else sys.argv[1:]))
        result = cli.main(args=list(argv) if argv is not None else None, prog_name="edgesep", standalone_mode=False)
        if isinstance(result, int) and not isinstance(result, bool):  # click returns an Exit's code here
            return result
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
        click.echo(f"edgesep: error: {msg} (see '{_help_command(e.ctx, argv)} --help')", err=True)
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
    except ImportError as e:  # a signal inside an extension module's start-up surfaces as its ImportError
        if isinstance(e.__context__, Signalled):
            return _report_signal(e.__context__)
        raise
    except OSError as e:
        if e.filename is not None or e.errno not in OUTPUT_ERRNOS:
            raise
        return _output_failed(e)
    return 0


def _output_failed(error: OSError) -> int:
    """Standard output cannot take more (``| head`` closed the pipe, a full disk, /dev/full): one line on
    stderr, none for a closed pipe (its reader has what it wanted), exit 1 (141, as SIGPIPE, for the pipe);
    stdout then points to /dev/null so that Python's last flush at exit does not fail again."""
    import os
    import sys

    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        os.close(devnull)
    except (OSError, ValueError):
        pass
    if error.errno == errno.EPIPE:
        return 141
    click.echo(f"edgesep: error: cannot write the output: {error.strerror.lower()}", err=True)
    return 1
