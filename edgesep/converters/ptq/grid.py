"""The int8 weight grid TFLite's converter puts a layer's kernel on, and the layers it applies to.

TFLite int8 weights are symmetric: ``q = round(w / s)`` in [-127, 127], zero point 0, with
``s = max|w| / 127`` per output channel (Conv2D: the kernel's last axis; DepthwiseConv2D: every
(input channel, multiplier) pair, TFLite's ``in * multiplier`` channels; Dense: the last axis) or one ``s``
for the whole kernel (``per_channel=False``). A kernel set to ``s * q`` converts back to exactly ``q``: its
largest element sits on +-127 by construction, so the converter finds the same ``s``.

A SeparableConv2D (the fused block form) holds two kernels, which TFLite lowers to a DEPTHWISE_CONV_2D and a
1x1 CONV_2D and quantizes each on its own grid: its ``parts`` are ``("DepthwiseConv2D", "Conv2D")``, in the
order of its weights; every other layer has one part, its own kind.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

QMAX = 127
KINDS = ("Conv2D", "DepthwiseConv2D", "Dense", "SeparableConv2D")


def kind(layer) -> Optional[str]:
    """``Conv2D``, ``DepthwiseConv2D``, ``Dense`` or ``SeparableConv2D`` for exactly those Keras classes, else None."""
    from keras import layers

    kinds = {layers.Conv2D: "Conv2D", layers.DepthwiseConv2D: "DepthwiseConv2D", layers.Dense: "Dense",
             layers.SeparableConv2D: "SeparableConv2D"}
    return kinds.get(type(layer))


def parts(layer) -> tuple[str, ...]:
    """The kinds of ``layer``'s kernels as TFLite quantizes them, in the order of its weights."""
    k = kind(layer)
    return ("DepthwiseConv2D", "Conv2D") if k == "SeparableConv2D" else (k,)


def weighted_layers(model) -> list[Any]:
    """The model's Conv2D / DepthwiseConv2D / Dense / SeparableConv2D layers, in graph order."""
    return [layer for layer in model.layers if kind(layer) is not None]


def channel_scales(layer, per_channel: bool, part: int = 0) -> np.ndarray:
    """``scales`` of ``layer``'s kernel ``part`` on the grid its kind is quantized on."""
    kernel = np.asarray(layer.get_weights()[part], np.float64)
    w = np.abs(kernel)
    if not per_channel:
        top = np.max(w, keepdims=True)
    elif parts(layer)[part] == "DepthwiseConv2D":  # (kh, kw, in, multiplier): one channel per (in, multiplier)
        top = np.max(w, axis=(0, 1), keepdims=True)
    else:
        top = np.max(w, axis=tuple(range(w.ndim - 1)), keepdims=True)
    return np.where(top > 0, top / QMAX, 1.0)


def nearest(kernel: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """Nearest-rounded integer levels of ``kernel`` on steps ``scale`` (float64, in [-127, 127])."""
    return np.clip(np.round(np.asarray(kernel, np.float64) / scale), -QMAX, QMAX)


def tflite_order(layer, q: np.ndarray, part: int = 0) -> np.ndarray:
    """Integer levels of a Keras kernel (``layer``'s kernel ``part``) laid out as TFLite stores it."""
    k = parts(layer)[part]
    if k == "Conv2D":  # (kh, kw, in, out) -> (out, kh, kw, in)
        return np.transpose(q, (3, 0, 1, 2))
    if k == "DepthwiseConv2D":  # (kh, kw, in, m) -> (1, kh, kw, in * m)
        return q.reshape(1, q.shape[0], q.shape[1], -1)
    return q.T  # Dense (in, out) -> (out, in)
