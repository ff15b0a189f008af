"""The README's code runs (issue 22): its Python snippets, and the shell commands that need no device and no
training, executed as written, so the docs cannot rot."""
from __future__ import annotations

import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"
# The devices snippet talks to a Pi; here it measures on this machine instead (the same API, a local target).
DEVICE_STAND_IN = {'parse_target("ssh://pi@raspberrypi.local", remote_python="/home/pi/venv/bin/python")':
                   'parse_target("local")'}


def _blocks(kind: str) -> list[str]:
    """The README's fenced code blocks opened with ```kind (``""``: the plain ones, shell commands)."""
    blocks, current, opened = [], [], None
    for line in README.read_text().splitlines():
        if line.startswith("```"):
            if opened is None:
                opened, current = line[3:].strip(), []
            else:
                blocks += ["\n".join(current) + "\n"] if opened == kind else []
                opened = None
        elif opened is not None:
            current.append(line)
    return blocks


def _shell_commands() -> list[str]:
    """Every README command that runs on this machine alone from what the Python snippets exported in out/:
    inspect and bench --device local of out/ artifacts (comments dropped)."""
    commands = []
    for block in _blocks(""):
        for line in block.splitlines():
            line = line.split("  #", 1)[0].strip()
            if line.startswith(("edgesep inspect out/", "edgesep bench out/")) and (
                    "inspect" in line.split()[1] or "--device local" in line):
                commands.append(line)
    return commands


def test_the_readme_has_the_snippets_this_test_runs():
    python = _blocks("python")
    assert len(python) >= 3 and any("parse_target" in b for b in python)
    assert all(old in "".join(python) for old in DEVICE_STAND_IN)  # the stand-in still matches the README
    commands = _shell_commands()
    assert any(c.startswith("edgesep inspect") for c in commands) and any("--data digits" in c for c in commands)


@pytest.mark.slow
def test_readme_python_snippets_and_local_commands_run(tmp_path):
    """The Python API snippets in order, in one namespace, in a fresh folder; then the local shell commands."""
    source = "\n\n".join(_blocks("python"))
    for old, new in DEVICE_STAND_IN.items():
        source = source.replace(old, new)
    source = source.replace("BenchConfig(threads=4, runs=100, min_secs=2)", "BenchConfig(threads=1, runs=20, "
                            "min_secs=0.1, warmup_secs=0)")  # the same call, shorter on a shared CI machine
    script = tmp_path / "readme_snippets.py"
    script.write_text(source + "\nprint('SNIPPETS OK')\n")
    env = {**os.environ, "EDGESEP_CACHE": str(tmp_path / "cache"), "TF_CPP_MIN_LOG_LEVEL": "3"}
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, cwd=tmp_path, env=env,
                          timeout=900)
    assert proc.returncode == 0 and "SNIPPETS OK" in proc.stdout, proc.stderr[-3000:]
    for command in _shell_commands():
        argv = shlex.split(command.replace(">", " > ", 1))
        if ">" in argv:  # e.g. '--json > local.json'
            argv, target = argv[:argv.index(">")], argv[argv.index(">") + 1]
        else:
            target = None
        proc = subprocess.run([sys.executable, "-m", "edgesep", *argv[1:], *(  # later options win: short runs
            ["--runs", "5", "--warmup-secs", "0", "--min-secs", "0.1", "--max-secs", "1", "--threads", "1"]
            if argv[1] == "bench" else [])], capture_output=True, text=True, cwd=tmp_path, env=env, timeout=600)
        assert proc.returncode == 0, f"{command}\n{proc.stderr}"
        if target:
            (tmp_path / target).write_text(proc.stdout)
