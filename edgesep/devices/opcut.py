"""TFLite models cut into single-op models, and the roofline's large-convolution model, on the host.

Reads and writes flatbuffers with the TFLite schema's object API that ai-edge-litert ships
(``ai_edge_litert.schema_py_generated``: ``ModelT``, ``Pack``) and the ``flatbuffers`` package it depends on.
The cutting happens here, on the host, and the single-op models are shipped to the device like any model:
a device with only ``tflite_runtime`` (no schema module) profiles the same way, and ``runner.py`` stays one
interpreter package. Each single-op model keeps the op's real tensors (shapes, types, quantization) and its
constant inputs (weights, biases) with their data; its other inputs become the model's inputs.

Never imports TensorFlow.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional

from edgesep.errors import DeviceError
from edgesep.io import write_bytes

TFLITE_FILE_ID = b"TFL3"
COMPUTE_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED", "BATCH_MATMUL", "TRANSPOSE_CONV")
# ops that call other subgraphs or hold state cannot stand alone
UNCUTTABLE = frozenset({"WHILE", "IF", "CALL_ONCE", "CALL", "VAR_HANDLE", "READ_VARIABLE", "ASSIGN_VARIABLE"})


@dataclasses.dataclass(frozen=True)
class CutOp:
    """One op of a TFLite model: its position, type, name (first output tensor), MACs, and its single-op file.

    ``path`` is None (and ``reason`` says why) when the op cannot be run alone.
    """

    index: int
    type: str
    name: str
    macs: Optional[int]
    path: Optional[Path] = None
    reason: Optional[str] = None
    kind: str = "other"

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["path"] = None if self.path is None else str(self.path)
        return d


def load_schema():
    """(schema module, flatbuffers module), or a DeviceError saying what to install."""
    try:
        import flatbuffers
        from ai_edge_litert import schema_py_generated as schema
    except ImportError as e:
        raise DeviceError(f"cutting a TFLite model into single ops needs ai-edge-litert's schema module and "
                          f"flatbuffers on this host ({e}): pip install ai-edge-litert") from None
    return schema, flatbuffers


def _op_names(schema) -> dict[int, str]:
    return {v: k for k, v in vars(schema.BuiltinOperator).items() if k.isupper() and isinstance(v, int)}


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, (bytes, bytearray)) else str(value or "")


def read_model(path: Path):
    """The ``ModelT`` of a .tflite file (a one-line DeviceError when it is not one)."""
    schema, _ = load_schema()
    data = Path(path).read_bytes()
    if data[4:8] != TFLITE_FILE_ID:
        raise DeviceError(f"not a TFLite model (no TFL3 identifier): {path}")
    try:
        return schema.ModelT.InitFromPackedBuf(bytearray(data), 0)
    except Exception as e:  # noqa: BLE001 - flatbuffers raises whatever a broken offset gives
        raise DeviceError(f"cannot read {path} as a TFLite flatbuffer: {type(e).__name__}: {e}") from None


def pack(model) -> bytes:
    """A ``ModelT`` as .tflite bytes."""
    _, flatbuffers = load_schema()
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=TFLITE_FILE_ID)
    return bytes(builder.Output())


def _op_type(model, op, names: dict[int, str]) -> str:
    code = model.operatorCodes[op.opcodeIndex]
    builtin = max(int(code.builtinCode or 0), int(code.deprecatedBuiltinCode or 0))
    if names.get(builtin) == "CUSTOM":
        return "CUSTOM:" + _text(code.customCode)
    return names.get(builtin, f"BUILTIN_{builtin}")


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= max(int(v), 1)
    return out


def op_macs(op_type: str, shapes: list[Optional[list[int]]], out_shape: list[int]) -> Optional[int]:
    """Multiply-accumulates of one TFLite op from its input shapes and first output shape (None: not counted).

    The MAC table of ``edgesep inspect`` (convolutions, depthwise, fully connected, batch matmul), per op.
    """
    if op_type == "CONV_2D" and len(shapes) > 1 and shapes[1]:  # filter [out, kh, kw, in]
        return _prod(out_shape) * _prod(shapes[1][1:])
    if op_type == "DEPTHWISE_CONV_2D" and len(shapes) > 1 and shapes[1]:  # filter [1, kh, kw, out]
        return _prod(out_shape) * _prod(shapes[1][1:3])
    if op_type == "FULLY_CONNECTED" and len(shapes) > 1 and shapes[1]:  # weights [units, in]
        return _prod(out_shape) * int(shapes[1][-1])
    if op_type == "BATCH_MATMUL" and shapes and shapes[0] and len(out_shape) >= 2:
        return _prod(out_shape) * (_prod(shapes[0][-2:]) // max(int(out_shape[-2]), 1))
    if op_type == "TRANSPOSE_CONV" and len(shapes) > 2 and shapes[1] and shapes[2]:
        return _prod(shapes[2]) * _prod(shapes[1][:-1])
    return None


def op_kind(op_type: str, shapes: list[Optional[list[int]]]) -> str:
    """``depthwise``, ``pointwise`` (a 1x1 convolution), ``conv`` (any other convolution / matrix product) or
    ``other``, for a TFLite op and its input shapes."""
    if op_type == "DEPTHWISE_CONV_2D":
        return "depthwise"
    if op_type == "CONV_2D" and len(shapes) > 1 and shapes[1] and len(shapes[1]) == 4:
        return "pointwise" if shapes[1][1] == 1 and shapes[1][2] == 1 else "conv"
    return "conv" if op_type in COMPUTE_OPS else "other"


def _is_constant(model, tensor) -> bool:
    buffer = model.buffers[tensor.buffer] if 0 < tensor.buffer < len(model.buffers or []) else None
    return buffer is not None and (buffer.data is not None and len(buffer.data) > 0 or buffer.size > 0)


def _constant_ops(model) -> dict[int, Any]:
    """``{output tensor: op}`` of the ops whose every input is a constant (an fp16 model's DEQUANTIZE of its
    weights): TFLite computes them once when the model loads, not on each run."""
    graph = model.subgraphs[0]
    found = {}
    for op in graph.operators or []:
        inputs = [t for t in op.inputs if t >= 0]
        if inputs and all(_is_constant(model, graph.tensors[t]) for t in inputs):
            found.update({t: op for t in op.outputs})
    return found


def _single_op_model(model, op, schema, constant_ops: Optional[dict[int, Any]] = None):
    """A ``ModelT`` holding ``op`` alone, with its tensors, constants and quantization; an input computed from
    constants (``constant_ops``: an fp16 weight's DEQUANTIZE) keeps its producer in front, folded at load as in
    the whole model, instead of becoming an input."""
    import copy

    graph = model.subgraphs[0]
    prelude = list({id(p): p for t in op.inputs if t >= 0 for p in [(constant_ops or {}).get(t)] if p is not None}
                   .values())
    ops = prelude + [op]
    produced = {t for o in ops for t in o.outputs}
    order = list(dict.fromkeys(t for o in ops for t in list(o.inputs) + list(o.outputs) if t >= 0))
    remap = {t: i for i, t in enumerate(order)}
    buffers, tensors, inputs = [schema.BufferT()], [], []
    for t in order:
        tensor = copy.copy(graph.tensors[t])
        if _is_constant(model, tensor) and t not in produced:
            buffers.append(model.buffers[tensor.buffer])
            tensor.buffer = len(buffers) - 1
        else:
            tensor.buffer = 0
            if t not in produced:
                inputs.append(remap[t])
        tensors.append(tensor)
    codes = list(dict.fromkeys(o.opcodeIndex for o in ops))
    new_ops = []
    for o in ops:
        new_op = copy.copy(o)
        new_op.opcodeIndex = codes.index(o.opcodeIndex)
        new_op.inputs = [remap[t] if t >= 0 else -1 for t in o.inputs]
        new_op.outputs = [remap[t] for t in o.outputs]
        new_op.intermediates = None
        new_ops.append(new_op)
    sub = schema.SubGraphT()
    sub.tensors, sub.inputs, sub.operators = tensors, inputs, new_ops
    sub.outputs = [remap[t] for t in op.outputs]
    sub.name = b"single_op"
    out = schema.ModelT()
    out.version, out.operatorCodes, out.subgraphs, out.buffers = 3, [model.operatorCodes[c] for c in codes], [sub], buffers
    out.description = b"edgesep single-op model"
    return out


def cut_model(path: Path, out_dir: Optional[Path]) -> list[CutOp]:
    """Every op of the main subgraph of ``path``, in execution order, each written as ``out_dir/op_NNN.tflite``
    (with ``out_dir`` None only described: no files, ``path`` None)."""
    schema, _ = load_schema()
    model = read_model(path)
    names = _op_names(schema)
    graph = model.subgraphs[0]
    if out_dir is not None:
        out_dir.mkdir(parents=True, exist_ok=True)
    constant_ops = _constant_ops(model)
    ops = []
    for index, op in enumerate(graph.operators or []):
        kind = _op_type(model, op, names)
        shapes = [None if t < 0 else [int(v) for v in graph.tensors[t].shape] for t in op.inputs]
        first_out = graph.tensors[op.outputs[0]] if op.outputs else None
        out_shape = [int(v) for v in first_out.shape] if first_out is not None and first_out.shape is not None else []
        name = _text(first_out.name) if first_out is not None else f"op{index}"
        macs = op_macs(kind, shapes, out_shape)
        role = op_kind(kind, shapes)
        if kind in UNCUTTABLE or kind.startswith("CUSTOM:") or any(graph.tensors[t].isVariable for t in op.inputs
                                                                    if t >= 0):
            ops.append(CutOp(index, kind, name, macs, reason=f"{kind} cannot run as a model of its own", kind=role))
            continue
        if op.outputs and all(t in constant_ops for t in op.outputs):
            ops.append(CutOp(index, kind, name, macs, kind=role,
                             reason="its inputs are constants: computed once when the model loads, not per run"))
            continue
        if out_dir is None:
            ops.append(CutOp(index, kind, name, macs, kind=role))
            continue
        target = out_dir / f"op_{index:03d}.tflite"
        write_bytes(target, pack(_single_op_model(model, op, schema, constant_ops)))
        ops.append(CutOp(index, kind, name, macs, target, kind=role))
    return ops



def model_precision(path: Path) -> str:
    """``int8`` when the model's convolutions / matrix products take int8 inputs, else ``float32``."""
    schema, _ = load_schema()
    model = read_model(path)
    names = _op_names(schema)
    graph = model.subgraphs[0]
    for op in graph.operators or []:
        if _op_type(model, op, names) in COMPUTE_OPS and len(op.inputs) and op.inputs[0] >= 0:
            return "int8" if graph.tensors[op.inputs[0]].type == schema.TensorType.INT8 else "float32"
    return "float32"
