"""The int8 weight grid TFLite's converter puts a layer's kernel on, and the layers it applies to.

TFLite int8 weights are symmetric: ``q = round(w / s)`` in [-127, 127], zero point 0, with
``s = max|w| / 127`` per output channel (Conv2D: the kernel's last axis; DepthwiseConv2D: every
(input channel, multiplier) pair, TFLite's ``in * multiplier`` channels; Dense: the last axis) or one ``s``
for the whole kernel (``per_channel=False``). A kernel set to ``s * q`` converts back to exactly ``q``: its
largest element sits on +-127 by construction, so the converter finds the same ``s``.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

QMAX = 127
KINDS = ("Conv2D", "DepthwiseConv2D", "Dense")


def kind(layer) -> Optional[str]:
    """``Conv2D``, ``DepthwiseConv2D`` or ``Dense`` for exactly those Keras classes (with a kernel), else None."""
    from keras import layers

    kinds = {layers.Conv2D: "Conv2D", layers.DepthwiseConv2D: "DepthwiseConv2D", layers.Dense: "Dense"}
    return kinds.get(type(layer))


def weighted_layers(model) -> list[Any]:
    """The model's Conv2D / DepthwiseConv2D / Dense layers, in graph order."""
    return [layer for layer in model.layers if kind(layer) is not None]


def channel_scales(layer, per_channel: bool) -> np.ndarray:
    """``scales`` of ``layer``'s kernel on the grid its kind is quantized on."""
    kernel = np.asarray(layer.get_weights()[0], np.float64)
    w = np.abs(kernel)
    if not per_channel:
        top = np.max(w, keepdims=True)
    elif kind(layer) == "DepthwiseConv2D":  # (kh, kw, in, multiplier): one channel per (in, multiplier)
        top = np.max(w, axis=(0, 1), keepdims=True)
    else:
        top = np.max(w, axis=tuple(range(w.ndim - 1)), keepdims=True)
    return np.where(top > 0, top / QMAX, 1.0)


def nearest(kernel: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Nearest-rounded integer levels of ``kernel`` on steps ``scale`` (float64, in [-127, 127])."""
    return np.clip(np.round(np.asarray(kernel, np.float64) / scale), -QMAX, QMAX)


def tflite_order(layer, q: np.ndarray) -> np.ndarray:
    """Integer levels of a Keras kernel laid out as TFLite stores that layer's weights."""
    k = kind(layer)
    if k == "Conv2D":  # (kh, kw, in, out) -> (out, kh, kw, in)
        return np.transpose(q, (3, 0, 1, 2))
    if k == "DepthwiseConv2D":  # (kh, kw, in, m) -> (1, kh, kw, in * m)
        return q.reshape(1, q.shape[0], q.shape[1], -1)
    return q.T  # Dense (in, out) -> (out, in)
