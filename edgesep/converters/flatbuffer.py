"""Reading .tflite files without TensorFlow: just enough of a FlatBuffers reader for the TFLite schema fields
edgesep looks at (custom op names, tensors with type/shape/signature, subgraph inputs and outputs).

Used by ``edgesep.converters.edgetpu`` (is a model compiled, can it be compiled). Imports only
``edgesep.errors``; never TensorFlow, so it runs where no converter is installed.
"""
from __future__ import annotations

import dataclasses
import struct
from pathlib import Path
from typing import Optional

from edgesep.errors import ConversionError

TFLITE_IDENTIFIER = b"TFL3"
TENSOR_TYPES = {0: "FLOAT32", 1: "FLOAT16", 2: "INT32", 3: "UINT8", 4: "INT64", 5: "STRING", 6: "BOOL",
                7: "INT16", 8: "COMPLEX64", 9: "INT8", 10: "FLOAT64", 11: "COMPLEX128", 12: "UINT64",
                13: "RESOURCE", 14: "VARIANT", 15: "UINT32", 16: "UINT16", 17: "INT4"}
FLOAT_TYPES = frozenset({"FLOAT32", "FLOAT16", "FLOAT64"})


class FlatReader:
    """Tables, vectors, strings and scalars of one flatbuffer (offsets as the FlatBuffers format defines)."""

    def __init__(self, data: bytes):
        self.b = data

    def _u(self, fmt: str, at: int) -> int:
        return struct.unpack_from(fmt, self.b, at)[0]

    def root(self) -> int:
        return self._u("<I", 0)

    def field(self, table: int, index: int) -> Optional[int]:
        vtable = table - self._u("<i", table)
        vt_len = self._u("<H", vtable)
        slot = 4 + 2 * index
        if slot >= vt_len:
            return None
        off = self._u("<H", vtable + slot)
        return table + off if off else None

    def ref(self, at: int) -> int:
        return at + self._u("<I", at)

    def tables(self, table: int, index: int) -> list[int]:
        at = self.field(table, index)
        if at is None:
            return []
        vec = self.ref(at)
        return [self.ref(vec + 4 + 4 * i) for i in range(self._u("<I", vec))]

    def ints(self, table: int, index: int) -> Optional[list[int]]:
        at = self.field(table, index)
        if at is None:
            return None
        vec = self.ref(at)
        n = self._u("<I", vec)
        return list(struct.unpack_from(f"<{n}i", self.b, vec + 4))

    def string(self, table: int, index: int) -> Optional[str]:
        at = self.field(table, index)
        if at is None:
            return None
        s = self.ref(at)
        return self.b[s + 4:s + 4 + self._u("<I", s)].decode("utf-8", "replace")

    def scalar(self, table: int, index: int, fmt: str, default: int = 0) -> int:
        at = self.field(table, index)
        return default if at is None else self._u(fmt, at)


@dataclasses.dataclass(frozen=True)
class TensorRecord:
    """One tensor of a subgraph: name, TFLite type name, shape and shape signature (-1 = dynamic)."""

    name: str
    type: str
    shape: tuple[int, ...]
    signature: Optional[tuple[int, ...]]


@dataclasses.dataclass(frozen=True)
class TfliteFile:
    """What edgesep reads from a .tflite: custom op names, tensors and (inputs, outputs) per subgraph."""

    custom_ops: list[str]
    tensors: list[list[TensorRecord]]
    io: list[tuple[list[int], list[int]]]


def read_tflite(path: Path) -> TfliteFile:
    """Read the custom ops, tensors and subgraph inputs/outputs of a .tflite file.

    Raises:
        ConversionError: the file cannot be read or is not a TFLite flatbuffer.
    """
    try:
        data = Path(path).read_bytes()
    except OSError as e:
        raise ConversionError(f"cannot read {path}: {e.strerror}") from None
    if len(data) < 8 or data[4:8] != TFLITE_IDENTIFIER:
        raise ConversionError(f"{path} is not a TFLite flatbuffer (no TFL3 identifier)")
    try:
        fb = FlatReader(data)
        model = fb.root()
        customs = [fb.string(c, 1) or "" for c in fb.tables(model, 1)]
        tensors, io = [], []
        for sg in fb.tables(model, 2):
            tensors.append([_tensor(fb, t) for t in fb.tables(sg, 0)])
            io.append((fb.ints(sg, 1) or [], fb.ints(sg, 2) or []))
    except (struct.error, IndexError) as e:
        raise ConversionError(f"{path} is not a readable TFLite model ({e})") from None
    return TfliteFile(customs, tensors, io)


def _tensor(fb: FlatReader, table: int) -> TensorRecord:
    sig = fb.ints(table, 7)
    return TensorRecord(fb.string(table, 3) or "", TENSOR_TYPES.get(fb.scalar(table, 1, "<b"), "?"),
                        tuple(fb.ints(table, 0) or ()), tuple(sig) if sig is not None else None)
