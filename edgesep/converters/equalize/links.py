"""Phase 1: the links of a folded model, pairs of convolutions that can be equalized.

A link is a producer convolution whose output feeds only a consumer convolution, directly or through at
most ``MAX_PATH`` layers: one ReLU-like activation and scale-equivariant pass-throughs. The depthwise and
pointwise kernels inside a ``SeparableConv2D`` form a link of their own. Everything else is reported as
skipped with the reason.
"""
from __future__ import annotations

import dataclasses
from typing import Iterable, Optional

import numpy as np

from edgesep.converters.equalize.channel_relu import is_channel_relu
from edgesep.converters.graph import Graph, conv_kind, layer_or_none, to_f64
from edgesep.converters.export_config import RELU6_MODES  # noqa: F401  (spelled once, there)
from edgesep.errors import ConversionError

MAX_PATH = 4  # layers allowed between two convolutions of a link

Skipped = tuple[str, str, str]  # (producer, consumer, reason)


@dataclasses.dataclass(frozen=True, eq=False)
class Link:
    """Two convolutions to equalize.

    Attributes:
        producer: layer whose output channels are divided by the scales.
        consumer: layer whose input channels are multiplied by them.
        out_kind: key of ``scaling.OUT_SIDES`` (the producer's type, or ``SeparableConv2D/depthwise``).
        in_kind: key of ``scaling.IN_SIDES`` (the consumer's type, or ``SeparableConv2D/pointwise``).
        via: layers between them, in forward order.
        act: the activation layer in ``via``, if any.
        cap: its per-channel upper bound before equalization (ReLU6: ``[6.0]``), None for an uncapped ReLU.
    """

    producer: str
    consumer: str
    out_kind: str
    in_kind: str
    via: tuple[str, ...] = ()
    act: Optional[str] = None
    cap: Optional[np.ndarray] = None

    @property
    def label(self) -> tuple[str, str]:
        """(producer, consumer) as reports name them (``name/depthwise``, ``name/pointwise`` inside a separable)."""
        p = self.producer + ("/depthwise" if self.out_kind.endswith("/depthwise") else "")
        c = self.consumer + ("/pointwise" if self.in_kind.endswith("/pointwise") else "")
        return p, c


def activation_cap(layer) -> tuple[bool, Optional[float], str]:
    """(is a ReLU-like activation, its cap, reason it is not usable or "")."""
    from keras import layers

    if is_channel_relu(layer):
        return True, None, ""  # its caps are a weight, read by find_links
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


def _walk_back(model, graph: Graph, consumer: str) -> tuple[Optional[str], list[str], str]:
    """(producer conv, layers between in forward order, reason this is no link or "") for ``consumer``."""
    path: list[str] = []
    name = consumer
    for _ in range(MAX_PATH + 1):
        refs = graph.inputs.get(name, [])
        if len(refs) != 1:
            return None, path, ""
        ref = tuple(refs[0])
        layer = layer_or_none(model, ref[0])
        if layer is None:
            return None, path, ""
        if graph.uses[ref] > 1 or graph.calls[layer.name] != 1 or ref[1:] != (0, 0):
            reason = f"'{layer.name}' output also feeds other layers or the layer is shared"
            return (layer.name if conv_kind(layer) else None), path[::-1], reason
        if conv_kind(layer):
            return layer.name, path[::-1], ""
        path.append(layer.name)
        name = layer.name
    return None, path, ""


def _judge_path(model, via: list[str]) -> tuple[Optional[str], Optional[float], str]:
    """(activation layer, cap, reason the path is not scale-equivariant or "")."""
    act, cap = None, None
    for name in via:
        layer = model.get_layer(name)
        is_act, layer_cap, reason = activation_cap(layer)
        if reason:
            return None, None, reason
        if is_act:
            if act is not None:
                return None, None, f"two activations between ('{act}', '{name}')"
            act, cap = name, layer_cap
        elif not _passthrough(layer):
            return None, None, f"joined by {type(layer).__name__} '{name}', which equalize does not pass through"
    return act, cap, ""


def _link_reason(model, graph: Graph, producer: str, consumer, reason: str) -> str:
    """Why the two convolutions cannot be equalized (``reason`` from the walk first), or ""."""
    reason = reason or _conv_problem(model.get_layer(producer), True) or _conv_problem(consumer, False)
    if not reason and graph.calls[consumer.name] != 1:
        reason = f"'{consumer.name}' is shared"
    return reason


def find_links(model, graph: Graph, relu6: str) -> tuple[list[Link], list[Skipped]]:
    """Every link of ``model`` (BN-folded) in graph order, and the conv pairs skipped with the reason."""
    links, skipped = [], []
    for name in graph.order:
        layer = layer_or_none(model, name)
        kind = conv_kind(layer) if layer is not None else None
        if kind is None:
            continue
        if kind == "SeparableConv2D" and not _conv_problem(layer, False) and graph.calls[name] == 1:
            links.append(Link(name, name, "SeparableConv2D/depthwise", "SeparableConv2D/pointwise"))
        producer, via, reason = _walk_back(model, graph, name)
        if producer is None:
            continue
        reason = _link_reason(model, graph, producer, layer, reason)
        act, cap, path_reason = _judge_path(model, via) if not reason else (None, None, "")
        reason = reason or path_reason
        if not reason and cap is not None and relu6 == "keep":  # a ChannelReLU has cap None here: exact anyway
            reason = f"joined by capped ReLU '{act}' (relu6='keep')"
        if reason:
            skipped.append((producer, name, reason))
            continue
        links.append(Link(producer, name, conv_kind(model.get_layer(producer)), kind, tuple(via), act,
                          _initial_cap(model, act, cap)))
    return links, skipped


def _initial_cap(model, act: Optional[str], cap: Optional[float]) -> Optional[np.ndarray]:
    if act and is_channel_relu(model.get_layer(act)):
        return to_f64(model.get_layer(act).cap)  # an earlier equalization's clip scales with the link
    return None if cap is None else np.array([cap])


def exclude_links(links: list[Link], skipped: list[Skipped],
                  names: Iterable[str]) -> tuple[list[Link], list[Skipped]]:
    """(links not named in ``names``, the excluded ones as skipped entries); unknown names are an error."""
    names = [names] if isinstance(names, str) else list(names)
    known = {link.label[0] for link in links} | {p for p, _, _ in skipped}
    unknown = [n for n in names if n not in known]
    if unknown:
        valid = ", ".join(sorted(link.label[0] for link in links)) or "none"
        raise ConversionError(f"cannot exclude {unknown[0]!r}: not a link producer of this model (links: {valid})")
    kept = [link for link in links if link.label[0] not in names]
    return kept, [(*link.label, "excluded") for link in links if link.label[0] in names]
