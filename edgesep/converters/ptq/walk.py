"""The layer walk of ``apply_ptq``: layer inputs in two models, a layer's linear output, one layer's step."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from edgesep.converters.ptq.grid import channel_scales, kind, nearest


@dataclasses.dataclass(frozen=True)
class LayerResult:
    """What the methods did to one layer."""

    layer: str
    kind: str
    flipped: int = 0
    weights: int = 0
    adaround_kept: Optional[bool] = None
    bias_shift_rms: Optional[float] = None
    note: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def clone(model):
    """A copy of ``model`` with its own weights (the user's model is never changed)."""
    import keras

    copy = keras.models.clone_model(model)
    copy.set_weights(model.get_weights())
    return copy


class Taps:
    """The inputs each layer of ``model`` receives on images ``x`` (read when asked, from the current weights)."""

    def __init__(self, model, x: np.ndarray):
        self.model, self.x = model, x

    def inputs(self, layer) -> np.ndarray:
        import keras

        from edgesep.converters.graph import predict_all

        if layer.input is self.model.inputs[0]:
            return self.x
        return predict_all(keras.Model(self.model.inputs, layer.input), self.x, batch=64)[0]


def linear(layer):
    """``(inputs, kernel) -> outputs`` of ``layer`` without bias and activation (Keras ops, differentiable)."""
    from keras import ops

    k = kind(layer)
    if k == "Dense":
        return lambda x, w: ops.matmul(x, w)
    conv = ops.depthwise_conv if k == "DepthwiseConv2D" else ops.conv
    return lambda x, w: conv(x, w, strides=layer.strides, padding=layer.padding,
                             data_format=layer.data_format, dilation_rate=layer.dilation_rate)


def _skip(layer) -> Optional[str]:
    if getattr(layer, "groups", 1) != 1:
        return "grouped convolution: left as is"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first: left as is"
    return None


def process_layer(original, layer, float_taps: Taps, quant_taps: Taps, methods: tuple[str, ...],
                  per_channel: bool, iterations: Optional[int]):
    """Put ``layer`` (in the working copy) on the int8 grid as ``methods`` say; its ``LayerResult``."""
    from edgesep.converters.ptq.adaround import ITERATIONS, adaround

    note = _skip(layer)
    if note:
        return LayerResult(layer.name, kind(layer), note=note)
    weights = layer.get_weights()
    kernel = np.asarray(weights[0], np.float64)
    scale = channel_scales(layer, per_channel)
    q, kept, flipped = nearest(kernel, scale), None, 0
    x_f, x_q = float_taps.inputs(original), quant_taps.inputs(layer)
    apply = linear(layer)
    target = np.asarray(apply(x_f, kernel.astype(np.float32)))
    if "adaround" in methods:
        rounding = adaround(kernel, scale, apply, x_q, target, iterations or ITERATIONS)
        kept = rounding.loss_adaround <= rounding.loss_nearest
        if kept:
            q, flipped = rounding.q, rounding.flipped
    new = [(q * scale).astype(weights[0].dtype)] + weights[1:]
    shift_rms, bias_note = None, None
    if "bias-correction" in methods:
        if layer.use_bias:
            shift = np.mean(target - np.asarray(apply(x_q, new[0])), axis=tuple(range(target.ndim - 1)))
            new[1] = (np.asarray(weights[1], np.float64) + shift).astype(weights[1].dtype)
            shift_rms = float(np.sqrt(np.mean(shift ** 2)))
        else:
            bias_note = "no bias to correct"
    layer.set_weights(new)
    return LayerResult(layer.name, kind(layer), flipped, int(kernel.size), kept, shift_rms, bias_note)
