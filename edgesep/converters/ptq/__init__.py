"""Post-training methods after CLE (Nagel et al. 2021, arXiv 2106.08295): empirical bias correction and
AdaRound, on the weight grid TFLite's converter uses (``edgesep.converters.ptq.grid``).

``apply_ptq`` walks the Conv2D / DepthwiseConv2D / Dense layers in graph order on a copy of the (folded)
model. For each layer it takes the layer's inputs in the float model (``x_f``) and in the copy whose earlier
layers are already on the int8 grid (``x_q``), chooses the layer's integer weights (nearest, or AdaRound's
rounding when it reconstructs the layer's output better than nearest on the calibration images), writes them
back as ``s * q`` (the converter turns them into exactly ``q``), and with bias correction adds to the bias the
mean per-channel difference of the pre-activation outputs ``f(x_f, w) - f(x_q, s q)`` over the images. Only
weights are quantized in this walk; activations stay float.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Sequence

import numpy as np

from edgesep.converters.export_config import PTQ_METHODS as METHODS
from edgesep.converters.ptq.walk import LayerResult
from edgesep.errors import UsageError

SAMPLES = 64  # calibration images the methods run on (the first of the calibration draw)


@dataclasses.dataclass(frozen=True)
class PtqReport:
    """export.json ``ptq``: the methods, the images they ran on, each layer's result, AdaRound's guard."""

    methods: tuple[str, ...]
    per_channel: bool
    samples: int
    layers: tuple[LayerResult, ...]
    seconds: float
    guard: Optional[dict[str, Any]] = None

    def to_dict(self) -> dict[str, Any]:
        return {"methods": list(self.methods), "weights": "per-channel" if self.per_channel else "per-tensor",
                "samples": self.samples, "seconds": round(self.seconds, 1),
                "adaround_layers": sum(1 for r in self.layers if r.adaround_kept),
                "flipped_weights": sum(r.flipped for r in self.layers), "guard": self.guard,
                "layers": [r.to_dict() for r in self.layers]}


def check_methods(methods: Sequence[str]) -> tuple[str, ...]:
    """``methods`` in their order of application; an unknown one is a UsageError naming the valid ones."""
    bad = [m for m in methods if m not in METHODS]
    if bad:
        raise UsageError(f"unknown --ptq method {bad[0]!r}; valid: {', '.join(METHODS)}")
    return tuple(m for m in METHODS if m in methods)


def _walk(model, x: np.ndarray, methods: tuple[str, ...], per_channel: bool, iterations: Optional[int],
          say: Callable[[str], None]):
    """(copy of ``model`` on the grid, per-layer results): every weighted layer in graph order."""
    from edgesep.converters.ptq.grid import weighted_layers
    from edgesep.converters.ptq.walk import Taps, clone, process_layer

    work = clone(model)
    float_taps, quant_taps = Taps(model, x), Taps(work, x)
    layers = weighted_layers(work)
    results = []
    for i, layer in enumerate(layers):
        say(f"{'+'.join(methods)} {i + 1}/{len(layers)}: {layer.name}")
        results.append(process_layer(model.get_layer(layer.name), layer, float_taps, quant_taps, methods,
                                     per_channel, iterations))
    return work, tuple(results)


def apply_ptq(model, calibration: np.ndarray, methods: Sequence[str], *, per_channel: bool = True,
              samples: int = SAMPLES, iterations: Optional[int] = None, selection: Optional[np.ndarray] = None,
              say: Callable[[str], None] = lambda s: None):
    """(a copy of ``model`` with its weights on the int8 grid as ``methods`` chose them, ``PtqReport``).

    With AdaRound and ``selection`` images (not calibration images), the int8 TFLite models of both roundings
    are compared on them (output SQNR against ``model``) and AdaRound's is kept only when not lower.
    """
    import time

    methods = check_methods(methods)
    start = time.perf_counter()
    x = np.asarray(calibration, np.float32)[:samples]
    work, results = _walk(model, x, methods, per_channel, iterations, say)
    guard = None
    if "adaround" in methods and selection is not None:
        say("adaround guard: int8 with nearest rounding")
        nearest_methods = tuple(m for m in methods if m != "adaround")
        near, near_results = _walk(model, x, nearest_methods, per_channel, None, lambda s: None)
        guard = _guard(model, work, near, calibration, selection, per_channel)
        if not guard["kept"]:
            work, results = near, near_results
    report = PtqReport(methods, per_channel, int(len(x)), results, time.perf_counter() - start, guard)
    return work, report


def _guard(model, adarounded, nearest, calibration: np.ndarray, selection: np.ndarray,
           per_channel: bool) -> dict[str, Any]:
    """Output SQNR of the int8 TFLite models of both roundings on ``selection``; AdaRound kept when not lower."""
    import tempfile
    from pathlib import Path

    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import agreement, predict_keras, predict_tflite

    reference = predict_keras(model, selection)
    scores = {}
    with tempfile.TemporaryDirectory(prefix="edgesep-adaround-") as tmp:
        for name, candidate in (("nearest", nearest), ("adaround", adarounded)):
            path = export_tflite(candidate, Path(tmp) / f"{name}.tflite", precision="int8", fold=False,
                                 representative_data=calibration, per_channel=per_channel, io_dtype="float32")
            scores[name] = agreement(predict_tflite(path, selection), reference)[1]
    near, ada = (float("inf") if v is None else v for v in (scores["nearest"], scores["adaround"]))
    return {"criterion": "int8 output SQNR on selection images not lower than with nearest rounding",
            "selection_samples": int(len(selection)), "nearest_sqnr_db": scores["nearest"],
            "adaround_sqnr_db": scores["adaround"], "kept": bool(ada >= near)}


def ptq_for_export(int8_model, dataset, config, calibration: np.ndarray,
                   say: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """export's ``--ptq`` step: the model the int8 artifacts are made from, and export.json's ``ptq``.

    AdaRound's guard chooses on training images held out beside the calibration draw, never the test split.
    """
    from edgesep.converters.guard import selection_split

    selection = None
    if "adaround" in config.ptq:
        _, selection, _ = selection_split(dataset.x_train, config.calib_samples, config.seed)
    chosen, report = apply_ptq(int8_model, calibration, config.ptq, per_channel=config.per_channel,
                               selection=selection if selection is not None and len(selection) else None,
                               say=say)
    return chosen, report.to_dict()
