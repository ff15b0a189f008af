"""What a model file holds: ops by type, parameters, MACs, size, inputs/outputs and quantization.

One reader per format behind a tiny registry (``tflite``, ``onnx``, ``keras``). The extension picks the
reader and the content must match it; every problem is a one-line ``ConversionError``.

Definitions shared by every format:

* **params** — elements of the model's stored constant tensors of rank >= 1 that are floating point or
  quantized (weights, biases). Integer shape/axis constants, rank-0 scalars (clip bounds, epsilons) and
  quantization scales/zero points are not parameters. For Keras it is ``model.count_params()``.
* **MACs** — multiply-accumulates of one inference in convolutions (incl. depthwise and transposed),
  fully-connected layers and matrix products, at the model's stored shapes with a dynamic batch dim
  taken as 1. Elementwise ops, pooling and normalisation are not counted.

TFLite is read with ai-edge-litert's interpreter and ONNX with the ``onnx`` package, so neither imports
TensorFlow; Keras is imported only to read ``.keras`` files.
"""
from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import zipfile
import zlib
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable, Optional

from edgesep.converters import ConversionError

_PARAM_DTYPES = frozenset({"float16", "float32", "float64", "bfloat16", "int8", "uint8", "int16", "uint16",
                           "int32", "int4", "uint4"})


@dataclasses.dataclass(frozen=True)
class ModelInfo:
    """The facts ``inspect_model`` found in one model file.

    Attributes:
        path: the file inspected.
        format: ``tflite``, ``onnx`` or ``keras``.
        bytes: file size.
        sha256: hex digest of the file.
        ops: op (or Keras layer) type -> count, sorted by name.
        params: parameter count (see the module docstring).
        macs: multiply-accumulates of one inference (dynamic batch taken as 1).
        inputs: one dict per model input: ``name``, ``shape`` (``None`` for a dynamic dim), ``dtype``, and
            for quantized tensors ``scale``/``zero_point`` or a ``per_channel`` summary.
        outputs: like ``inputs``.
        quantization: for TFLite and ONNX, how the parameter tensors are stored: counts ``per_channel``,
            ``per_tensor``, ``float``, ``dtypes`` of the parameter tensors, ``activation_dtypes`` and one
            entry per parameter tensor in ``tensors``; ``None`` for Keras.
        notes: caveats about the figures (e.g. ops whose MACs could not be computed).
    """

    path: str
    format: str
    bytes: int
    sha256: str
    ops: dict[str, int]
    params: int
    macs: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    quantization: Optional[dict[str, Any]] = None
    notes: list[str] = dataclasses.field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict of every field."""
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class _Contents:
    """What a format reader returns; ``inspect_model`` adds path, size and digest."""

    ops: dict[str, int]
    params: int
    macs: int
    inputs: list[dict[str, Any]]
    outputs: list[dict[str, Any]]
    quantization: Optional[dict[str, Any]] = None
    notes: list[str] = dataclasses.field(default_factory=list)


@dataclasses.dataclass(frozen=True)
class _Format:
    name: str
    extensions: tuple[str, ...]
    label: str
    sniff: Callable[[bytes], bool]  # may this content be of this format?
    read: Callable[[Path], _Contents]
    magic: bool  # does ``sniff`` positively identify the format (a magic number)?


_FORMATS: dict[str, _Format] = {}


def _register_format(name: str, extensions: tuple[str, ...], label: str, sniff: Callable[[bytes], bool],
                     magic: bool = True):
    """Decorator registering ``read(path) -> _Contents`` for files with ``extensions``."""

    def decorate(read: Callable[[Path], _Contents]) -> Callable[[Path], _Contents]:
        _FORMATS[name] = _Format(name, extensions, label, sniff, read, magic)
        return read

    return decorate


def known_extensions() -> list[str]:
    """File extensions ``inspect_model`` reads, sorted (e.g. ``.keras``)."""
    return sorted(ext for fmt in _FORMATS.values() for ext in fmt.extensions)


def inspect_model(path: str | os.PathLike) -> ModelInfo:
    """Ops, params, MACs, size, inputs/outputs and quantization of a ``.tflite``, ``.onnx`` or ``.keras`` file.

    Raises:
        ConversionError: the file is missing, empty, unreadable, of an unknown extension, or not a valid
            model of the format its extension names.
    """
    p = Path(path)
    if not p.exists():
        raise ConversionError(f"model file not found: {p}")
    if p.is_dir():
        raise ConversionError(f"{p} is a directory, not a model file")
    fmt = _format_for(p)
    head = _read_head(p)
    if not fmt.sniff(head):
        other = next((f for f in _FORMATS.values() if f is not fmt and f.magic and f.sniff(head)), None)
        hint = f" (it looks like a {other.label} file; rename it to {other.extensions[0]})" if other else ""
        raise ConversionError(f"{p} is not a {fmt.label} model{hint}")
    contents = fmt.read(p)
    return ModelInfo(path=str(p), format=fmt.name, bytes=p.stat().st_size, sha256=_sha256(p),
                     **dataclasses.asdict(contents))


def op_counts(path: str | os.PathLike) -> dict[str, int]:
    """Op (or Keras layer) type -> count of a model file, sorted by name; see ``inspect_model``."""
    return dict(inspect_model(path).ops)


def _format_for(p: Path) -> _Format:
    ext = p.suffix.lower()
    for fmt in _FORMATS.values():
        if ext in fmt.extensions:
            return fmt
    raise ConversionError(f"{p}: unknown model extension {ext or '(none)'!r}; known: "
                          f"{', '.join(known_extensions())}")


def _read_head(p: Path, n: int = 64) -> bytes:
    try:
        with p.open("rb") as f:
            head = f.read(n)
    except OSError as e:
        raise ConversionError(f"cannot read {p}: {e.strerror or e}") from None
    if not head:
        raise ConversionError(f"{p} is empty (0 bytes)")
    return head


def _sha256(p: Path) -> str:
    digest = hashlib.sha256()
    with p.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0].strip() if text else type(e).__name__


def _prod(values: Iterable[int]) -> int:
    return math.prod(int(v) for v in values)


def _quant_summary(scales, zero_points, axis: int) -> dict[str, Any]:
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


def _quantization_table(tensors: list[dict[str, Any]], activation_dtypes: Counter) -> dict[str, Any]:
    """Counts over parameter-tensor entries (``name``, ``dtype``, ``shape`` + ``_quant_summary`` keys)."""
    return {
        "per_channel": sum("per_channel" in t for t in tensors),
        "per_tensor": sum("scale" in t for t in tensors),
        "float": sum(t["dtype"].startswith(("float", "bfloat")) and "scale" not in t and "per_channel" not in t
                     for t in tensors),
        "dtypes": dict(sorted(Counter(t["dtype"] for t in tensors).items())),
        "activation_dtypes": dict(sorted(activation_dtypes.items())),
        "tensors": tensors,
    }


def _sorted_counts(names: Iterable[str]) -> dict[str, int]:
    return dict(sorted(Counter(names).items()))


def _batch_one(shape: Iterable[Optional[int]]) -> Optional[list[int]]:
    """The shape with a dynamic leading dim set to 1; ``None`` if any other dim is unknown."""
    dims = list(shape)
    if dims and dims[0] is None:
        dims[0] = 1
    return None if any(d is None for d in dims) else [int(d) for d in dims]


def _macs_note(skipped: Counter) -> list[str]:
    if not skipped:
        return []
    what = ", ".join(f"{n} {op}" for op, n in sorted(skipped.items()))
    return [f"MACs exclude ops whose shapes are unknown: {what}"]


# --------------------------------------------------------------------------------------------- TFLite

def _tfl_conv(shape, op) -> int:  # filter [out, kh, kw, in]
    return _prod(shape(op["outputs"][0])) * _prod(shape(op["inputs"][1])[1:])


def _tfl_depthwise(shape, op) -> int:  # filter [1, kh, kw, out]
    return _prod(shape(op["outputs"][0])) * _prod(shape(op["inputs"][1])[1:3])


def _tfl_fully_connected(shape, op) -> int:  # weights [units, in]
    return _prod(shape(op["outputs"][0])) * int(shape(op["inputs"][1])[-1])


def _tfl_batch_matmul(shape, op) -> int:  # K from A's last two dims and the output's rows (adj_x either way)
    out, a = shape(op["outputs"][0]), shape(op["inputs"][0])
    return _prod(out) * (_prod(a[-2:]) // int(out[-2]))


def _tfl_conv3d(shape, op) -> int:  # filter [kd, kh, kw, in, out]
    return _prod(shape(op["outputs"][0])) * _prod(shape(op["inputs"][1])[:-1])


def _tfl_transpose_conv(shape, op) -> int:  # inputs (output_shape, weights [out, kh, kw, in], input)
    return _prod(shape(op["inputs"][2])) * _prod(shape(op["inputs"][1])[:-1])


_TFLITE_MACS: dict[str, Callable] = {
    "CONV_2D": _tfl_conv,
    "DEPTHWISE_CONV_2D": _tfl_depthwise,
    "FULLY_CONNECTED": _tfl_fully_connected,
    "BATCH_MATMUL": _tfl_batch_matmul,
    "CONV_3D": _tfl_conv3d,
    "TRANSPOSE_CONV": _tfl_transpose_conv,
}


def _is_tflite(head: bytes) -> bool:
    return head[4:8] == b"TFL3"


def _tflite_quant(t: dict[str, Any]) -> dict[str, Any]:
    qp = t["quantization_parameters"]
    return _quant_summary(qp["scales"], qp["zero_points"], qp["quantized_dimension"])


def _tflite_io(t: dict[str, Any]) -> dict[str, Any]:
    signature = t.get("shape_signature", t["shape"])
    shape = [None if int(d) < 0 else int(d) for d in signature]
    return {"name": t["name"], "shape": shape, "dtype": _dtype_name(t["dtype"]), **_tflite_quant(t)}


def _dtype_name(dtype) -> str:
    import numpy as np

    return np.dtype(dtype).name


@_register_format("tflite", (".tflite",), "TFLite", _is_tflite)
def _read_tflite(p: Path) -> _Contents:
    from ai_edge_litert.interpreter import Interpreter, OpResolverType

    try:
        interp = Interpreter(model_path=str(p),
                             experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
        ops = interp._get_ops_details()
        tensors = {t["index"]: t for t in interp.get_tensor_details()}
        inputs, outputs = interp.get_input_details(), interp.get_output_details()
    except (ValueError, RuntimeError) as e:
        raise ConversionError(f"{p} is not a valid TFLite model: {_first_line(e)}") from None

    produced = {int(i) for op in ops for i in op["outputs"]}
    graph_inputs = {int(t["index"]) for t in inputs}
    params, param_tensors, activations = 0, [], Counter()
    for index, t in sorted(tensors.items()):
        dtype = _dtype_name(t["dtype"])
        if index in produced or index in graph_inputs:
            activations[dtype] += 1
            continue
        quant = _tflite_quant(t)
        if len(t["shape"]) == 0 or not (dtype.startswith(("float", "bfloat")) or quant):
            continue  # shape/axis constants, scalars
        params += _prod(t["shape"])
        param_tensors.append({"name": t["name"], "dtype": dtype, "shape": [int(d) for d in t["shape"]], **quant})

    macs, skipped = _tflite_macs(ops, tensors)
    op_types = _sorted_counts(op["op_name"] for op in ops)
    notes = _macs_note(skipped)
    if op_types.get("VAR_HANDLE"):
        notes.append(f"{op_types['VAR_HANDLE']} resource variables (VAR_HANDLE) hold weights that params does not "
                     "count; convert from a frozen graph (e.g. TFLiteConverter.from_keras_model)")
    return _Contents(
        ops=op_types, params=params, macs=macs,
        inputs=[_tflite_io(t) for t in inputs], outputs=[_tflite_io(t) for t in outputs],
        quantization=_quantization_table(param_tensors, activations), notes=notes,
    )


def _tflite_macs(ops: list[dict[str, Any]], tensors: dict[int, dict[str, Any]]) -> tuple[int, Counter]:
    def shape(index) -> list[int]:
        return [int(d) for d in tensors[int(index)]["shape"]]

    total, skipped = 0, Counter()
    for op in ops:
        count = _TFLITE_MACS.get(op["op_name"])
        if count is None:
            continue
        try:
            total += count(shape, op)
        except (KeyError, IndexError, ValueError, ZeroDivisionError):
            skipped[op["op_name"]] += 1
    return total, skipped


# ----------------------------------------------------------------------------------------------- ONNX

# Inputs that are quantization parameters (scale / zero point), not weights: op_type -> input slots.
_ONNX_QPARAM_SLOTS: dict[str, frozenset[int]] = {
    "QuantizeLinear": frozenset({1, 2}),
    "DequantizeLinear": frozenset({1, 2}),
    "QLinearConv": frozenset({1, 2, 4, 5, 6, 7}),
    "QLinearMatMul": frozenset({1, 2, 4, 5, 6, 7}),
    "ConvInteger": frozenset({2, 3}),
    "MatMulInteger": frozenset({2, 3}),
}

# Weights stored quantized with their scale beside them: op_type -> (weight, scale, zero-point) input slots.
# (ConvInteger / MatMulInteger weights carry no scale; they count by dtype only.)
_ONNX_QWEIGHT_SLOTS: dict[str, tuple[int, int, int]] = {
    "DequantizeLinear": (0, 1, 2),
    "QLinearConv": (3, 4, 5),
    "QLinearMatMul": (3, 4, 5),
}


def _onnx_conv(shape, node) -> int:  # W [M, C/group, *k]
    return _prod(shape(node.output[0])) * _prod(shape(node.input[1])[1:])


def _onnx_qlinear_conv(shape, node) -> int:  # W at slot 3
    return _prod(shape(node.output[0])) * _prod(shape(node.input[3])[1:])


def _onnx_conv_transpose(shape, node) -> int:  # W [C, M/group, *k]: each input element feeds M/group*k outputs
    return _prod(shape(node.input[0])) * _prod(shape(node.input[1])[1:])


def _onnx_matmul(shape, node) -> int:
    return _prod(shape(node.output[0])) * int(shape(node.input[0])[-1])


def _onnx_gemm(shape, node) -> int:
    a = shape(node.input[0])
    trans_a = any(att.name == "transA" and att.i for att in node.attribute)
    return _prod(shape(node.output[0])) * int(a[0] if trans_a else a[1])


_ONNX_MACS: dict[str, Callable] = {
    "Conv": _onnx_conv,
    "ConvInteger": _onnx_conv,
    "QLinearConv": _onnx_qlinear_conv,
    "ConvTranspose": _onnx_conv_transpose,
    "MatMul": _onnx_matmul,
    "MatMulInteger": _onnx_matmul,
    "QLinearMatMul": _onnx_matmul,
    "Gemm": _onnx_gemm,
}


def _is_onnx(head: bytes) -> bool:
    # ONNX (a bare protobuf) has no magic number: anything that is not another known format may be ONNX,
    # and the protobuf parser decides.
    return not (_is_tflite(head) or _is_keras(head))


def _onnx_op_name(node) -> str:
    return node.op_type if node.domain in ("", "ai.onnx") else f"{node.domain}.{node.op_type}"


def _onnx_value_info(v) -> dict[str, Any]:
    import onnx

    t = v.type.tensor_type
    dims = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    dtype = onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name if t.elem_type else "undefined"
    return {"name": v.name, "shape": dims, "dtype": dtype}


@_register_format("onnx", (".onnx",), "ONNX", _is_onnx, magic=False)
def _read_onnx(p: Path) -> _Contents:
    import onnx

    try:
        model = onnx.load(str(p))
    except Exception as e:  # noqa: BLE001 - protobuf raises DecodeError, external data raises OSError, ...
        raise ConversionError(f"{p} is not a valid ONNX model: {_first_line(e)}") from None
    graph = model.graph
    if model.ir_version < 1 or not graph.node or not graph.output:
        raise ConversionError(f"{p} is not a valid ONNX model: it has no graph")

    constants = _onnx_constants(graph)
    qparams = {name for node in graph.node for i, name in enumerate(node.input)
               if i in _ONNX_QPARAM_SLOTS.get(node.op_type, ())}
    params, param_tensors = 0, []
    qweights = _onnx_quantized_weights(graph, constants)
    for name, arr in constants.items():
        if name in qparams or arr.ndim == 0 or arr.dtype.name not in _PARAM_DTYPES:
            continue
        params += int(arr.size)
        param_tensors.append({"name": name, "dtype": arr.dtype.name, "shape": list(arr.shape),
                              **qweights.get(name, {})})

    graph_inputs = [v for v in graph.input if v.name not in constants]
    inferred, notes = _onnx_infer_batch1(model)
    values = [] if inferred is None else [*inferred.input, *inferred.value_info, *inferred.output]
    values = [v for v in values if v.name not in constants and v.type.HasField("tensor_type")]
    activations = Counter(_onnx_value_info(v)["dtype"] for v in values)
    macs = 0
    if inferred is not None:
        macs, skipped = _onnx_macs(inferred, values, constants)
        notes += _macs_note(skipped)
    return _Contents(
        ops=_sorted_counts(map(_onnx_op_name, graph.node)), params=params, macs=macs,
        inputs=[_onnx_value_info(v) for v in graph_inputs], outputs=[_onnx_value_info(v) for v in graph.output],
        quantization=_quantization_table(param_tensors, activations), notes=notes,
    )


def _onnx_constants(graph) -> dict[str, Any]:
    """Initializers and ``Constant`` node values of the main graph, as numpy arrays."""
    from onnx import numpy_helper

    out = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant" and node.domain in ("", "ai.onnx"):
            value = next((a.t for a in node.attribute if a.name == "value"), None)
            if value is not None:
                out[node.output[0]] = numpy_helper.to_array(value)
    return out


def _onnx_quantized_weights(graph, constants: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Weight name -> ``_quant_summary`` for constants stored quantized (QDQ or QLinear/Integer ops)."""
    out = {}
    for node in graph.node:
        slots = _ONNX_QWEIGHT_SLOTS.get(node.op_type)
        if slots is None or len(node.input) <= slots[0] or node.input[slots[0]] not in constants:
            continue
        w_slot, s_slot, z_slot = slots
        scale = constants.get(node.input[s_slot]) if len(node.input) > s_slot else None
        zero = constants.get(node.input[z_slot]) if len(node.input) > z_slot else None
        if scale is None:
            continue
        # DequantizeLinear's axis defaults to 1; QLinearConv/MatMul weights are per output channel (axis 0).
        axis = next((a.i for a in node.attribute if a.name == "axis"), 1 if node.op_type == "DequantizeLinear" else 0)
        out[node.input[w_slot]] = _quant_summary(scale.ravel(), [] if zero is None else zero.ravel(), axis)
    return out


def _onnx_infer_batch1(model) -> tuple[Any, list[str]]:
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
        return None, [f"MACs unknown: ONNX shape inference failed ({_first_line(e)})"]


def _onnx_macs(graph, values, constants: dict[str, Any]) -> tuple[int, Counter]:
    """MACs of the inferred ``graph`` and a count of the MAC ops whose shapes were unknown."""
    shapes: dict[str, Optional[list]] = {name: list(arr.shape) for name, arr in constants.items()}
    for v in values:
        shapes[v.name] = _onnx_value_info(v)["shape"] if v.type.tensor_type.HasField("shape") else None

    def shape(name: str) -> list[int]:
        dims = shapes.get(name)
        if dims is None or any(d is None for d in dims):
            raise KeyError(name)
        return [int(d) for d in dims]

    total, skipped = 0, Counter()
    for node in graph.node:
        count = _ONNX_MACS.get(node.op_type)
        if count is None or node.domain not in ("", "ai.onnx"):
            continue
        try:
            total += count(shape, node)
        except (KeyError, IndexError, ValueError):
            skipped[node.op_type] += 1
    return total, skipped


# ---------------------------------------------------------------------------------------------- Keras

def _keras_conv(layer, inp, out) -> int:  # kernel (*k, in/groups, out)
    return _prod(out[1:]) * _prod(layer.kernel.shape[:-1])


def _keras_depthwise(layer, inp, out) -> int:  # kernel (*k, in, multiplier)
    return _prod(out[1:]) * _prod(layer.kernel.shape[:-2])


def _keras_separable(layer, inp, out) -> int:  # depthwise (*k, in, m) then pointwise 1x1 (in*m -> filters)
    spatial = _prod(out[1:-1])
    dw = layer.depthwise_kernel.shape
    mid = int(dw[-2]) * int(dw[-1])
    return spatial * mid * _prod(dw[:-2]) + spatial * mid * int(out[-1])


def _keras_conv_transpose(layer, inp, out) -> int:  # kernel (*k, out, in): each input element feeds k*out
    return _prod(inp[1:]) * _prod(layer.kernel.shape[:-1])


def _keras_dense(layer, inp, out) -> int:
    return _prod(out[1:]) * int(layer.kernel.shape[0])


# Layer class name -> MACs of one call; looked up along the class's MRO so subclasses count too.
_KERAS_MACS: dict[str, Callable] = {
    "Conv1D": _keras_conv, "Conv2D": _keras_conv, "Conv3D": _keras_conv,
    "DepthwiseConv1D": _keras_depthwise, "DepthwiseConv2D": _keras_depthwise,
    "SeparableConv1D": _keras_separable, "SeparableConv2D": _keras_separable,
    "Conv1DTranspose": _keras_conv_transpose, "Conv2DTranspose": _keras_conv_transpose,
    "Conv3DTranspose": _keras_conv_transpose,
    "Dense": _keras_dense,
}


def _is_keras(head: bytes) -> bool:
    return head[:4] == b"PK\x03\x04"


@_register_format("keras", (".keras",), "Keras v3 (.keras)", _is_keras)
def _read_keras(p: Path) -> _Contents:
    _check_keras_archive(p)  # before importing Keras: a broken file fails fast, without TensorFlow's start-up
    import keras

    try:
        model = keras.saving.load_model(str(p), compile=False)
    except Exception as e:  # noqa: BLE001 - Keras raises many types for a bad archive or unknown layers
        raise ConversionError(f"cannot load Keras model {p}: {_first_line(e)}") from None
    return _keras_contents(model)


def _check_keras_archive(p: Path) -> None:
    """Raise unless ``p`` is an intact zip whose ``config.json`` is JSON."""
    import json

    try:
        with zipfile.ZipFile(p) as archive:
            if "config.json" not in archive.namelist():
                raise ConversionError(f"{p} is not a valid Keras model: the archive has no config.json")
            bad = archive.testzip()
            json.loads(archive.read("config.json"))
    except (zipfile.BadZipFile, zlib.error, EOFError) as e:
        raise ConversionError(f"{p} is not a valid Keras model: {_first_line(e)}") from None
    except ValueError as e:
        raise ConversionError(f"{p} is not a valid Keras model: config.json is not JSON ({_first_line(e)})") from None
    if bad is not None:
        raise ConversionError(f"{p} is not a valid Keras model: {bad} is corrupt")


def _keras_contents(model) -> _Contents:
    layers = list(_leaf_layers(model))
    macs, skipped = 0, Counter()
    for layer in layers:
        try:
            macs += _keras_layer_macs(layer)
        except (KeyError, ValueError, TypeError, AttributeError):
            skipped[type(layer).__name__] += 1
    names = list(getattr(model, "output_names", None) or [t.name for t in model.outputs])
    return _Contents(
        ops=_sorted_counts(type(layer).__name__ for layer in layers if type(layer).__name__ != "InputLayer"),
        params=int(model.count_params()), macs=macs,
        inputs=[_keras_io(t.name, t) for t in model.inputs],
        outputs=[_keras_io(name, t) for name, t in zip(names, model.outputs)],
        notes=_macs_note(skipped),
    )


def _keras_io(name: str, tensor) -> dict[str, Any]:
    return {"name": name, "shape": [None if d is None else int(d) for d in tensor.shape],
            "dtype": str(tensor.dtype)}


def _leaf_layers(model) -> Iterable[Any]:
    """Every layer, with nested models replaced by their own layers."""
    for layer in model.layers:
        if hasattr(layer, "layers") and layer.layers:
            yield from _leaf_layers(layer)
        else:
            yield layer


def _keras_layer_macs(layer) -> int:
    count = next((_KERAS_MACS[c.__name__] for c in type(layer).__mro__ if c.__name__ in _KERAS_MACS), None)
    if count is None:
        return 0
    total = 0
    for node in layer._inbound_nodes:  # one entry per call of the layer (shared layers count each call)
        inp, out = _batch_one(node.input_tensors[0].shape), _batch_one(node.output_tensors[0].shape)
        if inp is None or out is None:
            raise ValueError("unknown shape")
        total += count(layer, inp, out)
    return total


# -------------------------------------------------------------------------------------------- display

def info_tables(info: ModelInfo) -> list[Any]:
    """Rich tables of ``info``: a summary, the inputs/outputs, and the ops by type (most frequent first)."""
    from rich.table import Table

    summary = Table(title=f"{Path(info.path).name} ({info.format})", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    for key, value in _summary_rows(info):
        summary.add_row(key, value)

    io = Table(title="inputs / outputs")
    for column in ("", "name", "shape", "dtype", "quantization"):
        io.add_column(column, overflow="fold")
    for kind, entries in (("input", info.inputs), ("output", info.outputs)):
        for e in entries:
            io.add_row(kind, e["name"], _shape_text(e["shape"]), e["dtype"], _quant_text(e))

    ops = Table(title=f"ops ({sum(info.ops.values())})")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for name, count in sorted(info.ops.items(), key=lambda kv: (-kv[1], kv[0])):
        ops.add_row(name, str(count))
    return [summary, io, ops]


def _summary_rows(info: ModelInfo) -> list[tuple[str, str]]:
    rows = [("path", info.path), ("size", _human(info.bytes, "B", 1024)), ("sha256", info.sha256[:16] + "…"),
            ("params", f"{info.params:,}"), ("MACs", f"{info.macs:,} ({_human(info.macs, '', 1000)})")]
    q = info.quantization
    if q is not None:
        dtypes = ", ".join(f"{n} {d}" for d, n in q["dtypes"].items()) or "none"
        rows.append(("weights", f"{q['per_channel']} per-channel, {q['per_tensor']} per-tensor, {q['float']} float"
                                f" tensors ({dtypes})"))
        rows.append(("activations", ", ".join(f"{n} {d}" for d, n in q["activation_dtypes"].items()) or "-"))
    rows += [("note", note) for note in info.notes]
    return rows


def _human(value: int, unit: str, base: int) -> str:
    """``10.9 KB``-style text: one decimal with a K/M/G prefix, or the plain integer below ``base``."""
    if value < base:
        return f"{value} {unit}".rstrip()
    scaled, prefix = float(value), ""
    for prefix in ("K", "M", "G"):
        scaled /= base
        if scaled < base:
            break
    return f"{scaled:.1f} {prefix}{unit}"


def _shape_text(shape: list[Optional[int]]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _quant_text(entry: dict[str, Any]) -> str:
    if "scale" in entry:
        return f"scale {entry['scale']:.6g}, zero point {entry['zero_point']}"
    if "per_channel" in entry:
        pc = entry["per_channel"]
        return (f"per-channel ×{pc['count']} (axis {pc['quantized_dimension']}), "
                f"scale {pc['scale_min']:.3g}…{pc['scale_max']:.3g}")
    return "-"
