"""The accuracy guard of ``export --equalize``: equalization may not cost int8 fidelity.

Cross-layer equalization evens out per-tensor weight ranges and raises the int8 model's SQNR, but on a network
whose per-tensor int8 model already matches its float model it changes which borderline images the rounding
falls on, and can lose a few of them (docs/quantization.md). The guard needs no labels: it compares, on
*selection* images held out from the calibration images (unlabelled; export draws them from the training split
next to the calibration draw), the int8 model of the equalized network with the int8 model of the same export
without equalization (same calibration images, same per-channel / per-tensor setting). A candidate *passes*
when its top-1 agreement with the float model is at least the unequalized one's and its output SQNR against
the float model is not lower:

1. every link equalized: kept when it passes;
2. else links are left out (``equalize(..., exclude=...)``) greedily: each round tries leaving out one more
   link, each remaining link in turn (in order of how little it needed equalizing: the producer's
   per-channel range ratio before CLE, smallest first). Of the passing trials the one with the highest output
   SQNR wins; if none passes, the one with the highest (agreement, SQNR) is kept and the next round starts
   from it;
3. after ``max_trials`` int8 conversions without success, no link is kept: the int8 model is the unequalized
   one, and export.json says so.

The labelled accuracy export reports (``accuracy*`` in the ``guard`` entry, on the test split) is measured
after the choice and never takes part in it, so it is an unbiased figure.
"""
from __future__ import annotations

import dataclasses
import math
import tempfile
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgesep.errors import DataError

MAX_TRIALS = 8  # int8 conversions beyond the two the guard always makes
SELECTION_SAMPLES = 200  # held-out images the guard chooses on
MIN_SELECTION = 50  # fewer training images left beside the calibration draw: split the draw instead
SCORE = "top-1 agreement of the int8 model with the float model (no labels), then output SQNR"
CRITERION = ("top-1 agreement with the float model not below the unequalized int8 model's, output SQNR not "
             "below it; the highest SQNR wins; on selection images held out from calibration")


def selection_split(images: np.ndarray, calib_samples: int, seed: int,
                    selection_samples: int = SELECTION_SAMPLES, purpose: str = "the equalize guard"
                    ) -> tuple[np.ndarray, np.ndarray, str]:
    """(calibration images, selection images, how they were drawn): two disjoint draws from ``images``.

    The calibration images are those ``Dataset.calibration(calib_samples, seed)`` gives (the first
    ``calib_samples`` of a seeded permutation, in order), so an export calibrates on the same images with or
    without ``--equalize``; the selection images are the next ``selection_samples`` of that permutation. When
    fewer than ``MIN_SELECTION`` images are left beside the calibration draw, the draw is split instead: the
    first three quarters calibrate, the rest select.

    Raises:
        DataError: fewer than two images (the line names ``purpose``, what needs them).
    """
    if len(images) < 2:
        raise DataError(f"{purpose} needs at least 2 training images (calibration and selection), "
                        f"got {len(images)}")
    idx = np.random.default_rng(seed).permutation(len(images))
    n, how = min(int(calib_samples), len(images)), "held out beside the calibration draw"
    if len(images) - n < min(selection_samples, MIN_SELECTION):
        n, how = max(1, (3 * n) // 4), "split from the calibration draw (3/4 calibrate, 1/4 select)"
    return images[np.sort(idx[:n])], images[np.sort(idx[n:n + selection_samples])], how


def guarded_equalize(model, folded, calibration: np.ndarray, selection: np.ndarray,
                     x_test: Optional[np.ndarray] = None, y_test: Optional[np.ndarray] = None, *, relu6: str,
                     per_channel: bool, io_dtype: str, max_trials: int = MAX_TRIALS,
                     selection_what: str = "held-out images",
                     say: Optional[Callable[[str], None]] = None) -> tuple[Any, dict[str, Any]]:
    """The equalized network to quantize and the export.json ``equalize`` section (with a ``guard`` entry).

    Args:
        model: the Keras model being exported (with BatchNorm; not modified).
        folded: its BN-folded form (the unequalized network the guard compares with).
        calibration: int8 calibration images; also the bias absorption amounts.
        selection: unlabelled images the guard chooses on; must not be calibration images.
        x_test, y_test: test images and labels: the labelled accuracy reported (not chosen on); either may be None.
        relu6, per_channel, io_dtype: as in ``ExportConfig``.
        max_trials: most int8 conversions spent on leaving links out.
        selection_what: what the selection images are, for the report.
        say: progress callback.

    Returns:
        (Keras model to quantize, equalize section). The model is ``folded`` itself when no link was kept.
    """
    from edgesep.converters.equalize import equalize_with_report

    say = say or (lambda stage: None)
    labelled = x_test is not None and y_test is not None
    with tempfile.TemporaryDirectory(prefix="edgesep-guard-") as work:
        score = _Int8Score(Path(work), model, calibration, selection, (x_test, y_test) if labelled else None,
                           per_channel, io_dtype)
        baseline = _Candidate(folded, None, (), *score(folded))
        equalized, report = equalize_with_report(model, relu6=relu6, calibration_data=calibration,
                                                 eval_data=(x_test, y_test) if labelled else None)
        every = _Candidate(equalized, report, (), *score(equalized))
        order = [p.producer for p in sorted(report.pairs, key=lambda p: p.producer_ratio[0])]

        def trial(excluded: tuple[str, ...], number: int) -> _Candidate:
            say(f"equalize guard: trial {number}, leaving out {', '.join(excluded)}")
            candidate, candidate_report = equalize_with_report(model, relu6=relu6, calibration_data=calibration,
                                                               exclude=excluded)
            return _Candidate(candidate, candidate_report, excluded, *score(candidate))

        best, trials = _search(baseline, every, order, trial, max_trials)
    doc = _outcome(baseline, every, best, trials, order, (x_test, y_test) if labelled else None)
    doc["guard"].update(calibration_samples=int(len(calibration)), selection_samples=int(len(selection)),
                        selection=selection_what,
                        chosen_on={"images": selection_what, "samples": int(len(selection)), "score": SCORE})
    return (folded if doc["guard"]["outcome"] == "reverted" else best.model), doc


def _search(baseline: "_Candidate", every: "_Candidate", order: list[str],
            trial: Callable[[tuple[str, ...], int], "_Candidate"],
            max_trials: int) -> tuple["_Candidate", list["_Candidate"]]:
    """(best candidate, every trial) of the greedy rounds that leave links out until a candidate passes."""
    trials: list[_Candidate] = []
    best = every
    while not best.passes(baseline) and len(best.excluded) < len(order) and len(trials) < max_trials:
        names = [n for n in order if n not in best.excluded][:max_trials - len(trials)]
        round_ = [trial((*best.excluded, name), len(trials) + i + 1) for i, name in enumerate(names)]
        trials += round_
        passing = [c for c in round_ if c.passes(baseline)]
        best = max(passing, key=_Candidate.fidelity) if passing else max(round_, key=_Candidate.rank)
    return best, trials


def _outcome(baseline: "_Candidate", every: "_Candidate", best: "_Candidate", trials: list["_Candidate"],
             order: list[str], test) -> dict[str, Any]:
    """The export.json ``equalize`` section with its ``guard`` entry."""
    from edgesep.converters.verify import predict_keras, top1

    report = every.report
    if not best.passes(baseline):
        outcome, shipped, doc = "reverted", baseline, report.to_dict()
    else:
        shipped, doc = best, best.report.to_dict()
        outcome = "kept every link" if not best.excluded else f"left out {len(best.excluded)} of {len(order)} links"
        if best is not every and test is not None:  # trials skip the float accuracy: measure the winner
            doc["float_accuracy"] = {"before": report.float_accuracy["before"],
                                     "after": top1(predict_keras(best.model, test[0]), test[1])}
    doc["guard"] = {
        "outcome": outcome, "criterion": CRITERION,
        "links_kept": 0 if shipped is baseline else len(order) - len(shipped.excluded),
        "links": len(order), "data": {"samples": None if test is None else int(len(test[0]))},
        "accuracy_without_equalize": baseline.accuracy, "accuracy_every_link": every.accuracy,
        "accuracy": shipped.accuracy,
        "agreement": {"without_equalize": baseline.agreement, "every_link": every.agreement,
                      "chosen": shipped.agreement},
        "score_without_equalize": baseline.agreement, "score_every_link": every.agreement,
        "score": shipped.agreement,  # = agreement (the first label-free guard's spelling)
        "output_sqnr_db": {"without_equalize": baseline.sqnr, "every_link": every.sqnr, "chosen": shipped.sqnr},
        "excluded": list(shipped.excluded),
        "trials": [{"excluded": list(c.excluded), "agreement": c.agreement, "score": c.agreement,
                    "output_sqnr_db": c.sqnr, "accuracy": c.accuracy} for c in trials],
    }
    return doc


@dataclasses.dataclass(frozen=True)
class _Candidate:
    """One network the guard quantized: what was left out, and how its int8 model scored."""

    model: Any
    report: Any  # EqualizeReport, None for the unequalized network
    excluded: tuple[str, ...]
    agreement: float  # top-1 agreement with the float model on the selection images
    sqnr: Optional[float]  # output SQNR in dB against the float model there; None when the error is zero
    accuracy: Optional[float]  # labelled top-1 accuracy on the test split (reported, never chosen on)

    def fidelity(self) -> float:
        return math.inf if self.sqnr is None else self.sqnr

    def rank(self) -> tuple[float, float]:
        return self.agreement, self.fidelity()

    def passes(self, baseline: "_Candidate") -> bool:
        """At least the unequalized int8 model's agreement, and no lower output SQNR."""
        return self.agreement >= baseline.agreement and self.fidelity() >= baseline.fidelity()


class _Int8Score:
    """(selection agreement, selection output SQNR in dB, test accuracy or None) of a network's int8 TFLite
    model, converted as export converts it; the float reference is the original model on the selection images."""

    def __init__(self, work: Path, model, calibration: np.ndarray, selection: np.ndarray, test, per_channel: bool,
                 io_dtype: str):
        from edgesep.converters.verify import predict_keras

        self.work, self.calibration, self.selection, self.test = work, calibration, selection, test
        self.reference = predict_keras(model, selection)
        self.per_channel, self.io_dtype, self.count = per_channel, io_dtype, 0

    def __call__(self, keras_model) -> tuple[float, Optional[float], Optional[float]]:
        from edgesep.converters.tflite import export_tflite
        from edgesep.converters.verify import agreement, predict_tflite, top1

        self.count += 1
        path = export_tflite(keras_model, self.work / f"candidate{self.count}.tflite", precision="int8",
                             representative_data=self.calibration, per_channel=self.per_channel,
                             io_dtype=self.io_dtype, fold=False)
        agree, sqnr = agreement(predict_tflite(path, self.selection), self.reference)
        accuracy = None if self.test is None else top1(predict_tflite(path, self.test[0]), self.test[1])
        return agree, sqnr, accuracy
