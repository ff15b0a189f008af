"""Persistence of a compare run: the report (report.json + report.md, rewritten after each change), stage
timing, and the finished device sessions under ``bench/`` that ``--resume`` reuses.

Every file goes through ``edgesep.io`` (atomic, strict JSON).
"""
from __future__ import annotations

import datetime
import hashlib
import json
import re
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from edgesep.compare.config import REPORT_VERSION
from edgesep.compare.records import DeviceSection, Measurement, Report, SessionEntry, StageRecord
from edgesep.devices.base import BenchConfig
from edgesep.io import dumps, write_json, write_text


def now() -> str:
    """The current UTC time, ISO 8601 to the second."""
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class Progress:
    """Stage progress callbacks (a no-op here; the CLI draws a bar). Called from worker threads too."""

    def start(self, stage: str, total: float) -> None:
        """``stage`` begins with ``total`` units of work."""

    def update(self, stage: str, completed: float, total: Optional[float] = None, note: str = "") -> None:
        """``completed`` units of ``stage`` are done."""

    def finish(self, stage: str, ok: bool = True) -> None:
        """``stage`` ended (failed when not ``ok``)."""


def bench_config_dict(bench: BenchConfig) -> dict[str, Any]:
    """The bench config as stored in the report (without the data path, which is the report's own)."""
    return {k: v for k, v in bench.to_dict().items() if k != "data"}


def new_report(kind: str, targets: Sequence[str], bench: BenchConfig, **fields: Any) -> Report:
    """The empty report of a compare run (``kind`` is ``builtin`` or ``models``)."""
    from edgesep import __version__

    return Report(kind=kind, edgesep_version=__version__, report_version=REPORT_VERSION, created=now(),
                  bench_config=bench_config_dict(bench), devices={t: DeviceSection(t) for t in targets}, **fields)


class ReportStore:
    """The report, changed under a lock; report.json and report.md are rewritten after each change."""

    def __init__(self, out_dir: Path, report: Report) -> None:
        self.out_dir = Path(out_dir)
        self.report = report
        self._lock = threading.Lock()
        self._write()

    def update(self, change: Callable[[Report], Report]) -> Report:
        """Replace the report with ``change(report)`` and write it out; returns the new report."""
        with self._lock:
            self.report = change(self.report)
            self._write()
            return self.report

    def document(self) -> dict[str, Any]:
        """The report as a JSON document (a fresh dict)."""
        with self._lock:
            return self.report.to_dict()

    def _write(self) -> None:
        from edgesep.report import compare_markdown

        doc = self.report.to_dict()
        write_text(self.out_dir / "report.json", dumps(doc, indent=None) + "\n")
        write_text(self.out_dir / "report.md", compare_markdown(doc))


class Stage:
    """``with Stage(store, progress, name, total):`` times a stage into the report and the progress bar."""

    def __init__(self, store: ReportStore, progress: Progress, name: str, total: float) -> None:
        self.store, self.progress, self.name, self.total = store, progress, name, total
        self.t0 = 0.0

    def __enter__(self) -> "Stage":
        self.t0 = time.monotonic()
        self.store.update(lambda r: r.with_stage(self.name, StageRecord(status="running", started=now())))
        self.progress.start(self.name, self.total)
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        status = "done" if exc_type is None else ("interrupted" if issubclass(exc_type, KeyboardInterrupt) else "failed")
        seconds = round(time.monotonic() - self.t0, 3)

        def record(r: Report) -> Report:
            stage = r.stages[self.name]
            return r.with_stage(self.name, StageRecord(status=status, started=stage.started, seconds=seconds))

        self.store.update(record)
        self.progress.finish(self.name, ok=exc_type is None)


def device_slug(target: str) -> str:
    """A file-name-safe form of a device target."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", target).strip("_") or "device"


def session_key(target: str, options: Mapping[str, Any], bench: BenchConfig, data_sha: Optional[str],
                shas: Sequence[str], extra: Optional[Mapping[str, Any]] = None) -> str:
    """What decides a session's results: device, its Python, the bench config, the data and the model bytes.

    Connection details (``ssh_config``) are left out: the same device reached another way measures the same.
    ``extra`` (e.g. the session's index and artifact order) joins the key when given.
    """
    blob = {"target": target, "remote_python": options.get("remote_python"), "bench": bench_config_dict(bench),
            "data": data_sha, "models": list(shas)}
    if extra:
        blob["extra"] = dict(extra)
    return hashlib.sha256(json.dumps(blob, sort_keys=True).encode()).hexdigest()[:16]


def _readable_session(entry: Any) -> bool:
    """Whether a stored session has the shape ``--resume`` reads (a damaged one is measured again)."""
    if not isinstance(entry, dict) or not isinstance(entry.get("results"), dict) or not entry["results"]:
        return False
    try:
        for record in [*entry["results"].values(), *(entry.get("controls") or {}).values()]:
            Measurement.from_dict(record, resumed=True)
        for stored in entry.get("entries") or []:
            SessionEntry.from_dict(stored, resumed=True)
    except Exception:  # noqa: BLE001 - any malformed record means "not reusable"
        return False
    return True


class SessionStore:
    """Finished sessions of one device in ``bench/<device>.json`` (session key -> results), for ``--resume``."""

    def __init__(self, folder: Path, target: str) -> None:
        self.path = Path(folder) / f"{device_slug(target)}.json"
        self.target = target
        self._lock = threading.Lock()

    def load(self) -> dict[str, Any]:
        """The stored sessions (key -> ``{"finished", "results": {variant id: record}}``); {} if none."""
        try:
            doc = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return {}
        if not isinstance(doc, dict) or doc.get("target") != self.target or not isinstance(doc.get("sessions"), dict):
            return {}  # damaged or another device's: measure again
        return {key: entry for key, entry in doc["sessions"].items() if _readable_session(entry)}

    def save(self, sessions_done: Mapping[str, Any]) -> None:
        """Write every finished session (atomically)."""
        with self._lock:
            write_json(self.path, {"target": self.target, "sessions": dict(sessions_done)})

    @staticmethod
    def entry(finished: str, results: Mapping[str, Measurement], **fields: Any) -> dict[str, Any]:
        """The stored form of one finished session."""
        return {"finished": finished, "results": {k: m.to_dict() for k, m in results.items()}, **fields}
