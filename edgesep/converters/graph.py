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

from edgesep.errors import ConversionError, UsageError, one_line

Ref = tuple[str, int, int]  # (layer name, node index, tensor index), as in Keras 3 functional configs
Weights = dict[str, np.ndarray]
KERAS_EXTENSIONS = (".keras", ".h5", ".hdf5")  # .hdf5: how many pretrained Keras models ship
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
    """Layer classes of ``model`` that Keras does not know by itself, by class name, so that configs of
    unregistered custom layers rebuild.

    Keras' own classes are left out: Keras finds them by module, and naming them by bare class name would
    turn an operation node into the layer of the same name (``x + 3.0`` is serialized as class ``Add`` of
    module ``keras.src.ops.numpy``, which is not the merge layer ``keras.layers.Add``).
    """
    found = {}
    for layer in model._flatten_layers(include_self=False):
        cls = type(layer)
        if not cls.__module__.startswith("keras."):
            found[cls.__name__] = cls
    return found


def rebuild(model, config: dict, purpose: str, extra_objects: Optional[dict] = None):
    """``model``'s class rebuilt from an edited ``config``, with every custom layer class it uses in scope.

    Raises:
        ConversionError: Keras cannot rebuild the config (one line naming ``purpose``).
    """
    import keras

    from keras.src.saving.serialization_lib import SafeModeScope

    from edgesep.converters.custom_objects import lambda_functions

    cls = keras.Sequential if isinstance(model, keras.Sequential) else keras.Model
    functions = lambda_functions(model)
    has_lambda = any(isinstance(layer, keras.layers.Lambda) for layer in model._flatten_layers(include_self=False))
    try:  # a Lambda's code comes from the live model itself (loaded trusted, or built in Python): no new trust
        with SafeModeScope(not has_lambda), keras.saving.custom_object_scope(
                {**functions, **_custom_objects(model), **(extra_objects or {})}):
            return cls.from_config(config)
    except Exception as exc:  # noqa: BLE001 - any Keras failure becomes one line for the user
        raise ConversionError(f"cannot rebuild model {model.name!r} for {purpose}: "
                              f"{one_line(exc, 300, type(exc).__name__)}") from None


def load_model(path, input_size: Optional[tuple[int, int]] = None, *, trust_model: bool = False,
               custom_objects: Optional[str] = None) -> Any:
    """A Keras model from a ``.keras`` / ``.h5`` / ``.hdf5`` file, ready to export; one-line errors otherwise.

    Args:
        path: the model file.
        input_size: ``(H, W)`` for a model whose input has a dynamic spatial size (``(None, None, 3)``).
        trust_model: load outside Keras' safe mode, so that Lambda layers (Python code in the file) load.
        custom_objects: a ``.py`` file imported first, whose classes and functions resolve custom layers.

    Raises:
        ConversionError: a missing, foreign or corrupt file, or a model edgesep cannot export (see
            :func:`check_exportable`).
        UsageError: a dynamic input size without ``input_size``, or ``input_size`` for a fixed-size model.
    """
    from edgesep.converters._quiet import import_tensorflow

    from edgesep.converters.custom_objects import LoadOptions, explain_load_error

    path = check_model_path(path)
    options = LoadOptions(trust_model, custom_objects)
    import_tensorflow()
    import keras

    try:
        with options.scope() as objects:
            model = _quiet_load(keras, path, safe_mode=not trust_model, custom_objects=objects)
    except UsageError:
        raise
    except Exception as e:  # noqa: BLE001 - zip/h5/config errors of a corrupt or foreign file
        raise explain_load_error(path, e) from None
    check_built(model, path.name)
    if not isinstance(model, keras.Model) or len(model.inputs) != 1 or len(model.input_shape) != 4:
        raise ConversionError(f"{path.name}: edgesep needs a model with one NHWC image input")
    if input_size is not None:
        model = with_input_size(model, input_size)
    check_exportable(model)
    return model


def check_built(model, name: str) -> None:
    """ConversionError when the model was saved before it was built (a Sequential without ``keras.Input``):
    it has no inputs, no outputs and no input shape to export at."""
    try:
        model.inputs, model.outputs
    except AttributeError:  # Keras: "Sequential model ... has no defined inputs yet"
        raise ConversionError(f"{name} holds a model that was never built, so it has no input shape: build it "
                              "before saving (keras.Input(shape) first, or model.build((None, H, W, C)))") from None


def check_model_path(path) -> Path:
    """``path`` as a Path if it can be a Keras model file (checked without importing Keras); else one line:
    missing, a pipe, an already exported .tflite/.onnx (with the command to use instead), another extension,
    or a .keras file that is not a zip archive."""
    path = Path(path)
    if not path.is_file():
        raise ConversionError(f"model file not found: {path}" if not path.exists() else
                              f"model file {path} is not a regular file (a pipe or device would block)")
    if path.suffix.lower() in (".tflite", ".onnx"):
        raise ConversionError(f"{path.name} is already exported; measure it with 'edgesep bench' or read it with "
                              f"'edgesep inspect' (export takes a Keras model: {', '.join(KERAS_EXTENSIONS)})")
    if path.suffix.lower() not in KERAS_EXTENSIONS:
        raise ConversionError(f"{path.name}: expected a Keras model file ({', '.join(KERAS_EXTENSIONS)})")
    if path.suffix.lower() == ".keras" and not zipfile.is_zipfile(path):
        raise ConversionError(f"{path.name} is not a Keras model file (a .keras file is a zip archive)")
    return path


def _quiet_load(keras, path: Path, **options):
    import warnings

    with warnings.catch_warnings():  # legacy .h5 files warn about compile state and deprecated arguments
        warnings.simplefilter("ignore")
        return keras.models.load_model(path, compile=False, **options)


def with_input_size(model, size: tuple[int, int]):
    """``model`` rebuilt with its dynamic input height and width fixed at ``size`` (same weights).

    Raises:
        UsageError: ``size`` is not two positive integers, or the model's input size is already fixed to
            another size (changing it would change what the model computes).
    """
    height, width = (int(v) for v in size)
    if height < 1 or width < 1:
        raise UsageError(f"--input-size must be two positive integers H,W, got {size}")
    fixed = tuple(model.input_shape[1:3])
    if fixed == (height, width):
        return model
    if any(d is not None for d in fixed):
        raise UsageError(f"--input-size {height},{width} is for a model with a dynamic input size; {model.name!r} "
                         f"takes {tuple(model.input_shape[1:])}")
    config, sequential = check_model(model, "fix the input size of")
    entries = config["layers"]
    inputs = [e for e in entries if e.get("class_name") == "InputLayer"]
    if not inputs:
        raise ConversionError(f"cannot fix the input size of {model.name!r}: it has no Input layer in its config")
    for entry in inputs:
        key = "batch_shape" if "batch_shape" in entry["config"] else "batch_input_shape"
        entry["config"][key] = [None, height, width, *list(entry["config"][key])[3:]]
    new = rebuild(model, config, "a fixed input size")
    for layer in new.layers:
        layer.set_weights(model.get_layer(layer.name).get_weights())
    return new


def output_names(model) -> list[str]:
    """The model's output names, in its output order (a Sequential model's: its last layer's name)."""
    names = list(getattr(model, "output_names", None) or [])
    if len(names) != len(model.outputs):
        names = [model.layers[-1].name] if len(model.outputs) == 1 and model.layers else [
            t.name for t in model.outputs]
    return names


def flat_outputs(out) -> list:
    """A model call's result as the list of its outputs, in the model's output order (dicts by sorted key)."""
    import keras

    return list(keras.tree.flatten(out))


def check_exportable(model) -> None:
    """One-line errors for a model edgesep cannot export and verify as it is.

    Raises:
        UsageError: the input has a dynamic height or width (fix it with ``--input-size`` /
            :func:`with_input_size`).
        ConversionError: weights holding NaN or Infinity.
    """
    shape = tuple(model.input_shape[1:])
    if any(d is None for d in shape):
        raise UsageError(f"{model.name!r} takes images of any size {shape}: give the size to export at with "
                         f"--input-size H,W")
    for variable in model.weights:
        value = np.asarray(variable.numpy())
        if np.issubdtype(value.dtype, np.floating) and not np.all(np.isfinite(value)):
            raise ConversionError(f"{model.name!r}: weight {variable.path} holds NaN or Infinity; a broken model "
                                  f"is not exported")


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
