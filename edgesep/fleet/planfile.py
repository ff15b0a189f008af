"""Reading a plan file's text: a small regular UTF-8 file, else one line (never a hang on a FIFO or /dev/zero)."""
from __future__ import annotations

from pathlib import Path

from edgesep.errors import DataError

MAX_PLAN_BYTES = 1 << 20  # a plan is a short text file; more is a mistake (/dev/zero, a model given as plan)


def read_plan_text(path) -> str:
    """The text of the plan at ``path``.

    Raises:
        OutputError: missing, a folder, a FIFO or a device (``edgesep.io.require_regular_file``).
        DataError: unreadable, over ``MAX_PLAN_BYTES``, or not UTF-8.
    """
    from edgesep.io import require_regular_file

    path = require_regular_file(Path(path), "plan")
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PLAN_BYTES + 1)
    except OSError as e:
        raise DataError(f"{path}: cannot read plan: {e.strerror or e}") from None
    if len(data) > MAX_PLAN_BYTES:
        raise DataError(f"{path}: not a plan: over {MAX_PLAN_BYTES >> 20} MB (a plan is a short TOML file)")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a plan: not UTF-8 text (byte {e.start})") from None
