"""Phase 3: bias absorption across ReLUs.

When a pre-activation channel never falls below ``c_i >= 0``, ``relu(x - c) + c = relu(x)``: the producer's
bias drops by ``c`` and the consumer's bias rises by ``W c``. ``c`` is the per-channel minimum of the
pre-activation over calibration data, or else ``max(0, beta - BN_SIGMAS |gamma|)`` of the BatchNormalization
that followed the producer in the input model. Only consumers where ``W c`` is exact everywhere take part.
"""
from __future__ import annotations

import dataclasses
from typing import Optional

import numpy as np

from edgesep.converters.equalize.links import Link, Skipped, activation_cap
from edgesep.converters.equalize.records import BiasResult
from edgesep.converters.fold import FoldReport
from edgesep.converters.graph import Weights, predict_all, to_f64

BN_SIGMAS = 3.0  # c = max(0, beta - BN_SIGMAS * |gamma|)


@dataclasses.dataclass(frozen=True)
class Absorption:
    """The result of :func:`absorb`: new weights and caps, and what was (not) absorbed."""

    weights: dict[str, Weights]
    caps: dict[str, np.ndarray]
    absorbed: tuple[BiasResult, ...] = ()
    skipped: tuple[Skipped, ...] = ()


def _absorb_problem(model, link: Link) -> str:
    if link.act is None:
        return "no ReLU between (nothing to absorb)"
    if any(not activation_cap(model.get_layer(v))[0] for v in link.via):
        return "a pass-through layer between (zero padding or pooling) would not carry the shift exactly"
    consumer = model.get_layer(link.consumer)
    size = consumer.kernel_size
    if tuple(size) != (1, 1) and consumer.padding != "valid":
        return (f"consumer '{link.consumer}' is a {size[0]}x{size[1]} '{consumer.padding}'-padded conv: "
                f"the absorbed bias would be wrong at the zero-padded borders")
    return ""


def consumer_shift(kind: str, w: Weights, c: np.ndarray) -> np.ndarray:
    """The consumer's output change for a constant input ``c`` per channel (``W c``), exact without borders."""
    if kind == "Conv2D":
        return np.einsum("hwio,i->o", w["kernel"], c)
    if kind == "DepthwiseConv2D":
        return np.einsum("hwim,i->im", w["kernel"], c).reshape(-1)
    d = np.einsum("hwim,i->im", w["depthwise_kernel"], c).reshape(-1)
    return d @ w["pointwise_kernel"][0, 0]


def _bn_shift(original, fold: FoldReport, link: Link, scale: np.ndarray) -> Optional[np.ndarray]:
    """max(0, beta - 3 |gamma|) of the BN that followed the producer in the input model, scaled by 1/s."""
    bn_name = dict(fold.folded).get(link.producer)
    if bn_name is None:
        return None
    bn = original.get_layer(bn_name)
    gamma = np.abs(to_f64(bn.gamma)) if bn.scale else np.ones(bn.moving_mean.shape)
    beta = to_f64(bn.beta) if bn.center else np.zeros(bn.moving_mean.shape)
    return np.maximum(0.0, beta - BN_SIGMAS * gamma) / scale


def _calibration_shifts(model, links: list[Link], data: np.ndarray) -> list[np.ndarray]:
    import keras

    probe = keras.Model(model.inputs, [model.get_layer(link.producer).output for link in links])
    outs = predict_all(probe, data)
    return [np.maximum(0.0, np.min(o.reshape(-1, o.shape[-1]), axis=0).astype(np.float64)) for o in outs]


def _candidates(model, links: list[Link]) -> tuple[list[Link], list[Skipped]]:
    candidates, skipped = [], []
    for link in links:
        problem = _absorb_problem(model, link)
        if not problem:
            candidates.append(link)
        elif link.act is not None:
            skipped.append((*link.label, problem))
    return candidates, skipped


def absorb(new_model, original, fold: FoldReport, links: list[Link], weights: dict[str, Weights],
           caps: dict[str, np.ndarray], scales: dict[tuple[str, str], np.ndarray],
           calibration: Optional[np.ndarray]) -> Absorption:
    """Absorb bias across the ReLU of every link where it is exact.

    Args:
        new_model: the equalized model, its weights loaded (calibration shifts are measured on it).
        original: the input model (its BatchNormalization statistics give the shifts without calibration).
        fold: how ``original`` was folded (which BN followed which producer).
        links, weights, caps, scales: the equalized links, their weights, capped activations and scales.
        calibration: float images, or None.

    Returns:
        The new weights and caps (a cap drops by the amount absorbed), and the per-link results.
    """
    candidates, skipped = _candidates(new_model, links)
    if not candidates:
        return Absorption(weights, caps, (), tuple(skipped))
    if calibration is not None:
        shifts, source = _calibration_shifts(new_model, candidates, calibration), "calibration"
    else:
        shifts, source = [_bn_shift(original, fold, link, scales[link.label]) for link in candidates], "batchnorm"
    weights, caps, done = dict(weights), dict(caps), []
    for link, c in zip(candidates, shifts):
        if c is None:
            skipped.append((*link.label, "no BatchNormalization statistics and no calibration data"))
            continue
        if link.act in caps:
            c = np.minimum(c, caps[link.act])
            caps[link.act] = caps[link.act] - c
        weights[link.producer] = {**weights[link.producer], "bias": weights[link.producer]["bias"] - c}
        shift = consumer_shift(link.in_kind, weights[link.consumer], c)
        weights[link.consumer] = {**weights[link.consumer], "bias": weights[link.consumer]["bias"] + shift}
        done.append(BiasResult(link.producer, link.consumer, source, int(np.sum(c > 0)), len(c),
                               float(np.max(c)), float(np.mean(c))))
    return Absorption(weights, caps, tuple(done), tuple(skipped))
