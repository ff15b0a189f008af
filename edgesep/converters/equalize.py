"""Cross-layer equalization (CLE) and bias absorption for per-tensor int8 (Nagel et al. 2019, arXiv 1906.04721).

Two convolutions joined by nothing, or by a ReLU, compute the same function when output channel ``i`` of
the first is divided by ``s_i > 0`` and input channel ``i`` of the second is multiplied by ``s_i``, because
``relu(x / s) = relu(x) / s``. Choosing ``s_i = sqrt(r1_i * r2_i) / r2_i`` (``r1``: the first layer's
output-channel weight range, ``r2``: the second layer's input-channel range) makes both ranges
``sqrt(r1_i * r2_i)``, which evens out the per-channel ranges of BN-folded depthwise kernels that per-tensor
int8 weight quantization cannot represent. Every link of a chain (stem conv -> depthwise -> pointwise ->
depthwise ...) is equalized in turn until the scales stop changing; on a conv -> depthwise -> pointwise
triplet this converges to the cube-root solution (all three ranges ``cbrt(r1 * r2 * r3)``).

Links handled: ``Conv2D``, ``DepthwiseConv2D`` (any depth multiplier) and ``SeparableConv2D`` as producer or
consumer, joined directly or through one ReLU-like activation (``ReLU``, ``LeakyReLU``,
``Activation('relu'|'relu6')``) and scale-equivariant pass-throughs (``ZeroPadding2D``, ``Dropout``,
``MaxPooling2D``, ``Identity``); the depthwise and pointwise kernels inside a ``SeparableConv2D`` form a
link of their own. ReLU6 (any capped ReLU) is not scale-equivariant: ``relu6="clip"`` (the default) makes
it a :func:`channel_relu_class` layer clipping channel ``i`` at ``6 / s_i`` (exact; TFLite adds one
``MINIMUM`` per clip), ``"replace"`` makes it a ReLU (changes the function), ``"keep"`` skips those links.

Bias absorption moves ``c_i >= 0`` out of a ReLU: when a pre-activation channel never falls below ``c_i``,
``relu(x - c) + c = relu(x)``, so the producer's bias drops by ``c`` and the consumer's bias rises by ``W c``.
``c`` is ``max(0, beta - 3 |gamma|)`` of the BatchNormalization that followed the producer in the input
model, or the per-channel minimum of the pre-activation over ``calibration_data`` when given (then the
equalized model is exact on that data). Only consumers where ``W c`` is exact everywhere take part: 1x1
kernels or ``valid`` padding; a 3x3 ``same``-padded consumer would be wrong at the zero-padded borders and
is skipped with that reason.

Keras is imported inside the functions, so importing this module is cheap.
"""
from __future__ import annotations

import copy
import dataclasses
from typing import Any, Callable, Iterable, Optional

import numpy as np

from edgesep.converters import ConversionError
from edgesep.converters.fold import (FoldReport, _f64, _functional_graph, _Graph, _layer, _rebuild,
                                     _sequential_graph)

RELU6_MODES = ("replace", "clip", "keep")
BN_SIGMAS = 3.0  # c = max(0, beta - BN_SIGMAS * |gamma|)
MAX_PATH = 4  # layers allowed between two convolutions of a link

Weights = dict[str, np.ndarray]


# --- the per-channel clip layer used by relu6="clip" ---

_CHANNEL_RELU: list[type] = []


def channel_relu_class() -> type:
    """The ``ChannelReLU`` Keras layer class (``min(max(x, 0), cap)`` with a per-channel ``cap`` weight).

    It is registered as ``edgesep>ChannelReLU`` the first time this is called, so a saved equalized model
    loads after calling this (or with ``custom_objects=custom_objects()``). TFLite converts it to
    ``RELU`` and ``MINIMUM`` against a constant vector.
    """
    if _CHANNEL_RELU:
        return _CHANNEL_RELU[0]
    import keras

    @keras.saving.register_keras_serializable(package="edgesep")
    class ChannelReLU(keras.layers.Layer):
        """ReLU clipped per channel: ``min(max(x, 0), cap)``, ``cap`` a non-trainable vector over the last axis."""

        def __init__(self, initial_cap: float = 6.0, **kwargs):
            super().__init__(**kwargs)
            self.initial_cap = float(initial_cap)

        def build(self, input_shape):
            self.cap = self.add_weight(name="cap", shape=(int(input_shape[-1]),), trainable=False,
                                       initializer=keras.initializers.Constant(self.initial_cap))

        def call(self, x):
            return keras.ops.minimum(keras.ops.relu(x), self.cap)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "initial_cap": self.initial_cap}

    _CHANNEL_RELU.append(ChannelReLU)
    return ChannelReLU


def custom_objects() -> dict[str, type]:
    """``custom_objects`` for ``keras.models.load_model`` of a model saved after ``equalize``."""
    cls = channel_relu_class()
    return {"ChannelReLU": cls, "edgesep>ChannelReLU": cls}


# --- the report ---

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
        }


# --- per-channel weight views: ranges and scaling of one side of a layer ---

def _max_abs(a: np.ndarray, keep_axis: int) -> np.ndarray:
    axes = tuple(i for i in range(a.ndim) if i != keep_axis % a.ndim)
    return np.max(np.abs(a), axis=axes)


def _dw_out(kernel: np.ndarray) -> np.ndarray:
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


@dataclasses.dataclass(frozen=True)
class _Side:
    """How to read and scale one side (output or input channels) of one layer type."""

    key: str
    range: Callable[[Weights], np.ndarray]
    scale: Callable[[Weights, np.ndarray], Weights]


_OUT: dict[str, _Side] = {
    "Conv2D": _Side("kernel", lambda w: _max_abs(w["kernel"], -1), lambda w, s: _div_out(w, "kernel", s, False)),
    "DepthwiseConv2D": _Side("kernel", lambda w: np.max(np.abs(_dw_out(w["kernel"])), axis=0),
                             lambda w, s: _div_out(w, "kernel", s, True)),
    "SeparableConv2D": _Side("pointwise_kernel", lambda w: _max_abs(w["pointwise_kernel"], -1),
                             lambda w, s: _div_out(w, "pointwise_kernel", s, False)),
    "SeparableConv2D/depthwise": _Side("depthwise_kernel", lambda w: np.max(np.abs(_dw_out(w["depthwise_kernel"])), 0),
                                       lambda w, s: _div_out(w, "depthwise_kernel", s, True)),
}
_IN: dict[str, _Side] = {
    "Conv2D": _Side("kernel", lambda w: _max_abs(w["kernel"], 2), lambda w, s: _mul_in(w, "kernel", s)),
    "DepthwiseConv2D": _Side("kernel", lambda w: _max_abs(w["kernel"], 2), lambda w, s: _mul_in(w, "kernel", s)),
    "SeparableConv2D": _Side("depthwise_kernel", lambda w: _max_abs(w["depthwise_kernel"], 2),
                             lambda w, s: _mul_in(w, "depthwise_kernel", s)),
    "SeparableConv2D/pointwise": _Side("pointwise_kernel", lambda w: _max_abs(w["pointwise_kernel"], 2),
                                       lambda w, s: _mul_in(w, "pointwise_kernel", s)),
}


def _range_ratio(r: np.ndarray) -> float:
    """max / min of the nonzero per-channel ranges (1.0 when fewer than one is nonzero)."""
    r = r[r > 0]
    return float(r.max() / r.min()) if r.size else 1.0


# --- finding the links in the graph ---

@dataclasses.dataclass
class _Link:
    producer: str  # layer name
    consumer: str
    out_kind: str  # key of _OUT
    in_kind: str  # key of _IN
    via: tuple[str, ...] = ()
    act: Optional[str] = None  # the activation layer in via, if any
    cap: Optional[np.ndarray] = None  # its per-channel upper bound (ReLU6: 6), None for an uncapped ReLU
    scale: Optional[np.ndarray] = None  # accumulated s

    @property
    def label(self) -> tuple[str, str]:
        p = self.producer + ("/depthwise" if self.out_kind.endswith("/depthwise") else "")
        c = self.consumer + ("/pointwise" if self.in_kind.endswith("/pointwise") else "")
        return p, c


def _conv_kind(layer) -> Optional[str]:
    from keras import layers

    kinds = {layers.SeparableConv2D: "SeparableConv2D", layers.DepthwiseConv2D: "DepthwiseConv2D",
             layers.Conv2D: "Conv2D"}
    return kinds.get(type(layer))


def _activation_cap(layer) -> tuple[bool, Optional[float], str]:
    """(is a ReLU-like activation, its cap, reason it is not usable or "")."""
    from keras import layers

    if _is_channel_relu(layer):
        return True, None, ""  # its caps are a weight, read by _find_links
    if type(layer) is layers.ReLU:
        if float(layer.threshold) != 0.0:
            return True, None, f"ReLU '{layer.name}' has threshold {layer.threshold}"
        cap = None if layer.max_value is None else float(layer.max_value)
        if cap is not None and float(layer.negative_slope) != 0.0:
            return True, None, f"ReLU '{layer.name}' is leaky and capped"
        return True, cap, ""
    if type(layer) is layers.LeakyReLU:
        return True, None, ""
    if type(layer) is layers.Activation:
        name = getattr(layer.activation, "__name__", str(layer.activation))
        if name in ("relu", "relu6"):
            return True, (6.0 if name == "relu6" else None), ""
        if name == "linear":
            return False, None, ""
        return True, None, f"activation {name} in '{layer.name}' is not scale-equivariant"
    return False, None, ""


def _is_channel_relu(layer) -> bool:
    return bool(_CHANNEL_RELU) and type(layer) is _CHANNEL_RELU[0]


def _passthrough(layer) -> bool:
    from keras import layers

    return type(layer) in (layers.ZeroPadding2D, layers.Dropout, layers.MaxPooling2D, layers.Identity) or (
        type(layer) is layers.Activation and getattr(layer.activation, "__name__", "") == "linear")


def _conv_problem(layer, as_producer: bool) -> str:
    if layer.data_format != "channels_last":
        return f"'{layer.name}' is channels_first"
    if getattr(layer, "groups", 1) != 1:
        return f"'{layer.name}' is a grouped convolution"
    activation = getattr(layer.activation, "__name__", str(layer.activation))
    if as_producer and activation not in ("linear", "relu"):
        return f"'{layer.name}' has activation {activation} inside"
    if any(not np.issubdtype(np.dtype(v.dtype), np.floating) for v in layer.weights):
        return f"'{layer.name}' has non-float weights"
    return ""


def _walk_back(model, graph: _Graph, consumer: str) -> tuple[Optional[str], list[str], str]:
    """(producer conv, layers between in forward order, reason this is no link or "") for ``consumer``."""
    path: list[str] = []
    name = consumer
    for _ in range(MAX_PATH + 1):
        refs = graph.inputs.get(name, [])
        if len(refs) != 1:
            return None, path, ""
        ref = tuple(refs[0])
        layer = _layer(model, ref[0])
        if layer is None:
            return None, path, ""
        if graph.uses[ref] > 1 or graph.calls[layer.name] != 1 or ref[1:] != (0, 0):
            reason = f"'{layer.name}' output also feeds other layers or the layer is shared"
            return (layer.name if _conv_kind(layer) else None), path[::-1], reason
        if _conv_kind(layer):
            return layer.name, path[::-1], ""
        path.append(layer.name)
        name = layer.name
    return None, path, ""


def _judge_path(model, via: list[str]) -> tuple[Optional[str], Optional[float], str]:
    """(activation layer, cap, reason the path is not scale-equivariant or "")."""
    act, cap = None, None
    for name in via:
        layer = model.get_layer(name)
        is_act, layer_cap, reason = _activation_cap(layer)
        if reason:
            return None, None, reason
        if is_act:
            if act is not None:
                return None, None, f"two activations between ('{act}', '{name}')"
            act, cap = name, layer_cap
        elif not _passthrough(layer):
            return None, None, f"joined by {type(layer).__name__} '{name}', which equalize does not pass through"
    return act, cap, ""


def _find_links(model, graph: _Graph, relu6: str) -> tuple[list[_Link], list[tuple[str, str, str]]]:
    links, skipped = [], []
    for name in graph.order:
        layer = _layer(model, name)
        kind = _conv_kind(layer) if layer is not None else None
        if kind is None:
            continue
        if kind == "SeparableConv2D" and not _conv_problem(layer, False) and graph.calls[name] == 1:
            links.append(_Link(name, name, "SeparableConv2D/depthwise", "SeparableConv2D/pointwise"))
        producer, via, reason = _walk_back(model, graph, name)
        if producer is None:
            continue
        reason = reason or _conv_problem(model.get_layer(producer), True) or _conv_problem(layer, False)
        if not reason and graph.calls[name] != 1:
            reason = f"'{name}' is shared"
        act, cap, path_reason = _judge_path(model, via) if not reason else (None, None, "")
        reason = reason or path_reason
        if not reason and cap is not None and relu6 == "keep":  # a ChannelReLU has cap None here: exact anyway
            reason = f"joined by capped ReLU '{act}' (relu6='keep')"
        if reason:
            skipped.append((producer, name, reason))
            continue
        out_kind = _conv_kind(model.get_layer(producer))
        if act and _is_channel_relu(model.get_layer(act)):
            caps = _f64(model.get_layer(act).cap)  # an earlier equalization's clip scales with the link
        else:
            caps = None if cap is None else np.array([cap])
        links.append(_Link(producer, name, out_kind, kind, tuple(via), act, caps))
    return links, skipped


# --- the scaling itself ---

def _equalize_weights(links: list[_Link], weights: dict[str, Weights], max_iter: int, tol: float) -> tuple[int, bool]:
    """Scale ``weights`` in place, link after link, until max |log s| < tol; returns (sweeps, converged)."""
    for link in links:
        n = len(_OUT[link.out_kind].range(weights[link.producer]))
        link.scale = np.ones(n)
    for sweep in range(1, max_iter + 1):
        largest = 0.0
        for link in links:
            out, inp = _OUT[link.out_kind], _IN[link.in_kind]
            r1, r2 = out.range(weights[link.producer]), inp.range(weights[link.consumer])
            ok = (r1 > 0) & (r2 > 0)
            s = np.where(ok, np.sqrt(r1 * np.where(ok, r2, 1.0)) / np.where(ok, r2, 1.0), 1.0)
            weights[link.producer] = out.scale(weights[link.producer], s)
            weights[link.consumer] = inp.scale(weights[link.consumer], s)
            link.scale = link.scale * s
            largest = max(largest, float(np.max(np.abs(np.log(s)))))
        if largest < tol:
            return sweep, True
    return max_iter, False


def _check_lengths(links: list[_Link], weights: dict[str, Weights], skipped: list) -> list[_Link]:
    kept = []
    for link in links:
        n_out = len(_OUT[link.out_kind].range(weights[link.producer]))
        n_in = len(_IN[link.in_kind].range(weights[link.consumer]))
        if n_out != n_in:
            skipped.append((*link.label, f"{n_out} output channels feed {n_in} input channels"))
        else:
            kept.append(link)
    return kept


# --- bias absorption ---

def _absorb_problem(model, link: _Link) -> str:
    if link.act is None:
        return "no ReLU between (nothing to absorb)"
    if any(not _activation_cap(model.get_layer(v))[0] for v in link.via):
        return "a pass-through layer between (zero padding or pooling) would not carry the shift exactly"
    consumer = model.get_layer(link.consumer)
    size = consumer.kernel_size
    if tuple(size) != (1, 1) and consumer.padding != "valid":
        return (f"consumer '{link.consumer}' is a {size[0]}x{size[1]} '{consumer.padding}'-padded conv: "
                f"the absorbed bias would be wrong at the zero-padded borders")
    return ""


def _consumer_shift(kind: str, w: Weights, c: np.ndarray) -> np.ndarray:
    """The consumer's output change for a constant input ``c`` per channel (``W c``), exact without borders."""
    if kind == "Conv2D":
        return np.einsum("hwio,i->o", w["kernel"], c)
    if kind == "DepthwiseConv2D":
        return np.einsum("hwim,i->im", w["kernel"], c).reshape(-1)
    d = np.einsum("hwim,i->im", w["depthwise_kernel"], c).reshape(-1)
    return d @ w["pointwise_kernel"][0, 0]


def _bn_shift(original, fold: FoldReport, link: _Link) -> Optional[np.ndarray]:
    """max(0, beta - 3 |gamma|) of the BN that followed the producer in the input model, scaled by 1/s."""
    bn_name = dict(fold.folded).get(link.producer)
    if bn_name is None:
        return None
    bn = original.get_layer(bn_name)
    gamma = np.abs(_f64(bn.gamma)) if bn.scale else np.ones(bn.moving_mean.shape)
    beta = _f64(bn.beta) if bn.center else np.zeros(bn.moving_mean.shape)
    return np.maximum(0.0, beta - BN_SIGMAS * gamma) / link.scale


def _calibration_shifts(model, links: list[_Link], data: np.ndarray) -> list[np.ndarray]:
    import keras

    probe = keras.Model(model.inputs, [model.get_layer(link.producer).output for link in links])
    outs = _infer(probe, data)
    return [np.maximum(0.0, np.min(o.reshape(-1, o.shape[-1]), axis=0).astype(np.float64)) for o in outs]


def _absorb(new_model, original, fold: FoldReport, links: list[_Link], weights: dict[str, Weights],
            calibration: Optional[np.ndarray]) -> tuple[list[BiasResult], list[tuple[str, str, str]]]:
    candidates, skipped = [], []
    for link in links:
        problem = _absorb_problem(new_model, link)
        if problem:
            if link.act is not None:
                skipped.append((*link.label, problem))
        else:
            candidates.append(link)
    if not candidates:
        return [], skipped
    if calibration is not None:
        shifts, source = _calibration_shifts(new_model, candidates, calibration), "calibration"
    else:
        shifts, source = [_bn_shift(original, fold, link) for link in candidates], "batchnorm"
    done = []
    for link, c in zip(candidates, shifts):
        if c is None:
            skipped.append((*link.label, "no BatchNormalization statistics and no calibration data"))
            continue
        if link.cap is not None:
            c = np.minimum(c, link.cap)
            link.cap = link.cap - c
        weights[link.producer]["bias"] = weights[link.producer]["bias"] - c
        weights[link.consumer]["bias"] = weights[link.consumer]["bias"] + _consumer_shift(
            link.in_kind, weights[link.consumer], c)
        done.append(BiasResult(link.producer, link.consumer, source, int(np.sum(c > 0)), len(c),
                               float(np.max(c)), float(np.mean(c))))
    return done, skipped


# --- rebuilding the model with edited activations and biases ---

def _edit_config(config: dict, sequential: bool, links: list[_Link], relu6: str,
                 need_bias: set[str]) -> tuple[dict, list]:
    import keras

    config = copy.deepcopy(config)
    entries = {(e["config"]["name"] if sequential else e["name"]): e for e in config["layers"]}
    changes = []
    for link in links:
        if link.act is None:
            continue
        entry = entries[link.act]
        if entry["class_name"] == "ChannelReLU" or link.cap is None:
            continue  # an uncapped ReLU, or already a per-channel clip
        if relu6 == "replace":
            if entry["class_name"] == "ReLU":
                entry["config"]["max_value"] = None
            else:
                entry["config"]["activation"] = "relu"
            link.cap = None
            changes.append((link.act, "capped ReLU replaced by ReLU"))
        else:
            layer = channel_relu_class()(initial_cap=float(link.cap[0]), name=link.act)
            serialized = keras.saving.serialize_keras_object(layer)
            for key in ("module", "class_name", "config", "registered_name"):
                entry[key] = serialized.get(key)
            changes.append((link.act, "capped ReLU replaced by a per-channel clip"))
    for name in need_bias:
        entries[name]["config"]["use_bias"] = True
    return config, changes


def _assign(layer, values: Weights) -> None:
    by_name = {v.name: v for v in layer.weights}
    for name, var in by_name.items():
        value = values[name] if name in values else np.zeros(var.shape)
        var.assign(np.asarray(value).astype(np.dtype(var.dtype)))


def _load_weights(new_model, folded, weights: dict[str, Weights], links: list[_Link]) -> None:
    caps = {link.act: link.cap for link in links if link.act is not None and link.cap is not None}
    for layer in new_model.layers:
        if layer.name in weights:
            _assign(layer, weights[layer.name])
        elif layer.name in caps and _is_channel_relu(layer):
            _assign(layer, {"cap": caps[layer.name]})
        else:
            layer.set_weights(folded.get_layer(layer.name).get_weights())


def _read_weights(model, links: list[_Link], need_bias: set[str]) -> dict[str, Weights]:
    weights: dict[str, Weights] = {}
    for name in {n for link in links for n in (link.producer, link.consumer)}:
        layer = model.get_layer(name)
        weights[name] = {v.name: _f64(v) for v in layer.weights}
        if name in need_bias and "bias" not in weights[name]:
            n = _OUT[_conv_kind(layer)].range(weights[name]).shape[0]
            weights[name]["bias"] = np.zeros(n)
    return weights


# --- the front door ---

def _check_args(relu6: str, max_iter: int, tol: float, calibration_data, eval_data) -> None:
    if relu6 not in RELU6_MODES:
        raise ConversionError(f"unknown relu6 mode {relu6!r}; valid: {', '.join(RELU6_MODES)}")
    if int(max_iter) < 1 or not float(tol) > 0:
        raise ConversionError(f"max_iter must be >= 1 and tol > 0, got {max_iter} and {tol}")
    if calibration_data is not None and len(calibration_data) == 0:
        raise ConversionError("calibration_data is empty")
    if eval_data is not None and (len(eval_data) != 2 or len(eval_data[0]) != len(eval_data[1])):
        raise ConversionError("eval_data must be (images, labels) of equal length")


def _graph_of(model) -> tuple[dict, bool, _Graph]:
    import keras

    config = model.get_config()
    sequential = isinstance(model, keras.Sequential)
    graph = _sequential_graph(config) if sequential else _functional_graph(config)
    return config, sequential, graph


def _depthwise_ratios(before, after) -> list[tuple[str, float, float]]:
    rows = []
    for layer in after.layers:
        kind = _conv_kind(layer)
        key = {"DepthwiseConv2D": "kernel", "SeparableConv2D": "depthwise_kernel"}.get(kind or "")
        if key is None:
            continue
        ratios = []
        for m in (before, after):
            w = {v.name: _f64(v) for v in m.get_layer(layer.name).weights}
            ratios.append(_range_ratio(np.max(np.abs(_dw_out(w[key])), axis=0)))
        rows.append((layer.name, *ratios))
    return rows


def _infer(model, x: np.ndarray, batch: int = 256) -> list[np.ndarray]:
    """Every output of ``model`` on ``x`` in inference mode, called eagerly (``predict`` would trace a new
    function for every freshly built model, most of the time equalization spends on a small network)."""
    x = np.asarray(x, np.float32)
    parts = []
    for i in range(0, len(x), batch):
        out = model(x[i:i + batch], training=False)
        parts.append([np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])])
    return [np.concatenate(chunks) for chunks in zip(*parts)]


def _measure(original, new_model, calibration, eval_data) -> tuple[Optional[float], Optional[dict]]:
    change = accuracy = None
    if calibration is not None:
        a = _infer(original, calibration)[0].astype(np.float64)
        b = _infer(new_model, calibration)[0].astype(np.float64)
        change = float(np.max(np.abs(a - b)) / max(np.max(np.abs(a)), 1e-30))
    if eval_data is not None:
        x, y = np.asarray(eval_data[0], np.float32), np.asarray(eval_data[1]).reshape(-1)
        accuracy = {tag: float(np.mean(np.argmax(_infer(m, x)[0], -1) == y))
                    for tag, m in (("before", original), ("after", new_model))}
    return change, accuracy


def equalize_with_report(model, *, relu6: str = "clip", absorb_bias: bool = True,
                         calibration_data: Optional[np.ndarray] = None, eval_data=None, max_iter: int = 1000,
                         tol: float = 1e-4, exclude: Iterable[str] = ()) -> tuple[Any, EqualizeReport]:
    """Cross-layer equalization (and bias absorption) of a Keras model, with a report.

    Args:
        model: a built functional or Sequential ``keras.Model``; BatchNorm is folded first. Not modified.
        relu6: what to do with capped ReLUs (ReLU6) between two convolutions: ``clip`` each channel at
            ``6 / s`` (exact; the default), ``replace`` them by ReLU (changes the function: a network trained
            into ReLU6 saturation can lose most of its accuracy), or ``keep`` them and skip those links.
        absorb_bias: absorb bias across ReLUs into 1x1 (or valid-padded) consumers.
        calibration_data: float images; when given, bias absorption uses the per-channel minimum of each
            pre-activation over them, and the report gives the output change measured on them.
        eval_data: ``(images, labels)``; when given, the report gives top-1 float accuracy before and after.
        max_iter: most sweeps over all links.
        tol: stop when no scale of a sweep differs from 1 by more than ``tol`` (in log).
        exclude: links to leave alone, named by their producer as in ``PairResult.producer`` (``block1_dw``,
            ``block1_sep/depthwise``); they are listed in ``skipped`` as excluded and absorb no bias.

    Returns:
        (new model, report). The new model is BN-folded and not compiled.

    Raises:
        ConversionError: bad arguments, or a model that cannot be folded or rebuilt.
    """
    _check_args(relu6, max_iter, tol, calibration_data, eval_data)
    from edgesep.converters.fold import fold_with_report

    folded, fold_report = fold_with_report(model)
    config, sequential, graph = _graph_of(folded)
    links, skipped = _find_links(folded, graph, relu6)
    links = _exclude(links, skipped, exclude)
    need_bias = {n for link in links if absorb_bias and link.act is not None for n in (link.producer, link.consumer)}
    weights = _read_weights(folded, links, need_bias)
    links = _check_lengths(links, weights, skipped)
    before = {id(link): (_OUT[link.out_kind].range(weights[link.producer]),
                         _IN[link.in_kind].range(weights[link.consumer])) for link in links}
    sweeps, converged = _equalize_weights(links, weights, int(max_iter), float(tol))
    new_config, changes = _edit_config(config, sequential, links, relu6, need_bias)
    for link in links:  # caps follow their channels: relu6(x) / s = min(relu(x / s), 6 / s)
        if link.cap is not None:
            link.cap = np.broadcast_to(link.cap, link.scale.shape) / link.scale
    new_model = _rebuild(folded, new_config, "equalization", custom_objects())
    _load_weights(new_model, folded, weights, links)
    absorbed, bias_skipped = [], []
    if absorb_bias:
        calib = None if calibration_data is None else np.asarray(calibration_data, np.float32)
        absorbed, bias_skipped = _absorb(new_model, model, fold_report, links, weights, calib)
        _load_weights(new_model, folded, weights, links)
    pairs = tuple(_pair_result(link, before[id(link)], weights) for link in links)
    change, accuracy = _measure(model, new_model, calibration_data, eval_data)
    report = EqualizeReport(relu6, pairs, tuple(skipped), sweeps, converged, tuple(changes),
                            tuple(_depthwise_ratios(folded, new_model)), tuple(absorbed), tuple(bias_skipped),
                            fold_report, change, accuracy)
    return new_model, report


def _exclude(links: list[_Link], skipped: list, names: Iterable[str]) -> list[_Link]:
    names = [names] if isinstance(names, str) else list(names)
    known = {link.label[0] for link in links} | {p for p, _, _ in skipped}
    unknown = [n for n in names if n not in known]
    if unknown:
        valid = ", ".join(sorted(link.label[0] for link in links)) or "none"
        raise ConversionError(f"cannot exclude {unknown[0]!r}: not a link producer of this model (links: {valid})")
    kept = []
    for link in links:
        if link.label[0] in names:
            skipped.append((*link.label, "excluded"))
        else:
            kept.append(link)
    return kept


def _pair_result(link: _Link, before: tuple[np.ndarray, np.ndarray], weights: dict[str, Weights]) -> PairResult:
    after = (_OUT[link.out_kind].range(weights[link.producer]), _IN[link.in_kind].range(weights[link.consumer]))
    kind = f"{link.out_kind} -> {link.in_kind}"
    return PairResult(*link.label, link.via, kind, len(before[0]),
                      (_range_ratio(before[0]), _range_ratio(after[0])),
                      (_range_ratio(before[1]), _range_ratio(after[1])))


def equalize(model, *, relu6: str = "clip", absorb_bias: bool = True,
             calibration_data: Optional[np.ndarray] = None, max_iter: int = 1000, tol: float = 1e-4,
             exclude: Iterable[str] = ()):
    """``model`` with cross-layer equalization and bias absorption applied (see ``equalize_with_report``).

    Args:
        model: a built functional or Sequential ``keras.Model``; not modified.
        relu6: ``clip`` (exact), ``replace`` or ``keep`` (what to do with ReLU6 between two convolutions).
        absorb_bias: absorb bias across ReLUs into the following 1x1 conv.
        calibration_data: float images for the bias absorption amounts (else BN statistics are used).
        max_iter: most sweeps over all links.
        tol: convergence tolerance on the scales (log).
        exclude: producers of links to leave alone (see ``equalize_with_report``).

    Returns:
        A new BN-folded ``keras.Model``.
    """
    return equalize_with_report(model, relu6=relu6, absorb_bias=absorb_bias, calibration_data=calibration_data,
                                max_iter=max_iter, tol=tol, exclude=exclude)[0]
