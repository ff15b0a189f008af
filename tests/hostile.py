"""Harness of the hostile-input suite: run the real CLI in a subprocess and check the whole promise.

For every case: the exit code (2 usage, 1 failure), exactly one ``edgesep: error:`` line on stderr and no
traceback, the output folder byte-identical to before, no new entries in a private $TMPDIR, and an answer
within a time bound.
"""
from __future__ import annotations

import dataclasses
import hashlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Optional, Sequence

from oneline import assert_one_error_line


def snapshot(folder: Optional[Path]) -> dict[str, str]:
    """{relative path: sha256 or 'dir'} of everything under ``folder`` (empty when it does not exist)."""
    if folder is None or not folder.exists():
        return {}
    if not folder.is_dir():
        return {".": hashlib.sha256(folder.read_bytes()).hexdigest()}
    found = {}
    for path in sorted(folder.rglob("*")):
        rel = str(path.relative_to(folder))
        found[rel] = "dir" if path.is_dir() else hashlib.sha256(path.read_bytes()).hexdigest()
    return found


@dataclasses.dataclass
class Outcome:
    code: int
    stdout: str
    stderr: str
    seconds: float
    new_tmp: list[str]


# onnxruntime writes a session-id file ".ses" into $TMPDIR when imported and keeps it there on purpose: not ours.
FOREIGN_TMP = {".ses"}


def _new_entries(tmpdir: Path, before: set[str]) -> list[str]:
    return sorted(set(os.listdir(tmpdir)) - before - FOREIGN_TMP)


def run_edgesep(args: Sequence[str], tmp_root: Path, *, timeout: float = 120, cwd: Optional[Path] = None,
                env: Optional[dict] = None, prefix: Sequence[str] = ()) -> Outcome:
    """Run ``python -m edgesep ARGS`` with an isolated, initially empty $TMPDIR; report what it left there.
    ``prefix``: a command that runs it (e.g. in a private mount namespace)."""
    tmpdir = tmp_root / "isolated-tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(tmpdir))
    full_env = {**os.environ, "TMPDIR": str(tmpdir), "TF_CPP_MIN_LOG_LEVEL": "3", "COLUMNS": "120",
                **(env or {})}
    start = time.monotonic()
    proc = subprocess.run([*prefix, sys.executable, "-m", "edgesep", *map(str, args)], capture_output=True,
                          text=True, env=full_env, cwd=cwd, timeout=timeout, stdin=subprocess.DEVNULL)
    seconds = time.monotonic() - start
    return Outcome(proc.returncode, proc.stdout, proc.stderr, seconds, _new_entries(tmpdir, before))


def check_refused(args: Sequence[str], tmp_root: Path, *, code: int, needles: Sequence[str] = (),
                  out: Optional[Path] = None, bound: float = 60, cwd: Optional[Path] = None,
                  env: Optional[dict] = None, prefix: Sequence[str] = ()) -> Outcome:
    """Assert the full contract for a command that must be refused; returns the outcome for more checks."""
    before = snapshot(out)
    outcome = run_edgesep(args, tmp_root, timeout=bound + 60, cwd=cwd, env=env, prefix=prefix)
    assert outcome.code == code, (outcome.code, outcome.stderr[-2000:])
    assert_one_error_line(outcome.code, outcome.stderr, *needles)
    assert snapshot(out) == before, "the output folder changed"
    assert outcome.new_tmp == [], f"left in $TMPDIR: {outcome.new_tmp}"
    assert outcome.seconds < bound, f"took {outcome.seconds:.1f} s (bound {bound} s)"
    return outcome


def interrupt_after(args: Sequence[str], tmp_root: Path, *, signum: int, when, timeout: float = 300,
                    env: Optional[dict] = None) -> Outcome:
    """Start the CLI, send ``signum`` once ``when`` holds, wait for it.

    ``when``: a text that appears on stderr, a callable polled every 50 ms, or "" for "after 1 s".
    """
    tmpdir = tmp_root / "isolated-tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    full_env = {**os.environ, "TMPDIR": str(tmpdir), "TF_CPP_MIN_LOG_LEVEL": "3", **(env or {})}
    start = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "edgesep", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=full_env, stdin=subprocess.DEVNULL)
    seen = b""
    os.set_blocking(proc.stderr.fileno(), False)
    while proc.poll() is None and time.monotonic() - start < timeout:
        chunk = proc.stderr.read() or b""
        seen += chunk
        if callable(when):
            ready = when()
        else:
            ready = when.encode() in seen if when else time.monotonic() - start > 1.0
        if ready:
            proc.send_signal(signum)
            break
        time.sleep(0.05)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    seconds = time.monotonic() - start
    return Outcome(proc.returncode, out.decode(errors="replace"), (seen + err).decode(errors="replace"), seconds,
                   _new_entries(tmpdir, set()))


def run_in_process(args: Sequence[str], tmp_root: Path, capfd, monkeypatch) -> Outcome:
    """``edgesep.cli.main(ARGS)`` in this process (fast: for refusals that happen before any real work),
    with $TMPDIR isolated like :func:`run_edgesep`."""
    import tempfile

    from edgesep.cli import main

    tmpdir = tmp_root / "isolated-tmp"
    tmpdir.mkdir(parents=True, exist_ok=True)
    before = set(os.listdir(tmpdir))
    monkeypatch.setenv("TMPDIR", str(tmpdir))
    monkeypatch.setattr(tempfile, "tempdir", None)
    capfd.readouterr()
    start = time.monotonic()
    code = main([str(a) for a in args])
    seconds = time.monotonic() - start
    out, err = capfd.readouterr()
    return Outcome(code, out, err, seconds, _new_entries(tmpdir, before))


def read_only(folder: Path) -> list[str]:
    """A command prefix under which ``folder`` is read-only even for root: a read-only bind mount of it in a
    private mount namespace (``unshare -m``, util-linux; gone with the process). Needs root (CAP_SYS_ADMIN)."""
    script = 'mount --bind "$0" "$0" && mount -o remount,bind,ro "$0" && exec "$@"'
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", script, str(folder)]


SIGNALS = {"SIGTERM": signal.SIGTERM, "SIGHUP": signal.SIGHUP, "SIGINT": signal.SIGINT}
