"""What every format reader shares: the :class:`ModelInfo` record, the reader registry entry, and helpers for
parameter, quantization and shape bookkeeping."""
from __future__ import annotations

import dataclasses
import hashlib
import math
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

PARAM_DTYPES = frozenset({"float16", "float32", "float64", "bfloat16", "int8", "uint8", "int16", "uint16",
                          "int32", "int4", "uint4"})


@dataclasses.dataclass(frozen=True)
class Contents:
    """What a format reader finds in a model file (``inspect_model`` adds the file's path, size and digest).

    Attributes:
        ops: op (or Keras layer) type -> count, sorted by name.
        params: parameter count (see the package docstring).
        macs: multiply-accumulates of one inference (dynamic batch taken as 1).
        inputs: one dict per model input: ``name``, ``shape`` (``None`` for a dynamic dim), ``dtype``, and
            for quantized tensors ``scale``/``zero_point`` or a ``per_channel`` summary.
        outputs: like ``inputs``.
        quantization: for TFLite and ONNX, how the parameter tensors are stored: counts ``per_channel``,
            ``per_tensor``, ``float``, ``dtypes`` of the parameter tensors, ``activation_dtypes`` and one
            entry per parameter tensor in ``tensors``; ``None`` for Keras.
        notes: caveats about the figures (e.g. ops whose MACs could not be computed).
        macs_partial: ``macs`` leaves out work whose size is unknown (ops with unknown shapes, ops the format
            does not define, dynamic input dims beyond the batch); ``notes`` says which.
    """

    ops: dict[str, int]
    params: int
    macs: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    quantization: Optional[dict[str, Any]] = None
    notes: list[str] = dataclasses.field(default_factory=list)
    macs_partial: bool = False


FILE_FIELDS = ("path", "format", "bytes", "sha256")


@dataclasses.dataclass(frozen=True, kw_only=True)
class ModelInfo(Contents):
    """The facts ``inspect_model`` found in one model file: the file (``path``, ``format`` -- ``tflite``,
    ``onnx`` or ``keras`` --, ``bytes``, ``sha256``) and its :class:`Contents`."""

    path: str
    format: str
    bytes: int
    sha256: str

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field (the file's first)."""
        d = dataclasses.asdict(self)
        return {**{k: d.pop(k) for k in FILE_FIELDS}, **d}


@dataclasses.dataclass(frozen=True)
class Format:
    """One reader: its name, file extensions, label for messages, content sniffer and read function."""

    name: str
    extensions: tuple[str, ...]
    label: str
    sniff: Callable[[bytes], bool]  # may this content be of this format?
    read: Callable[[Path], Contents]
    magic: bool = True  # does ``sniff`` positively identify the format (a magic number)?


def is_tflite(head: bytes) -> bool:
    """Does the file start like a TFLite flatbuffer (identifier ``TFL3``)?"""
    return head[4:8] == b"TFL3"


def is_keras(head: bytes) -> bool:
    """Does the file start like a zip archive (a ``.keras`` file)?"""
    return head[:4] == b"PK\x03\x04"


def is_hdf5(head: bytes) -> bool:
    """Does the file start like HDF5 (a legacy Keras ``.h5`` file)?"""
    return head[:8] == b"\x89HDF\r\n\x1a\n"


def sha256_of(p: Path) -> str:
    """Hex SHA-256 of a file, read in chunks."""
    digest = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def prod(values: Iterable[int]) -> int:
    """Product of integer-like values (1 for none)."""
    return math.prod(int(v) for v in values)


def quant_summary(scales, zero_points, axis: int) -> dict[str, Any]:
    """``{}`` for float, ``scale``/``zero_point`` per tensor, or a ``per_channel`` summary."""
    scales = [float(s) for s in scales]
    zero_points = [int(z) for z in zero_points]
    if not scales:
        return {}
    if len(scales) == 1:
        return {"scale": scales[0], "zero_point": zero_points[0] if zero_points else 0}
    return {"per_channel": {"count": len(scales), "scale_min": min(scales), "scale_max": max(scales),
                            "zero_point_min": min(zero_points, default=0),
                            "zero_point_max": max(zero_points, default=0), "quantized_dimension": int(axis)}}


def quantization_table(tensors: list[dict[str, Any]], activation_dtypes: Counter) -> dict[str, Any]:
    """Counts over parameter-tensor entries (``name``, ``dtype``, ``shape`` + ``quant_summary`` keys)."""
    return {
        "per_channel": sum("per_channel" in t for t in tensors),
        "per_tensor": sum("scale" in t for t in tensors),
        "float": sum(t["dtype"].startswith(("float", "bfloat")) and "scale" not in t and "per_channel" not in t
                     for t in tensors),
        "dtypes": dict(sorted(Counter(t["dtype"] for t in tensors).items())),
        "activation_dtypes": dict(sorted(activation_dtypes.items())),
        "tensors": tensors,
    }


def sorted_counts(names: Iterable[str]) -> dict[str, int]:
    """name -> count, sorted by name."""
    return dict(sorted(Counter(names).items()))


def batch_one(shape: Iterable[Optional[int]]) -> Optional[list[int]]:
    """The shape with a dynamic leading dim set to 1; ``None`` if any other dim is unknown."""
    dims = list(shape)
    if dims and dims[0] is None:
        dims[0] = 1
    return None if any(d is None for d in dims) else [int(d) for d in dims]


def macs_note(skipped: Counter) -> list[str]:
    """The note naming MAC ops left out of the count because their shapes are unknown (none if none)."""
    if not skipped:
        return []
    what = ", ".join(f"{n} {op}" for op, n in sorted(skipped.items()))
    return [f"MACs are partial: they exclude ops whose shapes are unknown: {what}"]


def dtype_name(dtype) -> str:
    """numpy's name of a dtype (``float32``)."""
    import numpy as np

    return np.dtype(dtype).name
