"""Per-layer quantization error of an int8 TFLite model against its float reference.

Both models run on the same images with every intermediate tensor kept (``experimental_preserve_all_tensors``,
no delegate). The int8 model's op outputs are dequantized and compared with the float model's outputs of the
matching ops (same op sequence, else same tensor names). The error is cumulative: each int8 op sees the
int8 result of the ops before it, as on a device. Per op output:

* ``rmse`` and ``rmse_per_scale`` (RMSE in units of the output's quantization step; rounding alone gives
  about 0.29), ``max_abs_error``;
* ``sqnr_db`` = 10 log10(sum float^2 / sum error^2) (``None`` when the error or the reference is all zero);
* for CONV_2D / DEPTHWISE_CONV_2D / FULLY_CONNECTED the weight SQNR of the int8 kernel and its storage
  (per-channel or per-tensor); for depthwise kernels the per-channel range spread (max / min of the
  per-channel max |w| of the float kernel).

Reads TFLite with ai-edge-litert; TensorFlow is imported only to convert a Keras reference to float TFLite.
"""
from __future__ import annotations

import math
import re
import tempfile
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgesep.errors import ConversionError, one_line

WEIGHTED_OPS = ("CONV_2D", "DEPTHWISE_CONV_2D", "FULLY_CONNECTED")
SKIPPED_OPS = ("QUANTIZE", "DEQUANTIZE")
DEFAULT_SAMPLES = 100
MISMATCH_DB = 10.0  # int8 rounding of a kernel gives > 20 dB even per tensor with wild channel spreads
FLOAT_REFERENCE_NAME = "model.tflite"  # the float32 artifact beside model_int8.tflite in an export folder


# --- loading the two models ---

class _Model:
    """A TFLite interpreter keeping all tensors, with its compute ops (QUANTIZE/DEQUANTIZE dropped)."""

    def __init__(self, path: Path):
        from ai_edge_litert.interpreter import Interpreter, OpResolverType

        try:
            self.it = Interpreter(model_path=str(path), experimental_preserve_all_tensors=True,
                                  experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
            self.it.allocate_tensors()
        except Exception as e:  # a corrupt or foreign flatbuffer
            raise ConversionError(f"cannot load TFLite model {path}: {one_line(e, 200, type(e).__name__)}") from None
        self.path = path
        self.tensors = {t["index"]: t for t in self.it.get_tensor_details()}
        self.ops = [op for op in self.it._get_ops_details() if op["op_name"] not in SKIPPED_OPS]
        inputs = self.it.get_input_details()
        if len(inputs) != 1:
            raise ConversionError(f"{path.name}: quantization error needs a model with one input, found {len(inputs)}")
        self.input = inputs[0]

    def run(self, image: np.ndarray) -> None:
        x = image[None]
        dtype = self.input["dtype"]
        if dtype in (np.int8, np.uint8):
            scale, zero = self.input["quantization"]
            info = np.iinfo(dtype)
            x = np.clip(np.round(x / scale + zero), info.min, info.max)
        self.it.set_tensor(self.input["index"], x.astype(dtype))
        self.it.invoke()

    def value(self, index: int) -> np.ndarray:
        """Tensor ``index`` as float64, dequantized when it is int8/uint8/int16."""
        t = self.tensors[index]
        raw = self.it.get_tensor(index)
        if raw.dtype in (np.int8, np.uint8, np.int16):
            return _dequantize(raw, t)
        return raw.astype(np.float64)

    def is_quantized(self, index: int) -> bool:
        return self.tensors[index]["dtype"] in (np.int8, np.uint8, np.int16)


def _dequantize(raw: np.ndarray, t: dict[str, Any]) -> np.ndarray:
    q = t["quantization_parameters"]
    scales, zeros = np.asarray(q["scales"], np.float64), np.asarray(q["zero_points"], np.float64)
    if scales.size == 0:
        raise ConversionError(f"tensor {t['name']!r} is {raw.dtype} without quantization parameters")
    if scales.size > 1:
        shape = [1] * raw.ndim
        shape[q["quantized_dimension"]] = -1
        scales, zeros = scales.reshape(shape), zeros.reshape(shape)
    return (raw.astype(np.float64) - zeros) * scales


def _float_reference(reference, workdir: Path) -> tuple[Path, list[str]]:
    """(float TFLite path, Keras layer names or []) for a Keras model, a .keras file or a float .tflite."""
    if isinstance(reference, (str, Path)):
        path = Path(reference)
        if not path.is_file():
            raise ConversionError(f"float reference not found: {path}")
        if path.suffix == ".tflite":
            return path, []
        if path.suffix not in (".keras", ".h5"):
            raise ConversionError(f"float reference {path.name}: expected a .tflite, .keras or .h5 file")
        from edgesep.converters.graph import load_model

        reference = load_model(path)
    from edgesep.converters.tflite import export_tflite

    path = export_tflite(reference, workdir / "reference_float32.tflite", precision="float32")
    return path, [layer.name for layer in reference.layers]


# --- matching ops of the two models ---

def _match(int8: _Model, ref: _Model) -> tuple[list[tuple[dict, dict]], list[str]]:
    """Pairs (int8 op, float op): by position when both op sequences agree, else by output tensor name."""
    notes = []
    if [op["op_name"] for op in int8.ops] == [op["op_name"] for op in ref.ops]:
        return list(zip(int8.ops, ref.ops)), notes
    by_name = {ref.tensors[op["outputs"][0]]["name"]: op for op in ref.ops}
    pairs = []
    for op in int8.ops:
        other = by_name.get(int8.tensors[op["outputs"][0]]["name"])
        if other is not None and other["op_name"] == op["op_name"]:
            pairs.append((op, other))
    notes.append(f"op sequences differ; {len(pairs)} of {len(int8.ops)} int8 ops matched by tensor name")
    return pairs, notes


_SUFFIX = re.compile(r"_\d+$")


def _layer_name(model: _Model, op: dict, keras_names: list[str]) -> str:
    """The Keras layer an op came from, read from its weight (else output) tensor name."""
    index = op["inputs"][1] if op["op_name"] in WEIGHTED_OPS and len(op["inputs"]) > 1 else op["outputs"][0]
    parts = model.tensors[index]["name"].split(";")[0].split("/")
    known = set(keras_names)
    for part in parts:
        for candidate in (part, _SUFFIX.sub("", part)):
            if candidate in known:
                return candidate
    inner = [p for p in parts if p != parts[0]]
    if len(inner) >= 2:
        return _SUFFIX.sub("", inner[0])
    return op["op_name"].lower()


# --- statistics ---

class _Accumulator:
    def __init__(self):
        self.signal = self.noise = 0.0
        self.max_abs = 0.0
        self.count = 0
        self.lo, self.hi = math.inf, -math.inf

    def add(self, ref: np.ndarray, got: np.ndarray) -> None:
        err = got - ref
        self.signal += float(np.sum(ref * ref))
        self.noise += float(np.sum(err * err))
        self.max_abs = max(self.max_abs, float(np.max(np.abs(err))) if err.size else 0.0)
        self.count += err.size
        if ref.size:
            self.lo, self.hi = min(self.lo, float(ref.min())), max(self.hi, float(ref.max()))


def _sqnr_db(signal: float, noise: float) -> Optional[float]:
    if noise <= 0 or signal <= 0:  # no error, or an all-zero reference: undefined
        return None
    return 10.0 * math.log10(signal / noise)


def _weight_facts(int8: _Model, ref: _Model, op8: dict, opf: dict) -> dict[str, Any]:
    """Weight SQNR and storage of a weighted op; per-channel range spread for depthwise kernels."""
    if op8["op_name"] not in WEIGHTED_OPS or len(op8["inputs"]) < 2:
        return {}
    w8, wf = op8["inputs"][1], opf["inputs"][1]
    facts: dict[str, Any] = {}
    w_float = ref.it.get_tensor(wf).astype(np.float64)
    if int8.is_quantized(w8):
        w_deq = int8.value(w8)
        err = w_deq - w_float
        facts["weight_sqnr_db"] = _sqnr_db(float(np.sum(w_float ** 2)), float(np.sum(err ** 2)))
        scales = int8.tensors[w8]["quantization_parameters"]["scales"]
        facts["weight_quantization"] = "per-channel" if np.size(scales) > 1 else "per-tensor"
    if op8["op_name"] == "DEPTHWISE_CONV_2D":  # filter [1, kh, kw, channels]
        ranges = np.max(np.abs(w_float.reshape(-1, w_float.shape[-1])), axis=0)
        nonzero = ranges[ranges > 0]
        facts["range_ratio"] = float(nonzero.max() / nonzero.min()) if nonzero.size else 1.0
        facts["channels"] = int(ranges.size)
    return facts


def _row(name: str, op8: dict, int8: _Model, acc: _Accumulator, facts: dict[str, Any]) -> dict[str, Any]:
    out = int8.tensors[op8["outputs"][0]]
    scales = out["quantization_parameters"]["scales"]
    scale = float(scales[0]) if np.size(scales) == 1 else None
    rmse = math.sqrt(acc.noise / acc.count) if acc.count else 0.0
    return {"layer": name, "op": op8["op_name"], "tensor": out["name"], "scale": scale, "rmse": rmse,
            "rmse_per_scale": (rmse / scale) if scale else None, "sqnr_db": _sqnr_db(acc.signal, acc.noise),
            "max_abs_error": acc.max_abs, "float_range": [acc.lo, acc.hi], **facts}


def _unique_names(names: list[str], ops: list[str]) -> list[str]:
    seen: dict[str, int] = {}
    for n in names:
        seen[n] = seen.get(n, 0) + 1
    short = {"DEPTHWISE_CONV_2D": "depthwise", "CONV_2D": "pointwise"}
    return [f"{n}/{short.get(op, op.lower())}" if seen[n] > 1 else n for n, op in zip(names, ops)]


# --- the front door ---

def quant_error_report(reference, int8_tflite_path, data: np.ndarray, *, max_samples: int = DEFAULT_SAMPLES,
                       worst: int = 3) -> dict[str, Any]:
    """Per-layer error of an int8 TFLite model against its float reference on ``data``.

    Args:
        reference: the float model: a ``keras.Model`` (converted to float32 TFLite, BN-folded), a ``.keras``
            file or a float ``.tflite`` file. For the error of quantization alone give the model the int8
            file was converted from (e.g. the equalized one).
        int8_tflite_path: the quantized model.
        data: float32 NHWC images in [0, 1] at the model's input size.
        max_samples: images used (the first ones).
        worst: how many of the lowest-SQNR layers to name.

    Returns:
        A JSON-ready dict (a ``quant_error`` section for export.json): ``model``, ``samples``, ``layers`` (one
        row per int8 op in execution order), ``worst``, ``depthwise`` (range spread and weight SQNR of every
        depthwise kernel), ``output`` (``sqnr_db``, ``top1_agreement``), ``weights`` storage and ``notes``.

    Raises:
        ConversionError: missing or unreadable models, a float "int8" model, or data of the wrong shape.
    """
    path = Path(int8_tflite_path)
    if not path.is_file():
        raise ConversionError(f"int8 model not found: {path}")
    int8 = _Model(path)
    images = _check_data(data, int8, max_samples)
    with tempfile.TemporaryDirectory(prefix="edgesep-qerr-") as tmp:
        ref_path, keras_names = _float_reference(reference, Path(tmp))
        ref = _Model(ref_path)
        if not any(int8.is_quantized(op["outputs"][0]) for op in int8.ops):
            raise ConversionError(f"{path.name} has no quantized ops; give an int8 model")
        _check_pair(int8, ref, Path(reference).name if isinstance(reference, (str, Path)) else "the Keras reference")
        pairs, notes = _match(int8, ref)
        accs, agree = _run(int8, ref, pairs, images)
        facts = [_weight_facts(int8, ref, a, b) for a, b in pairs]
    names = _unique_names([_layer_name(int8, a, keras_names) for a, _ in pairs], [a["op_name"] for a, _ in pairs])
    rows = [_row(n, a, int8, acc, f) for n, (a, _), acc, f in zip(names, pairs, accs, facts)]
    return _summary(path, reference, rows, agree, len(images), worst, notes)


IMAGE_DTYPES = (np.float32, np.float16, np.int8, np.uint8)  # what _Model.run can feed an image to


def _shape(tensor: dict[str, Any]) -> str:
    return str(tuple(int(v) for v in tensor["shape"]))


def _signature(model: _Model) -> tuple[str, int, str]:
    """(input shape, number of outputs, output shapes) of a model, as they are printed."""
    outputs = model.it.get_output_details()
    return _shape(model.input), len(outputs), " and ".join(_shape(o) for o in outputs)


def _check_pair(int8: _Model, ref: _Model, ref_name: str) -> None:
    """ConversionError unless both models take an image input and the reference has the int8 model's input
    shape, number of outputs and output shapes (else it is not the model the int8 file was converted from)."""
    for model, name in ((int8, int8.path.name), (ref, ref_name)):
        if model.input["dtype"] not in IMAGE_DTYPES:
            raise ConversionError(f"{name} takes {np.dtype(model.input['dtype']).name} input; --quant-error feeds "
                                  f"images (float32, int8 or uint8)")
    mine, theirs = _signature(int8), _signature(ref)
    for what, a, b in zip(("input shape", "number of outputs", "output shape"), mine, theirs):
        if a != b:
            raise ConversionError(f"float reference {ref_name} does not fit {int8.path.name}: its {what} is {b}, "
                                  f"{int8.path.name}'s is {a}; give the float model {int8.path.name} was converted "
                                  "from")


def _check_data(data: np.ndarray, int8: _Model, max_samples: int) -> np.ndarray:
    if max_samples < 1:
        raise ConversionError(f"max_samples must be >= 1, got {max_samples}")
    data = np.asarray(data, np.float32)
    expected = tuple(int(v) for v in int8.input["shape"][1:])
    if data.ndim != 4 or tuple(data.shape[1:]) != expected or len(data) == 0:
        raise ConversionError(f"data images have shape {tuple(data.shape[1:])}, {int8.path.name} takes {expected}")
    return data[:max_samples]


def _run(int8: _Model, ref: _Model, pairs: list[tuple[dict, dict]], images: np.ndarray):
    accs = [_Accumulator() for _ in pairs]
    agree = 0
    out8, outf = int8.it.get_output_details()[0]["index"], ref.it.get_output_details()[0]["index"]
    for image in images:
        int8.run(image)
        ref.run(image)
        for acc, (a, b) in zip(accs, pairs):
            acc.add(ref.value(b["outputs"][0]), int8.value(a["outputs"][0]))
        agree += int(np.argmax(int8.value(out8)) == np.argmax(ref.value(outf)))
    return accs, agree


def _summary(path: Path, reference, rows: list[dict], agree: int, n: int, worst: int, notes: list[str]) -> dict:
    scored = [r for r in rows if r["sqnr_db"] is not None]
    worst_rows = sorted(scored, key=lambda r: r["sqnr_db"])[:max(worst, 0)]
    storage = {r["weight_quantization"] for r in rows if "weight_quantization" in r}
    ref_name = str(reference) if isinstance(reference, (str, Path)) else f"keras:{getattr(reference, 'name', '?')}"
    weight_sqnrs = [r["weight_sqnr_db"] for r in rows if r.get("weight_sqnr_db") is not None]
    if weight_sqnrs and min(weight_sqnrs) < MISMATCH_DB:
        notes = notes + [f"a kernel differs from the reference's by more than rounding can explain (weight SQNR "
                         f"{min(weight_sqnrs):.1f} dB): is the reference the model this int8 file came from?"]
    return {
        "model": str(path), "reference": ref_name, "samples": n,
        "weights": storage.pop() if len(storage) == 1 else ("mixed" if storage else None),
        "layers": rows,
        "worst": [r["layer"] for r in worst_rows],
        "depthwise": [{k: r.get(k) for k in ("layer", "channels", "range_ratio", "weight_sqnr_db", "sqnr_db")}
                      for r in rows if r["op"] == "DEPTHWISE_CONV_2D"],
        "output": {"sqnr_db": rows[-1]["sqnr_db"] if rows else None, "top1_agreement": agree / n if n else None},
        "notes": notes + ["errors are cumulative: each int8 op sees the int8 results of the ops before it"],
    }


def default_reference(int8_tflite_path) -> Path:
    """The float reference beside an exported int8 model (``model.tflite`` in the export folder)."""
    path = Path(int8_tflite_path).with_name(FLOAT_REFERENCE_NAME)
    if not path.is_file():
        raise ConversionError(f"--quant-error needs a float reference: none at {path}; "
                              f"give --reference model.tflite or a .keras file")
    return path


def quant_error_cli(model, inputs: list[dict[str, Any]], data: Optional[str], reference: Optional[str],
                    samples: int) -> dict[str, Any]:
    """``edgesep inspect MODEL --quant-error``: the report document on the test split of ``data``.

    Args:
        model: path of the int8 ``.tflite``.
        inputs: its input descriptions from ``inspect_model`` (the shape sets the image size).
        data: ``digits`` (default), an image folder or an ``.npz``.
        reference: the float model; default ``model.tflite`` beside ``model``.
        samples: test images used.
    """
    from edgesep.data import BUILTIN, load_dataset

    if Path(model).suffix != ".tflite":
        raise ConversionError(f"--quant-error needs an int8 .tflite model, got {Path(model).name}")
    shape = inputs[0]["shape"] if len(inputs) == 1 else None
    if not shape or len(shape) != 4 or any(v is None for v in shape[1:]):
        raise ConversionError(f"--quant-error needs one NHWC image input; {Path(model).name} has {shape}")
    dataset = load_dataset(data or BUILTIN, tuple(shape[1:]))
    doc = quant_error_report(reference or default_reference(model), model, dataset.x_test, max_samples=samples)
    doc["data"] = dataset.name
    if reference is None and _was_equalized(model):
        doc["notes"].insert(0, f"export.json says {Path(model).name} was equalized, so {FLOAT_REFERENCE_NAME} is not "
                               f"its float model: layer errors include the equalization; give --reference")
    return doc


def _was_equalized(model) -> bool:
    """Does the export.json beside ``model`` record an equalized int8 export (not reverted by the guard)?"""
    from edgesep.converters.records import read_export

    result = read_export(Path(model).parent)
    return result is not None and result.equalized
