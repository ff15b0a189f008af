"""Exact BatchNorm folding: conv -> BatchNormalization becomes one conv with a bias.

A BatchNormalization at inference is the per-channel affine map ``y = s * x + t`` with
``s = gamma / sqrt(moving_variance + epsilon)`` and ``t = beta - moving_mean * s``. When it directly
follows a linear ``Conv2D``, ``DepthwiseConv2D`` or ``SeparableConv2D`` whose output feeds nothing
else, the map moves into the conv's (pointwise) kernel and bias and the BN layer disappears.

The folded model is rebuilt from the input model's config (functional or Sequential), so the input
model is never touched; every other layer keeps its name, config and weights. A BN that cannot be
folded exactly stays in place and is listed in ``FoldReport.kept`` with the reason. Keras is imported
inside the functions, so importing this module is cheap.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable

import numpy as np

from edgesep.converters.graph import (Graph, Ref, Weights, assign, conv_kind, is_ref, layer_or_none, read_graph,
                                      rebuild, to_f64, weights64)
from edgesep.errors import ConversionError


@dataclasses.dataclass(frozen=True)
class FoldReport:
    """What ``fold_batchnorm_with_report`` did.

    Attributes:
        folded: (conv layer name, BN layer name) for every BN folded into the conv before it.
        kept: (BN layer name, reason) for every BN left in place; BNs inside nested models are named
            ``outer/inner``.
    """

    folded: tuple[tuple[str, str], ...] = ()
    kept: tuple[tuple[str, str], ...] = ()

    def __post_init__(self):
        for field in ("folded", "kept"):
            pairs = tuple(tuple(p) for p in getattr(self, field))
            if any(len(p) != 2 or not all(isinstance(s, str) for s in p) for p in pairs):
                raise ValueError(f"FoldReport.{field} must hold (str, str) pairs, got {pairs!r}")
            object.__setattr__(self, field, pairs)

    def to_dict(self) -> dict[str, list[dict[str, str]]]:
        """A JSON-ready dict: ``{"folded": [{"conv", "bn"}], "kept": [{"bn", "reason"}]}``."""
        return {
            "folded": [{"conv": conv, "bn": bn} for conv, bn in self.folded],
            "kept": [{"bn": bn, "reason": reason} for bn, reason in self.kept],
        }


# --- the folding math, one entry per conv type: (conv weights, s, t) -> new conv weights (float64) ---

def _fold_conv2d(w: Weights, s: np.ndarray, t: np.ndarray) -> Weights:
    kernel = w["kernel"]  # (kh, kw, in / groups, filters)
    bias = w.get("bias", np.zeros(kernel.shape[-1]))
    return {"kernel": kernel * s, "bias": bias * s + t}


def _fold_depthwise(w: Weights, s: np.ndarray, t: np.ndarray) -> Weights:
    kernel = w["kernel"]  # (kh, kw, in, multiplier); output channel c * multiplier + m
    bias = w.get("bias", np.zeros(kernel.shape[2] * kernel.shape[3]))
    return {"kernel": kernel * s.reshape(kernel.shape[2:]), "bias": bias * s + t}


def _fold_separable(w: Weights, s: np.ndarray, t: np.ndarray) -> Weights:
    pointwise = w["pointwise_kernel"]  # (1, 1, in * multiplier, filters)
    bias = w.get("bias", np.zeros(pointwise.shape[-1]))
    return {"depthwise_kernel": w["depthwise_kernel"], "pointwise_kernel": pointwise * s, "bias": bias * s + t}


_FOLDERS: dict[str, Callable[[Weights, np.ndarray, np.ndarray], Weights]] = {
    "Conv2D": _fold_conv2d,
    "DepthwiseConv2D": _fold_depthwise,
    "SeparableConv2D": _fold_separable,
}


def _bn_affine(bn) -> tuple[np.ndarray, np.ndarray]:
    """(s, t) in float64 such that BN(x) = s * x + t per channel at inference."""
    mean, var = to_f64(bn.moving_mean), to_f64(bn.moving_variance)
    gamma = to_f64(bn.gamma) if bn.scale else np.ones_like(mean)
    beta = to_f64(bn.beta) if bn.center else np.zeros_like(mean)
    s = gamma / np.sqrt(var + float(bn.epsilon))
    return s, beta - mean * s


# --- deciding which BN folds ---

def _decide(bn, graph: Graph, model) -> tuple[str | None, str]:
    """(conv name, "") when ``bn`` folds into the conv before it, else (None, reason)."""
    from keras import layers

    if type(bn) is not layers.BatchNormalization:
        return None, f"custom BatchNormalization subclass {type(bn).__name__}"
    if graph.calls[bn.name] != 1:
        return None, f"BN layer is shared (called {graph.calls[bn.name]} times)"
    if graph.kwargs[bn.name].get("training"):
        return None, "BN called with training=True"
    refs = graph.inputs[bn.name]
    if len(refs) != 1:
        return None, "BN input is not a single tensor"
    producer = layer_or_none(model, refs[0][0])
    if conv_kind(producer) is None:
        what = "the model input" if producer is None else f"{type(producer).__name__} '{producer.name}'"
        return None, f"follows {what}, not a conv"
    reason = _conv_reason(producer, bn, refs[0], graph)
    return (None, reason) if reason else (producer.name, "")


def _channel_axis(bn) -> int | None:
    axis = bn.axis
    if isinstance(axis, (list, tuple)):
        axis = axis[0] if len(axis) == 1 else None
    return None if axis is None else int(axis) % 4


def _conv_reason(conv, bn, ref: Ref, graph: Graph) -> str:
    """Why the BN cannot be folded into ``conv`` (whose output ``ref`` feeds it), or ""."""
    if graph.calls[conv.name] != 1 or tuple(ref[1:]) != (0, 0):
        return f"conv '{conv.name}' is shared (called {graph.calls[conv.name]} times)"
    if graph.uses[tuple(ref)] > 1:
        return f"conv '{conv.name}' output also feeds other layers"
    if conv.data_format != "channels_last":
        return f"conv '{conv.name}' is channels_first"
    activation = getattr(conv.activation, "__name__", str(conv.activation))
    if activation != "linear":
        return f"conv '{conv.name}' has activation {activation} inside"
    if getattr(conv, "quantization_mode", None) is not None or getattr(conv, "lora_enabled", False):
        return f"conv '{conv.name}' is quantized or has LoRA"
    if any(not np.issubdtype(np.dtype(v.dtype), np.floating) for v in conv.weights):
        return f"conv '{conv.name}' has non-float weights"
    if _channel_axis(bn) != 3:
        return f"BN normalizes axis {bn.axis}, not the channel axis"
    s, t = _bn_affine(bn)
    if not (np.all(np.isfinite(s)) and np.all(np.isfinite(t))):
        return "BN statistics give a non-finite scale (variance + epsilon <= 0?)"
    return ""


def _nested_bns(model) -> list[tuple[str, str]]:
    """BNs hidden inside nested models or wrapper layers, with the reason they stay."""
    from keras import layers

    kept = []
    for layer in model.layers:
        inner = getattr(layer, "_flatten_layers", None)
        if inner is None:
            continue
        for sub in inner(include_self=False):
            if isinstance(sub, layers.BatchNormalization):
                kept.append((f"{layer.name}/{sub.name}", f"inside nested {type(layer).__name__} '{layer.name}'"))
    return kept


# --- rewriting the config and rebuilding ---

def _rewire(obj: Any, renames: dict[str, str]) -> Any:
    """``obj`` with every reference to a removed BN pointing at its conv instead (in place)."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            history = obj["config"]["keras_history"]
            if history[0] in renames:
                obj["config"]["keras_history"] = [renames[history[0]], 0, 0]
            return obj
        for key, value in obj.items():
            obj[key] = _rewire(value, renames)
    elif isinstance(obj, (list, tuple)):
        return [_rewire(value, renames) for value in obj]
    return obj


def _rewire_outputs(obj: Any, renames: dict[str, str]) -> Any:
    if is_ref(obj):
        return [renames[obj[0]], 0, 0] if obj[0] in renames else list(obj)
    if isinstance(obj, dict):
        return {key: _rewire_outputs(value, renames) for key, value in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_rewire_outputs(value, renames) for value in obj]
    return obj


def _edit_config(config: dict, folded: list[tuple[str, str]], sequential: bool) -> dict:
    config = copy.deepcopy(config)
    renames = {bn: conv for conv, bn in folded}
    convs = set(renames.values())

    def layer_name(entry):
        return entry["config"]["name"] if sequential else entry["name"]

    config["layers"] = [e for e in config["layers"] if layer_name(e) not in renames]
    for entry in config["layers"]:
        if layer_name(entry) in convs:
            entry["config"]["use_bias"] = True
    if not sequential:
        config["layers"] = _rewire(config["layers"], renames)
        config["output_layers"] = _rewire_outputs(config["output_layers"], renames)
    return config


def _copy_weights(new_model, model, folded: list[tuple[str, str]]) -> None:
    into = dict(folded)
    for layer in new_model.layers:
        old = layer_or_none(model, layer.name)
        if old is None:
            raise ConversionError(f"cannot fold {model.name!r}: the rebuilt model has a layer {layer.name!r} "
                                  f"the original does not")
        if layer.name in into:
            s, t = _bn_affine(model.get_layer(into[layer.name]))
            assign(layer, _FOLDERS[conv_kind(old)](weights64(old), s, t))
        else:
            layer.set_weights(old.get_weights())


# --- the front door ---

def fold_batchnorm_with_report(model) -> tuple[Any, FoldReport]:
    """Fold every BatchNormalization that directly follows a linear conv into that conv.

    Args:
        model: a built functional or Sequential ``keras.Model`` (channels_last). It is not modified.

    Returns:
        (new model, report). The new model computes the same function at inference (float64 folding,
        stored in the variables' dtype); folded convs keep their names and get ``use_bias=True``; BNs
        that cannot be folded exactly stay and are listed in the report with the reason. The new model
        is not compiled.

    Raises:
        ConversionError: the model is not a built functional / Sequential model, or cannot be rebuilt.
    """
    from keras import layers

    config, sequential, graph = read_graph(model)
    folded, kept = [], []
    for name in graph.order:
        layer = layer_or_none(model, name)
        if not isinstance(layer, layers.BatchNormalization):
            continue
        conv, reason = _decide(layer, graph, model)
        if conv:
            folded.append((conv, name))
        else:
            kept.append((name, reason))
    kept.extend(_nested_bns(model))
    new_model = rebuild(model, _edit_config(config, folded, sequential), "BatchNorm folding")
    _copy_weights(new_model, model, folded)
    return new_model, FoldReport(folded=tuple(folded), kept=tuple(kept))


fold_with_report = fold_batchnorm_with_report  # the name before the x / x_with_report pattern; kept working


def fold_batchnorm(model):
    """``model`` with every foldable BatchNormalization folded into its conv (see ``fold_batchnorm_with_report``).

    Args:
        model: a built functional or Sequential ``keras.Model``; not modified.

    Returns:
        A new ``keras.Model`` computing the same function.
    """
    return fold_batchnorm_with_report(model)[0]
