"""Models with Lambda and custom layers: ``--trust-model`` and ``--custom-objects FILE.py``.

A ``Lambda`` layer stores Python code in the model file; Keras runs it only when loading outside its safe
mode, so that is an explicit opt-in (:class:`LoadOptions.trust`). A custom layer class must be importable when
the file is loaded: ``--custom-objects FILE.py`` imports a module first, so that its
``keras.saving.register_keras_serializable`` classes resolve, and hands its classes and functions to Keras by
name. :func:`explain_load_error` turns Keras' refusals into one line naming the option that helps.
"""
from __future__ import annotations

import contextlib
import dataclasses
import importlib.util
import inspect
import re
import sys
from pathlib import Path
from typing import Any, Iterator, Optional

from edgesep.errors import ConversionError, UsageError, one_line

TRUST_HINT = ("it holds a Lambda layer, whose Python code Keras runs only for a file you trust: add "
              "--trust-model (Python: trust_model=True) if you trust where the file comes from")
CUSTOM_HINT = ("give the module that defines it with --custom-objects FILE.py (Python: custom_objects=...)")


@dataclasses.dataclass(frozen=True)
class LoadOptions:
    """How a user's Keras file is loaded.

    Attributes:
        trust: load outside Keras' safe mode (``safe_mode=False``): Lambda layers' Python code runs.
        custom_objects: a ``.py`` file imported before loading (its registered classes resolve).
    """

    trust: bool = False
    custom_objects: Optional[str] = None

    def __post_init__(self):
        if self.custom_objects is not None:
            path = Path(self.custom_objects)
            if path.suffix != ".py":
                raise UsageError(f"--custom-objects takes a Python file (FILE.py), got {path.name}")
            if not path.is_file():
                raise UsageError(f"--custom-objects file not found: {path}")

    def objects(self) -> dict[str, Any]:
        """The classes and functions of the custom-objects module by name (the module imported once)."""
        if self.custom_objects is None:
            return {}
        module = import_module_file(Path(self.custom_objects))
        return {name: obj for name, obj in vars(module).items()
                if not name.startswith("_") and (inspect.isclass(obj) or inspect.isfunction(obj))}

    @contextlib.contextmanager
    def scope(self) -> Iterator[dict[str, Any]]:
        """Keras' safe mode as :attr:`trust` says, with the custom objects in scope; yields them."""
        import keras
        from keras.src.saving.serialization_lib import SafeModeScope

        objects = self.objects()
        with SafeModeScope(not self.trust), keras.saving.custom_object_scope(objects):
            yield objects


def import_module_file(path: Path):
    """Import the Python file at ``path`` as a module (once per resolved path); one-line errors."""
    name = "edgesep_custom_objects_" + str(abs(hash(str(path.resolve()))))
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, path)
    if spec is None or spec.loader is None:
        raise UsageError(f"--custom-objects: cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's module raises anything
        del sys.modules[name]
        raise UsageError(f"--custom-objects: importing {path} failed: {type(e).__name__}: "
                         f"{one_line(e, 200, 'no message')}") from None
    return module


def explain_load_error(path: Path, error: Exception) -> ConversionError:
    """One line for a Keras load failure, naming ``--trust-model`` or ``--custom-objects`` where they help."""
    text = str(error)
    if "safe_mode" in text or "unsafe_deserialization" in text:
        return ConversionError(f"cannot load {path.name}: {TRUST_HINT}")
    if "No model config found" in text:
        return ConversionError(f"cannot load {path.name}: it holds weights only (model.save_weights), no model: "
                               "save the whole model with model.save('model.keras') and give that")
    unknown = re.search(r"(?:Could not locate|Unknown) (class|function|layer)[: ]+'?([\w.]+)", text)
    if unknown:
        return ConversionError(f"cannot load {path.name}: it uses a {unknown.group(1)} Keras does not know, "
                               f"{unknown.group(2)!r}: {CUSTOM_HINT}")
    return ConversionError(f"cannot load Keras model {path}: {type(error).__name__}: "
                           f"{one_line(error, 200, 'no message')}")


def lambda_functions(model) -> dict[str, Any]:
    """The named Python functions of ``model``'s Lambda layers, by name, for rebuilding its config."""
    import keras

    found = {}
    for layer in model._flatten_layers(include_self=False):
        function = getattr(layer, "function", None) if isinstance(layer, keras.layers.Lambda) else None
        if inspect.isfunction(function) and function.__name__ != "<lambda>":
            found[function.__name__] = function
    return found
