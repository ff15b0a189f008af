"""The accuracy guard of ``export --equalize``: equalization may not cost int8 accuracy.

Cross-layer equalization evens out per-tensor weight ranges and raises the int8 model's SQNR, but on a network
whose per-tensor int8 model already matches its float model it changes which borderline images the rounding
falls on, and can lose a few of them (docs/quantization.md). The guard compares, on the export's evaluation
images, the int8 model of the equalized network with the int8 model of the same export without equalization
(same calibration images, same per-channel / per-tensor setting):

1. every link equalized: kept when its top-1 accuracy is at least the unequalized one;
2. else links are left out (``equalize(..., exclude=...)``) greedily: each round tries leaving out one more
   link, each remaining link in turn (in order of how little it needed equalizing: the producer's
   per-channel range ratio before CLE, smallest first). Of the trials that reach the unequalized accuracy
   the one with the highest output SQNR against the float model wins; if none does, the most accurate one
   is kept and the next round starts from it;
3. after ``max_trials`` int8 conversions without success, no link is kept: the int8 model is the unequalized
   one, and export.json says so.

What the guard chooses on: given ``choose_on`` images (``export`` passes training images it did not calibrate
with, :func:`held_out`), no labels are needed: a candidate's score is the top-1 agreement of its int8 model with
the float model there, and the evaluation images (the test split) only report accuracy, never decide. So the
accuracy ``export`` reports is of a split the guard never chose on. Without ``choose_on`` the score is top-1
accuracy on the labelled evaluation images themselves (the guard's first form; its figure is then the better
of a few candidates on the very data it reports).
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

MAX_TRIALS = 8  # int8 conversions beyond the two the guard always makes
HOLD_OUT = 200  # training images beyond the calibration ones the guard chooses on
MIN_HOLD_OUT = 32  # fewer than this: the guard chooses on the calibration images themselves


def held_out(x_train: np.ndarray, calibration_samples: int, seed: int, n: int = HOLD_OUT) -> tuple[np.ndarray, str]:
    """(images, what they are): training images ``Dataset.calibration(calibration_samples, seed)`` does not draw
    (the next ``n`` of its permutation), or the calibration images when fewer than ``MIN_HOLD_OUT`` are left."""
    order = np.random.default_rng(seed).permutation(len(x_train))
    rest = np.sort(order[calibration_samples:calibration_samples + n])
    if len(rest) >= MIN_HOLD_OUT:
        return x_train[rest], "training images held out from calibration"
    return x_train[np.sort(order[:calibration_samples])], "the calibration images (too few training images beyond)"


def guarded_equalize(model, folded, calibration: np.ndarray, x: np.ndarray, y: np.ndarray, *, relu6: str,
                     per_channel: bool, io_dtype: str, max_trials: int = MAX_TRIALS,
                     choose_on: Optional[np.ndarray] = None, choose_on_what: str = "held-out images",
                     say: Optional[Callable[[str], None]] = None) -> tuple[Any, dict[str, Any]]:
    """The equalized network to quantize and the export.json ``equalize`` section (with a ``guard`` entry).

    Args:
        model: the Keras model being exported (with BatchNorm; not modified).
        folded: its BN-folded form (the unequalized network the guard compares with).
        calibration: int8 calibration images; also the bias absorption amounts.
        x, y: evaluation images and labels: every candidate's int8 top-1 accuracy is reported on them.
        relu6, per_channel, io_dtype: as in ``ExportConfig``.
        max_trials: most int8 conversions spent on leaving links out.
        choose_on: unlabelled images to choose on (agreement with the float model's top-1); None: choose on
            the accuracy on ``x, y``.
        choose_on_what: what ``choose_on`` is, for the report.
        say: progress callback.

    Returns:
        (Keras model to quantize, equalize section). The model is ``folded`` itself when no link was kept.
    """
    from edgesep.converters.equalize import equalize_with_report
    from edgesep.converters.verify import predict_keras

    say = say or (lambda stage: None)
    with tempfile.TemporaryDirectory(prefix="edgesep-guard-") as work:
        score = _Int8Score(Path(work), calibration, x, y, per_channel, io_dtype)
        score.choose_on(model, choose_on, predict_keras)
        baseline = _Candidate(folded, None, (), *score(folded))
        equalized, report = equalize_with_report(model, relu6=relu6, calibration_data=calibration, eval_data=(x, y))
        every = _Candidate(equalized, report, (), *score(equalized))
        order = [p.producer for p in sorted(report.pairs, key=lambda p: p.producer_ratio[0])]

        def trial(excluded: tuple[str, ...], number: int) -> _Candidate:
            say(f"equalize guard: trial {number}, leaving out {', '.join(excluded)}")
            candidate, candidate_report = equalize_with_report(model, relu6=relu6, calibration_data=calibration,
                                                               exclude=excluded)
            return _Candidate(candidate, candidate_report, excluded, *score(candidate))

        best, trials = _search(baseline, every, order, trial, max_trials)
    doc_model, doc = _outcome(baseline, every, best, trials, order, x, y)
    doc["guard"]["chosen_on"] = score.criterion(choose_on_what)
    return doc_model, doc


def _search(baseline: "_Candidate", every: "_Candidate", order: list[str],
            trial: Callable[[tuple[str, ...], int], "_Candidate"],
            max_trials: int) -> tuple["_Candidate", list["_Candidate"]]:
    """(best candidate, every trial) of the greedy rounds that leave links out until the accuracy holds."""
    trials: list[_Candidate] = []
    best = every
    while best.score < baseline.score and len(best.excluded) < len(order) and len(trials) < max_trials:
        names = [n for n in order if n not in best.excluded][:max_trials - len(trials)]
        round_ = [trial((*best.excluded, name), len(trials) + i + 1) for i, name in enumerate(names)]
        trials += round_
        # among trials as accurate as the unequalized model the highest output SQNR (accuracy beyond it on
        # these images is noise the guard should not chase); failing that the most accurate, to go on from
        passing = [c for c in round_ if c.score >= baseline.score]
        best = max(passing, key=_Candidate.fidelity) if passing else max(round_, key=_Candidate.rank)
    return best, trials


def _outcome(baseline: "_Candidate", every: "_Candidate", best: "_Candidate", trials: list["_Candidate"],
             order: list[str], x: np.ndarray, y: np.ndarray) -> tuple[Any, dict[str, Any]]:
    """(model to quantize, export.json ``equalize`` section with its ``guard`` entry)."""
    from edgesep.converters.verify import predict_keras, top1

    report = every.report
    if best.score < baseline.score:
        outcome, shipped, doc = "reverted", baseline, report.to_dict()
    else:
        shipped, doc = best, best.report.to_dict()
        outcome = "kept every link" if not best.excluded else f"left out {len(best.excluded)} of {len(order)} links"
        if best is not every:  # trials skip the float accuracy: measure the winner
            doc["float_accuracy"] = {"before": report.float_accuracy["before"],
                                     "after": top1(predict_keras(best.model, x), y)}
    doc["guard"] = {
        "outcome": outcome, "links_kept": 0 if shipped is baseline else len(order) - len(shipped.excluded),
        "links": len(order), "data": {"samples": int(len(x))},
        "accuracy_without_equalize": baseline.accuracy, "accuracy_every_link": every.accuracy,
        "accuracy": shipped.accuracy,
        "score_without_equalize": baseline.score, "score_every_link": every.score, "score": shipped.score,
        "output_sqnr_db": {"without_equalize": baseline.sqnr, "every_link": every.sqnr, "chosen": shipped.sqnr},
        "excluded": list(shipped.excluded),
        "trials": [{"excluded": list(c.excluded), "accuracy": c.accuracy, "score": c.score, "output_sqnr_db": c.sqnr}
                   for c in trials],
    }
    return shipped.model, doc


@dataclasses.dataclass(frozen=True)
class _Candidate:
    """One network the guard quantized: what was left out, and how its int8 model scored."""

    model: Any
    report: Any  # EqualizeReport, None for the unequalized network
    excluded: tuple[str, ...]
    score: float  # what the guard chooses on (see _Int8Score.criterion)
    sqnr: Optional[float]  # output SQNR in dB against the float model; None when the error is zero
    accuracy: float  # top-1 accuracy on the evaluation images (reported)

    def fidelity(self) -> float:
        return math.inf if self.sqnr is None else self.sqnr

    def rank(self) -> tuple[float, float]:
        return self.score, self.fidelity()


class _Int8Score:
    """(score, output SQNR in dB against the float model, accuracy on the evaluation images) of a network's int8
    TFLite model, converted as export converts it."""

    def __init__(self, work: Path, calibration: np.ndarray, x: np.ndarray, y: np.ndarray, per_channel: bool,
                 io_dtype: str):
        self.work, self.calibration, self.x, self.y = work, calibration, x, y
        self.per_channel, self.io_dtype, self.count = per_channel, io_dtype, 0
        self.images, self.labels, self.reference, self.unlabelled = x, y, None, False

    def choose_on(self, model, images: Optional[np.ndarray], predict: Callable) -> None:
        """Score on ``images`` against the float ``model``'s top-1 (None: on the evaluation images' labels)."""
        if images is not None:
            self.images, self.unlabelled = images, True
        self.reference = predict(model, self.images).astype(np.float64)
        if self.unlabelled:
            self.labels = np.argmax(self.reference, axis=-1)

    def criterion(self, what: str) -> dict[str, Any]:
        if self.unlabelled:
            return {"images": what, "samples": int(len(self.images)),
                    "score": "top-1 agreement of the int8 model with the float model (no labels)"}
        return {"images": "the evaluation images", "samples": int(len(self.images)), "score": "top-1 accuracy"}

    def __call__(self, keras_model) -> tuple[float, Optional[float], float]:
        from edgesep.converters.tflite import export_tflite
        from edgesep.converters.verify import predict_tflite, top1

        self.count += 1
        path = export_tflite(keras_model, self.work / f"candidate{self.count}.tflite", precision="int8",
                             representative_data=self.calibration, per_channel=self.per_channel,
                             io_dtype=self.io_dtype, fold=False)
        out = predict_tflite(path, self.images).astype(np.float64)
        noise = float(np.sum((out - self.reference) ** 2))
        signal = float(np.sum(self.reference ** 2))
        sqnr = None if noise == 0 or signal == 0 else float(10 * np.log10(signal / noise))
        score = top1(out, self.labels)
        accuracy = top1(predict_tflite(path, self.x), self.y) if self.unlabelled else score
        return score, sqnr, accuracy
