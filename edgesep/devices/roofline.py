"""The roofline's ceiling: a device's measured peak GMAC/s per precision, runtime, threads and delegate.

The peak is what one large 3x3 convolution (14x14x128 -> 128 channels, 29 MMACs) achieves on the device,
timed like any model (same runtime, threads and delegate as the bench): a ``.tflite`` single CONV_2D
(float32, or int8 with per-channel weights) written with the TFLite schema's object API, or an ``.onnx``
``Conv`` (float32) written with the ``onnx`` package. It is measured, never assumed, and cached as JSON under
``<cache>/roofline/`` keyed by device, CPU, runtime version, precision, threads and delegate.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from pathlib import Path
from typing import Any, Optional

from edgesep.io import write_bytes


SIDE, CHANNELS, KERNEL = 14, 128, 3
PEAK_MACS = SIDE * SIDE * CHANNELS * CHANNELS * KERNEL * KERNEL
PEAK_LABEL = f"3x3 convolution {SIDE}x{SIDE}x{CHANNELS} -> {CHANNELS} ({PEAK_MACS / 1e6:.0f} MMACs)"
INT8_OPS = ("QLinearConv", "ConvInteger", "QLinearMatMul", "MatMulInteger", "QuantizeLinear")


@dataclasses.dataclass(frozen=True)
class PeakKey:
    """What a peak depends on: the device, its CPU, the runtime (with version), precision, threads, delegate."""

    device: str
    cpu: str
    runtime: str
    format: str
    precision: str
    threads: Optional[int]
    delegate: str

    def digest(self) -> str:
        return hashlib.sha256(json.dumps(dataclasses.asdict(self), sort_keys=True).encode()).hexdigest()[:20]


def precision_of(fmt: str, op_types: list[str]) -> str:
    """An ONNX model's precision from the node types onnxruntime ran: ``int8`` with QLinear/Integer ops, else
    ``float32`` (TFLite models: ``edgesep.devices.opcut.model_precision``)."""
    return "int8" if any(t in INT8_OPS for t in op_types) else "float32"


def _conv_tensors(schema, precision: str):
    import numpy as np

    rng = np.random.default_rng(0)
    int8 = precision == "int8"
    shape_in, shape_w = [1, SIDE, SIDE, CHANNELS], [CHANNELS, KERNEL, KERNEL, CHANNELS]
    if int8:
        w_scale = [0.01] * CHANNELS
        weights = rng.integers(-127, 128, size=shape_w, dtype=np.int8)
        bias = rng.integers(-1000, 1000, size=[CHANNELS], dtype=np.int32)
    else:
        weights = (rng.standard_normal(shape_w) * 0.05).astype(np.float32)
        bias = np.zeros([CHANNELS], np.float32)

    def quant(scales, zero, dim=0):
        q = schema.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = list(scales), [zero] * len(scales), dim
        return q if int8 else None

    kinds = (schema.TensorType.INT8, schema.TensorType.INT8, schema.TensorType.INT32, schema.TensorType.INT8) \
        if int8 else (schema.TensorType.FLOAT32,) * 4
    specs = [("input", shape_in, 0, quant([0.02], -1)), ("filter", shape_w, 1, quant(w_scale if int8 else [1], 0)),
             ("bias", [CHANNELS], 2, quant([0.02 * s for s in (w_scale if int8 else [1])], 0)),
             ("output", [1, SIDE, SIDE, CHANNELS], 0, quant([0.05], 3))]
    tensors = []
    for (name, shape, buffer, q), kind in zip(specs, kinds):
        t = schema.TensorT()
        t.name, t.shape, t.type, t.buffer, t.quantization = name.encode(), shape, kind, buffer, q
        tensors.append(t)
    buffers = [schema.BufferT(), schema.BufferT(), schema.BufferT()]
    buffers[1].data = np.frombuffer(weights.tobytes(), np.uint8)
    buffers[2].data = np.frombuffer(bias.tobytes(), np.uint8)
    return tensors, buffers


def peak_tflite(precision: str, path: Path) -> Path:
    """Write the peak model for TFLite (``float32`` or ``int8``) to ``path``."""
    from edgesep.devices import opcut

    schema, _ = opcut.load_schema()
    tensors, buffers = _conv_tensors(schema, precision)
    options = schema.Conv2DOptionsT()
    options.padding, options.strideW, options.strideH = schema.Padding.SAME, 1, 1
    op = schema.OperatorT()
    op.opcodeIndex, op.inputs, op.outputs = 0, [0, 1, 2], [3]
    op.builtinOptionsType, op.builtinOptions = schema.BuiltinOptions.Conv2DOptions, options
    code = schema.OperatorCodeT()
    code.builtinCode = code.deprecatedBuiltinCode = schema.BuiltinOperator.CONV_2D
    code.version = 3 if precision == "int8" else 1
    sub = schema.SubGraphT()
    sub.tensors, sub.inputs, sub.outputs, sub.operators, sub.name = tensors, [0], [3], [op], b"peak"
    model = schema.ModelT()
    model.version, model.operatorCodes, model.subgraphs, model.buffers = 3, [code], [sub], buffers
    model.description = b"edgesep roofline peak"
    write_bytes(path, opcut.pack(model))
    return path


def peak_onnx(precision: str, path: Path) -> Path:
    """Write the peak model for onnxruntime to ``path``: an NCHW ``Conv`` (float32) or ``QLinearConv`` (int8:
    uint8 activations, int8 per-channel weights, as onnxruntime's static quantization writes)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    shape_w = [CHANNELS, CHANNELS, KERNEL, KERNEL]
    kind = TensorProto.UINT8 if precision == "int8" else TensorProto.FLOAT
    if precision == "int8":
        init = [numpy_helper.from_array(a, n) for a, n in (
            (rng.integers(-127, 128, size=shape_w, dtype=np.int8), "W"), (np.float32(0.02), "x_scale"),
            (np.uint8(128), "x_zero"), (np.full([CHANNELS], 0.01, np.float32), "w_scale"),
            (np.zeros([CHANNELS], np.int8), "w_zero"), (np.float32(0.05), "y_scale"), (np.uint8(128), "y_zero"))]
        node = helper.make_node("QLinearConv", ["input", "x_scale", "x_zero", "W", "w_scale", "w_zero", "y_scale",
                                                "y_zero"], ["output"], pads=[1, 1, 1, 1])
    else:
        init = [numpy_helper.from_array((rng.standard_normal(shape_w) * 0.05).astype(np.float32), "W")]
        node = helper.make_node("Conv", ["input", "W"], ["output"], pads=[1, 1, 1, 1], kernel_shape=[KERNEL, KERNEL])
    graph = helper.make_graph(
        [node], "peak", [helper.make_tensor_value_info("input", kind, [1, CHANNELS, SIDE, SIDE])],
        [helper.make_tensor_value_info("output", kind, [1, CHANNELS, SIDE, SIDE])], initializer=init)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    write_bytes(path, model.SerializeToString())
    return path


def peak_model(key: PeakKey, folder: Path) -> Optional[Path]:
    """The peak model for ``key`` written into ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    if key.format == "tflite":
        return peak_tflite(key.precision, folder / f"peak_{key.precision}.tflite")
    return peak_onnx(key.precision, folder / f"peak_{key.precision}.onnx")


def cached(root: Path, key: PeakKey) -> Optional[dict[str, Any]]:
    """The cached peak record for ``key`` (``source`` set to ``cached``), or None."""
    try:
        doc = json.loads((root / "roofline" / f"{key.digest()}.json").read_text())
    except (OSError, ValueError):
        return None
    if not isinstance(doc, dict) or doc.get("key") != dataclasses.asdict(key) or not doc.get("gmacs"):
        return None
    return {**doc, "source": "cached"}


def record(key: PeakKey, best_ms: float) -> dict[str, Any]:
    """The peak record of the peak model's fastest run (the best the device did)."""
    return {"key": dataclasses.asdict(key), "precision": key.precision, "gmacs": round(PEAK_MACS / best_ms / 1e6, 3),
            "ms": best_ms, "macs": PEAK_MACS, "model": PEAK_LABEL, "source": "measured",
            "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def store(root: Path, key: PeakKey, doc: dict[str, Any]) -> None:
    """Cache a measured peak (atomic write)."""
    from edgesep.io import write_json

    write_json(root / "roofline" / f"{key.digest()}.json", {**doc, "source": "measured"})
