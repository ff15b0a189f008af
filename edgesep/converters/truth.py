"""Warnings that keep an export honest: a quantized output that collapsed, a Keras accuracy at chance level, a
Keras output that is the same for every input, or whose top class leads the next by less than one int8 step.

They are read from the export's own figures (``ArtifactRecord.checks``, ``keras_accuracy``, the Keras outputs
the artifacts were checked against), so they fire on what was measured, never on correct input: a healthy int8
output is tens of dB above the thresholds, a model that does better than chance on its labels is left alone,
and a model that answers anything about its input varies with it.
"""
from __future__ import annotations

from typing import Collection, Iterable, Optional, Sequence

import numpy as np

COLLAPSE_SQNR_DB = 10.0  # an output below this SQNR against Keras has lost its signal
COLLAPSE_AGREEMENT = 0.5  # ... or a class-score output agreeing with Keras' top-1 on fewer than half the inputs
CONSTANT_SPREAD = 1e-5  # an output whose values vary by less than this share of their size over the inputs
CHANCE_FACTOR = 1.5  # a Keras accuracy below 1.5x chance (1 / classes) is "at chance level"
CAUSES = ("likely causes: a wide softmax whose probabilities fall below one int8 step (1/256) and round to 0 "
          "(--io-dtype float32 alone does not help: keep the softmax float with --keep-float, or export the "
          "logits), activations far outside the calibrated range, per-tensor weights; try --int16x8 (16-bit "
          "activations), per-channel weights (no --per-tensor) and more representative calibration data "
          "(--data, --calib-samples)")


def collapsed_outputs(artifacts: Iterable, tied: Collection[str] = ()) -> list[str]:
    """One loud line per quantized artifact output whose SQNR < 10 dB or top-1 agreement < 50 % vs Keras.

    ``tied``: outputs whose Keras values are the same for every input (:func:`same_for_every_input`): their
    argmax is a tie broken by rounding, so a low agreement there is no collapse (the SQNR still counts)."""
    found = []
    for art in artifacts:
        if art.precision not in ("int8", "int16x8"):
            continue
        for check in art.checks:
            sqnr, agree = check.output_sqnr_db_vs_keras, check.top1_agreement_vs_keras
            if check.output in tied:
                agree = None
            low_sqnr = sqnr is not None and sqnr < COLLAPSE_SQNR_DB
            low_agree = agree is not None and agree < COLLAPSE_AGREEMENT
            if not (low_sqnr or low_agree):
                continue
            figures = [f"output SQNR {sqnr:.1f} dB" if sqnr is not None else "",
                       f"top-1 agreement {100 * agree:.0f} %" if agree is not None else ""]
            name = f" output {check.output!r}" if check.output else " output"
            found.append(f"{art.path}: the {art.precision}{name} COLLAPSED against Keras "
                         f"({', '.join(f for f in figures if f)}); do not deploy it as is: {CAUSES}")
    return found


def chance_level(keras_accuracy: Optional[float], classes: int) -> Optional[str]:
    """A line when the Keras model itself is at chance level on the labelled data (wrong input domain?)."""
    if keras_accuracy is None or classes < 2:
        return None
    chance = 1.0 / classes
    if keras_accuracy >= CHANCE_FACTOR * chance:
        return None
    return (f"the Keras model's own accuracy on the labelled data is {keras_accuracy:.4f}, chance level for "
            f"{classes} classes ({chance:.4f}): check --preprocess / the input domain (and the labels)")


def same_for_every_input(references: Sequence[np.ndarray], names: Sequence[str]) -> list[str]:
    """The names of the Keras outputs whose values are the same for every input they were computed on."""
    found = []
    for ref, name in zip(references, names):
        ref = np.asarray(ref, np.float64)
        if len(ref) < 2 or not np.all(np.isfinite(ref)):
            continue
        spread, size = float(np.max(np.ptp(ref, axis=0))), float(np.max(np.abs(ref)))
        if spread <= CONSTANT_SPREAD * max(size, 1e-30):
            found.append(name)
    return found


def constant_outputs(references: Sequence[np.ndarray], names: Sequence[str]) -> list[str]:
    """One line per Keras output that is the same for every input it was checked on (an untrained or dead
    model): an artifact's top-1 agreement with such an output is a tie broken by rounding, and says nothing."""
    count = len(references[0]) if len(references) else 0
    return [f"the Keras model's{f' output {name!r}' if len(names) > 1 else ''} output is the same for all {count} "
            f"inputs checked (an untrained or dead model?): the artifacts' top-1 agreement with it says nothing"
            for name in same_for_every_input(references, names)]


def near_ties(references: Sequence[np.ndarray], names: Sequence[str]) -> dict[str, tuple[float, float]]:
    """``{name: (median top-1 margin, int8 step)}`` of the Keras class-score outputs (several columns) whose top
    class leads the next by less than one int8 step (1/255 of the output's largest magnitude) on most inputs
    (an untrained network's near-uniform scores): no 8-bit output keeps that ranking, so top-1 agreement
    with it is rounding. Outputs the same for every input are left to :func:`same_for_every_input`."""
    constant = set(same_for_every_input(references, names))
    found = {}
    for ref, name in zip(references, names):
        ref = np.asarray(ref, np.float64).reshape(len(ref), -1)
        if name in constant or len(ref) < 2 or ref.shape[1] < 2 or not np.all(np.isfinite(ref)):
            continue
        top = np.sort(ref, axis=1)[:, -2:]
        margin, step = float(np.median(top[:, 1] - top[:, 0])), float(np.max(np.abs(ref))) / 255
        if margin < step:
            found[name] = (margin, step)
    return found


def tie_lines(ties: dict[str, tuple[float, float]], artifacts: Iterable, count: int, several: bool) -> list[str]:
    """One line per :func:`near_ties` output on which a quantized artifact agrees with Keras' top-1 on fewer
    than half the inputs (what would otherwise read as a collapse): that agreement says nothing."""
    low = {c.output for a in artifacts if a.precision in ("int8", "int16x8") for c in a.checks
           if c.top1_agreement_vs_keras is not None and c.top1_agreement_vs_keras < COLLAPSE_AGREEMENT}
    return [f"the Keras model's{f' output {name!r}' if several else ''} top class leads the next by less than one "
            f"int8 step on most of the {count} inputs checked (median margin {margin:.2g}, step {step:.2g}; an "
            f"untrained model?): the int8 top-1 agreement with it is rounding, not a collapse"
            for name, (margin, step) in ties.items() if name in low or (not several and low)]
