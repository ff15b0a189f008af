"""Bench sessions' inputs, shared by ``edgesep bench`` and ``edgesep compare``: the accuracy set the runner
reads, and the models to give an Edge TPU. Sits on top of ``edgesep.devices`` and ``edgesep.data`` (like cli);
never imports TensorFlow.
"""
from __future__ import annotations

from pathlib import Path
from typing import Callable, Optional

from edgesep.errors import DataError, UsageError


def accuracy_npz(spec: str, paths: list[Path], tmp: Path, *, preprocess=None, resize: bool = False,
                 note: Optional[Callable[[str], None]] = None) -> Path:
    """A .npz for the runner: ``y`` and one ``x_HxWxC`` per distinct model input shape (``x`` the first).

    A ``.npz`` is used as given (``resize`` to fit another input size). Images (a folder, digits) go through
    ``preprocess``; without it, through the preprocessing the export.json beside the models records, else
    ``unit`` (pixels / 255), said through ``note``.
    """
    import numpy as np

    from edgesep.data import load_dataset

    shapes, classes = _inputs_and_classes(paths)
    if Path(spec).suffix != ".npz" and preprocess is None:
        preprocess = _recorded_preprocess(paths, spec, note or (lambda text: None))
    arrays, labels = {}, None
    for shape in shapes:
        ds = load_dataset(spec, input_shape=shape, num_classes=min(classes) if classes else None,
                          preprocess=preprocess, resize=resize)
        if labels is not None and not np.array_equal(labels, ds.y_test):
            raise DataError(f"{spec} gives different test labels for input shapes {shapes[0]} and {shape}")
        labels = np.asarray(ds.y_test)
        arrays["x_" + "x".join(str(v) for v in shape)] = np.asarray(ds.x_test, dtype=np.float32)
    arrays["x"] = arrays["x_" + "x".join(str(v) for v in shapes[0])]
    out = tmp / "data.npz"
    np.savez(out, y=labels, **arrays)
    return out


def _inputs_and_classes(paths: list[Path]) -> tuple[list[tuple[int, ...]], set[int]]:
    """The distinct (H, W, C) image inputs of the models and their output widths (classes)."""
    from edgesep.devices import runner

    try:
        described = runner.describe([str(p) for p in paths], allowed_tflite=("ai_edge_litert", "tflite_runtime"))
    except runner.FatalError as e:
        raise DataError(f"cannot read the models' input shapes for --data: {e}") from None
    shapes, classes = [], set()
    for entry in described:
        outputs = entry.get("outputs") or []
        if outputs and outputs[0].get("shape"):
            classes.add(int(outputs[0]["shape"][-1]))
        inputs = entry.get("inputs") or []
        if len(inputs) == 1 and len(inputs[0]["shape"]) == 4 and tuple(inputs[0]["shape"][1:]) not in shapes:
            shapes.append(tuple(inputs[0]["shape"][1:]))
    if not shapes:
        raise DataError("--data needs a model with one image input (N, H, W, C)")
    return shapes, classes


def _recorded_preprocess(paths: list[Path], spec: str, note: Callable[[str], None]) -> str:
    """The --preprocess the export.json files beside ``paths`` record (one for all), else ``unit`` with a note."""
    from edgesep.converters.records import EXPORT_JSON, read_export

    recorded = {}
    for folder in {p.resolve().parent for p in paths}:
        result = read_export(folder)
        if result is not None and result.dataset.preprocess_spec is not None:
            recorded[result.dataset.preprocess_spec] = folder / EXPORT_JSON
    if len(recorded) > 1:
        raise UsageError(f"the models' export.json files record different preprocessing ({', '.join(recorded)}): "
                         "give --preprocess")
    if recorded:
        (given, source), = recorded.items()
        note(f"--data {spec}: images through --preprocess {given}, as {source} records")
        return given
    note(f"--data {spec}: images through --preprocess unit (pixels / 255; no export.json beside the models "
         "says otherwise); give --preprocess for another input range")
    return "unit"


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
    timed runs (see ``edgesep.devices.profile``); a profile that fails is said in one note, the results stand."""
    from edgesep.devices import parse_target
    from edgesep.devices.base import DeviceError
    from edgesep.devices.profile import profile_results
    from edgesep.train import cache_dir

    def make_device(**extra):
        return parse_target(target, **{**options, **extra})

    try:
        profile_results(results, paths, make_device, config, tmp / "profile", cache_root=cache_dir())
    except DeviceError as e:
        if note:
            note(f"--profile: {e}")
