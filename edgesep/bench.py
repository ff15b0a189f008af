"""Bench sessions' inputs, shared by ``edgesep bench`` and ``edgesep compare``: the accuracy set the runner
reads, and the models to give an Edge TPU. Sits on top of ``edgesep.devices`` and ``edgesep.data`` (like cli);
never imports TensorFlow.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from edgesep.data import PRESETS, DataOptions, Preprocess
from edgesep.devices.remote import content_hash
from edgesep.errors import DataError, UsageError


def accuracy_npz(inputs: DataOptions, paths: list[Path], folder: Path, *, name: str = "data.npz",
                 note: Optional[Callable[[str], None]] = None, label_output: Optional[str] = None) -> Path:
    """A .npz for the runner: ``y`` and one ``x_HxWxC`` per distinct model input shape (``x`` the first).

    ``inputs`` is ``--data``/``--preprocess``/``--resize``, parsed once. A ``.npz`` is used as given (``resize``
    to fit another input size). Images (a folder, digits) go through ``inputs.preprocess``; without it, each
    model's through the preprocessing its own export.json records, else ``unit`` (pixels / 255), said through
    ``note``. Models whose preprocessing differs get their own array, ``x@SHA`` (the first 16 hex digits of the
    model file's SHA-256), which the runner prefers. Written atomically to ``folder / name``.
    """
    import io

    import numpy as np

    from edgesep.io import write_bytes

    shapes, classes, model_shapes = _inputs_and_classes(paths, label_output)
    preprocess, own = inputs.preprocess, None
    if not inputs.is_npz and preprocess is None:
        own = _recorded_preprocess(paths, inputs.data, note or (lambda text: None))
        preprocess, own = own[0], (own if len(set(own)) > 1 else None)
    load = _loader(inputs, classes)
    arrays, labels = {}, None
    for shape in shapes:
        x, y = load(shape, preprocess)
        if labels is not None and not np.array_equal(labels, y):
            raise DataError(f"{inputs.data} gives different test labels for input shapes {shapes[0]} and {shape}")
        labels = y
        arrays["x_" + "x".join(str(v) for v in shape)] = x
    arrays["x"] = arrays["x_" + "x".join(str(v) for v in shapes[0])]
    for path, shape, prep in zip(paths, model_shapes, own or ()):
        if shape is not None:
            arrays["x@" + content_hash(path)[:16]] = load(shape, prep)[0]
    buffer = io.BytesIO()
    np.savez(buffer, y=labels, **arrays)
    return write_bytes(folder / name, buffer.getvalue())


def _loader(inputs: DataOptions, classes: set[int]):
    """load(shape, preprocess) -> (x float32, y) of the test split, each combination loaded once."""
    import numpy as np

    cache: dict = {}

    def load(shape, preprocess: Optional[Preprocess]):
        key = (tuple(shape), preprocess)
        if key not in cache:
            ds = inputs.load(shape, num_classes=min(classes) if classes else None, preprocess=preprocess)
            if not ds.labelled:
                raise DataError(f"--data {inputs.data} holds no labels ('y'): bench --data measures accuracy "
                                "against them")
            cache[key] = (np.asarray(ds.x_test, dtype=np.float32), np.asarray(ds.y_test))
        return cache[key]

    return load


def _inputs_and_classes(paths: list[Path], label_output: Optional[str] = None
                        ) -> tuple[list[tuple[int, ...]], set[int], list]:
    """The distinct (H, W, C) image inputs of the models, the widths of their labelled outputs (classes; see
    ``runner.label_output_index``) and each model's (H, W, C) (None for a model without one image input)."""
    from edgesep.devices import runner

    try:
        described = runner.describe([str(p) for p in paths], allowed_tflite=("ai_edge_litert", "tflite_runtime"))
    except runner.FatalError as e:
        raise DataError(f"cannot read the models' input shapes for --data: {e}") from None
    shapes, classes, per_model = [], set(), []
    for entry in described:
        outputs = entry.get("outputs") or []
        try:
            index = runner.label_output_index(outputs, label_output)[0] if outputs else None
        except runner.ModelError as e:
            raise UsageError(f"{Path(entry.get('path') or paths[0]).name}: {e}") from None
        if index is not None and outputs[index].get("shape"):
            classes.add(int(outputs[index]["shape"][-1]))
        inputs = entry.get("inputs") or []
        shape = tuple(inputs[0]["shape"][1:]) if len(inputs) == 1 and len(inputs[0]["shape"]) == 4 else None
        per_model.append(shape)
        if shape is not None and shape not in shapes:
            shapes.append(shape)
    if not shapes:
        raise DataError("--data needs a model with one image input (N, H, W, C)")
    return shapes, classes, per_model


def _recorded_preprocess(paths: list[Path], spec: str, note: Callable[[str], None]) -> list[Preprocess]:
    """Per model, the preprocessing the export.json beside it records, else ``unit``; said through ``note``."""
    from edgesep.converters.records import EXPORT_JSON, read_export

    recorded: dict[Path, Preprocess] = {}
    for folder in dict.fromkeys(p.resolve().parent for p in paths):
        result = read_export(folder)
        if result is not None and result.dataset.preprocess is not None:
            recorded[folder] = result.dataset.preprocess
    chosen = [recorded.get(p.resolve().parent, PRESETS["unit"]) for p in paths]
    for folder, given in recorded.items():
        note(f"--data {spec}: images through --preprocess {given.spec()} for the models in {folder}, as "
             f"{folder / EXPORT_JSON} records")
    if len(recorded) < len({p.resolve().parent for p in paths}):
        note(f"--data {spec}: images through --preprocess unit (pixels / 255) for the models with no "
             "export.json beside them; give --preprocess for another input range")
    return chosen


def edgetpu_models(paths: list[Path], tmp: Path, target: str, delegate: str) -> tuple[list[Path], list]:
    """With ``--delegate edgetpu`` on local/ssh targets: models compiled for the Edge TPU (on this host, where
    needed) and their compiler reports; otherwise the models as given."""
    from edgesep.devices import scheme_of

    scheme = scheme_of(target)
    if delegate != "edgetpu" or not scheme.edgetpu_on_host:
        return paths, [None] * len(paths)
    from edgesep.converters.edgetpu import prepare_models
    from edgesep.devices.coral import require_runtime

    if scheme.this_machine:
        require_runtime()  # the runtime is the first thing missing on most machines: say so before compiling
    return prepare_models(paths, tmp)


def profile_session(results: list, paths: list[Path], target: str, options: dict, config, tmp: Path,
                    note: Optional[Callable[[str], None]] = None) -> None:
    """``--profile``: per-op records on every measured result, timed on fresh devices of ``target`` after the
    timed runs (see ``edgesep.devices.profile``). A profile that fails is said in one note and in each result's
    ``profile.error``; the timed results stand."""
    from edgesep.devices import parse_target
    from edgesep.devices.profile import profile_failed, profile_results
    from edgesep.errors import one_line
    from edgesep.train import cache_dir

    def make_device(**extra):
        return parse_target(target, **{**options, **extra})

    try:
        profile_results(results, paths, make_device, config, tmp / "profile", cache_root=cache_dir())
    except Exception as e:  # noqa: BLE001 - the profile is an extra: its failure must not lose the timed results
        message = one_line(str(e)) if str(e) else type(e).__name__
        for result in results:
            if not result.error and result.profile is None:
                profile_failed(result, message)
        if note:
            note(f"--profile failed: {message}")
