"""Per-op int8 sensitivity: how much keeping each op float raises the output SQNR (and agreement).

For each candidate op (every op, or in quick mode the ``QUICK_CANDIDATES`` ops whose own int8 output the
debugger's per-layer statistics rate worst, plus the ops that write the model's output), the model is quantized once more with that op kept float
(``edgesep.converters.mixed``: the op and the ops reading its output) and run on held-out images against
the float model. One calibration serves every candidate; the time per candidate is measured on the first
one and an estimate is given before the rest start.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import numpy as np

from edgesep.converters.mixed import QUICK_CANDIDATES, Score, Selective, score, timed


@dataclasses.dataclass(frozen=True)
class SensitivityRow:
    """One op kept float: what runs float with it, its MAC share and the model's output against float."""

    name: str
    float_ops: tuple[str, ...]
    mac_share: float
    layer_sqnr_db: Optional[float]
    score: Score
    sqnr_gain_db: Optional[float]
    agreement_gain: float

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.name, "float_ops": list(self.float_ops), "mac_share": self.mac_share,
                "layer_sqnr_db": self.layer_sqnr_db, **self.score.to_dict(), "sqnr_gain_db": self.sqnr_gain_db,
                "agreement_gain": self.agreement_gain}


@dataclasses.dataclass(frozen=True)
class SensitivityReport:
    """Ops ranked by how much keeping each float raises the output SQNR (then agreement), most first."""

    rows: tuple[SensitivityRow, ...]
    plain: Score
    samples: int
    images: str
    quick: bool
    ops: int
    seconds: float

    def to_dict(self) -> dict[str, Any]:
        return {"ranking": [r.to_dict() for r in self.rows], "plain_int8": self.plain.to_dict(),
                "samples": self.samples, "images": self.images, "quick": self.quick, "ops": self.ops,
                "measured": len(self.rows), "seconds": round(self.seconds, 1),
                "criterion": "output SQNR gain when the op (and the ops reading its output) stay float"}


def candidates(selective: Selective, quick: bool) -> tuple[list[str], dict[str, float]]:
    """(names to measure, per-layer SQNR by name): all ops, or quick mode's worst-rated few."""
    layer = selective.layer_sqnr_db()
    names = selective.labels()
    if quick:
        worst = sorted(names, key=lambda n: layer.get(n, np.inf))[:QUICK_CANDIDATES]
        names = list(dict.fromkeys(worst + _output_ops(selective)))
    return names, layer


def _output_ops(selective: Selective) -> list[str]:
    """The ops writing the model's output and those only they read: the output's own requantization is a
    loss the per-layer statistics do not rank (each op there looks accurate against its own range)."""
    sinks = {op.index for op in selective.ops if not op.readers}
    near = [op for op in selective.ops if op.index in sinks or (op.readers and set(op.readers) <= sinks)]
    return list(dict.fromkeys(op.label for op in near))


def _gain(new: Score, plain: Score) -> Optional[float]:
    if new.sqnr_db is None or plain.sqnr_db is None:
        return None if new.sqnr_db == plain.sqnr_db else (np.inf if new.sqnr_db is None else -np.inf)
    return new.sqnr_db - plain.sqnr_db


def rank(selective: Selective, x: np.ndarray, reference, *, quick: bool = True, images: str = "",
         on_estimate: Optional[Callable[[int, float], None]] = None,
         on_step: Optional[Callable[[str], None]] = None) -> SensitivityReport:
    """Rank ``selective``'s ops by output SQNR gain on ``x`` (float outputs ``reference``) when kept float.

    ``on_estimate(count, seconds)`` is called once before the candidates are measured, with the time of
    one quantization and run (the plain int8 model's) times the number of candidates.
    """
    import time

    start = time.perf_counter()
    names, layer = candidates(selective, quick)
    plain, seconds = timed(lambda: score(selective, (), x, reference))  # one quantization + one run
    if on_estimate:
        on_estimate(len(names), seconds * len(names))
    rows = []
    for i, name in enumerate(names):
        if on_step:
            on_step(f"sensitivity {i + 1}/{len(names)}: {name}")
        new = score(selective, (name,), x, reference)
        gain = _gain(new, plain)
        rows.append(SensitivityRow(name, tuple(dict.fromkeys(op.label for op in selective.expand((name,)))),
                                   selective.mac_share((name,)), layer.get(name), new,
                                   None if gain is None else float(min(gain, 999.0)),
                                   new.agreement - plain.agreement))
    rows.sort(key=lambda r: (-(r.sqnr_gain_db if r.sqnr_gain_db is not None else 0.0), -r.agreement_gain))
    return SensitivityReport(tuple(rows), plain, int(len(x)), images, quick, len(selective.labels()),
                             time.perf_counter() - start)


def model_sensitivity(model, dataset, *, samples: int = 100, quick: bool = False, calib_samples: int = 200,
                      seed: int = 0, on_estimate: Optional[Callable[[int, float], None]] = None,
                      on_step: Optional[Callable[[str], None]] = None) -> SensitivityReport:
    """``edgesep inspect MODEL.keras --sensitivity``: the BN-folded Keras ``model`` calibrated as export calibrates
    it, ranked on the first ``samples`` test images of ``dataset`` (held out from calibration) against ``model``."""
    from edgesep.converters.fold import fold_batchnorm
    from edgesep.converters.outputs import keras_outputs

    x = dataset.x_test[:samples]
    selective = Selective(fold_batchnorm(model), dataset.calibration(calib_samples, seed))
    return rank(selective, x, keras_outputs(model, x), quick=quick, images="test images (not calibrated on)",
                on_estimate=on_estimate, on_step=on_step)
