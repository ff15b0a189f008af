"""The ``edgesep`` command line: parse, call the library, print. One function per subcommand.

Heavy modules (TensorFlow, the converters, the devices) are imported inside the subcommands, so
``edgesep --help`` answers at once.
"""
from __future__ import annotations

import sys
from typing import Optional, Sequence

import click

from edgesep import __version__

EXIT_FAILURE = 1
EXIT_USAGE = 2


class UserError(click.ClickException):
    """A failure the user can fix: printed as one line, exit code 1."""

    exit_code = EXIT_FAILURE


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types whose message is a one-line answer for the user (imported lazily)."""
    from edgesep.data import DataError
    from edgesep.devices.base import DeviceError

    types: list[type[BaseException]] = [DataError, DeviceError]
    if "edgesep.converters" in sys.modules:
        from edgesep.converters import ConversionError

        types.append(ConversionError)
    return tuple(types)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="edgesep")
def cli() -> None:
    """edgesep: SeparableConv2D vs MobileNet's split block, from Keras to a measured edge deployment."""


@cli.command()
def export() -> None:
    """Fold BatchNorm, export TFLite (float32/fp16/int8) and ONNX, verify each against Keras."""
    raise UserError("export is not implemented yet")


@cli.command()
@click.argument("model", type=click.Path(dir_okay=True, path_type=str))
@click.option("--json", "as_json", is_flag=True, help="Print the findings as one JSON document.")
def inspect(model: str, as_json: bool) -> None:
    """Ops by type, params, MACs, size, inputs/outputs and quantization of a .tflite/.onnx/.keras model."""
    import json

    from edgesep.converters.inspect import info_tables, inspect_model

    info = inspect_model(model)
    document = info.to_dict()  # further sections add their own keys to `document` ...
    sections = info_tables(info)  # ... and their rich renderables to `sections`
    if as_json:
        click.echo(json.dumps(document, indent=2))
        return
    from rich.console import Console

    console = Console()
    for section in sections:
        console.print(section)


@cli.command()
def bench() -> None:
    """Measure latency (and accuracy with --data) of .tflite/.onnx models on a device."""
    raise UserError("bench is not implemented yet")


@cli.command()
def devices() -> None:
    """List attached Android devices (serial, model, ABI, Android version)."""
    raise UserError("devices is not implemented yet")


@cli.command()
def compare() -> None:
    """Fused vs split: train both forms, export, benchmark on every device, write a report."""
    raise UserError("compare is not implemented yet")


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the CLI; returns the exit code (0 ok, 1 failure, 2 usage) and never lets a traceback out."""
    try:
        cli.main(args=list(argv) if argv is not None else None, prog_name="edgesep", standalone_mode=False)
    except click.exceptions.Exit as e:
        return e.exit_code
    except click.Abort:
        click.echo("edgesep: aborted", err=True)
        return 130
    except click.UsageError as e:
        msg = e.format_message().splitlines()[0] if e.format_message() else "usage error"
        click.echo(f"edgesep: error: {msg} (see 'edgesep {e.ctx.info_name if e.ctx else ''} --help')".replace(
            "edgesep edgesep", "edgesep"), err=True)
        return EXIT_USAGE
    except click.ClickException as e:
        click.echo(f"edgesep: error: {_one_line(e.format_message())}", err=True)
        return e.exit_code
    except KeyboardInterrupt:
        click.echo("edgesep: interrupted", err=True)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place that turns errors into exit codes
        if isinstance(e, _user_errors()):
            click.echo(f"edgesep: error: {_one_line(str(e))}", err=True)
            return EXIT_FAILURE
        raise
    return 0


def _one_line(text: str) -> str:
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    return " ".join(lines) if lines else "failed"


if __name__ == "__main__":
    sys.exit(main())
