"""The records an equalization returns: one per equalized link, one per bias absorption, and the report."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from edgesep.converters.fold import FoldReport


@dataclasses.dataclass(frozen=True)
class PairResult:
    """One equalized link.

    Attributes:
        producer: layer whose output channels were divided by ``s`` (``name/depthwise`` inside a SeparableConv2D).
        consumer: layer whose input channels were multiplied by ``s`` (``name/pointwise`` inside a SeparableConv2D).
        via: layers between them (activations and pass-throughs).
        kind: ``ProducerType -> ConsumerType``.
        channels: channels scaled.
        producer_ratio: (before, after) max/min per-channel range of the producer's output channels.
        consumer_ratio: (before, after) max/min per-channel range of the consumer's input channels.
    """

    producer: str
    consumer: str
    via: tuple[str, ...]
    kind: str
    channels: int
    producer_ratio: tuple[float, float]
    consumer_ratio: tuple[float, float]

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return {"producer": self.producer, "consumer": self.consumer, "via": list(self.via), "kind": self.kind,
                "channels": self.channels,
                "producer_range_ratio": {"before": self.producer_ratio[0], "after": self.producer_ratio[1]},
                "consumer_range_ratio": {"before": self.consumer_ratio[0], "after": self.consumer_ratio[1]}}


@dataclasses.dataclass(frozen=True)
class BiasResult:
    """Bias absorbed across one ReLU: ``c`` left the producer's bias and ``W c`` entered the consumer's."""

    producer: str
    consumer: str
    source: str  # "calibration" or "batchnorm"
    channels: int  # channels with c > 0
    total: int  # channels of the link
    max_amount: float
    mean_amount: float

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class EqualizeReport:
    """What ``equalize_with_report`` did.

    Attributes:
        relu6: the ReLU6 mode used.
        pairs: equalized links.
        skipped: (producer, consumer, reason) for links left alone.
        iterations: sweeps over all links; ``converged`` tells whether the scales stopped changing.
        activations: (layer, change) for every ReLU6 replaced by a ReLU or by a per-channel clip.
        depthwise_range_ratio: (layer, before, after) max/min per-channel range of every depthwise kernel.
        bias_absorbed: one entry per link that absorbed bias.
        bias_skipped: (producer, consumer, reason) for ReLU links that did not.
        fold: the BatchNorm folding report.
        max_output_change: max |new - old| / max |old| of the model outputs on ``calibration_data``.
        float_accuracy: ``{"before", "after"}`` top-1 accuracy on ``eval_data``.
        data: what the data-dependent steps used: ``calibration``, ``batchnorm statistics (data_free)``, or
            ``none`` (no calibration data and no ``data_free``: no link was equalized).
        notes: what equalization left undone and why (links left unequalized for want of calibration data).
    """

    relu6: str
    pairs: tuple[PairResult, ...]
    skipped: tuple[tuple[str, str, str], ...]
    iterations: int
    converged: bool
    activations: tuple[tuple[str, str], ...]
    depthwise_range_ratio: tuple[tuple[str, float, float], ...]
    bias_absorbed: tuple[BiasResult, ...] = ()
    bias_skipped: tuple[tuple[str, str, str], ...] = ()
    fold: Optional[FoldReport] = None
    max_output_change: Optional[float] = None
    float_accuracy: Optional[dict[str, float]] = None
    data: str = "calibration"
    notes: tuple[str, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (fit for an ``equalize`` section of export.json)."""
        return {
            "relu6": self.relu6, "iterations": self.iterations, "converged": self.converged,
            "pairs": [p.to_dict() for p in self.pairs],
            "skipped": [{"producer": p, "consumer": c, "reason": r} for p, c, r in self.skipped],
            "activations": [{"layer": n, "change": ch} for n, ch in self.activations],
            "depthwise_range_ratio": [{"layer": n, "before": b, "after": a}
                                      for n, b, a in self.depthwise_range_ratio],
            "bias_absorbed": [b.to_dict() for b in self.bias_absorbed],
            "bias_skipped": [{"producer": p, "consumer": c, "reason": r} for p, c, r in self.bias_skipped],
            "fold": self.fold.to_dict() if self.fold else None,
            "max_output_change": self.max_output_change, "float_accuracy": self.float_accuracy,
            "data": self.data, "notes": list(self.notes),
        }
