"""The layer walk of ``apply_ptq``: layer inputs in two models, a layer's linear output, one layer's step."""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

import numpy as np

from edgesep.converters.ptq.grid import channel_scales, kind, nearest, parts


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
    """A copy of ``model`` with its own weights (the user's model is never changed); a Lambda layer's code and
    custom layers come from the live model (``graph.rebuild``: keras.models.clone_model refused a Lambda in
    safe mode, a traceback under --ptq for a model loaded with --trust-model)."""
    from edgesep.converters.graph import rebuild

    copy = rebuild(model, model.get_config(), "--ptq")
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


def linear(layer, part: int = 0):
    """``(inputs, kernel) -> outputs`` of ``layer``'s kernel ``part`` without bias and activation (Keras ops,
    differentiable). A SeparableConv2D's part 0 is its depthwise convolution (the layer's strides, padding,
    dilation), part 1 its pointwise 1x1 convolution."""
    from keras import ops

    k = parts(layer)[part]
    if k == "Dense":
        return lambda x, w: ops.matmul(x, w)
    if kind(layer) == "SeparableConv2D" and part == 1:
        return lambda x, w: ops.conv(x, w, strides=1, padding="valid", data_format=layer.data_format)
    conv = ops.depthwise_conv if k == "DepthwiseConv2D" else ops.conv
    if _pointwise_strided(layer):  # the same map, without the backward pass TensorFlow's oneDNN crashes in
        rows, cols = layer.strides
        return lambda x, w: conv(x[:, ::rows, ::cols, :], w, strides=1, padding="valid")
    return lambda x, w: conv(x, w, strides=layer.strides, padding=layer.padding,
                             data_format=layer.data_format, dilation_rate=layer.dilation_rate)


def _pointwise_strided(layer) -> bool:
    """A 1x1 kernel with strides > 1 (ResNet shortcuts, mini-XCEPTION's residuals): it reads every stride-th
    pixel from the first (``same`` pads nothing for a 1x1 kernel), so slicing then a stride-1 convolution is
    exact. TensorFlow 2.21's oneDNN ``Conv2DBackpropFilter`` segfaults on such a strided 1x1 convolution
    over an even-sized input (60x60), which AdaRound's gradient would run."""
    return (kind(layer) == "Conv2D" and tuple(layer.kernel_size) == (1, 1) and tuple(layer.strides) != (1, 1)
            and tuple(layer.dilation_rate) == (1, 1) and layer.data_format == "channels_last")


def _skip(layer) -> Optional[str]:
    if getattr(layer, "groups", 1) != 1:
        return "grouped convolution: left as is"
    if getattr(layer, "data_format", "channels_last") != "channels_last":
        return "channels_first: left as is"
    return None


def process_layer(original, layer, float_taps: Taps, quant_taps: Taps, methods: tuple[str, ...],
                  per_channel: bool, iterations: Optional[int]):
    """Put ``layer`` (in the working copy) on the int8 grid as ``methods`` say; its ``LayerResult``.

    Its kernels (one; a SeparableConv2D's two) are chosen in order, each against the float model's output of
    that kernel, from the inputs it gets once the kernels before it are on the grid.
    """
    note = _skip(layer)
    if note:
        return LayerResult(layer.name, kind(layer), note=note)
    weights = layer.get_weights()
    new = list(weights)
    x_f, x_q = float_taps.inputs(original), quant_taps.inputs(layer)
    kept, flipped, size = [], 0, 0
    for part in range(len(parts(layer))):
        kernel = np.asarray(weights[part], np.float64)
        apply, scale = linear(layer, part), channel_scales(layer, per_channel, part)
        target = np.asarray(apply(x_f, kernel.astype(np.float32)))
        q, part_kept, part_flipped = _rounding(kernel, scale, apply, x_q, target, methods, iterations)
        new[part] = (q * scale).astype(weights[part].dtype)
        kept, flipped, size = kept + [part_kept], flipped + part_flipped, size + int(kernel.size)
        x_f, x_q = target, np.asarray(apply(x_q, new[part]))
    shift_rms, bias_note = None, None
    if "bias-correction" in methods:
        if layer.use_bias:
            bias = len(parts(layer))
            shift = np.mean(x_f - x_q, axis=tuple(range(x_f.ndim - 1)))  # float minus quantized pre-activation
            new[bias] = (np.asarray(weights[bias], np.float64) + shift).astype(weights[bias].dtype)
            shift_rms = float(np.sqrt(np.mean(shift ** 2)))
        else:
            bias_note = "no bias to correct"
    layer.set_weights(new)
    adaround_kept = None if "adaround" not in methods else any(kept)
    return LayerResult(layer.name, kind(layer), flipped, size, adaround_kept, shift_rms, bias_note)


def _rounding(kernel, scale, apply, x_q, target, methods: tuple[str, ...], iterations: Optional[int]):
    """(integer levels, AdaRound kept?, weights flipped from nearest) of one kernel."""
    from edgesep.converters.ptq.adaround import ITERATIONS, adaround

    q = nearest(kernel, scale)
    if "adaround" not in methods:
        return q, None, 0
    rounding = adaround(kernel, scale, apply, x_q, target, iterations or ITERATIONS)
    if rounding.loss_adaround <= rounding.loss_nearest:
        return rounding.q, True, rounding.flipped
    return q, False, 0
