"""The model's input domain: which preprocessing a Keras model expects, and whether an int8 model's input
quantization covers the data it will see.

``suggest_preprocess`` reads a model (a Rescaling/Normalization layer at its input, a keras.applications name)
and names the matching ``edgesep.data`` preset with the reason, or nothing when the model does not tell.
``int8_input_check`` compares an int8 TFLite model's input range with the calibration and held-out data:
the share of values that saturate the int8 range, and how far the ranges are apart.
"""
from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any, Optional

import numpy as np

from edgesep.data import PRESETS, Preprocess

# keras.applications model names (Keras 3) -> the preset of their family's preprocess_input
_NAME_RULES: tuple[tuple[str, str], ...] = (
    (r"^(mobilenetv2_|mobilenet_|xception$|inception_v3$|inception_resnet_v2$|resnet\d+v2$|nasnet)", "symmetric"),
    (r"^mobilenetv3", "symmetric"),  # without its Rescaling layer (include_preprocessing=False): [-1, 1]
    (r"^(efficientnet|convnext|regnet)", "raw"),
    (r"^(resnet\d+|vgg\d+)$", "caffe"),
    (r"^densenet", "torch"),
)
SATURATION_WARN = 0.01  # warn when more than 1 % of the input values fall outside the int8 input range
COVERAGE_WARN = 0.8  # warn when the int8 input range covers less than 80 % of the data's range ...
SPAN_WARN = 4.0  # ... or is more than 4x wider than it (fewer of the 256 levels left for the data)


def suggest_preprocess(model) -> tuple[Optional[Preprocess], str]:
    """The preset a Keras model's inputs need, and why; ``(None, reason)`` when the model does not tell."""
    layer = _first_layer(model)
    kind = type(layer).__name__ if layer is not None else ""
    if kind == "Rescaling" and 1 / 300 <= abs(_scalar(getattr(layer, "scale", 0.0))) <= 1 / 100:
        return PRESETS["raw"], (f"{model.name} starts with a Rescaling layer (x{_scalar(layer.scale):.4g}): "
                                "it takes pixels 0..255")
    if kind == "Normalization" and _max_mean(layer) > 2.0:
        return PRESETS["raw"], f"{model.name} starts with a Normalization layer with pixel-scale means: it takes 0..255"
    names = [model.name] + ([layer.name] if layer is not None and hasattr(layer, "layers") else [])
    for name in names:
        for pattern, preset in _NAME_RULES:
            if re.match(pattern, name, re.IGNORECASE):
                return PRESETS[preset], (f"'{name}' is a keras.applications name whose preprocess_input gives "
                                         f"the {preset} range")
    return None, f"{model.name} has no Rescaling/Normalization input layer and no keras.applications name"


def _first_layer(model):
    """The first layer after the input (looking inside a nested model that comes first)."""
    layers = [l for l in getattr(model, "layers", []) if type(l).__name__ != "InputLayer"]
    if not layers:
        return None
    first = layers[0]
    if hasattr(first, "layers"):
        inner = _first_layer(first)
        if type(inner).__name__ in ("Rescaling", "Normalization"):
            return inner
    return first


def _scalar(value) -> float:
    arr = np.asarray(value, np.float64).ravel()
    return float(arr[0]) if arr.size else 0.0


def _max_mean(layer) -> float:
    mean = getattr(layer, "mean", None)
    try:
        return float(np.max(np.abs(np.asarray(mean, np.float64)))) if mean is not None else 0.0
    except (TypeError, ValueError):
        return 0.0


@dataclasses.dataclass(frozen=True)
class InputCheck:
    """How an int8 model's input quantization fits the calibration and held-out data.

    Attributes:
        int8_range: the float values the int8 input can represent, ``[lo, hi]``.
        calibration_range: min/max of the calibration tensors.
        data_range: min/max of the held-out tensors.
        saturated_values: share of held-out input values more than half a quantization step outside
            ``int8_range`` (closer ones round onto its end, as any value inside does).
        saturated_inputs: share of held-out inputs with at least 1 % of their values outside it.
        warnings: one line per problem found.
    """

    int8_range: tuple[float, float]
    calibration_range: tuple[float, float]
    data_range: tuple[float, float]
    saturated_values: float
    saturated_inputs: float
    warnings: tuple[str, ...]

    def to_dict(self) -> dict[str, Any]:
        return {"int8_range": list(self.int8_range), "calibration_range": list(self.calibration_range),
                "data_range": list(self.data_range), "saturated_values": self.saturated_values,
                "saturated_inputs": self.saturated_inputs, "warnings": list(self.warnings)}


def int8_input_range(path) -> Optional[tuple[float, float]]:
    """The float interval an int8 TFLite model's input quantization represents (None if not quantized)."""
    from ai_edge_litert.interpreter import Interpreter

    from edgesep.converters._quiet import quiet

    with quiet(f"loading {Path(path).name}"):
        interpreter = Interpreter(model_path=str(path))
    detail = interpreter.get_input_details()[0]
    if not np.issubdtype(detail["dtype"], np.integer):  # float I/O: the first QUANTIZE op holds the range
        ops = [op for op in interpreter._get_ops_details()
               if op["op_name"] == "QUANTIZE" and detail["index"] in list(op["inputs"])]
        if not ops:
            return None
        detail = interpreter._get_tensor_details(int(ops[0]["outputs"][0]), 0)
    scale, zero_point = detail["quantization"]
    if not scale:
        return None
    info = np.iinfo(detail["dtype"])
    return float((info.min - zero_point) * scale), float((info.max - zero_point) * scale)


def int8_input_check(path, calibration: np.ndarray, x: np.ndarray) -> Optional[InputCheck]:
    """Saturation and range fit of the int8 model at ``path`` on held-out inputs ``x``."""
    rng = int8_input_range(path)
    if rng is None:
        return None
    lo, hi = rng
    half_step = (hi - lo) / 255 / 2 * 1.001  # within half a step (and float rounding) of the range a value
    # rounds onto its end, as the values inside do: that is not saturation
    outside = (x < lo - half_step) | (x > hi + half_step)
    per_input = outside.reshape(len(x), -1).mean(axis=1)
    check = dict(int8_range=(lo, hi), calibration_range=(float(calibration.min()), float(calibration.max())),
                 data_range=(float(x.min()), float(x.max())), saturated_values=float(outside.mean()),
                 saturated_inputs=float(np.mean(per_input > 0.01)))
    return InputCheck(**check, warnings=tuple(_warnings(**check)))


def _warnings(int8_range, calibration_range, data_range, saturated_values, saturated_inputs) -> list[str]:
    lo, hi = int8_range
    dlo, dhi = data_range
    found = []
    if saturated_values > SATURATION_WARN:
        found.append(f"{100 * saturated_values:.1f} % of the held-out input values ({100 * saturated_inputs:.0f} % "
                     f"of the inputs) fall outside the int8 input range [{lo:.4g}, {hi:.4g}] and saturate: "
                     "calibrate on data from the model's input domain")
    span = dhi - dlo
    covered = max(0.0, min(hi, dhi) - max(lo, dlo))
    if span > 0 and (covered / span < COVERAGE_WARN or (hi - lo) > SPAN_WARN * span):
        found.append(f"the int8 input range [{lo:.4g}, {hi:.4g}] (calibrated on [{calibration_range[0]:.4g}, "
                     f"{calibration_range[1]:.4g}]) is far from the data's [{dlo:.4g}, {dhi:.4g}]")
    return found
