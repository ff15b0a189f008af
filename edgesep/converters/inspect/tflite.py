"""The TFLite reader: ops, parameters, MACs, I/O and quantization of a ``.tflite`` flatbuffer.

Read with ai-edge-litert's interpreter (no delegate), so TensorFlow is not imported.
"""
from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Any

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
    """(ops, tensors by index, inputs, outputs) from the interpreter, or a one-line error."""
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interp = Interpreter(model_path=str(p),
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        ops = interp._get_ops_details()
        tensors = {t["index"]: t for t in interp.get_tensor_details()}
        return ops, tensors, interp.get_input_details(), interp.get_output_details()
    except (ValueError, RuntimeError) as e:
        raise ConversionError(f"{p} is not a valid TFLite model: {one_line(e, default=type(e).__name__)}") from None


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


def read_tflite(p: Path) -> Contents:
    """The :class:`Contents` of a TFLite file."""
    ops, tensors, inputs, outputs = _load(p)
    params, param_tensors, activations = _params(ops, tensors, inputs)

    def shape(index) -> list[int]:
        return [int(d) for d in tensors[int(index)]["shape"]]

    macs, skipped = count_macs(((op["op_name"], op) for op in ops), TFLITE_MACS, shape)
    op_types = sorted_counts(op["op_name"] for op in ops)
    notes = macs_note(skipped)
    if op_types.get("VAR_HANDLE"):
        notes.append(f"{op_types['VAR_HANDLE']} resource variables (VAR_HANDLE) hold weights that params does not "
                     "count; convert from a frozen graph (e.g. TFLiteConverter.from_keras_model)")
    return Contents(ops=op_types, params=params, macs=macs, inputs=[_io(t) for t in inputs],
                    outputs=[_io(t) for t in outputs], quantization=quantization_table(param_tensors, activations),
                    notes=notes)


FORMAT = Format("tflite", (".tflite",), "TFLite", is_tflite, read_tflite)
