"""MACs, kind and layer name of onnxruntime's profiled nodes: from the shapes its trace recorded, and where the
trace leaves them out (initializers it does not list, e.g. a QLinearConv's weights), from the .onnx graph on
the host (``onnx`` with shape inference; a dynamic batch counts as 1).

onnxruntime renames the nodes it fuses or transforms: ``NAME_token_N``, ``OUTPUT:0_nchwc``; ``original`` maps
such a name back to the graph's node (by node name, else by output tensor name), whose output names carry the
builders' layer names (``Conv__72`` writes ``model/block1_dw_relu_1/Relu6:0``).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Optional

CONVS = ("Conv", "FusedConv", "ConvInteger", "QLinearConv", "NhwcFusedConv", "QLinearConvTranspose")
MATMULS = ("MatMul", "FusedMatMul", "Gemm", "FusedGemm", "MatMulInteger", "QLinearMatMul")
WEIGHT_SLOT = {"QLinearConv": 3, "QLinearMatMul": 3}
_SUFFIX = re.compile(r"(_token_\d+|_nchwc|:\d+_nchwc|_output_\d+)+$")


def _prod(values) -> int:
    out = 1
    for v in values:
        out *= max(int(v), 1)
    return out


def macs(op_type: str, inputs: list[Optional[list[int]]], outputs: list[Optional[list[int]]]) -> Optional[int]:
    """MACs of one node from its shapes (None: not counted or unknown); a convolution's weight is the first
    input after the data with the output's rank (the trace may leave initializers out)."""
    out = outputs[0] if outputs else None
    if not out:
        return None
    if op_type in CONVS:
        weights = [s for s in inputs[1:] if s and len(s) == len(out)]
        return _prod(out) * _prod(weights[0][1:]) if weights else None  # W [M, C/group, *k]
    if op_type in MATMULS and inputs and inputs[0]:
        return _prod(out) * int(inputs[0][-1])
    return None


def kind(op_type: str, inputs: list[Optional[list[int]]], outputs: list[Optional[list[int]]]) -> str:
    """``depthwise`` / ``pointwise`` / ``conv`` / ``other`` of one node from its shapes."""
    out = outputs[0] if outputs else None
    if op_type in CONVS and out:
        weights = [s for s in inputs[1:] if s and len(s) == len(out)]
        if not weights:
            return "conv"
        w = weights[0]
        if w[1] == 1 and w[0] > 1 and _prod(w[2:]) > 1:
            return "depthwise"
        return "pointwise" if _prod(w[2:]) == 1 else "conv"
    return "conv" if op_type in MATMULS else "other"


def graph_nodes(path: Path) -> dict[str, dict[str, Any]]:
    """{node name or output name: {"name", "output", "macs", "kind"}} of the graph's nodes (empty when the host
    cannot read the file: the trace's own shapes stand then)."""
    try:
        import onnx
        from onnx import shape_inference

        model = shape_inference.infer_shapes(onnx.load(str(path)))
    except Exception:  # noqa: BLE001 - no onnx package here, or a model it cannot read
        return {}
    graph = model.graph
    shapes = {i.name: [int(d) for d in i.dims] for i in graph.initializer}
    for info in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = info.type.tensor_type.shape.dim
        shapes.setdefault(info.name, [d.dim_value if d.dim_value > 0 else 1 for d in dims])
    producer = {o: n for n in graph.node for o in n.output}
    found = {}
    for node in graph.node:
        ins = [_weight_shape(name, shapes, producer) for name in node.input]
        outs = [shapes.get(name) for name in node.output]
        entry = {"name": node.name, "output": node.output[0] if node.output else "", "macs": macs(node.op_type, ins,
                 outs), "kind": kind(node.op_type, ins, outs)}
        found[node.name] = entry
        for name in node.output:
            found.setdefault(name.split(":")[0], entry)
    return found


def _weight_shape(name: str, shapes: dict[str, list[int]], producer: dict) -> Optional[list[int]]:
    """A tensor's shape; through a DequantizeLinear to its quantized initializer (QDQ weights)."""
    if name in shapes:
        return shapes[name]
    node = producer.get(name)
    if node is not None and node.op_type == "DequantizeLinear" and node.input:
        return shapes.get(node.input[0])
    return None


def original(name: str, nodes: dict[str, dict[str, Any]]) -> Optional[dict[str, Any]]:
    """The graph node an onnxruntime node name stands for, or None."""
    if name in nodes:
        return nodes[name]
    base = _SUFFIX.sub("", name)
    return nodes.get(base) or nodes.get(base.split(":")[0])
