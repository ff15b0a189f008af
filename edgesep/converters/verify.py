"""Run every exported artifact against the Keras model: max abs error and top-1 accuracy."""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Callable, Optional, Sequence

import numpy as np

from edgesep.converters import ConversionError
from edgesep.converters._quiet import quiet


@dataclasses.dataclass(frozen=True)
class Verification:
    """How one artifact compares with the Keras model on the same images."""

    max_abs_error_vs_keras: float
    accuracy: Optional[float]
    samples: int
    agreement_top1: Optional[float] = None
    sqnr_db: Optional[float] = None


def predict_keras(model, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The Keras model's outputs on ``x`` (inference mode), float32."""
    return np.concatenate([np.asarray(model(x[i:i + batch_size], training=False), np.float32)
                           for i in range(0, len(x), batch_size)])


def predict_tflite(path: Path, x: np.ndarray) -> np.ndarray:
    """A .tflite model's (first) float output on ``x``, one image at a time, (de)quantizing int8/uint8 I/O."""
    return predict_tflite_all(path, x)[0]


def predict_tflite_all(path: Path, x: np.ndarray, names: Optional[Sequence[str]] = None) -> list[np.ndarray]:
    """Every float output of a .tflite model on ``x``; with ``names``, in that order, mapped by the signature's
    output names (the converter may order a model's outputs differently from Keras)."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet(f"loading {path.name}"):
        interpreter = Interpreter(model_path=str(path), num_threads=2)
        interpreter.allocate_tensors()
    inp, outs = interpreter.get_input_details()[0], tflite_outputs(interpreter, names)
    results: list[list[np.ndarray]] = [[] for _ in outs]
    for image in x:
        interpreter.set_tensor(inp["index"], _quantize(image[None], inp))
        interpreter.invoke()
        for got, out in zip(results, outs):
            got.append(_dequantize(interpreter.get_tensor(out["index"]), out))
    return [np.concatenate(got) for got in results]


def tflite_outputs(interpreter, names: Optional[Sequence[str]] = None) -> list[dict]:
    """The interpreter's output details, in the order of ``names`` (matched by tensor name, as edgesep names a
    model's outputs in the flatbuffer, or by a signature's output names)."""
    details = interpreter.get_output_details()
    if not names or len(details) == 1:
        return details
    by_name = {d["name"]: d for d in details}
    if not set(names) <= set(by_name):
        signatures = interpreter._get_full_signature_list()
        outputs = next(iter(signatures.values()))["outputs"] if len(signatures) == 1 else {}
        by_index = {d["index"]: d for d in details}
        by_name = {name: by_index[index] for name, index in outputs.items() if index in by_index}
    if not set(names) <= set(by_name):
        raise ConversionError(f"cannot tell the TFLite model's outputs apart: it names them "
                              f"{sorted(by_name) or [d['name'] for d in details]}, the model's are {list(names)}")
    return [by_name[name] for name in names]


def predict_onnx(path: Path, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """An .onnx model's (first) output on ``x`` with onnxruntime's CPU provider."""
    return predict_onnx_all(path, x, batch_size=batch_size)[0]


def predict_onnx_all(path: Path, x: np.ndarray, names: Optional[Sequence[str]] = None,
                     batch_size: int = 256) -> list[np.ndarray]:
    """Every output of an .onnx model on ``x`` (with ``names``: those, in that order)."""
    from edgesep.converters._quiet import import_onnxruntime

    ort = import_onnxruntime()

    try:
        session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise ConversionError(f"cannot load {path}: {e}") from None
    inp = session.get_inputs()[0]
    if isinstance(inp.shape[0], int):  # a static batch dimension: feed exactly that many
        batch_size = inp.shape[0]
    known = [o.name for o in session.get_outputs()]
    wanted = list(names) if names and len(known) > 1 else None
    if wanted and not set(wanted) <= set(known):
        raise ConversionError(f"{path.name} has outputs {known}, the model's are {wanted}")
    parts = [session.run(wanted, {inp.name: x[i:i + batch_size]}) for i in range(0, len(x), batch_size)]
    return [np.concatenate(chunks).astype(np.float32) for chunks in zip(*parts)]


_PREDICTORS: dict[str, Callable[[Path, np.ndarray], np.ndarray]] = {".tflite": predict_tflite, ".onnx": predict_onnx}


def verify_artifact(path, x: np.ndarray, reference: np.ndarray, y: Optional[np.ndarray] = None) -> Verification:
    """Compare an artifact's outputs on ``x`` with the Keras outputs ``reference``; accuracy when ``y`` is given."""
    path = Path(path)
    predictor = _PREDICTORS.get(path.suffix)
    if predictor is None:
        raise ConversionError(f"cannot verify {path.name}: unknown format; known: {', '.join(_PREDICTORS)}")
    outputs = predictor(path, x)
    if outputs.shape != reference.shape:
        raise ConversionError(f"{path.name} outputs {outputs.shape}, Keras model outputs {reference.shape}")
    accuracy = None if y is None else top1(outputs, y)
    agree, sqnr = agreement(outputs, reference)
    return Verification(float(np.max(np.abs(outputs - reference))), accuracy, len(x), agree, sqnr)


def agreement(outputs: np.ndarray, reference: np.ndarray) -> tuple[float, Optional[float]]:
    """Top-1 agreement of ``outputs`` with ``reference`` and the output SQNR in dB (None when identical)."""
    agree = float(np.mean(np.argmax(outputs, axis=-1) == np.argmax(reference, axis=-1)))
    noise = float(np.sum((outputs.astype(np.float64) - reference) ** 2))
    signal = float(np.sum(reference.astype(np.float64) ** 2))
    if noise == 0.0 or signal == 0.0:
        return agree, None
    return agree, float(10 * np.log10(signal / noise))


def top1(outputs: np.ndarray, y: np.ndarray) -> float:
    """Fraction of rows whose argmax equals the label."""
    return float(np.mean(np.argmax(outputs, axis=-1) == y))


def _quantize(x: np.ndarray, detail: dict) -> np.ndarray:
    dtype = detail["dtype"]
    if not np.issubdtype(dtype, np.integer):
        return x.astype(dtype)
    scale, zero_point = detail["quantization"]
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale + zero_point), info.min, info.max).astype(dtype)


def _dequantize(x: np.ndarray, detail: dict) -> np.ndarray:
    if not np.issubdtype(detail["dtype"], np.integer):
        return x.astype(np.float32)
    scale, zero_point = detail["quantization"]
    return ((x.astype(np.float32) - zero_point) * scale).astype(np.float32)
