"""Phase 2: per-channel weight ranges of each side of a link, and the scales that even them out.

``s_i = sqrt(r1_i * r2_i) / r2_i`` divides output channel ``i`` of the producer and multiplies input channel
``i`` of the consumer, which makes both ranges ``sqrt(r1_i * r2_i)``; every link is equalized in turn until no
scale of a sweep differs from 1 by more than ``tol`` (in log).
"""
from __future__ import annotations

import dataclasses
from typing import Callable, Optional

import numpy as np

from edgesep.converters.equalize.links import Link
from edgesep.converters.graph import Weights


def _max_abs(a: np.ndarray, keep_axis: int) -> np.ndarray:
    axes = tuple(i for i in range(a.ndim) if i != keep_axis % a.ndim)
    return np.max(np.abs(a), axis=axes)


def depthwise_out_view(kernel: np.ndarray) -> np.ndarray:
    """Depthwise kernel (kh, kw, in, m) viewed per output channel ``c * m + j``: (kh * kw, in * m)."""
    return kernel.reshape(-1, kernel.shape[2] * kernel.shape[3])


def _div_out(w: Weights, key: str, s: np.ndarray, depthwise: bool) -> Weights:
    kernel = w[key]
    w = dict(w)
    w[key] = kernel / (s.reshape(kernel.shape[2:]) if depthwise else s)
    if "bias" in w and key != "depthwise_kernel":
        w["bias"] = w["bias"] / s
    return w


def _mul_in(w: Weights, key: str, s: np.ndarray) -> Weights:
    w = dict(w)
    w[key] = w[key] * s[None, None, :, None]
    return w


def _dw_range(key: str) -> Callable[[Weights], np.ndarray]:
    return lambda w: np.max(np.abs(depthwise_out_view(w[key])), axis=0)


@dataclasses.dataclass(frozen=True)
class Side:
    """How to read and scale one side (output or input channels) of one layer type."""

    key: str
    range: Callable[[Weights], np.ndarray]
    scale: Callable[[Weights, np.ndarray], Weights]


OUT_SIDES: dict[str, Side] = {
    "Conv2D": Side("kernel", lambda w: _max_abs(w["kernel"], -1), lambda w, s: _div_out(w, "kernel", s, False)),
    "DepthwiseConv2D": Side("kernel", _dw_range("kernel"), lambda w, s: _div_out(w, "kernel", s, True)),
    "SeparableConv2D": Side("pointwise_kernel", lambda w: _max_abs(w["pointwise_kernel"], -1),
                            lambda w, s: _div_out(w, "pointwise_kernel", s, False)),
    "SeparableConv2D/depthwise": Side("depthwise_kernel", _dw_range("depthwise_kernel"),
                                      lambda w, s: _div_out(w, "depthwise_kernel", s, True)),
}
IN_SIDES: dict[str, Side] = {
    "Conv2D": Side("kernel", lambda w: _max_abs(w["kernel"], 2), lambda w, s: _mul_in(w, "kernel", s)),
    "DepthwiseConv2D": Side("kernel", lambda w: _max_abs(w["kernel"], 2), lambda w, s: _mul_in(w, "kernel", s)),
    "SeparableConv2D": Side("depthwise_kernel", lambda w: _max_abs(w["depthwise_kernel"], 2),
                            lambda w, s: _mul_in(w, "depthwise_kernel", s)),
    "SeparableConv2D/pointwise": Side("pointwise_kernel", lambda w: _max_abs(w["pointwise_kernel"], 2),
                                      lambda w, s: _mul_in(w, "pointwise_kernel", s)),
}


def range_ratio(r: np.ndarray) -> float:
    """max / min of the nonzero per-channel ranges (1.0 when fewer than one is nonzero)."""
    r = r[r > 0]
    return float(r.max() / r.min()) if r.size else 1.0


def link_ranges(link: Link, weights: dict[str, Weights]) -> tuple[np.ndarray, np.ndarray]:
    """(producer output-channel ranges, consumer input-channel ranges) of ``link`` under ``weights``."""
    return OUT_SIDES[link.out_kind].range(weights[link.producer]), IN_SIDES[link.in_kind].range(weights[link.consumer])


def check_lengths(links: list[Link], weights: dict[str, Weights]) -> tuple[list[Link], list[tuple[str, str, str]]]:
    """(links whose two sides have as many channels, (producer, consumer, reason) for the others)."""
    kept, skipped = [], []
    for link in links:
        n_out, n_in = (len(r) for r in link_ranges(link, weights))
        if n_out != n_in:
            skipped.append((*link.label, f"{n_out} output channels feed {n_in} input channels"))
        else:
            kept.append(link)
    return kept, skipped


@dataclasses.dataclass(frozen=True)
class Scaling:
    """The result of :func:`equalize_weights`.

    Attributes:
        weights: layer name -> equalized weights (float64).
        scales: link label -> accumulated ``s`` per channel (output channel ``i`` of the producer was divided
            by ``s_i``).
        sweeps: sweeps over all links done.
        converged: whether the scales stopped changing before ``max_iter``.
    """

    weights: dict[str, Weights]
    scales: dict[tuple[str, str], np.ndarray]
    sweeps: int
    converged: bool


def _link_scale(link: Link, weights: dict[str, Weights]) -> np.ndarray:
    r1, r2 = link_ranges(link, weights)
    ok = (r1 > 0) & (r2 > 0)
    return np.where(ok, np.sqrt(r1 * np.where(ok, r2, 1.0)) / np.where(ok, r2, 1.0), 1.0)


def equalize_weights(links: list[Link], weights: dict[str, Weights], max_iter: int, tol: float) -> Scaling:
    """Scale ``weights`` (not modified) link after link until max |log s| < ``tol`` or ``max_iter`` sweeps."""
    weights = dict(weights)
    scales = {link.label: np.ones(len(OUT_SIDES[link.out_kind].range(weights[link.producer]))) for link in links}
    for sweep in range(1, max_iter + 1):
        largest = 0.0
        for link in links:
            s = _link_scale(link, weights)
            weights[link.producer] = OUT_SIDES[link.out_kind].scale(weights[link.producer], s)
            weights[link.consumer] = IN_SIDES[link.in_kind].scale(weights[link.consumer], s)
            scales[link.label] = scales[link.label] * s
            largest = max(largest, float(np.max(np.abs(np.log(s)))))
        if largest < tol:
            return Scaling(weights, scales, sweep, True)
    return Scaling(weights, scales, max_iter, False)


def scaled_caps(links: list[Link], scales: dict[tuple[str, str], np.ndarray],
                replaced: set[str]) -> dict[str, np.ndarray]:
    """Activation name -> per-channel cap after scaling: ``relu6(x) / s = min(relu(x / s), 6 / s)``.

    Links without a capped activation, and activations in ``replaced`` (ReLU6 made a ReLU), have no cap.
    """
    caps: dict[str, np.ndarray] = {}
    for link in links:
        cap: Optional[np.ndarray] = link.cap
        if link.act is None or cap is None or link.act in replaced:
            continue
        scale = scales[link.label]
        caps[link.act] = np.broadcast_to(cap, scale.shape) / scale
    return caps
