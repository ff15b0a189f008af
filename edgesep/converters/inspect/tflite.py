"""The TFLite reader: ops, parameters, MACs, I/O and quantization of a ``.tflite`` flatbuffer.

Read with ai-edge-litert's interpreter (no delegate), so TensorFlow is not imported.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from edgesep.converters.inspect.base import (Contents, Format, dtype_name, is_tflite, macs_note, prod,
                                             quant_summary, quantization_table, sorted_counts)
from edgesep.converters.inspect.macs import TFLITE_MACS, count_macs
from edgesep.errors import ConversionError, one_line


def _quant(t: dict[str, Any]) -> dict[str, Any]:
    qp = t["quantization_parameters"]
    return quant_summary(qp["scales"], qp["zero_points"], qp["quantized_dimension"])


def _io(t: dict[str, Any]) -> dict[str, Any]:
    signature = t.get("shape_signature", t["shape"])
    shape = [None if int(d) < 0 else int(d) for d in signature]
    return {"name": t["name"], "shape": shape, "dtype": dtype_name(t["dtype"]), **_quant(t)}


def _load(p: Path):
    """(interpreter, ops, inputs, outputs) with shapes resolved at batch 1 where possible, or a one-line error."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interp = Interpreter(model_path=str(p),
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        return interp, interp._get_ops_details(), interp.get_input_details(), interp.get_output_details()
    except (ValueError, RuntimeError) as e:
        raise ConversionError(f"{p} is not a valid TFLite model: {one_line(e, default=type(e).__name__)}") from None


def _resolve_shapes(interp, inputs) -> list[str]:
    """Give a dynamic batch dim the size 1 and let the interpreter propagate every shape; notes on what is left.

    Without this, tensors after a shape-dependent op keep a placeholder 1 for every dynamic dim (an upsampled
    feature map of a dynamic-batch model reads 1 x W), and the MACs come out many times too low.
    """
    notes, resized = [], False
    for t in inputs:
        signature = [int(d) for d in t.get("shape_signature", t["shape"])]
        if any(d < 0 for d in signature[1:]):
            notes.append(f"MACs are partial: input {t['name']!r} has dynamic dims {signature} beyond the batch, "
                         "counted as 1")
        if signature and signature[0] < 0:
            interp.resize_tensor_input(t["index"], [1, *[max(d, 1) for d in signature[1:]]], strict=False)
            resized = True
    if resized:
        try:  # tensors whose shape a runtime value decides (a computed Reshape) get it only when invoked
            interp.allocate_tensors()
            for t in interp.get_input_details():
                interp.set_tensor(t["index"], np.zeros(t["shape"], t["dtype"]))
            interp.invoke()
        except (ValueError, RuntimeError) as e:
            notes.append(f"MACs are partial: shapes at batch 1 unknown ({one_line(e, 200, type(e).__name__)})")
    return notes


def _params(ops, tensors, inputs) -> tuple[int, list[dict[str, Any]], Counter]:
    """(parameter count, parameter tensor entries, activation dtype counts)."""
    produced = {int(i) for op in ops for i in op["outputs"]}
    graph_inputs = {int(t["index"]) for t in inputs}
    params, param_tensors, activations = 0, [], Counter()
    for index, t in sorted(tensors.items()):
        dtype = dtype_name(t["dtype"])
        if index in produced or index in graph_inputs:
            activations[dtype] += 1
            continue
        quant = _quant(t)
        if len(t["shape"]) == 0 or not (dtype.startswith(("float", "bfloat")) or quant):
            continue  # shape/axis constants, scalars
        params += prod(t["shape"])
        param_tensors.append({"name": t["name"], "dtype": dtype, "shape": [int(d) for d in t["shape"]], **quant})
    return params, param_tensors, activations


def _custom_note(p: Path) -> list[str]:
    """The note naming custom ops (their work is unknown to edgesep, so MACs leave it out)."""
    from edgesep.converters.flatbuffer import read_tflite as read_flatbuffer

    try:
        customs = sorted({name for name in read_flatbuffer(p).custom_ops if name})
    except Exception:  # noqa: BLE001 - an unreadable table: the interpreter already read the ops
        return []
    if not customs:
        return []
    return [f"MACs are partial: they exclude custom ops whose MACs are unknown: {', '.join(customs)}"]


def read_tflite(p: Path) -> Contents:
    """The :class:`Contents` of a TFLite file."""
    interp, ops, inputs, outputs = _load(p)
    params, param_tensors, activations = _params(ops, {t["index"]: t for t in interp.get_tensor_details()}, inputs)
    notes = _resolve_shapes(interp, inputs)
    tensors = {t["index"]: t for t in interp.get_tensor_details()}

    def shape(index) -> list[int]:
        return [int(d) for d in tensors[int(index)]["shape"]]

    macs, skipped = count_macs(((op["op_name"], op) for op in ops), TFLITE_MACS, shape)
    op_types = sorted_counts(op["op_name"] for op in ops)
    notes += macs_note(skipped) + _custom_note(p)
    partial = bool(notes)
    if op_types.get("VAR_HANDLE"):
        notes.append(f"{op_types['VAR_HANDLE']} resource variables (VAR_HANDLE) hold weights that params does not "
                     "count; convert from a frozen graph (e.g. TFLiteConverter.from_keras_model)")
    return Contents(ops=op_types, params=params, macs=macs, inputs=[_io(t) for t in inputs],
                    outputs=[_io(t) for t in outputs], quantization=quantization_table(param_tensors, activations),
                    notes=notes, macs_partial=partial)


FORMAT = Format("tflite", (".tflite",), "TFLite", is_tflite, read_tflite)
