"""The sweep database ``DIR/sweep.db`` (SQLite): written only by the driver, one transaction per finished job.

Tables: ``sweeps`` (one row per run of a plan), ``exports`` (one row per finished export job) and ``jobs``
(one row per finished measurement attempt, status ``ok``, ``failed``, ``interrupted`` or ``requeued``);
``groups`` and ``group_sessions`` (a paired group's finished attempts and their sessions), ``group_pending``
(each session of a group as it finishes, until the group's last one moves them all into ``group_sessions``:
a killed driver's ``--resume`` runs only the sessions not stored).
A job that is running has no row: a driver killed with SIGKILL leaves only committed rows (SQLite's
journal rolls back a half-written transaction), and ``--resume`` measures what has no ``ok`` row.
"""
from __future__ import annotations

import contextlib
import datetime
import json
import sqlite3
from pathlib import Path
from typing import Any, Iterable, Iterator, Optional

from edgesep.errors import OutputError
from edgesep.io import dumps

DB_NAME = "sweep.db"
SCHEMA_VERSION = 1
STATUSES = ("ok", "failed", "interrupted", "requeued")
JOB_COLUMNS = (
    ("sweep_id", "INTEGER"), ("key", "TEXT NOT NULL"), ("plan_hash", "TEXT"), ("model", "TEXT"),
    ("model_hash", "TEXT"), ("form", "TEXT"), ("seed", "INTEGER"), ("artifact", "TEXT"), ("artifact_hash", "TEXT"),
    ("format", "TEXT"), ("precision", "TEXT"), ("accuracy", "REAL"), ("keras_accuracy", "REAL"),
    ("device", "TEXT"), ("host", "TEXT"), ("node_id", "TEXT"), ("node_host", "TEXT"), ("node_ip", "TEXT"),
    ("runtime", "TEXT"), ("runtime_version", "TEXT"), ("edgesep_version", "TEXT"), ("delegate", "TEXT"),
    ("threads", "INTEGER"), ("p50_ms", "REAL"), ("mean_ms", "REAL"), ("status", "TEXT NOT NULL"),
    ("error", "TEXT"), ("attempt", "INTEGER"), ("started", "REAL"), ("ended", "REAL"), ("started_utc", "TEXT"),
    ("ended_utc", "TEXT"), ("result_json", "TEXT"), ("bench_json", "TEXT"))
SCHEMA = f"""
CREATE TABLE IF NOT EXISTS meta (name TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS sweeps (id INTEGER PRIMARY KEY, plan_hash TEXT, plan_file TEXT, plan_toml TEXT,
    address TEXT, edgesep_version TEXT, started_utc TEXT, ended_utc TEXT, status TEXT);
CREATE TABLE IF NOT EXISTS exports (id INTEGER PRIMARY KEY, sweep_id INTEGER, key TEXT NOT NULL, model TEXT,
    status TEXT NOT NULL, error TEXT, node_id TEXT, node_host TEXT, started REAL, ended REAL, folder TEXT,
    export_json TEXT);
CREATE TABLE IF NOT EXISTS jobs (id INTEGER PRIMARY KEY,
    {", ".join(f"{name} {kind}" for name, kind in JOB_COLUMNS)},
    CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})));
CREATE INDEX IF NOT EXISTS jobs_key ON jobs (key, status);
CREATE TABLE IF NOT EXISTS groups (id INTEGER PRIMARY KEY, sweep_id INTEGER, key TEXT NOT NULL, name TEXT,
    a_model TEXT, b_model TEXT, a_hash TEXT, b_hash TEXT, format TEXT, precision TEXT, b_precision TEXT,
    device TEXT, host TEXT,
    node_id TEXT, node_ip TEXT, runtime TEXT, status TEXT NOT NULL, error TEXT, attempt INTEGER, sessions INTEGER,
    started REAL, ended REAL, CHECK (status IN ({", ".join(repr(s) for s in STATUSES)})));
CREATE TABLE IF NOT EXISTS group_sessions (group_id INTEGER NOT NULL REFERENCES groups (id), session INTEGER,
    run_order TEXT, a_ms TEXT, b_ms TEXT, control_ms TEXT);
CREATE TABLE IF NOT EXISTS group_pending (key TEXT NOT NULL, sweep_id INTEGER, session INTEGER, run_order TEXT,
    a_ms TEXT, b_ms TEXT, control_ms TEXT, node_id TEXT, node_ip TEXT, runtime TEXT, started REAL, ended REAL,
    UNIQUE (key, session));
"""
PENDING_COLUMNS = ("key", "sweep_id", "session", "run_order", "a_ms", "b_ms", "control_ms", "node_id", "node_ip",
                   "runtime", "started", "ended")
GROUP_COLUMNS = ("sweep_id", "key", "name", "a_model", "b_model", "a_hash", "b_hash", "format", "precision",
                 "b_precision", "device", "host", "node_id", "node_ip", "runtime", "status", "error", "attempt", "sessions", "started", "ended")


def utc(seconds: Optional[float]) -> Optional[str]:
    """ISO 8601 UTC text of a Unix time (None stays None)."""
    if seconds is None:
        return None
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat(timespec="milliseconds")


class SweepStore:
    """The driver's connection to ``DIR/sweep.db``; every ``record_*`` call is one committed transaction."""

    def __init__(self, out_dir, create: bool = True) -> None:
        self.path = Path(out_dir) / DB_NAME
        self.read_only = not create
        if not create and not self.path.is_file():
            raise OutputError(f"no sweep database in {out_dir} ({DB_NAME} missing): run 'edgesep sweep PLAN "
                              f"--out {out_dir}' first")
        try:
            if not create:  # reading only (--report, --csv): never write, even to a read-only folder
                self.db = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True, timeout=30.0,
                                          isolation_level=None)
                self.db.execute("SELECT count(*) FROM sqlite_master").fetchone()
                return
            self.db = sqlite3.connect(self.path, timeout=30.0, isolation_level=None)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=FULL")
            if create:
                self.db.executescript(SCHEMA)
                self._transaction("INSERT OR IGNORE INTO meta VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.Error as e:
            raise OutputError(f"{self.path}: not a usable sweep database: {e}") from None

    def close(self) -> None:
        """Close; the writer leaves the database in rollback-journal mode, so that a later read-only open
        (--report, --csv) makes no -wal/-shm files beside it (a read-only connection cannot remove them)."""
        if not self.read_only:
            try:
                self.db.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error:  # another connection still has it open: it stays in WAL mode, as it was
                pass
        self.db.close()

    @contextlib.contextmanager
    def _immediate(self) -> Iterator[sqlite3.Connection]:
        """One write transaction: committed when the block ends, rolled back on any exception; a database
        error becomes one OutputError line naming the file."""
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield self.db
                self.db.execute("COMMIT")
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
        except sqlite3.Error as e:
            raise OutputError(f"{self.path}: {e}") from None

    def _transaction(self, sql: str, args: Iterable[Any] = ()) -> int:
        with self._immediate() as db:
            cursor = db.execute(sql, tuple(args))
        return int(cursor.lastrowid or 0)

    def begin_sweep(self, plan, address: str) -> int:
        """A ``sweeps`` row for this run of ``plan``; returns its id."""
        from edgesep import __version__

        return self._transaction(
            "INSERT INTO sweeps (plan_hash, plan_file, plan_toml, address, edgesep_version, started_utc, status) "
            "VALUES (?, ?, ?, ?, ?, ?, 'running')",
            (plan.hash, plan.file, plan.text, address, __version__, utc(_now())))

    def end_sweep(self, sweep_id: int, status: str) -> None:
        """Mark this run ``done``, ``failed`` or ``interrupted``."""
        self._transaction("UPDATE sweeps SET status = ?, ended_utc = ? WHERE id = ?", (status, utc(_now()), sweep_id))

    def ok_keys(self) -> set[str]:
        """Keys of every job already recorded ``ok``."""
        try:
            return {row[0] for row in self.db.execute("SELECT DISTINCT key FROM jobs WHERE status = 'ok'")}
        except sqlite3.Error as e:
            raise OutputError(f"{self.path}: not a usable sweep database: {e}") from None

    def record_export(self, row: dict[str, Any]) -> None:
        """One finished export job (``ok`` or ``failed``)."""
        names = ("sweep_id", "key", "model", "status", "error", "node_id", "node_host", "started", "ended", "folder",
                 "export_json")
        self._transaction(f"INSERT INTO exports ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                          (row.get(n) for n in names))

    def record_job(self, row: dict[str, Any]) -> int:
        """One finished measurement attempt (``JOB_COLUMNS`` keys; missing ones are NULL)."""
        if row.get("status") not in STATUSES:
            raise ValueError(f"job status must be one of {STATUSES}, got {row.get('status')!r}")
        names = [name for name, _ in JOB_COLUMNS]
        return self._transaction(f"INSERT INTO jobs ({', '.join(names)}) VALUES ({', '.join('?' * len(names))})",
                                 (row.get(n) for n in names))

    def record_group(self, row: dict[str, Any], sessions: list[dict[str, Any]]) -> None:
        """One finished attempt of a paired group and its sessions' samples, in one transaction; an ``ok`` one
        takes its key's pending sessions with it."""
        with self._immediate() as db:
            cursor = db.execute(f"INSERT INTO groups ({', '.join(GROUP_COLUMNS)}) VALUES "
                                f"({', '.join('?' * len(GROUP_COLUMNS))})", [row.get(n) for n in GROUP_COLUMNS])
            db.executemany("INSERT INTO group_sessions VALUES (?, ?, ?, ?, ?, ?)", [
                (cursor.lastrowid, s["index"], json.dumps(s["order"]),
                 *(json.dumps(s["samples"][role]) for role in ("a", "b", "control"))) for s in sessions])
            if row.get("status") == "ok":
                db.execute("DELETE FROM group_pending WHERE key = ?", (row["key"],))

    def record_group_session(self, key: str, sweep_id: int, session: dict[str, Any], outcome: dict[str, Any]) -> None:
        """One finished session of a paired group (``{index, order, samples}``) while its other sessions run."""
        values = (key, sweep_id, session["index"], json.dumps(session["order"]),
                  *(json.dumps(session["samples"][role]) for role in ("a", "b", "control")), outcome.get("node_id"),
                  outcome.get("ip"), outcome.get("runtime"), outcome.get("started"), outcome.get("ended"))
        self._transaction(f"INSERT OR REPLACE INTO group_pending ({', '.join(PENDING_COLUMNS)}) VALUES "
                          f"({', '.join('?' * len(PENDING_COLUMNS))})", values)

    def pending_sessions(self, key: str) -> list[dict[str, Any]]:
        """The sessions of group ``key`` stored so far, by index: ``{index, order, samples, node_id, ip, runtime,
        started, ended}``."""
        try:
            rows = self.db.execute(f"SELECT {', '.join(PENDING_COLUMNS[2:])} FROM group_pending WHERE key = ? "
                                   "ORDER BY session", (key,)).fetchall()
            return [{"index": r[0], "order": json.loads(r[1]),
                     "samples": {role: json.loads(v) for role, v in zip(("a", "b", "control"), r[2:5])},
                     "node_id": r[5], "ip": r[6], "runtime": r[7], "started": r[8], "ended": r[9]} for r in rows]
        except (sqlite3.Error, ValueError) as e:
            raise OutputError(f"{self.path}: not a usable sweep database: {e}") from None

    def ok_group_keys(self) -> set[str]:
        """Keys of every paired group already measured ``ok``."""
        try:
            return {row[0] for row in self.db.execute("SELECT DISTINCT key FROM groups WHERE status = 'ok'")}
        except sqlite3.Error as e:
            raise OutputError(f"{self.path}: not a usable sweep database: {e}") from None

    def group_results(self) -> list[dict[str, Any]]:
        """The newest ``ok`` attempt per group key, each with ``sessions``: [{a, b, control}] sample lists."""
        try:
            rows = self.db.execute(f"SELECT id, {', '.join(GROUP_COLUMNS)} FROM groups WHERE status = 'ok' "
                                   "ORDER BY id").fetchall()
            latest = {r[2]: dict(zip(("id", *GROUP_COLUMNS), r)) for r in rows}
            for row in latest.values():
                found = self.db.execute("SELECT a_ms, b_ms, control_ms FROM group_sessions WHERE group_id = ? "
                                        "ORDER BY session", (row["id"],)).fetchall()
                row["samples"] = [{k: json.loads(v) for k, v in zip(("a", "b", "control"), s)} for s in found]
        except sqlite3.OperationalError as e:
            if "no such table" in str(e):
                return []  # a sweep.db from before paired groups
            raise OutputError(f"{self.path}: not a usable sweep database: {e}") from None
        except (sqlite3.Error, ValueError) as e:
            raise OutputError(f"{self.path}: not a usable sweep database: {e}") from None
        return sorted(latest.values(), key=lambda r: r["id"])

    def failures(self, sweep_id: int) -> list[tuple[str, str, str]]:
        """(device, artifact file name, error) of every job that failed in run ``sweep_id``."""
        try:
            rows = self.db.execute("SELECT device, artifact, error FROM jobs WHERE sweep_id = ? AND status = "
                                   "'failed' ORDER BY id", (sweep_id,)).fetchall()
            rows += self.db.execute("SELECT device, 'group ' || name, error FROM groups WHERE sweep_id = ? AND "
                                    "status = 'failed' ORDER BY id", (sweep_id,)).fetchall()
        except sqlite3.Error as e:
            raise OutputError(f"{self.path}: {e}") from None
        return [(device, Path(artifact or "").name, error or "failed") for device, artifact, error in rows]

    def rows(self, latest: bool = True) -> list[dict[str, Any]]:
        """Job rows as dicts, oldest first; ``latest``: only the newest row per key (an ``ok`` one if any)."""
        self.db.row_factory = sqlite3.Row
        try:
            rows = [dict(r) for r in self.db.execute("SELECT * FROM jobs ORDER BY id")]
            missing = [name for name, _ in JOB_COLUMNS if rows and name not in rows[0]]
        except sqlite3.Error as e:
            raise OutputError(f"{self.path}: not a usable sweep database: {e}") from None
        finally:
            self.db.row_factory = None
        if missing:
            raise OutputError(f"{self.path}: not a usable sweep database: the jobs table lacks {missing[0]}")
        if not latest:
            return rows
        best: dict[str, dict[str, Any]] = {}
        for row in rows:
            old = best.get(row["key"])
            if old is None or old["status"] != "ok" or row["status"] == "ok":
                best[row["key"]] = row
        return sorted(best.values(), key=lambda r: r["id"])


def _now() -> float:
    import time

    return time.time()


def group_row(job, outcome: dict[str, Any], status: str, error: Optional[str], attempt: int,
              sweep_id: int) -> dict[str, Any]:
    """The ``groups`` row of one finished attempt of ``job`` (a ``GroupJob``)."""
    return {"sweep_id": sweep_id, "key": job.key, "name": job.group.name, "a_model": job.a.model,
            "b_model": job.b.model, "a_hash": job.a.sha256, "b_hash": job.b.sha256, "format": job.a.format,
            "precision": job.a.precision, "b_precision": job.b.precision, "device": job.device.target, "host": job.device.host,
            "node_id": outcome.get("node_id"), "node_ip": outcome.get("ip"), "runtime": outcome.get("runtime"),
            "status": status, "error": error, "attempt": attempt, "sessions": len(outcome.get("sessions") or []),
            "started": outcome.get("started"), "ended": outcome.get("ended")}


def job_row(job, outcome: dict[str, Any], status: str, error: Optional[str], attempt: int, sweep_id: int,
            plan_hash: str) -> dict[str, Any]:
    """The ``jobs`` row of one finished attempt of ``job`` (a ``MeasureJob``) with the actor's ``outcome``."""
    result = outcome.get("result") or {}
    runtime = (result.get("runtime") or "").split(" ", 1)
    latency = result.get("latency_ms") or {}
    art = job.artifact
    return {"sweep_id": sweep_id, "key": job.key, "plan_hash": plan_hash, "model": art.model,
            "model_hash": art.model_hash, "form": art.form, "seed": art.seed, "artifact": art.path,
            "artifact_hash": art.sha256, "format": art.format, "precision": art.precision, "accuracy": art.accuracy,
            "keras_accuracy": art.keras_accuracy, "device": job.device.target, "host": job.device.host,
            "node_id": outcome.get("node_id"), "node_host": outcome.get("hostname"), "node_ip": outcome.get("ip"),
            "runtime": runtime[0] or None, "runtime_version": runtime[1] if len(runtime) > 1 else None,
            "edgesep_version": outcome.get("edgesep_version"), "delegate": result.get("delegate"),
            "threads": result.get("threads"), "p50_ms": latency.get("p50"), "mean_ms": latency.get("mean"),
            "status": status, "error": error, "attempt": attempt, "started": outcome.get("started"),
            "ended": outcome.get("ended"), "started_utc": utc(outcome.get("started")),
            "ended_utc": utc(outcome.get("ended")), "result_json": dumps(result, indent=None) if result else None,
            "bench_json": json.dumps(job.bench, sort_keys=True)}
