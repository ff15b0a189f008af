"""The configuration of a compare run: the built-in network's config, the block presets, the artifact kinds."""
from __future__ import annotations

import dataclasses
import re
from typing import Any

from edgesep.blocks import FORMS  # re-exported here: ratios are fused / split
from edgesep.models import DEFAULT_BLOCKS

REPORT_VERSION = 1
# kind -> (format, precision, artifact file, label)
KINDS = {"float32": ("tflite", "float32", "model.tflite", "TFLite float32"),
         "int8": ("tflite", "int8", "model_int8.tflite", "TFLite int8"),
         "onnx": ("onnx", "float32", "model.onnx", "ONNX float32"),
         "onnx_int8": ("onnx", "int8", "model_int8.onnx", "ONNX int8")}
BLOCK_PRESETS: dict[str, tuple[tuple[int, int], ...]] = {
    "default": DEFAULT_BLOCKS, "small": ((16, 1), (32, 2)), "tiny": ((8, 2),)}
MIN_INPUT_SIZE = 8
DEFAULT_SESSIONS = 5  # independent runner sessions per device and runtime (issue 12)
CONTROL_PREFIX = "control:"  # id prefix of the A/A control variant (the baseline loaded a second time)


def parse_blocks(spec: str) -> tuple[tuple[int, int], ...]:
    """Blocks from a preset name (``default``, ``small``, ``tiny``) or ``FILTERS[:STRIDE],...`` (e.g. ``32,64:2``).

    Raises:
        ValueError: neither a preset nor a valid list (the message lists the presets).
    """
    spec = (spec or "").strip()
    if spec in BLOCK_PRESETS:
        return BLOCK_PRESETS[spec]
    blocks = []
    for item in spec.split(","):
        match = re.fullmatch(r"\s*(\d+)\s*(?::\s*([12]))?\s*", item)
        if not match or int(match.group(1)) < 1:
            raise ValueError(f"bad --blocks {spec!r}: use a preset ({', '.join(BLOCK_PRESETS)}) or "
                             "FILTERS[:STRIDE],... with stride 1 or 2, e.g. 32,64:2,128:2")
        blocks.append((int(match.group(1)), int(match.group(2) or 1)))
    return tuple(blocks)


@dataclasses.dataclass(frozen=True)
class CompareConfig:
    """The built-in experiment: one network config for both forms, trained alike.

    Attributes:
        width: channel multiplier.
        input_size: input height and width (3 channels).
        blocks: (filters, stride) per separable block.
        epochs: training epochs (same steps for both forms).
        seeds: trainings per form, seeds 0..seeds-1 (latency is measured on seed 0's artifacts).
        int8: also export and compare full-integer int8 models.
        data: training/calibration/test data (``digits``, an ImageFolder dir or a .npz).
    """

    width: float = 1.0
    input_size: int = 32
    blocks: tuple[tuple[int, int], ...] = DEFAULT_BLOCKS
    epochs: int = 8
    seeds: int = 1
    int8: bool = True
    data: str = "digits"

    def __post_init__(self):
        object.__setattr__(self, "blocks", tuple((int(f), int(s)) for f, s in self.blocks))
        if not self.width > 0:
            raise ValueError(f"width must be > 0, got {self.width}")
        if self.input_size < MIN_INPUT_SIZE:
            raise ValueError(f"input size must be >= {MIN_INPUT_SIZE}, got {self.input_size}")
        if self.epochs < 1 or self.seeds < 1:
            raise ValueError("epochs and seeds must be >= 1")
        if not self.blocks or any(f < 1 or s not in (1, 2) for f, s in self.blocks):
            raise ValueError(f"blocks must be (filters >= 1, stride 1 or 2) pairs, got {self.blocks}")

    @property
    def kinds(self) -> tuple[str, ...]:
        """Artifact kinds exported for seed 0 and measured on the devices."""
        return ("float32", "int8", "onnx", "onnx_int8") if self.int8 else ("float32", "onnx")

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["blocks"] = [list(b) for b in self.blocks]
        return d
