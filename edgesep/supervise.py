"""A parent that survives a crash of the converters: ``edgesep export`` runs its work in a watched child process.

TensorFlow's converter can kill the process outright (SIGSEGV in the int8 quantizer on a recurrent model),
which leaves no message, staging folders in ``--out`` and converter temp folders in ``$TMPDIR``. At the top
level the CLI therefore re-runs the command in a child (``python -m edgesep ...`` with the current folder kept
off ``sys.path``, see :func:`python_module`; in its own process group, with a private ``$TMPDIR``) and only
waits: signals it receives go to the child, which cleans up as usual; a child killed by a signal becomes one
``edgesep: error:`` line naming the signal and the last stage the child reported, and the parent removes what
the child left. The parent imports neither TensorFlow nor the converters, so the cost is one Python start-up
(measured in the closing note of issue 13: about 0.2 s).

Imports only the standard library and ``edgesep.errors``.
"""
from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Callable, Optional

from edgesep.errors import ConversionError

CHILD_ENV = "EDGESEP_SUPERVISED"  # set in the child: run the command itself
STAGE_ENV = "EDGESEP_STAGE_FILE"  # where the child writes the stage it is in
LEFTOVER_PREFIXES = (".edgesep-", ".edgesep.")  # staging folders and locks of edgesep.io and export
FORWARDED = (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)

top_level = False  # set by cli.main when it runs as the console script (argv from the command line)


def record_stage(stage: str) -> None:
    """In a supervised child: note the stage, so that a crash can be reported with it."""
    path = os.environ.get(STAGE_ENV)
    if path:
        from edgesep.errors import OutputError
        from edgesep.io import write_text

        try:
            write_text(path, stage)
        except OutputError:
            pass


def recording(step: Callable[[str], None]) -> Callable[[str], None]:
    """``step`` that also records each stage (see :func:`record_stage`)."""
    def both(stage: str) -> None:
        record_stage(stage)
        step(stage)

    return both


def python_module(module: str) -> list[str]:
    """The argv start of ``python -m MODULE`` without the current folder on ``sys.path`` (as the console script
    has it): ``-m`` would put it first, and a folder named ``edgesep`` there (a checkout's parent, an output
    folder) would then be imported instead of edgesep itself."""
    code = f"import runpy, sys; del sys.path[0]; runpy.run_module({module!r}, run_name='__main__', alter_sys=True)"
    return [sys.executable, "-c", code]


def supervise(out_dir: Optional[str]) -> Optional[int]:
    """Run this command in a watched child and return its exit code; None where the caller should do the work.

    The work is done in this process (None) when it is the child already, or when the CLI was called as a
    function (``main(argv)``, as tests do) rather than as the console script.

    Raises:
        ConversionError: the child was killed by a signal (a crash), after its leftovers were removed.
    """
    if os.environ.get(CHILD_ENV) or not top_level:
        return None
    out = Path(out_dir) if out_dir else None
    before = set(os.listdir(out)) if out is not None and out.is_dir() else None
    private = Path(tempfile.mkdtemp(prefix="edgesep-run-"))
    stage = private / "stage"
    env = {**os.environ, CHILD_ENV: "1", STAGE_ENV: str(stage), "TMPDIR": str(private / "tmp")}
    (private / "tmp").mkdir()
    try:
        code = _wait(subprocess.Popen([*python_module("edgesep"), *sys.argv[1:]], env=env, process_group=0))
        if code >= 0:
            return code
        where = stage.read_text().strip() if stage.is_file() else "start-up"
        _remove_leftovers(out, before)
        raise ConversionError(f"the export crashed with {signal.Signals(-code).name} during '{where}' (a crash "
                              f"inside TensorFlow or a converter, not a Python error); nothing was written")
    finally:
        shutil.rmtree(private, ignore_errors=True)


def _wait(child: subprocess.Popen) -> int:
    """The child's exit code (negative: killed by that signal); our signals are passed on to it meanwhile."""
    previous = {sig: signal.signal(sig, lambda signum, frame: child.send_signal(signum)) for sig in FORWARDED}
    try:
        while True:
            try:
                return child.wait()
            except InterruptedError:  # pragma: no cover - PEP 475 retries, kept for safety
                continue
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _remove_leftovers(out: Optional[Path], before: Optional[set[str]]) -> None:
    """Remove the staging entries the child left in ``out`` (and ``out`` itself if it made it and it is empty)."""
    if out is None or not out.is_dir():
        return
    for name in set(os.listdir(out)) - (before or set()):
        if name.startswith(LEFTOVER_PREFIXES):
            path = out / name
            shutil.rmtree(path, ignore_errors=True) if path.is_dir() else path.unlink(missing_ok=True)
    if before is None and not any(out.iterdir()):
        out.rmdir()
