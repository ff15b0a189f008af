"""The one error base of edgesep. Imports nothing (ground floor): every module may import it.

Every failure a user can act on is an :class:`EdgesepError`: its ``str`` is one line, and it carries the exit
code the CLI returns (1 for failures, 2 for usage errors). The CLI catches this one class; nothing else is
turned into a message. ``devices/runner.py`` ships alone to devices and keeps its own tiny copy.
"""
from __future__ import annotations

from typing import Any, Optional

EXIT_FAILURE = 1
EXIT_USAGE = 2
MAX_MESSAGE = 500


def one_line(text: Any, limit: int = MAX_MESSAGE, default: str = "failed") -> str:
    """``text`` as one line: its non-blank lines joined by spaces, cut to ``limit`` characters."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    joined = " ".join(lines) if lines else default
    return joined if len(joined) <= limit else joined[: limit - 3] + "..."


def last_line(text: Any, limit: int = 300, default: str = "no message") -> str:
    """The last non-blank line of ``text`` (where tracebacks and tool logs put the reason), cut to ``limit``."""
    lines = [ln.strip() for ln in str(text).strip().splitlines() if ln.strip()]
    line = lines[-1] if lines else default
    return line if len(line) <= limit else line[: limit - 3] + "..."


def describe(e: BaseException) -> str:
    """``Type: message`` of any exception, as one line (for wrapping third-party errors)."""
    return one_line(f"{type(e).__name__}: {e}" if str(e) else type(e).__name__)


class EdgesepError(Exception):
    """A failure the user can act on. ``str(e)`` is one line; ``exit_code`` is what the CLI returns.

    Args:
        message: what went wrong and, where there is one, what to do about it.
        exit_code: 1 (failure, the default) or 2 (usage error).
        log: optional details (a tool's captured output) kept off the terminal for callers that want them.
    """

    exit_code = EXIT_FAILURE

    def __init__(self, message: Any = "", exit_code: Optional[int] = None, log: Optional[str] = None):
        super().__init__(one_line(message))
        if exit_code is not None:
            self.exit_code = exit_code
        self.log = log

    @property
    def message(self) -> str:
        return str(self)


class UsageError(EdgesepError):
    """Options or arguments that cannot work together or are malformed (exit 2)."""

    exit_code = EXIT_USAGE


class DataError(EdgesepError, ValueError):
    """A dataset could not be read or does not fit the model."""


class ConversionError(EdgesepError, RuntimeError):
    """A model could not be loaded, converted or verified."""


class DeviceError(EdgesepError, RuntimeError):
    """A device could not be reached, prepared or run."""


class EdgeTpuError(DeviceError):
    """The Edge TPU compiler or runtime is missing, or a model cannot be compiled."""


class OutputError(EdgesepError):
    """An output file or folder cannot be written (exists as a file, read-only, full disk, locked)."""
