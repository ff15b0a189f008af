"""Grouped convolutions made exportable: ``Conv2D(groups=g)`` rewritten into forms every format takes.

* ``groups == input channels`` *is* a depthwise convolution: :func:`depthwise_grouped` rewrites such a layer
  into a ``DepthwiseConv2D`` (``depth_multiplier = filters / groups``) with the same kernel reshaped, which is
  exact (output channel ``c * multiplier + m`` in both). Every artifact is made from the rewritten model.
* other groups: Keras runs a grouped convolution on the TensorFlow backend inside an XLA-compiled
  ``tf.function``, which tf2onnx cannot look into. :func:`for_onnx` swaps such layers for
  :class:`PlainGroupedConv2D`, which traces to one TensorFlow ``Conv2D`` op with a grouped filter; tf2onnx
  writes that as an ONNX ``Conv`` with its ``group`` attribute. (TensorFlow has no CPU kernel for that op, so
  this layer is for conversion only.)
* :func:`onnx_blockers` names what ONNX still cannot take, so that export refuses before any conversion work.
* for ONNX, an exact ``Activation("gelu")`` (TensorFlow computes it with ``Erfc``, which tf2onnx cannot
  write) becomes :class:`ErfGelu`, the same function through ``Erf`` (ConvNeXt).
"""
from __future__ import annotations

import copy
from typing import Any, Optional

from edgesep.converters.graph import check_model, layer_or_none, rebuild

_PLAIN = None  # the PlainGroupedConv2D class, made once Keras is imported
_GELU = None  # the ErfGelu class, likewise


def plain_grouped_conv_class():
    """``PlainGroupedConv2D``: a ``Conv2D`` whose grouped convolution traces to a plain TF ``Conv2D`` op."""
    global _PLAIN
    if _PLAIN is None:
        import keras
        import tensorflow as tf

        class PlainGroupedConv2D(keras.layers.Conv2D):
            """A grouped ``Conv2D`` traced without Keras' XLA wrapper (for conversion, not for running)."""

            def convolution_op(self, inputs, kernel):
                return tf.nn.convolution(inputs, kernel, strides=list(self.strides), padding=self.padding.upper(),
                                         dilations=list(self.dilation_rate), data_format="NHWC")

        _PLAIN = PlainGroupedConv2D
    return _PLAIN


def erf_gelu_class():
    """``ErfGelu``: exact GELU, ``0.5 x (1 + erf(x / sqrt 2))``, traced through ``Erf`` (not ``Erfc``)."""
    global _GELU
    if _GELU is None:
        import keras
        import tensorflow as tf

        class ErfGelu(keras.layers.Layer):
            """Exact GELU through ``tf.math.erf`` (an ONNX ``Erf``), for conversion."""

            def call(self, x):
                return 0.5 * x * (1.0 + tf.math.erf(x * 0.7071067811865476))

        _GELU = ErfGelu
    return _GELU


def _exact_gelus(model) -> list[Any]:
    """The top-level ``Activation("gelu")`` layers (exact, not the tanh approximation) of ``model``."""
    import keras

    return [layer for layer in model.layers if type(layer) is keras.layers.Activation
            and layer.get_config().get("activation") == "gelu"]


def _grouped(model) -> list[Any]:
    """The top-level ``Conv2D`` layers of ``model`` with ``groups > 1`` (channels_last)."""
    import keras

    return [layer for layer in model.layers if type(layer) is keras.layers.Conv2D and layer.groups > 1
            and layer.data_format == "channels_last"]


def _is_depthwise(layer) -> bool:
    return int(layer.kernel.shape[2]) == 1  # (kh, kw, in / groups, filters): one input channel per group


def onnx_blockers(model) -> list[str]:
    """Layers ONNX export cannot take even after :func:`for_onnx`: grouped convolutions of other kinds
    (1D, 3D, transposed, channels_first, inside a nested model), as ``'name' (Class groups=g)``."""
    rewritten = {id(layer) for layer in _grouped(model)}
    return [f"{layer.name!r} ({type(layer).__name__} groups={layer.groups})"
            for layer in model._flatten_layers(include_self=False)
            if getattr(layer, "groups", 1) > 1 and id(layer) not in rewritten]


def _entry_name(entry: dict, sequential: bool) -> str:
    return entry["config"]["name"] if sequential else entry["name"]


def _replaced(model, names: dict[str, Optional[dict]], purpose: str):
    """``model`` rebuilt with the layers in ``names`` replaced by a serialized layer (or, for None, kept)."""
    config, sequential = check_model(model, purpose)
    config = copy.deepcopy(config)
    for entry in config["layers"]:
        new = names.get(_entry_name(entry, sequential))
        if new is not None:
            keep = {k: entry[k] for k in ("name", "inbound_nodes") if k in entry}
            entry.clear()
            entry.update({**new, **keep})
    return rebuild(model, config, purpose, {"PlainGroupedConv2D": plain_grouped_conv_class(),
                                            "ErfGelu": erf_gelu_class()})


def _serialized(layer_class, **config) -> dict:
    import keras

    return keras.saving.serialize_keras_object(layer_class(**config))


def depthwise_grouped(model):
    """``model`` with every ``Conv2D(groups == input channels)`` as an exact ``DepthwiseConv2D`` (same names);
    ``model`` itself when it has none. The input model is not modified."""
    import keras

    layers = [layer for layer in _grouped(model) if _is_depthwise(layer)]
    if not layers:
        return model
    specs = {}
    for layer in layers:
        c = layer.get_config()
        specs[layer.name] = _serialized(
            keras.layers.DepthwiseConv2D, name=layer.name, kernel_size=c["kernel_size"], strides=c["strides"],
            padding=c["padding"], depth_multiplier=layer.filters // layer.groups, data_format=c["data_format"],
            dilation_rate=c["dilation_rate"], activation=c["activation"], use_bias=c["use_bias"],
            dtype=c.get("dtype"), trainable=c.get("trainable", True))
    new = _replaced(model, specs, "a depthwise form of grouped convolutions")
    for layer in new.layers:
        old = layer_or_none(model, layer.name)
        weights = old.get_weights()
        if layer.name in specs:  # (kh, kw, 1, C * M) -> (kh, kw, C, M): output channel c * M + m in both
            kh, kw, _, filters = weights[0].shape
            weights[0] = weights[0].reshape(kh, kw, old.groups, filters // old.groups)
        layer.set_weights(weights)
    return new


def for_onnx(model):
    """``model`` with grouped ``Conv2D`` layers as :class:`PlainGroupedConv2D` (same weights) and exact GELU
    activations as :class:`ErfGelu`, for tf2onnx; ``model`` itself when it has none. Groups equal to the
    channels become depthwise first."""
    model = depthwise_grouped(model)
    layers, gelus = _grouped(model), _exact_gelus(model)
    if not layers and not gelus:
        return model
    cls = plain_grouped_conv_class()
    specs = {layer.name: _serialized(cls, **layer.get_config()) for layer in layers}
    specs.update({layer.name: _serialized(erf_gelu_class(), name=layer.name) for layer in gelus})
    new = _replaced(model, specs, "ONNX export of grouped convolutions")
    for layer in new.layers:
        layer.set_weights(layer_or_none(model, layer.name).get_weights())
    return new

