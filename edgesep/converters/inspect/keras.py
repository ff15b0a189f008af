"""The Keras reader: layers by type, parameters, MACs and I/O of a ``.keras`` archive or a legacy ``.h5``/``.hdf5``.

A ``.keras`` archive is checked before Keras is imported, so a broken file fails fast, without TensorFlow's
start-up; TensorFlow's own start-up log (CUDA probes) stays off the terminal.
"""
from __future__ import annotations

import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Iterable

from edgesep.converters.inspect.base import Contents, Format, batch_one, is_hdf5, is_keras, macs_note, sorted_counts
from edgesep.converters.inspect.macs import KERAS_MACS
from edgesep.errors import ConversionError, one_line


def _why(e: BaseException) -> str:
    return one_line(e, default=type(e).__name__)


def _check_archive(p: Path) -> None:
    """Raise unless ``p`` is an intact zip whose ``config.json`` is JSON."""
    import json

    try:
        with zipfile.ZipFile(p) as archive:
            if "config.json" not in archive.namelist():
                raise ConversionError(f"{p} is not a valid Keras model: the archive has no config.json")
            bad = archive.testzip()
            json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ConversionError(f"{p} is not a valid Keras model: {_why(e)}") from None
    except ValueError as e:
        raise ConversionError(f"{p} is not a valid Keras model: config.json is not JSON ({_why(e)})") from None
    if bad is not None:
        raise ConversionError(f"{p} is not a valid Keras model: {bad} is corrupt")


def read_keras(p: Path, trust_model: bool = False) -> Contents:
    """The :class:`Contents` of a ``.keras``, ``.h5`` or ``.hdf5`` file (``trust_model``: outside Keras' safe
    mode, so that Lambda layers load)."""
    import warnings

    from edgesep.converters._quiet import import_tensorflow

    if p.suffix.lower() == ".keras":
        _check_archive(p)
    import_tensorflow()
    import keras

    try:
        with warnings.catch_warnings():  # legacy .h5 files warn about compile state and deprecated arguments
            warnings.simplefilter("ignore")
            model = keras.saving.load_model(str(p), compile=False, safe_mode=not trust_model)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad archive or unknown layers
        if "safe_mode" in str(e) or "unsafe_deserialization" in str(e) or "No model config found" in str(e):
            from edgesep.converters.custom_objects import explain_load_error

            raise explain_load_error(p, e) from None
        raise ConversionError(f"cannot load Keras model {p}: {_why(e)}") from None
    from edgesep.converters.graph import check_built

    check_built(model, p.name)
    return keras_contents(model)


def keras_contents(model) -> Contents:
    """The :class:`Contents` of a loaded Keras model."""
    layers = list(_leaf_layers(model))
    macs, skipped = 0, Counter()
    for layer in layers:
        try:
            macs += _layer_macs(layer)
        except (KeyError, ValueError, TypeError, AttributeError):
            skipped[type(layer).__name__] += 1
    names = list(getattr(model, "output_names", None) or [t.name for t in model.outputs])
    return Contents(
        ops=sorted_counts(type(layer).__name__ for layer in layers if type(layer).__name__ != "InputLayer"),
        params=int(model.count_params()), macs=macs,
        inputs=[_io(t.name, t) for t in model.inputs],
        outputs=[_io(name, t) for name, t in zip(names, model.outputs)],
        notes=macs_note(skipped) + _custom_note(layers), macs_partial=bool(skipped) or bool(_custom_note(layers)),
    )


def _custom_note(layers) -> list[str]:
    """The note naming custom layers with weight matrices: their work is unknown, so MACs leave it out."""
    unknown = sorted({type(layer).__name__ for layer in layers
                      if not type(layer).__module__.startswith("keras.")
                      and not any(c.__name__ in KERAS_MACS for c in type(layer).__mro__)
                      and any(len(w.shape) >= 2 for w in layer.weights)})
    return [f"MACs are partial: they exclude custom layers whose MACs are unknown: {', '.join(unknown)}"] if unknown \
        else []


def _io(name: str, tensor) -> dict[str, Any]:
    return {"name": name, "shape": [None if d is None else int(d) for d in tensor.shape], "dtype": str(tensor.dtype)}


def _leaf_layers(model) -> Iterable[Any]:
    """Every layer, with nested models replaced by their own layers."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _leaf_layers(layer)
        else:
            yield layer


def _layer_macs(layer) -> int:
    count = next((KERAS_MACS[c.__name__] for c in type(layer).__mro__ if c.__name__ in KERAS_MACS), None)
    if count is None:
        return 0
    total = 0
    for node in layer._inbound_nodes:  # one entry per call of the layer (shared layers count each call)
        inp, out = batch_one(node.input_tensors[0].shape), batch_one(node.output_tensors[0].shape)
        if inp is None or out is None:
            raise ValueError("unknown shape")
        total += count(layer, inp, out)
    return total


FORMAT = Format("keras", (".keras", ".h5", ".hdf5"), "Keras (.keras, .h5)", lambda head: is_keras(head) or
                is_hdf5(head), read_keras)
