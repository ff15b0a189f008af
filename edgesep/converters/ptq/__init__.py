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
    """export.json ``ptq``: the methods, the images they ran on, each layer's result (of the chosen candidate:
    empty when the guard kept the model as it was) and the guard's figures."""

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
    """(``model`` or a copy with its weights on the int8 grid as ``methods`` chose them, ``PtqReport``).

    With ``selection`` images (not calibration images) a guard converts the candidates to int8 TFLite and
    compares their output SQNR against ``model`` on them: ``model`` itself (no method), with bias
    correction only (when AdaRound was asked too) and with every method; the highest wins, ties going to
    the one with more methods. So ``--ptq`` never lowers the int8 SQNR on the selection images.
    """
    import time

    methods = check_methods(methods)
    start = time.perf_counter()
    x = np.asarray(calibration, np.float32)[:samples]
    work, results = _walk(model, x, methods, per_channel, iterations, say)
    guard = None
    if selection is not None:
        candidates = {"+".join(methods): (work, results)}
        if "adaround" in methods and len(methods) > 1:
            say("ptq guard: bias correction without AdaRound")
            rest = tuple(m for m in methods if m != "adaround")
            candidates["+".join(rest)] = _walk(model, x, rest, per_channel, None, lambda s: None)
        candidates["none"] = (model, ())
        say("ptq guard: int8 of each candidate on held-out images")
        guard = _guard(model, {k: v[0] for k, v in candidates.items()}, calibration, selection, per_channel)
        work, results = candidates[guard["chosen"]]
    report = PtqReport(methods, per_channel, int(len(x)), tuple(results), time.perf_counter() - start, guard)
    return work, report


def _guard(model, candidates: dict[str, Any], calibration: np.ndarray, selection: np.ndarray,
           per_channel: bool) -> dict[str, Any]:
    """Output SQNR of each candidate's int8 TFLite model on ``selection``; the chosen one (first best)."""
    import tempfile
    from pathlib import Path

    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import agreement, predict_keras, predict_tflite

    reference = predict_keras(model, selection)
    scores: dict[str, Optional[float]] = {}
    with tempfile.TemporaryDirectory(prefix="edgesep-ptq-guard-") as tmp:
        for i, (name, candidate) in enumerate(candidates.items()):
            path = export_tflite(candidate, Path(tmp) / f"{i}.tflite", precision="int8", fold=False,
                                 representative_data=calibration, per_channel=per_channel, io_dtype="float32")
            scores[name] = agreement(predict_tflite(path, selection), reference)[1]
    best = max(scores, key=lambda k: float("inf") if scores[k] is None else scores[k])  # first of equals
    return {"criterion": "int8 output SQNR on selection images; the highest wins (ties: more methods)",
            "selection_samples": int(len(selection)), "sqnr_db": scores, "chosen": best}


def ptq_for_export(int8_model, dataset, config, calibration: np.ndarray,
                   say: Callable[[str], None]) -> tuple[Any, dict[str, Any]]:
    """export's ``--ptq`` step: the model the int8 artifacts are made from, and export.json's ``ptq``.

    The guard chooses on training images held out beside the calibration draw, never the test split.
    """
    from edgesep.converters.guard import selection_split

    _, selection, _ = selection_split(dataset.x_train, config.calib_samples, config.seed, purpose="--ptq")
    chosen, report = apply_ptq(int8_model, calibration, config.ptq, per_channel=config.per_channel,
                               selection=selection if selection is not None and len(selection) else None,
                               say=say)
    return chosen, report.to_dict()
