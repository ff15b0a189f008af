"""The sweep's live display on stderr: jobs queued, running, ok and failed per device, and the exports."""
from __future__ import annotations

import time
from typing import Any, Optional

REFRESH_SECS = 0.5


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
