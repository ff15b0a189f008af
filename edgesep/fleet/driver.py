"""The sweep driver: exports as Ray tasks, one actor per device, results into the database as they arrive.

The driver is the only writer of ``sweep.db``. Each device has a queue of measure jobs and at most one job in
flight. Jobs of a device whose resource is ``edgesep/local:*`` wait until no export runs, since an export
would share the CPU being measured. A lost worker node (calls to its actors fail) fails or requeues only the
jobs of its devices, as the plan's ``[faults]`` says; Ctrl-C records the running jobs as ``interrupted``.
A lost head (its GCS or the driver's own raylet stops answering) stops the sweep in seconds, its running jobs
``interrupted``. A paired group runs one session per call, each committed as it ends, so ``--resume`` after a
killed driver runs only the group's missing sessions.
"""
from __future__ import annotations

import collections
import dataclasses
import time
from pathlib import Path
from typing import Any, Callable, Optional

import ray

from edgesep.errors import describe, one_line
from edgesep.fleet.jobs import (Artifact, ExportJob, GroupJob, MeasureJob, export_artifacts, export_jobs,
                                expand_groups, file_artifacts, group_jobs, measure_jobs, reusable_export)
from edgesep.fleet.plan import SweepPlan
from edgesep.fleet.session import HeadLost, HeadWatch
from edgesep.fleet.store import SweepStore, group_row, job_row, utc
from edgesep.fleet.tasks import export_task, new_actor

LOST = (ray.exceptions.RayActorError, ray.exceptions.ActorUnavailableError)
POLL_SECS = 0.2


def _signalled(e: KeyboardInterrupt) -> KeyboardInterrupt:
    """The ``edgesep.interrupt.Signalled`` behind ``e`` (SIGTERM, SIGHUP, SIGINT) if one is pending, else ``e``."""
    from edgesep.interrupt import Signalled, checkpoint

    if isinstance(e, Signalled):
        return e
    try:
        checkpoint()
    except Signalled as pending:
        return pending
    return e


@dataclasses.dataclass
class DeviceState:
    """One device's queue, its actor and what happened to its jobs so far."""

    spec: Any
    queue: collections.deque = dataclasses.field(default_factory=collections.deque)
    actor: Any = None
    running: Optional[tuple[MeasureJob, Any, float]] = None  # (job, object ref, dispatch time)
    status: str = "ready"  # ready | lost | gone
    lost_at: float = 0.0
    home: str = ""  # the node the device's actor was pinned to
    lost_nodes: frozenset = frozenset()  # nodes the device was lost on (Ray may list one alive for a while)
    gone_reason: str = ""
    node: dict[str, Any] = dataclasses.field(default_factory=dict)
    counts: collections.Counter = dataclasses.field(default_factory=collections.Counter)

    @property
    def local_cpu(self) -> bool:
        return self.spec.resource.startswith("edgesep/local:")

    def snapshot(self) -> dict[str, Any]:
        node = self.node.get("ip") or self.node.get("hostname")  # the node's IP: its hostname may be shared
        return {"device": self.spec.target, "host": self.spec.host, "node": node,
                "status": self.status, "queued": len(self.queue), "running": int(self.running is not None),
                **{k: self.counts[k] for k in ("ok", "failed", "interrupted", "requeued", "skipped")}}


class Sweep:
    """One run of a plan against a connected Ray cluster; ``run()`` returns the per-status counts."""

    def __init__(self, plan: SweepPlan, out: Path, store: SweepStore, sweep_id: int, *, resume: bool,
                 offered: dict[str, float], absent_hint: Callable[[Any], str],
                 progress: Optional[Callable[[dict[str, Any]], None]] = None,
                 head: Optional[HeadWatch] = None) -> None:
        self.plan, self.out, self.store, self.sweep_id = plan, Path(out), store, sweep_id
        self.head = head or HeadWatch([])
        self.done_keys = (store.ok_keys() | store.ok_group_keys()) if resume else set()
        self.arrived: dict[str, list[Artifact]] = {}  # model name -> its artifacts, for the paired groups
        self.groups = expand_groups(plan)  # [[groups]], with by = "form" / "precision" made explicit
        self.grouped: set[str] = set()
        self.progress = progress or (lambda snapshot: None)
        self.devices = {d.resource: DeviceState(d) for d in plan.devices}
        for state in self.devices.values():
            if offered.get(state.spec.resource, 0) < 1:
                state.status, state.gone_reason = "gone", absent_hint(state.spec)
        self.exports: dict[Any, ExportJob] = {}
        self.export_counts: collections.Counter = collections.Counter()
        self.export_errors: list[str] = []
        self.blobs: dict[str, Any] = {}
        self.attempts: collections.Counter = collections.Counter()
        self.continuing: set[str] = set()  # keys of the groups with sessions still to run in this attempt

    # ---------------------------------------------------------------- the loop
    def run(self) -> dict[str, int]:
        """Export, measure, record; on Ctrl-C the running jobs are recorded ``interrupted`` and it re-raises."""
        from edgesep.interrupt import checkpoint

        try:
            self._start()
            while self.exports or any(d.running or (d.queue and d.status != "gone") for d in self.devices.values()):
                self.head.check()  # before any call that would wait for a dead GCS
                self._dispatch()
                self._collect(self._wait())
                self.head.check()
                self._check_lost()
                self.progress(self.snapshot())
                checkpoint()  # a signal swallowed inside a callback is raised here
        except HeadLost as e:
            self._abandon(str(e))
            raise HeadLost(f"{e}; the sweep stopped, its finished jobs are in {self.out / 'sweep.db'}: start the "
                           "head again (the embedded default: just rerun) with --resume") from None
        except KeyboardInterrupt as e:
            signalled = _signalled(e)  # Ray's waits turn a signal into a plain KeyboardInterrupt
            self._interrupt(getattr(signalled, "name", "SIGINT"))
            raise signalled from None
        self.progress(self.snapshot())
        return self.totals()

    def totals(self) -> dict[str, int]:
        total: collections.Counter = collections.Counter()
        for state in self.devices.values():
            total.update(state.counts)
        return {**total, "exports_failed": self.export_counts["failed"]}

    def snapshot(self) -> dict[str, Any]:
        return {"devices": [d.snapshot() for d in self.devices.values()],
                "exports": {"running": len(self.exports), **self.export_counts}}

    def _start(self) -> None:
        for model in self.plan.models:
            if not model.exported:
                self._enqueue(file_artifacts(model))
        for job in export_jobs(self.plan):
            reused = reusable_export(self.out, job)
            if reused is not None:
                self.export_counts["reused"] += 1
                self._enqueue(export_artifacts(job, reused, self.out))
                continue
            keras = ray.put(Path(job.model.path).read_bytes()) if job.model.path else None
            self.exports[export_task.remote(job.to_dict(), keras)] = job

    def _wait(self) -> list:
        refs = list(self.exports) + [d.running[1] for d in self.devices.values() if d.running]
        if not refs:
            time.sleep(POLL_SECS)
            return []
        ready, rest = ray.wait(refs, num_returns=1, timeout=POLL_SECS)  # returns as soon as one is done
        if ready and rest:
            ready += ray.wait(rest, num_returns=len(rest), timeout=0)[0]
        return ready

    def _enqueue(self, artifacts: list[Artifact]) -> None:
        jobs: list = measure_jobs(artifacts, self.plan)
        for art in artifacts:
            self.arrived.setdefault(art.model, []).append(art)
        for group in self.groups:  # a group's job once both of its models have their artifacts
            if group.name not in self.grouped and group.a in self.arrived and group.b in self.arrived:
                self.grouped.add(group.name)
                jobs += group_jobs(group, self.arrived, self.plan)
        for job in jobs:
            state = self.devices[job.device.resource]
            if job.key in self.done_keys:
                state.counts["skipped"] += 1
            elif state.status == "gone":
                self._record(job, {}, "failed", state.gone_reason)
            else:
                state.queue.append(job)

    def _dispatch(self) -> None:
        for state in self.devices.values():
            if state.status != "ready" or state.running or not state.queue:
                continue
            if state.local_cpu and self.exports:
                continue  # an export would share the CPU this device measures
            if state.actor is None and not self._new_actor(state):
                continue  # only nodes the device was lost on offer it (yet)
            job = state.queue.popleft()
            if job.key not in self.continuing:  # a group's next session is the same attempt
                self.attempts[job.key] += 1
            if isinstance(job, GroupJob):
                ref = self._next_session(state, job)
            else:
                art = job.artifact
                ref = state.actor.measure.remote(Path(art.path).name, art.sha256, self._blob(art), job.bench)
            state.running = (job, ref, time.time())

    def _next_session(self, state: DeviceState, job: GroupJob):
        """Run the group's first session not stored yet (a killed driver's --resume skips the stored ones)."""
        stored = {s["index"] for s in self.store.pending_sessions(job.key)}
        todo = [i for i in range(job.group.sessions) if i not in stored] or [job.group.sessions - 1]
        items = [(role, Path(x.path).name, x.sha256) for role, x in (("a", job.a), ("b", job.b))]
        return state.actor.measure_group.remote(items, job.bench, job.group.sessions, self._blob(job.a),
                                                self._blob(job.b), todo[:1])

    def _new_actor(self, state: DeviceState) -> bool:
        """Create the device's actor pinned to a live node offering it that it was not lost on."""
        from edgesep.fleet.cluster import nodes_offering

        homes = sorted(nodes_offering(state.spec.resource) - state.lost_nodes)
        if not homes and state.lost_nodes:
            state.status = "lost"  # back, then gone again: wait (within requeue_timeout of the loss)
            return False
        state.home = homes[0] if homes else ""
        state.actor = new_actor(state.spec.resource, state.spec.target, dict(state.spec.options), state.home or None)
        return True

    def _blob(self, art: Artifact):
        if art.sha256 not in self.blobs:
            self.blobs[art.sha256] = ray.put(Path(art.path).read_bytes())
        return self.blobs[art.sha256]

    # ---------------------------------------------------------------- results
    def _collect(self, ready: list) -> None:
        for ref in ready:
            if ref in self.exports:
                self._export_done(self.exports.pop(ref), ref)
                continue
            state = next(d for d in self.devices.values() if d.running and d.running[1] == ref)
            job, _, dispatched = state.running
            state.running = None
            try:
                outcome = ray.get(ref)
            except LOST as e:
                self._head_answers(state, job, dispatched)
                self._lost(state, job, dispatched, e)
                continue
            except ray.exceptions.RayError as e:
                outcome = {"started": dispatched, "ended": time.time(), "error": describe(e)}
            state.node = {k: outcome.get(k) for k in ("node_id", "hostname", "ip")} if "node_id" in outcome \
                else state.node
            error = outcome.get("error")
            if error:  # failed because the head went (its runner killed with it): interrupted, not failed
                self._head_answers(state, job, dispatched)
            if isinstance(job, GroupJob) and not error:
                self._session_done(state, job, outcome)
            else:
                self._record(job, outcome, "failed" if error else "ok", one_line(error) if error else None)

    def _session_done(self, state: DeviceState, job: GroupJob, outcome: dict[str, Any]) -> None:
        """Store a group's finished session; the last one records the group with all its sessions, at once."""
        stored = [s for s in self.store.pending_sessions(job.key) if s["index"] not in
                  {new["index"] for new in outcome["sessions"]}]
        sessions = sorted(stored + outcome["sessions"], key=lambda s: s["index"])
        if len(sessions) < job.group.sessions:
            for session in outcome["sessions"]:
                self.store.record_group_session(job.key, self.sweep_id, session, outcome)
            self.continuing.add(job.key)
            state.queue.appendleft(job)  # its next session, before the device's other jobs
            return
        started = min([s["started"] for s in stored if s.get("started")] + [outcome["started"]])
        self._record(job, {**outcome, "started": started, "sessions": sessions}, "ok", None)

    def _head_answers(self, state: DeviceState, job, dispatched: float) -> None:
        """Raise ``HeadLost`` when the head is gone, with ``job`` back in ``state.running`` (so it is recorded
        ``interrupted``, not failed or requeued to a dead head)."""
        try:
            self.head.check(now=True)
        except HeadLost:
            state.running = (job, None, dispatched)
            raise

    def _record(self, job, outcome: dict[str, Any], status: str, error: Optional[str]) -> None:
        self.continuing.discard(job.key)  # this attempt is over, whatever comes next is another
        attempt = max(self.attempts[job.key], 1)
        if isinstance(job, GroupJob):
            row = group_row(job, outcome, status, error, attempt, self.sweep_id)
            self.store.record_group(row, outcome.get("sessions") or [] if status == "ok" else [])
        else:
            self.store.record_job(job_row(job, outcome, status, error, attempt, self.sweep_id, self.plan.hash))
        self.devices[job.device.resource].counts[status] += 1

    def _export_done(self, job: ExportJob, ref) -> None:
        from edgesep.io import StagedDir, dumps, write_bytes, write_json

        try:
            outcome = ray.get(ref)
        except ray.exceptions.RayError as e:
            self.head.check(now=True)  # an export lost with the head is not a failed export
            outcome = {"error": describe(e)}
        error = outcome.get("error")
        if not error:
            with StagedDir(self.out / job.folder) as stage:
                for name, data in outcome["files"].items():
                    write_bytes(stage.path / name, data)
                write_json(stage.path / "export.json", outcome["doc"])
                stage.commit()
        self.export_counts["failed" if error else "ok"] += 1
        if error:
            self.export_errors.append(f"{job.model.name}: {error}")
        self.store.record_export({
            "sweep_id": self.sweep_id, "key": job.key, "model": job.model.name, "status": "failed" if error else "ok",
            "error": error, "node_id": outcome.get("node_id"), "node_host": outcome.get("hostname"),
            "started": outcome.get("started"), "ended": outcome.get("ended"), "folder": job.folder,
            "export_json": None if error else dumps(outcome["doc"], indent=None)})
        if not error:
            from edgesep.converters.records import ExportResult

            self._enqueue(export_artifacts(job, ExportResult.from_dict(outcome["doc"]), self.out))

    # ---------------------------------------------------------------- faults
    def _lost(self, state: DeviceState, job: MeasureJob, dispatched: float, e: BaseException) -> None:
        """The device's node (or its actor) is gone: requeue the job once or fail it, as the plan says."""
        from edgesep.fleet.cluster import nodes_offering

        state.actor, state.status, state.lost_at = None, "lost", time.time()
        # Ray may list a killed node as alive for a while: the device is back only on another node. The node
        # the actor was pinned to, not every node offering the device now (a restarted one may already be up)
        lost = {state.home} if state.home else nodes_offering(state.spec.resource)
        state.lost_nodes = state.lost_nodes | frozenset(lost)
        outcome = {**state.node, "started": dispatched, "ended": time.time()}
        policy = self.plan.faults.lost_node
        if policy == "requeue" and self.attempts[job.key] < 2:
            self._record(job, outcome, "requeued", f"worker node lost ({type(e).__name__}); requeued")
            state.queue.appendleft(job)
            return
        self._record(job, outcome, "failed", f"worker node lost ({type(e).__name__})")
        if policy == "fail":
            self._give_up(state, f"worker node of {state.spec.target} lost")

    def _give_up(self, state: DeviceState, reason: str) -> None:
        state.status, state.gone_reason = "gone", reason
        while state.queue:
            self._record(state.queue.popleft(), {}, "failed", reason)

    def _check_lost(self) -> None:
        lost = [d for d in self.devices.values() if d.status == "lost"]
        if not lost:
            return
        from edgesep.fleet.cluster import nodes_offering

        timeout = self.plan.faults.requeue_timeout
        for state in lost:
            if nodes_offering(state.spec.resource) - state.lost_nodes:
                state.status = "ready"
            elif time.time() - state.lost_at > timeout:
                self._give_up(state, f"worker node of {state.spec.target} lost and not back within {timeout:g} s")

    def _abandon(self, reason: str) -> None:
        """The head is gone: record every running job ``interrupted`` (no Ray call: it would wait for the GCS)."""
        for state in self.devices.values():
            self._record_interrupted(state, reason)

    def _interrupt(self, signal_name: str) -> None:
        """Ctrl-C (or SIGTERM, SIGHUP): record every running job ``interrupted``, stop the exports and actors."""
        for ref in self.exports:
            ray.cancel(ref, force=True)
        for state in self.devices.values():
            self._record_interrupted(state, f"interrupted ({signal_name})")
            if state.actor is not None:
                ray.kill(state.actor)

    def _record_interrupted(self, state: DeviceState, reason: str) -> None:
        """The device's running job, if any, recorded ``interrupted`` with ``reason`` and the time."""
        if state.running:
            job, _, dispatched = state.running
            state.running = None
            self._record(job, {**state.node, "started": dispatched, "ended": time.time()}, "interrupted",
                         f"{reason} at {utc(time.time())}")
