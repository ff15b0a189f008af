"""Phase 4: the equalized model: its config (capped ReLUs changed, biases added) and its weights."""
from __future__ import annotations

import copy

import numpy as np

from edgesep.converters.equalize.channel_relu import channel_relu_class, is_channel_relu
from edgesep.converters.equalize.links import Link
from edgesep.converters.equalize.scaling import OUT_SIDES
from edgesep.converters.graph import Weights, assign, conv_kind, weights64


def read_weights(model, links: list[Link], need_bias: set[str]) -> dict[str, Weights]:
    """Float64 weights of every conv in ``links``; layers in ``need_bias`` get a zero bias if they have none."""
    weights: dict[str, Weights] = {}
    for name in {n for link in links for n in (link.producer, link.consumer)}:
        layer = model.get_layer(name)
        weights[name] = weights64(layer)
        if name in need_bias and "bias" not in weights[name]:
            n = OUT_SIDES[conv_kind(layer)].range(weights[name]).shape[0]
            weights[name]["bias"] = np.zeros(n)
    return weights


def _replace_activation(entry: dict, link: Link, relu6: str) -> str:
    """Edit one capped-ReLU config ``entry`` for ``relu6`` mode; return the change made."""
    import keras

    if relu6 == "replace":
        if entry["class_name"] == "ReLU":
            entry["config"]["max_value"] = None
        else:
            entry["config"]["activation"] = "relu"
        return "capped ReLU replaced by ReLU"
    layer = channel_relu_class()(initial_cap=float(link.cap[0]), name=link.act)
    serialized = keras.saving.serialize_keras_object(layer)
    for key in ("module", "class_name", "config", "registered_name"):
        entry[key] = serialized.get(key)
    return "capped ReLU replaced by a per-channel clip"


def edit_config(config: dict, sequential: bool, links: list[Link], relu6: str,
                need_bias: set[str]) -> tuple[dict, list[tuple[str, str]], set[str]]:
    """The equalized model's config.

    Returns:
        (new config, (activation, change) for every capped ReLU changed, names of the capped ReLUs replaced
        by plain ReLUs, which have no cap any more).
    """
    config = copy.deepcopy(config)
    entries = {(e["config"]["name"] if sequential else e["name"]): e for e in config["layers"]}
    changes, replaced = [], set()
    for link in links:
        if link.act is None:
            continue
        entry = entries[link.act]
        if entry["class_name"] == "ChannelReLU" or link.cap is None:
            continue  # an uncapped ReLU, or already a per-channel clip
        changes.append((link.act, _replace_activation(entry, link, relu6)))
        if relu6 == "replace":
            replaced.add(link.act)
    for name in need_bias:
        entries[name]["config"]["use_bias"] = True
    return config, changes, replaced


def load_weights(new_model, folded, weights: dict[str, Weights], caps: dict[str, np.ndarray]) -> None:
    """Fill ``new_model``: equalized convs from ``weights``, clips from ``caps``, the rest from ``folded``."""
    for layer in new_model.layers:
        if layer.name in weights:
            assign(layer, weights[layer.name], missing_zero=True)
        elif layer.name in caps and is_channel_relu(layer):
            assign(layer, {"cap": caps[layer.name]}, missing_zero=True)
        else:
            layer.set_weights(folded.get_layer(layer.name).get_weights())
