"""The two front doors of ``edgesep compare``: the built-in experiment and given model files."""
from __future__ import annotations

import contextlib
import dataclasses
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from edgesep.compare.analysis import accuracy_summary
from edgesep.compare.config import DEFAULT_SESSIONS, CompareConfig
from edgesep.compare.pipeline import (builtin_comparisons, builtin_variants, model_comparisons, model_variants,
                                      seed_records, train_and_export)
from edgesep.compare.records import DatasetInfo, Report
from edgesep.compare.sessions import BenchPlan, bench_devices, session_config
from edgesep.compare.store import Progress, ReportStore, Stage, bench_config_dict, new_report, now
from edgesep.devices.base import BenchConfig
from edgesep.errors import UsageError, describe, one_line

DeviceOptions = Mapping[str, Mapping[str, Any]]


def run_builtin(config: CompareConfig, targets: Sequence[str], bench: BenchConfig, out_dir: Any, *,
                device_options: Optional[DeviceOptions] = None, resume: bool = False,
                progress: Optional[Progress] = None, sessions: int = DEFAULT_SESSIONS) -> dict[str, Any]:
    """Train, export and measure both forms of the built-in network; returns the report document.

    Args:
        config: the network and training shared by both forms.
        targets: device targets (``local``, ``ssh://...``, ``adb``...), measured concurrently.
        bench: how to measure (its ``data`` is set to the test split for on-device accuracy).
        out_dir: the report folder (artifacts, bench sessions, report.json, report.md, PNG plots).
        device_options: per target, options for ``parse_target`` (``ssh_config``, ``remote_python``).
        resume: reuse exports and device sessions that an earlier run in ``out_dir`` finished.
        progress: stage callbacks.
        sessions: independent sessions (runner processes) per device and runtime.

    Raises:
        DataError, ConversionError: the data or an export failed (nothing is measured then).
    """
    progress = progress or Progress()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    _check_sessions(sessions)
    store = ReportStore(out, new_report("builtin", targets, bench, config=config.to_dict(), sessions=sessions,
                                        session_config=bench_config_dict(session_config(bench, sessions))))
    with _recorded(store):
        plan = dataclasses.replace(_builtin(config, bench, out, store, resume, progress), sessions=sessions)
        return _finish(store, targets, device_options or {}, plan, progress)


def _check_sessions(sessions: int) -> None:
    if not isinstance(sessions, int) or sessions < 1:
        raise UsageError(f"sessions must be a whole number >= 1, got {sessions!r}")


def _builtin(config: CompareConfig, bench: BenchConfig, out: Path, store: ReportStore, resume: bool,
             progress: Progress) -> BenchPlan:
    """Data, training and export; records variants, seeds and accuracy; returns what the devices measure."""
    from edgesep.data import load_dataset

    with Stage(store, progress, "data", 1):
        dataset = load_dataset(config.data, (config.input_size, config.input_size, 3))
        data_file = out / "data" / "test.npz"
        data_file.parent.mkdir(exist_ok=True)
        dataset.save_npz(data_file, split="test")
    info = DatasetInfo(name=dataset.name, train_samples=len(dataset.x_train), test_samples=len(dataset.x_test),
                       classes=dataset.num_classes)
    store.update(lambda r: r.replace(dataset=info))
    seeds = train_and_export(config, dataset, out, resume, store, progress)
    variants = tuple(builtin_variants(seeds[0], config.kinds, out))
    comparisons = tuple(builtin_comparisons(config.kinds))
    store.update(lambda r: r.replace(variants=variants, comparisons=comparisons,
                                     seeds=seed_records(seeds, out, config.int8),
                                     accuracy=accuracy_summary(seeds, config.int8)))
    return BenchPlan(variants, comparisons, bench, data_file, resume)


@contextlib.contextmanager
def _recorded(store: ReportStore) -> Iterator[None]:
    """Mark the report ``interrupted`` or ``failed`` (with the one-line error) when the run stops early."""
    try:
        yield
    except KeyboardInterrupt:
        store.update(_interrupted)
        raise
    except Exception as e:
        store.update(lambda r: r.replace(status="failed", error=one_line(str(e)) if str(e) else describe(e)))
        raise


def _interrupted(report: Report) -> Report:
    def stop(part: Any) -> Any:
        return dataclasses.replace(part, status="interrupted") if part.status in ("running", "pending") else part

    return report.replace(status="interrupted", stages={k: stop(s) for k, s in report.stages.items()},
                          devices={k: stop(s) for k, s in report.devices.items()})


def run_models(paths: Sequence[Path], targets: Sequence[str], bench: BenchConfig, out_dir: Any, *,
               data_file: Optional[Path] = None, device_options: Optional[DeviceOptions] = None,
               resume: bool = False, progress: Optional[Progress] = None,
               sessions: int = DEFAULT_SESSIONS) -> dict[str, Any]:
    """Measure given .tflite/.onnx files on every device and compare each with the first; returns the report.

    ``data_file`` is a runner .npz (``y`` and ``x`` or ``x_HxWxC``) for on-device accuracy, or None;
    ``sessions`` as for ``run_builtin``.
    """
    from edgesep.devices.harness import check_model_file

    if len(paths) < 2:
        raise UsageError("compare needs two or more model files (or none, for the built-in experiment)")
    _check_sessions(sessions)
    for path in paths:
        check_model_file(Path(path))
    progress = progress or Progress()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    variants = tuple(model_variants(paths))
    comparisons = tuple(model_comparisons(variants))
    store = ReportStore(out, new_report("models", targets, bench, models=tuple(str(p) for p in paths),
                                        sessions=sessions,
                                        session_config=bench_config_dict(session_config(bench, sessions))))
    store.update(lambda r: r.replace(variants=variants, comparisons=comparisons))
    with _recorded(store):
        plan = BenchPlan(variants, comparisons, bench, data_file, resume, sessions)
        return _finish(store, targets, device_options or {}, plan, progress)


def _finish(store: ReportStore, targets: Sequence[str], device_options: DeviceOptions, plan: BenchPlan,
            progress: Progress) -> dict[str, Any]:
    """Measure on every device, draw the plots, mark the report complete."""
    from edgesep.report import compare_plots

    bench_devices(store, targets, device_options, plan, progress)
    with Stage(store, progress, "plots", 1):
        plots = compare_plots(store.document(), store.out_dir)
    failed = [t for t in targets if store.report.devices[t].status == "failed"]
    store.update(lambda r: r.replace(plots=tuple(plots), status="done" if not failed else "done with failures",
                                     finished=now()))
    return store.document()
