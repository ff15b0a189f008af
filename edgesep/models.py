"""Whole MobileNet-style networks made of separable blocks.

Layer names: ``stem_conv``, ``stem_bn``, ``stem_relu``, ``block1_...`` .. ``blockN_...`` (see
``edgesep.blocks``), ``pool``, ``classifier``.
"""
from __future__ import annotations

import dataclasses
import json
from typing import Any

from edgesep.blocks import ACTIVATIONS, DEFAULT_BN_MOMENTUM, get_block, separable_block

# (filters, stride) of each separable block; the stem conv has DEFAULT_STEM filters and stride 1.
DEFAULT_BLOCKS: tuple[tuple[int, int], ...] = ((32, 1), (64, 2), (128, 2), (128, 1))
DEFAULT_STEM = 16


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Everything that defines a built-in network; hashable and JSON round-trippable."""

    form: str = "split"
    input_shape: tuple[int, int, int] = (32, 32, 3)
    num_classes: int = 10
    width: float = 1.0
    blocks: tuple[tuple[int, int], ...] = DEFAULT_BLOCKS
    activation: str = "relu6"
    bn_momentum: float = DEFAULT_BN_MOMENTUM

    def __post_init__(self):
        get_block(self.form)  # raises listing the known forms
        object.__setattr__(self, "input_shape", tuple(int(v) for v in self.input_shape))
        object.__setattr__(self, "blocks", tuple((int(f), int(s)) for f, s in self.blocks))
        if len(self.input_shape) != 3 or min(self.input_shape) < 1:
            raise ValueError(f"input_shape must be (height, width, channels), got {self.input_shape}")
        if self.num_classes < 2:
            raise ValueError(f"num_classes must be >= 2, got {self.num_classes}")
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if not self.blocks or any(f < 1 or s not in (1, 2) for f, s in self.blocks):
            raise ValueError(f"blocks must be (filters >= 1, stride 1 or 2) pairs, got {self.blocks}")
        if self.activation not in ACTIVATIONS:
            raise ValueError(f"unknown activation {self.activation!r}; known: {', '.join(ACTIVATIONS)}")
        if not 0.0 <= self.bn_momentum < 1.0:
            raise ValueError(f"bn_momentum must be in [0, 1), got {self.bn_momentum}")

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict; ``ModelConfig(**d)`` restores it."""
        d = dataclasses.asdict(self)
        d["input_shape"] = list(self.input_shape)
        d["blocks"] = [list(b) for b in self.blocks]
        return d

    def key(self) -> str:
        """A stable text form, for cache keys."""
        return json.dumps(self.to_dict(), sort_keys=True)


def _scaled(filters: int, width: float) -> int:
    return max(8, int(round(filters * width / 8)) * 8) if width != 1.0 else filters


def build_model(form: str = "split", input_shape=(32, 32, 3), num_classes: int = 10, width: float = 1.0,
                blocks=DEFAULT_BLOCKS, activation: str = "relu6", bn_momentum: float = DEFAULT_BN_MOMENTUM,
                name: str | None = None):
    """A MobileNet-style classifier: stem conv, separable blocks, global pooling, softmax classifier.

    Args:
        form: block form for every separable block (``fused`` or ``split``, or any registered form).
        input_shape: (height, width, channels) of the float input, values in [0, 1].
        num_classes: classifier outputs.
        width: channel multiplier (rounded to multiples of 8).
        blocks: (filters, stride) per separable block.
        activation: ``relu6`` or ``relu``.
        bn_momentum: BatchNormalization momentum.
        name: model name; defaults to ``edgesep_<form>``.

    Returns:
        An uncompiled ``keras.Model``.
    """
    cfg = ModelConfig(form=form, input_shape=input_shape, num_classes=num_classes, width=width, blocks=blocks,
                      activation=activation, bn_momentum=bn_momentum)
    return build_from_config(cfg, name=name)


def build_from_config(cfg: ModelConfig, name: str | None = None):
    """``build_model`` from a ``ModelConfig``."""
    import keras
    from keras import layers

    inputs = keras.Input(shape=cfg.input_shape, name="input")
    x = layers.Conv2D(_scaled(DEFAULT_STEM, cfg.width), 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(momentum=cfg.bn_momentum, name="stem_bn")(x)
    x = layers.ReLU(max_value=6.0 if cfg.activation == "relu6" else None, name="stem_relu")(x)
    for i, (filters, strides) in enumerate(cfg.blocks, start=1):
        x = separable_block(x, _scaled(filters, cfg.width), form=cfg.form, strides=strides,
                            activation=cfg.activation, bn_momentum=cfg.bn_momentum, name=f"block{i}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(cfg.num_classes, activation="softmax", name="classifier")(x)
    return keras.Model(inputs, outputs, name=name or f"edgesep_{cfg.form}")
