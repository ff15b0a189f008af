"""Public helpers on Keras functional / Sequential graphs, shared by fold, equalize, guard and quant_error.

* reading the graph from a model's config (:func:`read_graph`: layer order, calls, inputs, tensor uses);
* rebuilding a model from an edited config (:func:`rebuild`) with every layer class it uses in scope;
* reading and assigning weights in float64 (:func:`weights64`, :func:`assign`);
* loading a user's Keras model file (:func:`load_model`).

Keras is imported inside the functions, so importing this module is cheap.
"""
from __future__ import annotations

import dataclasses
import zipfile
from collections import Counter
from pathlib import Path
from typing import Any, Iterator, Optional

import numpy as np

from edgesep.errors import ConversionError, one_line

Ref = tuple[str, int, int]  # (layer name, node index, tensor index), as in Keras 3 functional configs
Weights = dict[str, np.ndarray]
KERAS_EXTENSIONS = (".keras", ".h5")
CONV_KINDS = ("Conv2D", "DepthwiseConv2D", "SeparableConv2D")


@dataclasses.dataclass(frozen=True)
class Graph:
    """A model's layers read from its config.

    Attributes:
        order: layer names in config order (topological for functional models).
        calls: layer name -> number of calls (inbound nodes).
        inputs: layer name -> tensor refs feeding its first call.
        kwargs: layer name -> call kwargs of its first call.
        uses: tensor ref -> how many calls and model outputs consume it.
    """

    order: list[str]
    calls: dict[str, int]
    inputs: dict[str, list[Ref]]
    kwargs: dict[str, dict]
    uses: Counter


def tensor_refs(obj: Any) -> Iterator[Ref]:
    """Every ``keras_history`` reference inside a serialized call (args / kwargs)."""
    if isinstance(obj, dict):
        if obj.get("class_name") == "__keras_tensor__":
            yield tuple(obj["config"]["keras_history"])
            return
        for value in obj.values():
            yield from tensor_refs(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from tensor_refs(value)


def is_ref(obj: Any) -> bool:
    """Is ``obj`` a ``[layer name, node index, tensor index]`` triple (as in ``output_layers``)?"""
    return (isinstance(obj, (list, tuple)) and len(obj) == 3 and isinstance(obj[0], str)
            and all(isinstance(v, int) for v in obj[1:]))


def output_refs(obj: Any) -> Iterator[Ref]:
    """Every ref triple inside a functional config's ``output_layers``."""
    if is_ref(obj):
        yield tuple(obj)
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from output_refs(value)
    elif isinstance(obj, (list, tuple)):
        for value in obj:
            yield from output_refs(value)


def functional_graph(config: dict) -> Graph:
    """The :class:`Graph` of a functional model's config."""
    order, calls, inputs, kwargs, uses = [], {}, {}, {}, Counter()
    for entry in config["layers"]:
        name, nodes = entry["name"], entry.get("inbound_nodes", [])
        order.append(name)
        calls[name] = len(nodes)
        first = nodes[0] if nodes else {}
        inputs[name] = list(tensor_refs(first.get("args", [])))
        kwargs[name] = first.get("kwargs", {}) if isinstance(first, dict) else {}
        for node in nodes:
            uses.update(tensor_refs(node))
    uses.update(output_refs(config.get("output_layers", [])))
    return Graph(order, calls, inputs, kwargs, uses)


def sequential_graph(config: dict) -> Graph:
    """The :class:`Graph` of a Sequential model's config (each layer feeds the next)."""
    order = [entry["config"]["name"] for entry in config["layers"]]
    inputs = {name: ([(prev, 0, 0)] if prev is not None else []) for prev, name in zip([None, *order], order)}
    uses = Counter(r for v in inputs.values() for r in v)
    return Graph(order, dict.fromkeys(order, 1), inputs, {n: {} for n in order}, uses)


def check_model(model, purpose: str = "fold") -> tuple[dict, bool]:
    """``(config, is_sequential)`` of a built functional or Sequential model, else a one-line error."""
    import keras

    if not isinstance(model, keras.Model):
        raise ConversionError(f"can only {purpose} a keras.Model, got {type(model).__name__}")
    if not model.built:
        raise ConversionError(f"model {model.name!r} is not built; call it on data or give it an Input first")
    try:
        config = model.get_config()
    except Exception:  # noqa: BLE001 - subclassed models raise NotImplementedError and others
        config = None
    sequential = isinstance(model, keras.Sequential)
    if not isinstance(config, dict) or not isinstance(config.get("layers"), list) or (
            not sequential and "output_layers" not in config):
        raise ConversionError(f"can only {purpose} functional or Sequential models; {model.name!r} "
                              f"({type(model).__name__}) is subclassed")
    return config, sequential


def read_graph(model, purpose: str = "fold") -> tuple[dict, bool, Graph]:
    """``(config, is_sequential, graph)`` of a built functional or Sequential model."""
    config, sequential = check_model(model, purpose)
    return config, sequential, sequential_graph(config) if sequential else functional_graph(config)


def layer_or_none(model, name: str):
    """The top-level layer called ``name``, or None (a Sequential model's input layer)."""
    try:
        return model.get_layer(name)
    except ValueError:
        return None


def conv_kind(layer) -> Optional[str]:
    """``Conv2D``, ``DepthwiseConv2D`` or ``SeparableConv2D`` for exactly those Keras classes, else None."""
    from keras import layers

    kinds = {layers.SeparableConv2D: "SeparableConv2D", layers.DepthwiseConv2D: "DepthwiseConv2D",
             layers.Conv2D: "Conv2D"}
    return kinds.get(type(layer))


def to_f64(variable) -> np.ndarray:
    """A Keras variable's value as a float64 numpy array."""
    return np.array(variable.numpy(), dtype=np.float64)


def weights64(layer) -> Weights:
    """A layer's weights by variable name, in float64."""
    return {v.name: to_f64(v) for v in layer.weights}


def assign(layer, values: Weights, *, missing_zero: bool = False) -> None:
    """Set ``layer``'s variables from ``values`` (by variable name), cast to each variable's dtype.

    Args:
        layer: a built Keras layer.
        values: variable name -> value.
        missing_zero: variables absent from ``values`` become zeros (else the names must match exactly).
    """
    by_name = {v.name: v for v in layer.weights}
    if not missing_zero and set(by_name) != set(values):
        raise ConversionError(f"layer {layer.name!r}: new weights {sorted(values)} do not match {sorted(by_name)}")
    for name, var in by_name.items():
        value = values[name] if name in values else np.zeros(var.shape)
        var.assign(np.asarray(value).astype(np.dtype(var.dtype)))


def _custom_objects(model) -> dict[str, type]:
    """Every layer class used in ``model`` by name, so configs of unregistered custom layers rebuild."""
    found = {}
    for layer in model._flatten_layers(include_self=False):
        found[type(layer).__name__] = type(layer)
    return found


def rebuild(model, config: dict, purpose: str, extra_objects: Optional[dict] = None):
    """``model``'s class rebuilt from an edited ``config``, with every custom layer class it uses in scope.

    Raises:
        ConversionError: Keras cannot rebuild the config (one line naming ``purpose``).
    """
    import keras

    cls = keras.Sequential if isinstance(model, keras.Sequential) else keras.Model
    try:
        with keras.saving.custom_object_scope({**_custom_objects(model), **(extra_objects or {})}):
            return cls.from_config(config)
    except Exception as exc:  # noqa: BLE001 - any Keras failure becomes one line for the user
        raise ConversionError(f"cannot rebuild model {model.name!r} for {purpose}: "
                              f"{one_line(exc, 300, type(exc).__name__)}") from None


def load_model(path) -> Any:
    """A Keras model from a ``.keras`` / ``.h5`` file, with one-line errors for missing or bad files."""
    from edgesep.converters._quiet import import_tensorflow

    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"model file not found: {path}")
    if path.suffix not in KERAS_EXTENSIONS:
        raise ConversionError(f"{path.name}: expected a Keras model file (.keras or .h5)")
    if path.suffix == ".keras" and not zipfile.is_zipfile(path):
        raise ConversionError(f"{path.name} is not a Keras model file (a .keras file is a zip archive)")
    import_tensorflow()
    import keras

    try:
        model = keras.models.load_model(path, compile=False)
    except Exception as e:  # noqa: BLE001 - zip/h5/config errors of a corrupt or foreign file
        detail = one_line(e, 200, "no message")
        raise ConversionError(f"cannot load Keras model {path}: {type(e).__name__}: {detail}") from None
    if not isinstance(model, keras.Model) or len(model.inputs) != 1 or len(model.input_shape) != 4:
        raise ConversionError(f"{path.name}: edgesep needs a model with one NHWC image input")
    return model


def predict_all(model, x: np.ndarray, batch: int = 256) -> list[np.ndarray]:
    """Every output of ``model`` on ``x`` in inference mode, called eagerly.

    (``predict`` would trace a new function for every freshly built model, which is most of the time a
    rebuilt small network spends in inference.)
    """
    x = np.asarray(x, np.float32)
    parts = []
    for i in range(0, len(x), batch):
        out = model(x[i:i + batch], training=False)
        parts.append([np.asarray(o) for o in (out if isinstance(out, (list, tuple)) else [out])])
    return [np.concatenate(chunks) for chunks in zip(*parts)]
