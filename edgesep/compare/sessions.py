"""Device benches of a compare run: sessions per device, one worker thread per device.

On a device, the variants run in one session per runtime (all TFLite files interleaved round by round in
one runner process, then the ONNX files), so a device without ONNX Runtime loses only the ONNX rows and the
two forms of one precision always share a session. Devices run concurrently; a device that fails is
reported in its own section. Each finished session is stored under ``bench/`` so ``--resume`` reuses it
without contacting the device.
"""
from __future__ import annotations

import dataclasses
import threading
import time
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence

from edgesep.compare.analysis import latency_comparisons
from edgesep.compare.records import ComparisonSpec, DeviceSection, Measurement, SessionEntry, Variant
from edgesep.compare.store import Progress, ReportStore, SessionStore, Stage, now, session_key
from edgesep.devices.base import BenchConfig, DeviceError
from edgesep.devices.remote import content_hash
from edgesep.errors import EdgesepError, describe, one_line

ProgressFn = Callable[[str, float, float], None]  # (what, done, total)


def sessions(variants: Sequence[Variant]) -> list[tuple[str, list[Variant]]]:
    """Variants grouped by format (one device session per runtime), in the order the formats first appear."""
    groups: dict[str, list[Variant]] = {}
    for v in variants:
        groups.setdefault(v.format, []).append(v)
    return list(groups.items())


@dataclasses.dataclass(frozen=True)
class _Todo:
    format: str
    group: tuple[Variant, ...]
    key: str


class DeviceBench:
    """Measures the variants on one device, session by session, reusing stored sessions when resuming."""

    def __init__(self, target: str, options: Mapping[str, Any], variants: Sequence[Variant], bench: BenchConfig,
                 data_file: Optional[Path], store_dir: Path, resume: bool, progress: ProgressFn) -> None:
        self.target, self.options, self.variants = target, dict(options), list(variants)
        self.bench = dataclasses.replace(bench, data=str(data_file) if data_file else None)
        self.data_file = data_file
        self.data_sha = content_hash(data_file) if data_file else None
        self.store = SessionStore(store_dir, target)
        self.done = self.store.load() if resume else {}
        self.progress = progress

    def run(self) -> DeviceSection:
        """The device section: status, error, per-variant results and one entry per session."""
        from edgesep.devices import parse_target

        results: dict[str, Measurement] = {}
        entries: list[SessionEntry] = []
        todo = []
        for fmt, group in sessions(self.variants):
            key = session_key(self.target, self.options, self.bench, self.data_sha, [v.sha256 for v in group])
            saved = self.done.get(key)
            if saved is None:
                todo.append(_Todo(fmt, tuple(group), key))
                continue
            for v in group:
                results[v.id] = Measurement.from_dict(saved["results"][v.id], resumed=True)
            entries.append(SessionEntry(fmt, key, resumed=True, finished=saved.get("finished")))
        if todo:
            device = parse_target(self.target, **self.options)
            try:
                self._measure(device, todo, results, entries)
            finally:
                cleanup_error = self._cleanup(device)
            if cleanup_error:
                entries.append(SessionEntry(None, None, error=cleanup_error))
        return self._section(results, entries)

    def _measure(self, device: Any, todo: Sequence[_Todo], results: dict[str, Measurement],
                 entries: list[SessionEntry]) -> None:
        for n, item in enumerate(todo):
            try:
                device.prepare([Path(v.file) for v in item.group], self.data_file)
            except DeviceError as e:  # staging failed: the device is unusable for the remaining sessions too
                entries.append(SessionEntry(item.format, item.key, error=str(e)))
                entries += [SessionEntry(rest.format, None, error=f"skipped: {e}") for rest in todo[n + 1:]]
                return
            try:
                measured = device.run(self.bench, progress=self._model_progress(item.group))
            except DeviceError as e:  # e.g. no ONNX Runtime on the device: only this session is lost
                entries.append(SessionEntry(item.format, item.key, error=str(e)))
                continue
            for v, r in zip(item.group, measured):
                results[v.id] = Measurement(result=r, variant=v.id, model=v.path, session=item.key)
            finished = now()
            entries.append(SessionEntry(item.format, item.key, finished=finished))
            self.done[item.key] = SessionStore.entry(finished, {v.id: results[v.id] for v in item.group})
            self.store.save(self.done)

    def _model_progress(self, group: Sequence[Variant]) -> Callable[[str, int, int], None]:
        state: dict[str, tuple[int, int]] = {}

        def on_progress(model: str, done: int, total: int) -> None:
            state[model] = (done, max(total, done, 1))
            known = sum(t for _, t in state.values()) + (len(group) - len(state)) * self.bench.runs
            self.progress(group[0].format, sum(d for d, _ in state.values()), known)

        return on_progress

    def _cleanup(self, device: Any) -> Optional[str]:
        try:
            device.cleanup()
        except DeviceError as e:
            return f"cleanup: {e}"
        return None

    def _section(self, results: Mapping[str, Measurement], entries: Sequence[SessionEntry]) -> DeviceSection:
        errors = [e.error for e in entries if e.error]
        measured = [m for m in results.values() if not m.result.error]
        status = "done" if not errors else ("partial" if measured else "failed")
        host = next((m.result.host for m in measured if m.result.host), {})
        return DeviceSection(target=self.target, status=status, error=errors[0] if errors else None,
                             resumed=bool(entries) and all(e.resumed for e in entries if e.session),
                             sessions=tuple(entries), host=host, results=dict(results))


@dataclasses.dataclass(frozen=True)
class BenchPlan:
    """What every device measures: the variants, the comparisons, how, with which data, and whether to resume."""

    variants: tuple[Variant, ...]
    comparisons: tuple[ComparisonSpec, ...]
    bench: BenchConfig
    data_file: Optional[Path]
    resume: bool


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
                                  store.out_dir / "bench", plan.resume, on_progress).run()
            section = dataclasses.replace(section, comparisons=latency_comparisons(section.results,
                                                                                   plan.comparisons))
    except Exception as e:  # noqa: BLE001 - one device's failure never sinks the others
        message = str(e) if isinstance(e, EdgesepError) else describe(e)
        section = DeviceSection.failed(target, one_line(message), latency_comparisons({}, plan.comparisons))
    section = dataclasses.replace(section, started=started, seconds=round(time.monotonic() - t0, 3))

    def record(r: Any) -> Any:
        stage_record = dataclasses.replace(r.stages[stage], status=section.status)
        return r.with_device(section).with_stage(stage, stage_record)

    store.update(record)
