"""Live displays on stderr and the console tables print on: the compare stages' bars, bench's per-model
bars, export's status line, the sweep's live table. Rendering only: the CLI and fleet hand them what to show.
"""
from __future__ import annotations

import time
from typing import Any, Callable, Optional

REFRESH_SECS = 0.5


def table_console(wide: int):
    """The console tables print on: a terminal's own width (tables fit it: the export table moves its ops
    under the table at 80 columns), or ``wide`` columns when stdout is a pipe or a file (logs keep every
    column)."""
    import shutil
    import sys

    from rich.console import Console

    if sys.stdout.isatty():
        return Console()
    return Console(width=max(wide, shutil.get_terminal_size().columns))


def status(text: str):
    """A one-line status on stderr (``with status("starting") as s: s.update(...)``)."""
    from rich.console import Console

    return Console(stderr=True).status(text)


def model_bars(labels: dict[str, str]):
    """Per-model progress bars on stderr (none on a non-terminal): ``(bar, progress(model, done, total))``;
    ``labels`` maps a model to the name its bar shows."""
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    console = Console(stderr=True)
    bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                   console=console, transient=True, disable=not console.is_terminal)  # a log gets no blank line
    tasks: dict = {}

    def progress(model: str, done: int, total: int) -> None:
        if model not in tasks:
            tasks[model] = bar.add_task(labels.get(model, model), total=max(total, 1))
        bar.update(tasks[model], completed=done, total=max(total, done, 1))

    return bar, progress


class StageProgress:
    """A rich progress bar on stderr, one row per stage (train, export, bench per device, plots); ``on_update``
    (if given) runs before each update (the CLI raises a pending signal there)."""

    def __init__(self, on_update: Optional[Callable[[], None]] = None) -> None:
        from rich.console import Console
        from rich.progress import BarColumn, Progress, TaskProgressColumn, TextColumn, TimeElapsedColumn

        console = Console(stderr=True)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), TaskProgressColumn(),
                            TimeElapsedColumn(), TextColumn("{task.fields[note]}"), console=console,
                            disable=not console.is_terminal)  # a log keeps only the summary and warnings
        self.on_update = on_update
        self.tasks: dict[str, int] = {}
        self.shown: dict[str, float] = {}  # per stage, the fraction shown so far: a bar never goes backwards

    def __enter__(self):
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def start(self, stage: str, total: float) -> None:
        self.tasks[stage] = self.bar.add_task(stage, total=max(total, 1), note="")

    def update(self, stage: str, completed: float, total: Optional[float] = None, note: str = "") -> None:
        if self.on_update is not None:
            self.on_update()
        if stage in self.tasks:
            total = max(total, completed, 1) if total is not None else self._total(stage)
            fraction = max(completed / total, self.shown.get(stage, 0.0))
            self.shown[stage] = fraction
            self.bar.update(self.tasks[stage], completed=fraction * total, total=total, note=note)

    def finish(self, stage: str, ok: bool = True) -> None:
        if stage in self.tasks:
            self.bar.update(self.tasks[stage], completed=self._total(stage), note="done" if ok else "[red]failed")

    def _total(self, stage: str) -> float:
        return next(t.total for t in self.bar.tasks if t.id == self.tasks[stage]) or 1


class SweepProgress:
    """``with SweepProgress() as show: run_sweep(..., progress=show)``; a rich table redrawn at most twice a second."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.live import Live

        self.console = Console(stderr=True)
        self.live = Live(console=self.console, refresh_per_second=4, transient=False)
        self.last = 0.0
        self.snapshot: Optional[dict[str, Any]] = None

    def __enter__(self) -> "SweepProgress":
        self.live.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        if self.snapshot is not None:
            self.live.update(self.table(self.snapshot))
        self.live.__exit__(*exc)
        if not self.console.is_terminal:  # a pipe or file: the table's last line has no newline of its own
            self.console.file.write("\n")
            self.console.file.flush()

    def __call__(self, snapshot: dict[str, Any]) -> None:
        self.snapshot = snapshot
        now = time.monotonic()
        if now - self.last >= REFRESH_SECS:
            self.last = now
            self.live.update(self.table(snapshot))

    @staticmethod
    def table(snapshot: dict[str, Any]):
        """A rich Table of one snapshot."""
        from rich.table import Table

        exports = snapshot.get("exports", {})
        caption = (f"exports: {exports.get('running', 0)} running, {exports.get('ok', 0)} done, "
                   f"{exports.get('reused', 0)} reused, {exports.get('failed', 0)} failed")
        table = Table(title="sweep", caption=caption)
        for column in ("device", "node", "state", "queued", "running", "ok", "failed", "requeued", "skipped"):
            table.add_column(column, justify="left" if column in ("device", "node", "state") else "right")
        for d in snapshot.get("devices", []):
            state = {"gone": "[red]gone", "lost": "[yellow]lost"}.get(d["status"], d["status"])
            table.add_row(d["device"], d.get("node") or d.get("host") or "-", state, str(d["queued"]),
                          str(d["running"]), str(d["ok"]), f"[red]{d['failed']}" if d["failed"] else "0",
                          str(d["requeued"]), str(d["skipped"]))
        return table
