"""``export --int8 --keep-float NAME[,NAME...]|auto``: the int8 model with the fewest ops kept float.

Named ops are kept float as asked. ``auto`` ranks the ops by sensitivity (``edgesep.converters.sensitivity``,
quick mode) on *selection* images drawn from the training split beside the calibration images (never the
test split), then adds them greedily, most sensitive first, each only if it raises the target metric, until
the target (output SQNR in dB, or top-1 agreement with the float model) holds. When it cannot hold within
``MAX_MAC_SHARE`` of the MACs in float, plain int8 is kept and the recipe says so.

With ``--keep-precision int16`` the kept ops run at 16-bit activations instead of float
(``edgesep.converters.keep_int16``) and auto chooses with that model; the ONNX int8 model keeps them float.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Callable, Optional

import numpy as np

from edgesep.converters import ConversionError
from edgesep.converters.mixed import AUTO, MAX_MAC_SHARE, Score, Selective, score

MAX_STEPS = 8  # ops auto tries to add at most (each costs one quantization and one run)


@dataclasses.dataclass(frozen=True)
class KeepFloatRecipe:
    """What the int8 model keeps float and why (export.json ``keep_float``).

    Attributes:
        requested: the names given, or ``("auto",)``.
        kept: the ops whose output activations stay float, or int16 (the names given, or auto's choice).
        float_ops: the ops that compute in float (names as in ``edgesep inspect --sensitivity``).
        mac_share: the share of the model's MACs in the kept ops (float or int16).
        precision: how the kept ops run: ``float`` or ``int16`` (activations; weights int8).
        int16_ops: the ops that compute at int16 activations (``precision`` int16; an op the quantizer has no
            int16 kernel for is in ``float_ops`` instead).
        target_metric, target: auto's goal (``sqnr_db`` or ``agreement``) and its value; None for named ops.
        met: whether the chosen model meets the target on the selection images (None for named ops).
        chosen_on: the images auto chose on (``{"images", "samples"}``), None for named ops.
        selection: plain int8 and chosen on the selection images (auto only).
        plain_int8: plain int8 on the test split, for comparison with the written model's figures.
        steps: auto's tries, in order: op added, kept or not, score.
        note: one line for the user when the target was not met.
    """

    requested: tuple[str, ...]
    kept: tuple[str, ...]
    float_ops: tuple[str, ...]
    mac_share: float
    plain_int8: Score
    precision: str = "float"
    int16_ops: tuple[str, ...] = ()
    target_metric: Optional[str] = None
    target: Optional[float] = None
    met: Optional[bool] = None
    chosen_on: Optional[dict[str, Any]] = None
    selection: Optional[dict[str, Score]] = None
    steps: tuple[dict[str, Any], ...] = ()
    note: Optional[str] = None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d.update(requested=list(self.requested), kept=list(self.kept), float_ops=list(self.float_ops),
                 int16_ops=list(self.int16_ops), steps=list(self.steps),
                 plain_int8=self.plain_int8.to_dict(),
                 selection=None if self.selection is None else {k: v.to_dict() for k, v in self.selection.items()})
        return d


def _greedy(selective: Selective, x: np.ndarray, reference: np.ndarray, metric: str, target: float,
            say: Callable[[str], None]) -> tuple[list[str], Score, Score, list[dict[str, Any]]]:
    """(kept names, plain score, chosen score, steps): add ops by sensitivity while the target does not hold."""
    from edgesep.converters.sensitivity import rank

    say("keep-float: sensitivity on selection images")
    report = rank(selective, x, reference, quick=True, on_step=say)
    plain = best = report.plain
    kept: list[str] = []
    steps: list[dict[str, Any]] = []
    for row in report.rows:
        if best.value(metric) >= target or len(steps) >= MAX_STEPS:
            break
        trial = kept + [row.name]
        share = selective.mac_share(trial)
        if share > MAX_MAC_SHARE:
            steps.append({"op": row.name, "kept": False, "mac_share": share, "why": "over the MAC budget"})
            continue
        say(f"keep-float: trying {', '.join(trial)}")
        new = row.score if not kept else score(selective, trial, x, reference)
        better = new.value(metric) > best.value(metric)
        steps.append({"op": row.name, "kept": better, "mac_share": share, **new.to_dict()})
        if better:
            kept, best = trial, new
    return kept, plain, best, steps


def plan(selective: Selective, config, *, selection: Optional[np.ndarray], selection_reference, x_test: np.ndarray,
         test_reference: np.ndarray, selection_what: str = "", say: Callable[[str], None] = lambda s: None
         ) -> KeepFloatRecipe:
    """The recipe for ``config.keep_float`` (names, or auto on ``selection`` images against their float outputs)."""
    plain_test = score(selective, (), x_test, test_reference)
    if tuple(config.keep_float) != (AUTO,):
        names = tuple(config.keep_float)
        split = selective.split(names)
        return KeepFloatRecipe(names, names, split["float_ops"], selective.mac_share(names), plain_test,
                               selective.precision, split["int16_ops"])
    metric, target = (("agreement", config.target_agreement) if config.target_agreement is not None
                      else ("sqnr_db", config.target_sqnr_db))
    kept, plain, best, steps = _greedy(selective, selection, selection_reference, metric, target, say)
    met = best.value(metric) >= target
    note = None
    if not met:
        how = ("in float" if selective.precision == "float" else
               f"at {selective.precision} activations (their weights stay int8; --keep-precision float may reach it)")
        note = (f"--keep-float auto: {metric} {target:g} not reached on the selection images with at most "
                f"{MAX_MAC_SHARE:.0%} of the MACs {how} (best {best.value(metric):.3g}); kept plain int8")
        kept = []
    split = selective.split(kept)
    return KeepFloatRecipe((AUTO,), tuple(kept), split["float_ops"], selective.mac_share(kept), plain_test,
                           selective.precision, split["int16_ops"], metric, float(target), met,
                           {"images": selection_what, "samples": int(len(selection))},
                           {"plain_int8": plain, "chosen": best if met else plain}, tuple(steps), note)


def selection_images(dataset, config) -> tuple[np.ndarray, np.ndarray, str]:
    """(calibration images, selection images, how drawn): disjoint draws from the training split, the
    calibration ones those every int8 export of this config calibrates on (``guard.selection_split``)."""
    from edgesep.converters.guard import selection_split

    calib, selection, how = selection_split(dataset.x_train, config.calib_samples, config.seed,
                                            purpose="--keep-float auto")
    return calib, selection, f"training images {how}"


def write_keep_float(job, path: Path) -> Path:
    """The tflite:int8 writer under ``--keep-float``: plan, write, record the recipe in ``job.sections``."""
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.outputs import keras_outputs
    from edgesep.io import write_bytes

    selective = _selective(job.config)(job.int8_model, job.calibration, per_channel=job.config.per_channel)
    selection = job.selection
    if tuple(job.config.keep_float) == (AUTO,) and selection is None:
        raise ConversionError("--keep-float auto needs selection images beside the calibration images")
    recipe = plan(selective, job.config, selection=selection,
                  selection_reference=None if selection is None else keras_outputs(job.int8_model, selection),
                  x_test=job.x, test_reference=job.references or (job.reference,), selection_what=job.selection_what)
    job.sections["keep_float"] = recipe.to_dict()
    job.float_layers.extend(recipe.float_ops + recipe.int16_ops)  # model_int8.onnx keeps both float
    if recipe.int16_ops and job.config.onnx:  # onnxruntime's CPU kernels have no int16 convolution
        job.sections["keep_float"]["onnx_precision"] = "float"
    if recipe.note:
        job.warnings.append(recipe.note)
    if recipe.precision == "int16" and recipe.float_ops:
        job.warnings.append(f"--keep-precision int16: ai-edge-quantizer has no 16-bit activation kernel for "
                            f"{', '.join(recipe.float_ops)}; kept float instead")
    if not recipe.kept:
        return export_tflite(job.int8_model, path, precision="int8", representative_data=job.calibration,
                             per_channel=job.config.per_channel, io_dtype=job.config.io_dtype, fold=False)
    return write_bytes(path, selective.quantize(recipe.kept))


def _selective(config) -> type:
    if config.keep_precision == "int16":
        from edgesep.converters.keep_int16 import Int16Selective

        return Int16Selective
    return Selective


def onnx_nodes(onnx_path, layers) -> list[str]:
    """The nodes of a float ONNX model (tf2onnx's names) that belong to the Keras ``layers``."""
    import onnx

    from edgesep.converters.mixed import layer_of

    wanted = set(layers)
    return [n.name for n in onnx.load(str(onnx_path)).graph.node if layer_of(n.name, wanted)]
