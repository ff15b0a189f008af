"""Device benches of a compare run: several sessions per device, one worker thread per device.

On a device, the variants are grouped by runtime (all TFLite files, then the ONNX files), so a device without
ONNX Runtime loses only the ONNX rows and the two forms of one precision always share a session. Each group
runs ``sessions`` times, each time in a fresh runner process with the artifacts in a freshly shuffled order
and interleaved round by round, together with an A/A control (the group's baseline artifact loaded a second
time, as if it were another variant). The steady-state budget of the bench config (runs, seconds) is shared
among the sessions (``session_config``); the warm-up is repeated in each. Devices run concurrently; a device
that fails is reported in its own section. Each finished group is stored under ``bench/`` so ``--resume``
reuses it without contacting the device.

``edgesep bench`` with several models runs its sessions with ``alternating_sessions`` (one device, the models
and an A/A control copy, the order reversed every other session) and pools them with ``pool_results``.
"""
from __future__ import annotations

import dataclasses
import random
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from edgesep.compare.analysis import latency_comparisons, stability_checks
from edgesep.compare.config import CONTROL_PREFIX, DEFAULT_SESSIONS
from edgesep.compare.records import ComparisonSpec, DeviceSection, Measurement, SessionEntry, Variant
from edgesep.compare.store import Progress, ReportStore, SessionStore, Stage, now, session_key
from edgesep.devices.base import BenchConfig, BenchResult, DeviceError
from edgesep.devices.remote import content_hash
from edgesep.errors import EdgesepError, describe, one_line

ProgressFn = Callable[[str, float, float], None]  # (what, done, total)


def sessions(variants: Sequence[Variant]) -> list[tuple[str, list[Variant]]]:
    """Variants grouped by format (one device session per runtime), in the order the formats first appear."""
    groups: dict[str, list[Variant]] = {}
    for v in variants:
        groups.setdefault(v.format, []).append(v)
    return list(groups.items())


def control_variant(group: Sequence[Variant], comparisons: Sequence[ComparisonSpec]) -> Optional[Variant]:
    """The A/A control of a session group: the baseline (``b``) of its first comparison, loaded a second time."""
    ids = {v.id for v in group}
    spec = next((c for c in comparisons if c.a in ids and c.b in ids), None)
    if spec is None:
        return None
    base = next(v for v in group if v.id == spec.b)
    return dataclasses.replace(base, id=f"{CONTROL_PREFIX}{base.id}", name=f"{base.name} (A/A control)")


def session_order(items: Sequence[Variant], index: int, seed: int = 0) -> list[Variant]:
    """The artifact order of session ``index``: shuffled with a seeded generator (session 0 too)."""
    order = list(items)
    random.Random(seed * 1_000_003 + index).shuffle(order)
    return order


@dataclasses.dataclass(frozen=True)
class Group:
    """The variants one runtime measures, each session in one runner process, with their A/A control."""

    format: str
    variants: tuple[Variant, ...]
    control: Optional[Variant]
    key: str

    @property
    def items(self) -> tuple[Variant, ...]:
        """What each session runs: the variants and the control."""
        return self.variants + ((self.control,) if self.control is not None else ())


@dataclasses.dataclass
class _Runs:
    """What the sessions of one group produced so far (mutable while measuring, in this thread only)."""

    group: Group
    results: list[tuple[int, dict[str, BenchResult]]] = dataclasses.field(default_factory=list)
    entries: list[SessionEntry] = dataclasses.field(default_factory=list)
    lost: bool = False


class DeviceBench:
    """Measures the variants on one device in several sessions, reusing stored sessions when resuming.

    Each session is a fresh runner process over every variant of one runtime and its A/A control, in an
    order shuffled per session; the runtimes take turns (session 1 of TFLite, of ONNX, session 2, ...).
    """

    def __init__(self, target: str, options: Mapping[str, Any], variants: Sequence[Variant], bench: BenchConfig,
                 data_file: Optional[Path], store_dir: Path, resume: bool, progress: ProgressFn, *,
                 comparisons: Sequence[ComparisonSpec] = (), sessions: int = 1) -> None:
        if sessions < 1:
            raise ValueError(f"sessions must be >= 1, got {sessions}")
        self.target, self.options, self.variants = target, dict(options), list(variants)
        self.comparisons, self.sessions = tuple(comparisons), sessions
        self.bench = dataclasses.replace(bench, data=str(data_file) if data_file else None)
        self.data_file = data_file
        self.data_sha = content_hash(data_file) if data_file else None
        self.store = SessionStore(store_dir, target)
        self.done = self.store.load() if resume else {}
        self.progress = progress

    def groups(self) -> list[Group]:
        """One group per runtime format, with its control and the key of its stored sessions."""
        out = []
        for fmt, group in sessions(self.variants):
            control = control_variant(group, self.comparisons)
            items = group + ([control] if control else [])
            key = session_key(self.target, self.options, self.bench, self.data_sha, [v.sha256 for v in items],
                              extra={"sessions": self.sessions, "control": control.id if control else None}
                              if self.sessions > 1 or control else None)
            out.append(Group(fmt, tuple(group), control, key))
        return out

    def run(self) -> DeviceSection:
        """The device section: status, error, per-variant results, controls and one entry per session."""
        from edgesep.devices import parse_target

        results: dict[str, Measurement] = {}
        controls: dict[str, Measurement] = {}
        entries: list[SessionEntry] = []
        todo = []
        for group in self.groups():
            saved = self.done.get(group.key)
            if saved is None:
                todo.append(_Runs(group))
                continue
            results.update({k: Measurement.from_dict(r, resumed=True) for k, r in saved["results"].items()})
            controls.update({k: Measurement.from_dict(r, resumed=True) for k, r in saved.get("controls", {}).items()})
            entries += [SessionEntry.from_dict(e, resumed=True) for e in saved.get("entries") or
                        [{"format": group.format, "session": group.key, "finished": saved.get("finished")}]]
        if todo:
            device = parse_target(self.target, **self.options)
            try:
                self._measure(device, todo)
            finally:
                cleanup_error = self._cleanup(device)
            for runs in todo:
                self._pool(runs, results, controls)
                entries += runs.entries
            if cleanup_error:
                entries.append(SessionEntry(None, None, error=cleanup_error))
        return self._section(results, controls, entries)

    def _measure(self, device: Any, todo: Sequence[_Runs]) -> None:
        count = min(self.sessions, getattr(device, "max_sessions", None) or self.sessions)
        config = session_config(self.bench, count)
        for index in range(count):
            for position, runs in enumerate(todo):
                if runs.lost:
                    continue
                order = session_order(runs.group.items, index, self.bench.seed)
                try:
                    device.prepare([Path(v.file) for v in order], self.data_file)
                except DeviceError as e:  # staging failed: the device is unusable for the remaining sessions too
                    runs.entries.append(SessionEntry(runs.group.format, runs.group.key, error=str(e), index=index))
                    for other in todo:
                        other.lost = True
                    return
                try:
                    done = (index * len(todo) + position, count * len(todo))  # sessions before this one, all
                    measured = device.run(config, progress=self._model_progress(runs.group, index, config, count,
                                                                                done))
                except DeviceError as e:  # e.g. no ONNX Runtime on the device: this runtime's sessions are lost
                    runs.entries.append(SessionEntry(runs.group.format, runs.group.key, error=str(e), index=index))
                    runs.lost = True
                    continue
                runs.results.append((index, {v.id: r for v, r in zip(order, measured)}))
                host = next((r.host for r in measured if r.host), {})
                runs.entries.append(SessionEntry(runs.group.format, runs.group.key, index=index, finished=now(),
                                                 order=tuple(v.id for v in order), host=session_host(host)))

    def _pool(self, runs: _Runs, results: dict[str, Measurement], controls: dict[str, Measurement]) -> None:
        """Pool each variant's sessions into one measurement; store the group for ``--resume`` when complete."""
        if not runs.results:
            return
        group = runs.group
        pooled = {v.id: pool_sessions(v, runs.results, group.key, self.bench.seed) for v in group.items}
        mine = {v.id: pooled[v.id] for v in group.variants}
        results.update(mine)
        control = {group.format: pooled[group.control.id]} if group.control else {}
        controls.update(control)
        if not runs.lost:
            self.done[group.key] = SessionStore.entry(runs.entries[-1].finished or now(), mine,
                                                      controls={k: m.to_dict() for k, m in control.items()},
                                                      entries=[e.to_dict() for e in runs.entries])
            self.store.save(self.done)

    def _model_progress(self, group: Group, index: int, config: BenchConfig, count: int,
                        before: tuple[int, int]) -> Callable[[str, int, int], None]:
        """Progress over the whole stage: ``before`` = (sessions finished, sessions in all) plus this one's part."""
        state: dict[str, tuple[int, int]] = {}
        label = f"{group.format} session {index + 1}/{count}" if count > 1 else group.format

        def on_progress(model: str, done: int, total: int) -> None:
            state[model] = (done, max(total, done, 1))
            known = sum(t for _, t in state.values()) + (len(group.items) - len(state)) * config.runs
            self.progress(label, before[0] + sum(d for d, _ in state.values()) / max(known, 1), before[1])

        return on_progress

    def _cleanup(self, device: Any) -> Optional[str]:
        try:
            device.cleanup()
        except DeviceError as e:
            return f"cleanup: {e}"
        return None

    def _section(self, results: Mapping[str, Measurement], controls: Mapping[str, Measurement],
                 entries: Sequence[SessionEntry]) -> DeviceSection:
        errors = [e.error for e in entries if e.error]
        measured = [m for m in results.values() if not m.result.error]
        status = "done" if not errors else ("partial" if measured else "failed")
        host = next((m.result.host for m in measured if m.result.host), {})
        return DeviceSection(target=self.target, status=status, error=errors[0] if errors else None,
                             resumed=bool(entries) and all(e.resumed for e in entries if e.session),
                             sessions=tuple(entries), host=host, results=dict(results), controls=dict(controls))


def session_config(bench: BenchConfig, sessions: int) -> BenchConfig:
    """What one of ``sessions`` sessions runs: the steady-state budget (``runs``, ``min_secs``, ``max_secs``)
    shared among the sessions, the warm-up repeated in each (a fresh process must warm up again)."""
    if sessions <= 1:
        return bench
    return dataclasses.replace(bench, runs=-(-bench.runs // sessions), min_secs=bench.min_secs / sessions,
                               max_secs=bench.max_secs / sessions)


SESSION_HOST_KEYS = ("loadavg_before", "loadavg_after", "temp_c_before", "temp_c", "cores", "cpu_s", "wall_s")


def session_host(host: Mapping[str, Any]) -> dict[str, Any]:
    """The host facts of one session that the stability checks read."""
    return {k: host.get(k) for k in SESSION_HOST_KEYS if k in host}


def pool_results(results: Sequence[BenchResult], seed: int = 0) -> BenchResult:
    """One model's results of several sessions as one: the measured sessions' samples pooled in session order,
    ``latency_ms`` summarizing the pool (the first result as it is when no session measured)."""
    from edgesep.stats import summarize

    good = [r for r in results if not r.error and r.samples_ms]
    if not good:
        return results[0]
    samples = [x for r in good for x in r.samples_ms]
    return dataclasses.replace(good[0], samples_ms=samples, latency_ms=summarize(samples, seed=seed).to_dict())


def alternating_sessions(device: Any, paths: Sequence[Path], data_file: Optional[Path], config: BenchConfig,
                         count: int, progress: Optional[Callable[[str, int, int], None]] = None
                         ) -> list[list[BenchResult]]:
    """``count`` sessions of ``paths`` on a device (``bench`` with several models): a fresh runner each, its
    rounds interleaved, the order alternating (as given, reversed, as given, ...), the steady-state budget
    shared among them (``session_config``); the accuracy on ``data_file`` in the first session only (the same
    inferences again would only cost time). Returns each session's results in the order of ``paths``;
    ``progress(model, done, total)`` counts over all sessions, so it never goes backwards.
    """
    config = session_config(config, count)
    out = []
    for index in range(count):
        order = list(range(len(paths)))[::1 if index % 2 == 0 else -1]
        device.prepare([paths[i] for i in order], data_file if index == 0 else None)

        def on_progress(model: str, done: int, total: int, index: int = index) -> None:
            if progress is not None:
                progress(model, index * total + done, count * total)

        measured = device.run(config, progress=on_progress)
        by_index = dict(zip(order, measured))
        out.append([by_index[i] for i in range(len(paths))])
    return out


def pool_sessions(variant: Variant, runs: Sequence[tuple[int, Mapping[str, BenchResult]]], key: str,
                  seed: int = 0) -> Measurement:
    """One variant's results of several sessions as one measurement (samples pooled in session order)."""
    mine = [(i, r[variant.id]) for i, r in runs if variant.id in r]
    good = [(i, r) for i, r in mine if not r.error and r.samples_ms]
    if not good:
        return Measurement(result=mine[0][1], variant=variant.id, model=variant.path, session=key)
    return Measurement(result=pool_results([r for _, r in good], seed), variant=variant.id, model=variant.path,
                       session=key,
                       session_rounds=tuple(len(r.samples_ms) for _, r in good),
                       session_index=tuple(i for i, _ in good))


@dataclasses.dataclass(frozen=True)
class BenchPlan:
    """What every device measures: the variants, the comparisons, how, with which data, and whether to resume."""

    variants: tuple[Variant, ...]
    comparisons: tuple[ComparisonSpec, ...]
    bench: BenchConfig
    data_file: Optional[Path]
    resume: bool
    sessions: int = DEFAULT_SESSIONS


def bench_devices(store: ReportStore, targets: Sequence[str], device_options: Mapping[str, Mapping[str, Any]],
                  plan: BenchPlan, progress: Progress) -> None:
    """Every device in a worker thread of its own; each section lands in the report as soon as it is done."""
    workers = [threading.Thread(target=device_worker, name=f"bench {t}", daemon=True,
                                args=(store, t, device_options.get(t, {}), plan, progress)) for t in targets]
    for w in workers:
        w.start()
    for w in workers:
        while w.is_alive():  # short joins keep Ctrl-C working in the main thread
            w.join(0.2)


def device_worker(store: ReportStore, target: str, options: Mapping[str, Any], plan: BenchPlan,
                  progress: Progress) -> None:
    """Measure on one device and record its section (a failure becomes a failed section, never an exception)."""
    stage = f"bench {target}"
    t0 = time.monotonic()
    started = now()

    def on_progress(what: str, done: float, total: float) -> None:
        progress.update(stage, done, total, note=what)

    try:
        with Stage(store, progress, stage, 1):
            store.update(lambda r: r.with_device(dataclasses.replace(r.devices[target], status="running",
                                                                     started=started)))
            section = DeviceBench(target, options, plan.variants, plan.bench, plan.data_file,
                                  store.out_dir / "bench", plan.resume, on_progress, comparisons=plan.comparisons,
                                  sessions=plan.sessions).run()
            section = dataclasses.replace(
                section, comparisons=latency_comparisons(section.results, plan.comparisons, section.controls),
                checks=stability_checks(section, plan.bench.threads))
    except Exception as e:  # noqa: BLE001 - one device's failure never sinks the others
        message = str(e) if isinstance(e, EdgesepError) else describe(e)
        section = DeviceSection.failed(target, one_line(message), latency_comparisons({}, plan.comparisons))
    section = dataclasses.replace(section, started=started, seconds=round(time.monotonic() - t0, 3))

    def record(r: Any) -> Any:
        stage_record = dataclasses.replace(r.stages[stage], status=section.status)
        return r.with_device(section).with_stage(stage, stage_record)

    store.update(record)
