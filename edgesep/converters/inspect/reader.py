"""``inspect_model``: picks the reader by extension, checks the content matches it, adds size and digest."""
from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from edgesep.converters.inspect import keras as keras_reader
from edgesep.converters.inspect import onnx as onnx_reader
from edgesep.converters.inspect import tflite as tflite_reader
from edgesep.converters.inspect.base import Format, ModelInfo, sha256_of
from edgesep.errors import ConversionError

FORMATS: dict[str, Format] = {f.name: f for f in (tflite_reader.FORMAT, onnx_reader.FORMAT, keras_reader.FORMAT)}


def known_extensions() -> list[str]:
    """File extensions ``inspect_model`` reads, sorted (e.g. ``.keras``)."""
    return sorted(ext for fmt in FORMATS.values() for ext in fmt.extensions)


def inspect_model(path: str | os.PathLike, *, trust_model: bool = False) -> ModelInfo:
    """Ops, params, MACs, size, inputs/outputs and quantization of a ``.tflite``, ``.onnx`` or ``.keras`` file
    (``trust_model``: a Keras file is loaded outside Keras' safe mode, so that its Lambda layers load).

    Raises:
        ConversionError: the file is missing, empty, unreadable, of an unknown extension, or not a valid
            model of the format its extension names.
    """
    p = Path(path)
    if not p.exists():
        raise ConversionError(f"model file not found: {p}")
    if p.is_dir():
        raise ConversionError(f"{p} is a folder, not a model file")
    if not p.is_file():
        raise ConversionError(f"{p} is not a regular file (a pipe or device would block)")
    fmt = _format_for(p)
    head = _read_head(p)
    if not fmt.sniff(head):
        other = next((f for f in FORMATS.values() if f is not fmt and f.magic and f.sniff(head)), None)
        hint = f" (it looks like a {other.label} file; rename it to {other.extensions[0]})" if other else ""
        raise ConversionError(f"{p} is not a {fmt.label} model{hint}")
    contents = keras_reader.read_keras(p, trust_model) if fmt is keras_reader.FORMAT else fmt.read(p)
    return ModelInfo(path=str(p), format=fmt.name, bytes=p.stat().st_size, sha256=sha256_of(p),
                     **dataclasses.asdict(contents))


def op_counts(path: str | os.PathLike) -> dict[str, int]:
    """Op (or Keras layer) type -> count of a model file, sorted by name; see ``inspect_model``."""
    return dict(inspect_model(path).ops)


def _format_for(p: Path) -> Format:
    ext = p.suffix.lower()
    for fmt in FORMATS.values():
        if ext in fmt.extensions:
            return fmt
    raise ConversionError(f"{p}: unknown model extension {ext or '(none)'!r}; known: {', '.join(known_extensions())}")


def _read_head(p: Path, n: int = 64) -> bytes:
    try:
        with p.open("rb") as f:
            head = f.read(n)
    except OSError as e:
        raise ConversionError(f"cannot read {p}: {e.strerror or e}") from None
    if not head:
        raise ConversionError(f"{p} is empty (0 bytes)")
    return head
