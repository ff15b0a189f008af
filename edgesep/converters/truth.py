"""Warnings that keep an export honest: a quantized output that collapsed, a Keras accuracy at chance level.

Both are read from the export's own figures (``ArtifactRecord.checks``, ``keras_accuracy``), so they fire on
what was measured, never on correct input: a healthy int8 output is tens of dB above the thresholds, and a
model that does better than chance on its labels is left alone.
"""
from __future__ import annotations

from typing import Iterable, Optional

COLLAPSE_SQNR_DB = 10.0  # an output below this SQNR against Keras has lost its signal
COLLAPSE_AGREEMENT = 0.5  # ... or a class-score output agreeing with Keras' top-1 on fewer than half the inputs
CHANCE_FACTOR = 1.5  # a Keras accuracy below 1.5x chance (1 / classes) is "at chance level"
CAUSES = ("likely causes: a wide softmax whose probabilities fall below one int8 step (1/256) and round to 0 "
          "(--io-dtype float32 alone does not help: keep the softmax float with --keep-float, or export the "
          "logits), activations far outside the calibrated range, per-tensor weights; try --int16x8 (16-bit "
          "activations), per-channel weights (no --per-tensor) and more representative calibration data "
          "(--data, --calib-samples)")


def collapsed_outputs(artifacts: Iterable) -> list[str]:
    """One loud line per quantized artifact output whose SQNR < 10 dB or top-1 agreement < 50 % vs Keras."""
    found = []
    for art in artifacts:
        if art.precision not in ("int8", "int16x8"):
            continue
        for check in art.checks:
            sqnr, agree = check.output_sqnr_db_vs_keras, check.top1_agreement_vs_keras
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
