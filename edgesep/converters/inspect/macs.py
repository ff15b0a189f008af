"""The MAC table: multiply-accumulates of one call of each counted op, per format.

Counted: convolutions (incl. depthwise and transposed), fully-connected layers and matrix products, at the
shapes the reader gives (a dynamic batch dim taken as 1). Elementwise ops, pooling and normalisation are
not counted. Each TFLite / ONNX formula takes ``shape(tensor) -> list[int]`` (raising ``KeyError`` for an
unknown shape) and the op; each Keras formula takes the layer and its input and output shapes.
"""
from __future__ import annotations

from collections import Counter
from typing import Any, Callable, Iterable

from edgesep.converters.inspect.base import prod

Shape = Callable[[Any], list[int]]


# --- TFLite: op dicts of the interpreter (``op_name``, ``inputs``, ``outputs`` tensor indices) ---

def _tfl_conv(shape: Shape, op) -> int:  # filter [out, kh, kw, in]
    return prod(shape(op["outputs"][0])) * prod(shape(op["inputs"][1])[1:])


def _tfl_depthwise(shape: Shape, op) -> int:  # filter [1, kh, kw, out]
    return prod(shape(op["outputs"][0])) * prod(shape(op["inputs"][1])[1:3])


def _tfl_fully_connected(shape: Shape, op) -> int:  # weights [units, in]
    return prod(shape(op["outputs"][0])) * int(shape(op["inputs"][1])[-1])


def _tfl_batch_matmul(shape: Shape, op) -> int:  # K from A's last two dims and the output's rows (adj_x either way)
    out, a = shape(op["outputs"][0]), shape(op["inputs"][0])
    return prod(out) * (prod(a[-2:]) // int(out[-2]))


def _tfl_conv3d(shape: Shape, op) -> int:  # filter [kd, kh, kw, in, out]
    return prod(shape(op["outputs"][0])) * prod(shape(op["inputs"][1])[:-1])


def _tfl_transpose_conv(shape: Shape, op) -> int:  # inputs (output_shape, weights [out, kh, kw, in], input)
    return prod(shape(op["inputs"][2])) * prod(shape(op["inputs"][1])[:-1])


TFLITE_MACS: dict[str, Callable[[Shape, Any], int]] = {
    "CONV_2D": _tfl_conv,
    "DEPTHWISE_CONV_2D": _tfl_depthwise,
    "FULLY_CONNECTED": _tfl_fully_connected,
    "BATCH_MATMUL": _tfl_batch_matmul,
    "CONV_3D": _tfl_conv3d,
    "TRANSPOSE_CONV": _tfl_transpose_conv,
}


# --- ONNX: NodeProtos ---

def _onnx_conv(shape: Shape, node) -> int:  # W [M, C/group, *k]
    return prod(shape(node.output[0])) * prod(shape(node.input[1])[1:])


def _onnx_qlinear_conv(shape: Shape, node) -> int:  # W at slot 3
    return prod(shape(node.output[0])) * prod(shape(node.input[3])[1:])


def _onnx_conv_transpose(shape: Shape, node) -> int:  # W [C, M/group, *k]: each input element feeds M/group*k
    return prod(shape(node.input[0])) * prod(shape(node.input[1])[1:])


def _onnx_matmul(shape: Shape, node) -> int:
    return prod(shape(node.output[0])) * int(shape(node.input[0])[-1])


def _onnx_gemm(shape: Shape, node) -> int:
    a = shape(node.input[0])
    trans_a = any(att.name == "transA" and att.i for att in node.attribute)
    return prod(shape(node.output[0])) * int(a[0] if trans_a else a[1])


ONNX_MACS: dict[str, Callable[[Shape, Any], int]] = {
    "Conv": _onnx_conv,
    "ConvInteger": _onnx_conv,
    "QLinearConv": _onnx_qlinear_conv,
    "ConvTranspose": _onnx_conv_transpose,
    "MatMul": _onnx_matmul,
    "MatMulInteger": _onnx_matmul,
    "QLinearMatMul": _onnx_matmul,
    "Gemm": _onnx_gemm,
}


def count_macs(ops: Iterable[tuple[str, Any]], table: dict[str, Callable[[Shape, Any], int]],
               shape: Shape) -> tuple[int, Counter]:
    """(total MACs, op type -> count of counted ops whose shapes were unknown) over ``(op type, op)`` pairs."""
    total, skipped = 0, Counter()
    for name, op in ops:
        count = table.get(name)
        if count is None:
            continue
        try:
            total += count(shape, op)
        except (KeyError, IndexError, ValueError, ZeroDivisionError):
            skipped[name] += 1
    return total, skipped


# --- Keras: layers, with their input and output shapes (batch 1) ---

def _keras_conv(layer, inp, out) -> int:  # kernel (*k, in/groups, out)
    return prod(out[1:]) * prod(layer.kernel.shape[:-1])


def _keras_depthwise(layer, inp, out) -> int:  # kernel (*k, in, multiplier)
    return prod(out[1:]) * prod(layer.kernel.shape[:-2])


def _keras_separable(layer, inp, out) -> int:  # depthwise (*k, in, m) then pointwise 1x1 (in*m -> filters)
    spatial = prod(out[1:-1])
    dw = layer.depthwise_kernel.shape
    mid = int(dw[-2]) * int(dw[-1])
    return spatial * mid * prod(dw[:-2]) + spatial * mid * int(out[-1])


def _keras_conv_transpose(layer, inp, out) -> int:  # kernel (*k, out, in): each input element feeds k*out
    return prod(inp[1:]) * prod(layer.kernel.shape[:-1])


def _keras_dense(layer, inp, out) -> int:
    return prod(out[1:]) * int(layer.kernel.shape[0])


# Layer class name -> MACs of one call; looked up along the class's MRO so subclasses count too.
KERAS_MACS: dict[str, Callable[[Any, list[int], list[int]], int]] = {
    "Conv1D": _keras_conv, "Conv2D": _keras_conv, "Conv3D": _keras_conv,
    "DepthwiseConv1D": _keras_depthwise, "DepthwiseConv2D": _keras_depthwise,
    "SeparableConv1D": _keras_separable, "SeparableConv2D": _keras_separable,
    "Conv1DTranspose": _keras_conv_transpose, "Conv2DTranspose": _keras_conv_transpose,
    "Conv3DTranspose": _keras_conv_transpose,
    "Dense": _keras_dense,
}
