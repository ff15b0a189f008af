"""The ``local`` device: ``runner.py`` in a subprocess of the current Python, on this machine's CPU."""
from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional, Sequence

from edgesep.devices.harness import RUNNER_PATH, RunnerDevice


class LocalDevice(RunnerDevice):
    """This machine: the same runner as on a remote device, started with ``python`` (default: this Python).

    Nothing is copied; the runner reads the model and data files where they are.
    """

    def __init__(self, python: Optional[str] = None) -> None:
        super().__init__()
        self.target = "local"
        self.python = python or sys.executable

    def _stage(self, models: Sequence[Path], data: Optional[Path]) -> tuple[list[str], Optional[str]]:
        return [str(Path(m).resolve()) for m in models], str(Path(data).resolve()) if data else None

    def _runner_argv(self, args: Sequence[str]) -> list[str]:
        return [self.python, str(RUNNER_PATH), *args]
