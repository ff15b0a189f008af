"""How image pixels (0..255, RGB) become a model's input: :class:`Preprocess`, its presets named after the
Keras application families, and ``parse_preprocess`` -- the one parser of ``--preprocess``. Ground floor:
imports numpy and ``errors`` only.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Optional, Union

import numpy as np

from edgesep.errors import DataError, UsageError

IMAGENET_MEAN_BGR = (103.939, 116.779, 123.68)
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

__all__ = ["PRESETS", "PREPROCESS_HELP", "Preprocess", "parse_preprocess"]


@dataclasses.dataclass(frozen=True)
class Preprocess:
    """How image pixels (0..255, RGB) become the model's input tensor.

    Applied in this order, in float32 (the order of Keras' ``preprocess_input``, so presets match it exactly):
    channels reversed (``bgr``), multiplied by ``multiply``, divided by ``divide``, ``subtract`` taken away
    per channel, divided by ``std`` per channel.

    Attributes:
        name: a preset name (``unit``, ``symmetric``, ``raw``, ``caffe``, ``torch``) or ``custom``.
        multiply: factor on the pixels.
        divide: divisor of the pixels.
        subtract: one value, or one per channel, subtracted after scaling.
        std: empty, or one divisor per channel applied last.
        bgr: reverse RGB to BGR first.
        families: the Keras models that expect this input (for messages and export.json).
    """

    name: str
    multiply: float = 1.0
    divide: float = 1.0
    subtract: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = ()
    bgr: bool = False
    families: str = ""

    def apply(self, pixels: np.ndarray) -> np.ndarray:
        """NHWC pixels in 0..255 (RGB, or grey) -> float32 model input."""
        x = np.array(pixels, dtype=np.float32)
        channels = x.shape[-1]
        if (len(self.subtract) > 1 or self.std or self.bgr) and channels != 3:
            raise DataError(f"--preprocess {self.name} works on RGB images; the model takes {channels} channel(s)")
        if self.bgr:
            x = np.ascontiguousarray(x[..., ::-1])
        if self.multiply != 1.0:
            x *= np.float32(self.multiply)
        if self.divide != 1.0:
            x /= np.float32(self.divide)
        if any(self.subtract):
            x -= np.asarray(self.subtract, np.float32)
        if self.std:
            x /= np.asarray(self.std, np.float32)
        return x

    def linear(self, channels: int = 3) -> tuple[list[float], list[float]]:
        """Per output channel, ``(scale, offset)`` with ``input = pixel * scale + offset`` (after ``bgr``)."""
        sub = np.broadcast_to(np.asarray(self.subtract, np.float64), (channels,))
        std = np.broadcast_to(np.asarray(self.std or (1.0,), np.float64), (channels,))
        scale = self.multiply / self.divide / std
        return [float(v) for v in scale], [float(v) + 0.0 for v in -sub / std]

    def to_dict(self) -> dict[str, Any]:
        scale, offset = self.linear(3 if len(self.subtract) > 1 or self.std else 1)
        return {"name": self.name, "spec": self.spec(), "scale": scale, "offset": offset, "bgr": self.bgr,
                "families": self.families}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "Preprocess":
        """The preprocessing ``to_dict`` recorded (a preset by name; otherwise its scale, offset and bgr)."""
        if d.get("name") in PRESETS:
            return PRESETS[d["name"]]
        scale, offset = list(d["scale"]), list(d["offset"])
        if len(scale) == 1 and len(offset) == 1:
            return cls("custom", multiply=float(scale[0]), subtract=(-float(offset[0]),), bgr=bool(d.get("bgr")),
                       families=str(d.get("families") or "given explicitly"))
        std = tuple(1.0 / float(v) for v in scale)
        return cls("custom", subtract=tuple(-float(o) * s for o, s in zip(offset, std)), std=std,
                   bgr=bool(d.get("bgr")), families=str(d.get("families") or ""))

    def spec(self) -> str:
        """What to give ``--preprocess`` for this preprocessing."""
        if self.name in PRESETS:
            return self.name
        scale, offset = self.linear(1)
        return f"scale={scale[0]:.10g},offset={offset[0]:.10g}" + (",bgr" if self.bgr else "")


PRESETS: dict[str, Preprocess] = {p.name: p for p in (
    Preprocess("unit", divide=255.0, families="edgesep's built-in network; models trained on pixels/255"),
    Preprocess("symmetric", divide=127.5, subtract=(1.0,),
               families="MobileNet, MobileNetV2, Xception, InceptionV3, ResNetV2 (Keras 'tf' mode)"),
    Preprocess("raw", families="EfficientNet, EfficientNetV2, MobileNetV3, ConvNeXt, RegNet "
                               "(preprocessing inside the model)"),
    Preprocess("caffe", subtract=IMAGENET_MEAN_BGR, bgr=True, families="ResNet, VGG (Keras 'caffe' mode)"),
    Preprocess("torch", divide=255.0, subtract=IMAGENET_MEAN, std=IMAGENET_STD,
               families="DenseNet, models trained with ImageNet mean/std (Keras 'torch' mode)"),
)}
PREPROCESS_HELP = f"{'|'.join(PRESETS)}|scale=S,offset=O[,bgr]"


def parse_preprocess(spec: Union[str, Preprocess, None]) -> Optional[Preprocess]:
    """A preset name or ``scale=S,offset=O[,bgr]`` (input = pixel * S + O) -> :class:`Preprocess`.

    Raises:
        UsageError: an unknown preset or a malformed explicit form (the valid forms are listed).
    """
    if spec is None or isinstance(spec, Preprocess):
        return spec
    text = spec.strip()
    if text in PRESETS:
        return PRESETS[text]
    fields: dict[str, str] = {}
    bgr = False
    for part in (p.strip() for p in text.split(",") if p.strip()):
        key, eq, value = part.partition("=")
        if not eq and key == "bgr":
            bgr = True
        elif eq and key in ("scale", "offset") and key not in fields:
            fields[key] = value
        else:
            fields = {}
            break
    try:
        scale, offset = float(fields["scale"]), float(fields.get("offset", "0"))
    except (KeyError, ValueError):
        raise UsageError(f"unknown --preprocess {spec!r}; valid: {PREPROCESS_HELP}") from None
    if not (np.isfinite(scale) and np.isfinite(offset)) or scale == 0:
        raise UsageError(f"--preprocess {spec!r}: scale must be finite and non-zero, offset finite")
    return Preprocess("custom", multiply=scale, subtract=(-offset,), bgr=bgr, families="given explicitly")
