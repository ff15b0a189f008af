"""The Device protocol and the bench config/result records shared by every device.

A device is ``prepare()`` (copy models, the runner and data once), then ``run()`` (one ``BenchResult`` per
model, in the order given), then ``cleanup()``. Never imports TensorFlow or anything of edgesep outside
``edgesep.devices``.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional, Protocol, Sequence

DELEGATES = ("xnnpack", "none", "edgetpu", "gpu", "nnapi")  # or a path to an external delegate library


from edgesep.errors import DeviceError  # noqa: E402  (re-exported: edgesep.devices.base.DeviceError)


@dataclasses.dataclass(frozen=True)
class BenchConfig:
    """How to measure. Defaults follow TFLite's benchmark_model (50 runs, >= 1 s, <= 150 s, 0.5 s warm-up).

    Attributes:
        threads: interpreter threads; None lets the runtime choose.
        runs: minimum steady-state runs per model.
        warmup: minimum warm-up runs per model.
        warmup_secs: minimum warm-up time per model, seconds.
        min_secs: minimum steady-state time per model, seconds.
        max_secs: maximum steady-state time per model, seconds (stops early even if ``runs`` is not reached).
        delegate: ``xnnpack`` (default), ``none``, ``edgetpu``, ``gpu``, ``nnapi`` or a delegate library path.
        delegate_options: extra key/value options for the delegate (e.g. ``{"device": "usb:0"}`` for edgetpu).
        data: a local .npz with ``x`` and ``y`` for on-device accuracy, or None.
        seed: seed of the random input used for latency runs.
    """

    threads: Optional[int] = None
    runs: int = 50
    warmup: int = 1
    warmup_secs: float = 0.5
    min_secs: float = 1.0
    max_secs: float = 150.0
    delegate: str = "xnnpack"
    delegate_options: tuple[tuple[str, str], ...] = ()
    data: Optional[str] = None
    seed: int = 0

    def __post_init__(self):
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1, got {self.threads}")
        if self.runs < 1:
            raise ValueError(f"runs must be >= 1, got {self.runs}")
        if self.warmup < 0 or self.warmup_secs < 0:
            raise ValueError("warm-up count and seconds must be >= 0")
        if self.min_secs < 0 or self.max_secs <= 0 or self.min_secs > self.max_secs:
            raise ValueError(f"need 0 <= min_secs <= max_secs and max_secs > 0, got {self.min_secs}, {self.max_secs}")
        if self.delegate not in DELEGATES and not ("/" in self.delegate or self.delegate.endswith(".so")):
            raise ValueError(f"unknown delegate {self.delegate!r}; use one of {', '.join(DELEGATES)} "
                             "or a path to a delegate library")
        object.__setattr__(self, "delegate_options", tuple(sorted(dict(self.delegate_options).items())))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["delegate_options"] = dict(self.delegate_options)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "BenchConfig":
        d = dict(d)
        d["delegate_options"] = tuple(dict(d.get("delegate_options") or {}).items())
        return cls(**d)


@dataclasses.dataclass
class BenchResult:
    """One model measured on one device; ``to_dict`` gives the bench JSON record of DESIGN.md.

    ``error`` is set (and the figures left empty) when this model failed; other models' results stand.
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
