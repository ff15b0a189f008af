"""The typed records of a compare run; ``Report.to_dict()`` is report.json.

Every record is a frozen dataclass. The report changes by replacement (``Report.with_device`` and friends
return a new report), so a worker thread never sees half an update. Optional parts that a run has not
reached yet (``dataset``, ``accuracy``, ``error``, ``finished``) are left out of the JSON, as before.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional

from edgesep.devices.base import BenchResult


def _drop_none(d: dict[str, Any], *keys: str) -> dict[str, Any]:
    """``d`` without those of ``keys`` whose value is None."""
    return {k: v for k, v in d.items() if not (k in keys and v is None)}


@dataclasses.dataclass(frozen=True)
class Variant:
    """One artifact that is measured: a (form, kind) of the built-in network, or a given model file.

    ``file`` is its absolute path, ``path`` the one shown (relative to the report folder for built-in runs).
    """

    id: str
    name: str
    label: str
    format: str
    precision: str
    file: str
    path: str
    bytes: int
    sha256: str
    ops: Mapping[str, int]
    params: Optional[int]
    macs: Optional[int]
    form: Optional[str] = None
    kind: Optional[str] = None
    keras_accuracy: Optional[float] = None
    accuracy: Optional[float] = None
    max_abs_error_vs_keras: Optional[float] = None

    @property
    def accuracy_drop(self) -> Optional[float]:
        """Keras accuracy minus the artifact's (None when either is unknown)."""
        if self.keras_accuracy is None or self.accuracy is None:
            return None
        return self.keras_accuracy - self.accuracy

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["ops"] = dict(self.ops)
        d["accuracy_drop"] = self.accuracy_drop
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Variant":
        """A variant from its report.json record (extra keys are ignored)."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclasses.dataclass(frozen=True)
class ComparisonSpec:
    """What is compared: the latency of variant ``a`` over variant ``b`` (ratio < 1: ``a`` is faster)."""

    label: str
    a: str
    b: str
    a_name: str
    b_name: str
    kind: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class LatencyComparison:
    """A comparison measured on one device: the ratio of median latencies, its interval and the verdict.

    ``details`` holds what the statistics add (sessions, blocks, control spread, warnings); it grows freely.
    """

    spec: ComparisonSpec
    verdict: str
    ratio: Optional[float] = None
    lo: Optional[float] = None
    hi: Optional[float] = None
    paired: Optional[bool] = None
    pairs: Optional[int] = None
    rounds: Optional[int] = None
    confidence: Optional[float] = None
    details: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {**self.spec.to_dict(), "ratio": self.ratio, "lo": self.lo, "hi": self.hi, "paired": self.paired,
                "pairs": self.pairs, "rounds": self.rounds, "confidence": self.confidence, **dict(self.details),
                "verdict": self.verdict}


@dataclasses.dataclass(frozen=True)
class Measurement:
    """One variant measured on one device: the device's ``BenchResult`` and where it belongs.

    With several sessions the result pools them: ``samples_ms`` holds every session's samples in order,
    ``session_rounds`` how many came from each and ``session_index`` which session they were (``latency_ms``
    summarizes the pool). ``session`` is the key of the session group (one per runtime format).
    """

    result: BenchResult
    variant: str
    model: str
    session: Optional[str]
    resumed: bool = False
    session_rounds: tuple[int, ...] = ()
    session_index: tuple[int, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        d = self.result.to_dict()
        d.update(model=self.model, variant=self.variant, session=self.session, resumed=self.resumed,
                 session_rounds=list(self.session_rounds), session_index=list(self.session_index))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], resumed: bool = False) -> "Measurement":
        """A stored record (``to_dict`` output), read back for ``--resume``."""
        return cls(result=BenchResult.from_dict(dict(d)), variant=d["variant"], model=d["model"],
                   session=d.get("session"), resumed=resumed, session_rounds=tuple(d.get("session_rounds") or ()),
                   session_index=tuple(d.get("session_index") or ()))

    @property
    def samples(self) -> list[float]:
        """The steady-state latency samples, ms, of every session in order (empty when the variant failed)."""
        return list(self.result.samples_ms or []) if not self.result.error else []

    def session_samples(self) -> dict[int, list[float]]:
        """The samples by session index (``session_rounds``, ``session_index``); one session 0 when unknown."""
        samples = self.samples
        if not samples:
            return {}
        if sum(self.session_rounds) != len(samples) or len(self.session_index) != len(self.session_rounds):
            return {0: samples}
        out, start = {}, 0
        for index, n in zip(self.session_index, self.session_rounds):
            out[index] = samples[start:start + n]
            start += n
        return {k: v for k, v in out.items() if v}


@dataclasses.dataclass(frozen=True)
class SessionEntry:
    """One device session (one runner process for the variants of one format)."""

    format: Optional[str]
    session: Optional[str]
    resumed: bool = False
    error: Optional[str] = None
    finished: Optional[str] = None
    index: Optional[int] = None
    order: tuple[str, ...] = ()
    host: Mapping[str, Any] = dataclasses.field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(order=list(self.order), host=dict(self.host))
        return d

    @classmethod
    def from_dict(cls, d: Mapping[str, Any], resumed: bool = False) -> "SessionEntry":
        """A stored entry, read back for ``--resume``."""
        names = {f.name for f in dataclasses.fields(cls)}
        fields = {k: v for k, v in d.items() if k in names}
        fields.update(order=tuple(d.get("order") or ()), resumed=resumed)
        return cls(**fields)


@dataclasses.dataclass(frozen=True)
class DeviceSection:
    """Everything one device contributed: status, sessions, host facts, results and comparisons.

    ``controls`` holds, per runtime format, the A/A control's measurement (the group's baseline artifact
    loaded a second time); ``checks`` the stability warnings (load, CPU time, temperature, speed modes).
    """

    target: str
    status: str = "pending"
    error: Optional[str] = None
    resumed: bool = False
    sessions: tuple[SessionEntry, ...] = ()
    host: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    results: Mapping[str, Measurement] = dataclasses.field(default_factory=dict)
    comparisons: tuple[LatencyComparison, ...] = ()
    started: Optional[str] = None
    seconds: Optional[float] = None
    checks: tuple[Mapping[str, Any], ...] = ()
    controls: Mapping[str, Measurement] = dataclasses.field(default_factory=dict)

    @classmethod
    def failed(cls, target: str, error: str, comparisons: tuple[LatencyComparison, ...] = ()) -> "DeviceSection":
        """The section of a device that failed as a whole (nothing measured)."""
        return cls(target=target, status="failed", error=error, comparisons=comparisons)

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"target": self.target, "status": self.status, "error": self.error,
                           "resumed": self.resumed, "sessions": [s.to_dict() for s in self.sessions],
                           "host": dict(self.host), "results": {k: m.to_dict() for k, m in self.results.items()},
                           "comparisons": [c.to_dict() for c in self.comparisons],
                           "checks": [dict(c) for c in self.checks],
                           "controls": {k: m.to_dict() for k, m in self.controls.items()},
                           "started": self.started, "seconds": self.seconds}, "started", "seconds")


@dataclasses.dataclass(frozen=True)
class Spread:
    """Mean, std (n-1; 0 for one value), min and max of a few values (e.g. one per seed)."""

    values: tuple[float, ...]
    n: int
    mean: float
    std: float
    min: float
    max: float

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["values"] = list(self.values)
        return d


@dataclasses.dataclass(frozen=True)
class FormAccuracy:
    """Keras accuracy of one form over the seeds and, when int8 was exported, int8 accuracy and drop."""

    keras_accuracy: Spread
    int8_accuracy: Optional[Spread] = None
    int8_drop: Optional[Spread] = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v.to_dict() for k, v in (("keras_accuracy", self.keras_accuracy),
                                            ("int8_accuracy", self.int8_accuracy), ("int8_drop", self.int8_drop))
                if v is not None}


@dataclasses.dataclass(frozen=True)
class AccuracySummary:
    """Accuracy per form over the seeds and the verdict on the int8 drops."""

    seeds: int
    forms: Mapping[str, FormAccuracy]
    verdict: str
    difference: Optional[float] = None
    spread: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none({"seeds": self.seeds, "forms": {k: f.to_dict() for k, f in self.forms.items()},
                           "difference": self.difference, "spread": self.spread, "verdict": self.verdict},
                          "difference", "spread")


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
    """The data both forms were trained and tested on."""

    name: str
    train_samples: int
    test_samples: int
    classes: int

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SeedForm:
    """One training of one form: its seed, training info, export folder and accuracies."""

    seed: int
    train: Mapping[str, Any]
    export: Optional[str]
    keras_accuracy: Optional[float]
    int8_accuracy: Optional[float]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"] = dict(self.train)
        return d


@dataclasses.dataclass(frozen=True)
class StageRecord:
    """One stage of the run (data, train, export, bench DEVICE, plots)."""

    status: str
    started: str
    seconds: Optional[float] = None

    def to_dict(self) -> dict[str, Any]:
        return _drop_none(dataclasses.asdict(self), "seconds")


@dataclasses.dataclass(frozen=True)
class Report:
    """The whole compare report; ``to_dict()`` is report.json (``report/`` renders it)."""

    kind: str
    edgesep_version: str
    report_version: int
    created: str
    bench_config: Mapping[str, Any]
    devices: Mapping[str, DeviceSection]
    config: Optional[Mapping[str, Any]] = None
    models: Optional[tuple[str, ...]] = None
    sessions: Optional[int] = None
    session_config: Optional[Mapping[str, Any]] = None
    status: str = "running"
    stages: Mapping[str, StageRecord] = dataclasses.field(default_factory=dict)
    variants: tuple[Variant, ...] = ()
    comparisons: tuple[ComparisonSpec, ...] = ()
    dataset: Optional[DatasetInfo] = None
    seeds: Optional[tuple[Mapping[str, SeedForm], ...]] = None
    accuracy: Optional[AccuracySummary] = None
    plots: tuple[Mapping[str, Any], ...] = ()
    error: Optional[str] = None
    finished: Optional[str] = None

    def replace(self, **changes: Any) -> "Report":
        """A copy with ``changes``."""
        return dataclasses.replace(self, **changes)

    def with_stage(self, name: str, stage: StageRecord) -> "Report":
        """A copy with stage ``name`` set to ``stage``."""
        return self.replace(stages={**self.stages, name: stage})

    def with_device(self, section: DeviceSection) -> "Report":
        """A copy with ``section`` as its device's section."""
        return self.replace(devices={**self.devices, section.target: section})

    def to_dict(self) -> dict[str, Any]:
        d = {"edgesep_version": self.edgesep_version, "report_version": self.report_version, "kind": self.kind,
             "created": self.created, "status": self.status, "bench_config": dict(self.bench_config),
             "sessions": self.sessions,
             "session_config": None if self.session_config is None else dict(self.session_config),
             "config": None if self.config is None else dict(self.config),
             "models": None if self.models is None else list(self.models),
             "stages": {k: s.to_dict() for k, s in self.stages.items()},
             "variants": [v.to_dict() for v in self.variants],
             "comparisons": [c.to_dict() for c in self.comparisons],
             "devices": {k: s.to_dict() for k, s in self.devices.items()},
             "plots": [dict(p) for p in self.plots],
             "dataset": None if self.dataset is None else self.dataset.to_dict(),
             "seeds": None if self.seeds is None else [{f: s.to_dict() for f, s in seed.items()}
                                                       for seed in self.seeds],
             "accuracy": None if self.accuracy is None else self.accuracy.to_dict(),
             "error": self.error, "finished": self.finished}
        return _drop_none(d, "config", "models", "sessions", "session_config", "dataset", "seeds", "accuracy",
                          "error", "finished")
