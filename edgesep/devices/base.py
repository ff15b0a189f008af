"""The Device protocol and the bench config/result records shared by every device.

A device is ``prepare()`` (copy models, the runner and data once), then ``run()`` (one ``BenchResult`` per
model, in the order given), then ``cleanup()``. ``BenchConfig`` is ``runner.RunConfig`` (the one definition
of how to measure, shipped to devices as argv). Never imports TensorFlow or anything of edgesep outside
``edgesep.devices`` and ``edgesep.errors``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

from edgesep.devices import runner
from edgesep.errors import DeviceError  # noqa: F401  (re-exported: edgesep.devices.base.DeviceError)

DELEGATES = runner.DELEGATE_NAMES  # or a path to an external delegate library

# How to measure: the runner's own RunConfig (one class, one set of defaults, one set of checks), so the host's
# configuration and what the runner receives (``RunConfig.to_argv()``) cannot drift apart. ``ValueError`` on a
# value out of range, not finite, or an unknown delegate.
BenchConfig = runner.RunConfig


@dataclasses.dataclass
class BenchResult:
    """One model measured on one device; ``to_dict`` gives the bench JSON record of DESIGN.md.

    ``error`` is set (and the figures left empty) when this model failed; other models' results stand.
    ``memory_mb`` holds resident memory in MB: ``baseline`` (before loading), ``loaded`` (interpreter built,
    tensors allocated), ``peak`` (during the timed runs), ``model`` (loaded - baseline), with ``source``,
    ``peak_scope``, ``models_in_process`` and a ``reason`` where a figure is null (see runner.py).
    ``extra`` holds device-specific findings (benchmark_model memory lines, op profile, Edge TPU report).
    """

    model: str
    device: str
    runtime: Optional[str] = None
    threads: Optional[int] = None
    delegate: Optional[str] = None
    fully_delegated: Optional[bool] = None
    init_ms: Optional[float] = None
    first_ms: Optional[float] = None
    warmup_ms: list[float] = dataclasses.field(default_factory=list)
    latency_ms: Optional[dict[str, Any]] = None
    samples_ms: Optional[list[float]] = None
    accuracy: Optional[float] = None
    predictions: Optional[list[int]] = None
    host: dict[str, Any] = dataclasses.field(default_factory=dict)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    error: Optional[str] = None
    memory_mb: Optional[dict[str, Any]] = None
    ops: Optional[list[dict[str, Any]]] = None  # with --profile: per-op records (edgesep.devices.profile)
    profile: Optional[dict[str, Any]] = None  # with --profile: how the ops were timed, sum/whole ratio, cost

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchResult":
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


ProgressFn = Callable[[str, int, int], None]  # (model, done, total)


class Device(Protocol):
    """What every device implementation provides (see ``edgesep.devices.local`` for the reference one)."""

    target: str

    def prepare(self, models: Sequence[Path], data: Optional[Path] = None) -> None:
        """Copy the models, the runner and the data to the device once (keyed by content hash)."""

    def run(self, config: BenchConfig, progress: Optional[ProgressFn] = None) -> list[BenchResult]:
        """Measure every prepared model, interleaved round by round; one result per model, in order."""

    def cleanup(self) -> None:
        """Remove everything ``prepare`` left on the device; safe to call twice or after a failure."""
