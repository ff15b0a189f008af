"""The ONNX reader: ops, parameters, MACs, I/O and quantization of an ``.onnx`` model.

Read with the ``onnx`` package (shape inference at batch 1 for the MACs), so TensorFlow is not imported.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any, Optional

from edgesep.converters.inspect.base import (PARAM_DTYPES, Contents, Format, is_keras, is_tflite, macs_note,
                                             quant_summary, quantization_table, sorted_counts)
from edgesep.converters.inspect.macs import ONNX_MACS, count_macs
from edgesep.errors import ConversionError, one_line

STANDARD_DOMAINS = ("", "ai.onnx")

# Inputs that are quantization parameters (scale / zero point), not weights: op_type -> input slots.
QPARAM_SLOTS: dict[str, frozenset[int]] = {
    "QuantizeLinear": frozenset({1, 2}),
    "DequantizeLinear": frozenset({1, 2}),
    "QLinearConv": frozenset({1, 2, 4, 5, 6, 7}),
    "QLinearMatMul": frozenset({1, 2, 4, 5, 6, 7}),
    "ConvInteger": frozenset({2, 3}),
    "MatMulInteger": frozenset({2, 3}),
}
# Weights stored quantized with their scale beside them: op_type -> (weight, scale, zero-point) input slots.
# (ConvInteger / MatMulInteger weights carry no scale; they count by dtype only.)
QWEIGHT_SLOTS: dict[str, tuple[int, int, int]] = {
    "DequantizeLinear": (0, 1, 2),
    "QLinearConv": (3, 4, 5),
    "QLinearMatMul": (3, 4, 5),
}


def is_onnx(head: bytes) -> bool:
    """May this be ONNX? (A bare protobuf has no magic number: anything that is not another known format may
    be ONNX, and the protobuf parser decides.)"""
    return not (is_tflite(head) or is_keras(head))


def _op_name(node) -> str:
    return node.op_type if node.domain in STANDARD_DOMAINS else f"{node.domain}.{node.op_type}"


def value_info(v) -> dict[str, Any]:
    """``name``, ``shape`` (None for unknown dims) and ``dtype`` of an ONNX ValueInfoProto."""
    import onnx

    t = v.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "undefined"
    return {"name": v.name, "shape": dims, "dtype": dtype}


def _load(p: Path):
    import onnx

    try:
        model = onnx.load(str(p))
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError, external data raises OSError, ...
        raise ConversionError(f"{p} is not a valid ONNX model: {one_line(e, default=type(e).__name__)}") from None
    if model.ir_version < 1 or not model.graph.node or not model.graph.output:
        raise ConversionError(f"{p} is not a valid ONNX model: it has no graph")
    return model


def _constants(graph) -> dict[str, Any]:
    """Initializers and ``Constant`` node values of the main graph, as numpy arrays."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in STANDARD_DOMAINS:
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                out[node.output[0]] = numpy_helper.to_array(value)
    return out


def _quantized_weights(graph, constants: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Weight name -> ``quant_summary`` for constants stored quantized (QDQ or QLinear/Integer ops)."""
    out = {}
    for node in graph.node:
        slots = QWEIGHT_SLOTS.get(node.op_type)
        if slots is None or len(node.input) <= slots[0] or node.input[slots[0]] not in constants:
            continue
        w_slot, s_slot, z_slot = slots
        scale = constants.get(node.input[s_slot]) if len(node.input) > s_slot else None
        zero = constants.get(node.input[z_slot]) if len(node.input) > z_slot else None
        if scale is None:
            continue
        # DequantizeLinear's axis defaults to 1; QLinearConv/MatMul weights are per output channel (axis 0).
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1 if node.op_type == "DequantizeLinear" else 0)
        out[node.input[w_slot]] = quant_summary(scale.ravel(), [] if zero is None else zero.ravel(), axis)
    return out


def _params(graph, constants: dict[str, Any]) -> tuple[int, list[dict[str, Any]]]:
    qparams = {name for node in graph.node for i, name in enumerate(node.input)
               if i in QPARAM_SLOTS.get(node.op_type, ())}
    qweights = _quantized_weights(graph, constants)
    params, param_tensors = 0, []
    for name, arr in constants.items():
        if name in qparams or arr.ndim == 0 or arr.dtype.name not in PARAM_DTYPES:
            continue
        params += int(arr.size)
        param_tensors.append({"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape), **qweights.get(name, {})})
    return params, param_tensors


def _infer_batch1(model) -> tuple[Any, list[str]]:
    """The graph after shape inference with dynamic leading input dims set to 1, or ``None`` and a note."""
    import onnx

    batch1 = onnx.ModelProto()
    batch1.CopyFrom(model)
    for v in batch1.graph.input:
        dims = v.type.tensor_type.shape.dim
        if len(dims) and not dims[0].HasField("dim_value"):
            dims[0].dim_value = 1
    del batch1.graph.value_info[:]
    try:
        return onnx.shape_inference.infer_shapes(batch1, strict_mode=False).graph, []
    except Exception as e:  # noqa: BLE001 - inference failure leaves MACs unknown, not the whole inspection
        return None, [f"MACs unknown: ONNX shape inference failed ({one_line(e, default=type(e).__name__)})"]


def _macs(graph, values, constants: dict[str, Any]) -> tuple[int, Counter]:
    """MACs of the inferred ``graph`` and a count of the MAC ops whose shapes were unknown."""
    shapes: dict[str, Optional[list]] = {name: list(arr.shape) for name, arr in constants.items()}
    for v in values:
        shapes[v.name] = value_info(v)["shape"] if v.type.tensor_type.HasField("shape") else None

    def shape(name: str) -> list[int]:
        dims = shapes.get(name)
        if dims is None or any(d is None for d in dims):
            raise KeyError(name)
        return [int(d) for d in dims]

    nodes = ((node.op_type, node) for node in graph.node if node.domain in STANDARD_DOMAINS)
    return count_macs(nodes, ONNX_MACS, shape)


def _unknown_ops_notes(graph) -> list[str]:
    """Notes on nodes whose op ONNX does not define: their work is not in the MACs."""
    import onnx

    unknown = Counter(_op_name(n) for n in graph.node if not onnx.defs.has(n.op_type, n.domain or ""))
    if not unknown:
        return []
    what = ", ".join(f"{n} {op}" for op, n in sorted(unknown.items()))
    standard = [op for op in unknown if "." not in op]
    invalid = f"; {standard[0]} is not an ONNX op, so the graph is not valid ONNX" if standard else ""
    return [f"MACs are partial: they exclude ops ONNX does not define ({what}){invalid}"]


def read_onnx(p: Path) -> Contents:
    """The :class:`Contents` of an ONNX file."""
    model = _load(p)
    graph = model.graph
    constants = _constants(graph)
    params, param_tensors = _params(graph, constants)
    graph_inputs = [v for v in graph.input if v.name not in constants]
    inferred, notes = _infer_batch1(model)
    notes = _unknown_ops_notes(graph) + notes
    values = [] if inferred is None else [*inferred.input, *inferred.value_info, *inferred.output]
    values = [v for v in values if v.name not in constants and v.type.HasField("tensor_type")]
    activations = Counter(value_info(v)["dtype"] for v in values)
    macs = 0
    if inferred is not None:
        macs, skipped = _macs(inferred, values, constants)
        notes += macs_note(skipped)
    return Contents(ops=sorted_counts(map(_op_name, graph.node)), params=params, macs=macs,
                    inputs=[value_info(v) for v in graph_inputs], outputs=[value_info(v) for v in graph.output],
                    quantization=quantization_table(param_tensors, activations), notes=notes,
                    macs_partial=bool(notes))


FORMAT = Format("onnx", (".onnx",), "ONNX", is_onnx, read_onnx, magic=False)
