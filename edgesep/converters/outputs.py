"""Models with several outputs: which output is what, and every artifact checked per output, by name.

:class:`OutputPlan` names the model's outputs in its own order and says which are class scores (top-1
agreement and accuracy mean something there) and which one the labels belong to. A single 2-D output is class
scores, as always; with several outputs, a 2-D output produced by a softmax is, and ``label_output`` names the
labelled one where more than one could be (a detector's boxes and anchors' scores are not: no accuracy, never
a 0.0). :func:`verify_outputs` compares every output of an artifact with Keras' and returns one
``OutputCheck`` per output, in the model's order.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

from edgesep.converters.records import OutputCheck
from edgesep.errors import ConversionError, UsageError


@dataclasses.dataclass(frozen=True)
class OutputPlan:
    """The model's outputs: names (its order), shapes without the batch, class-score flags, the labelled one.

    Attributes:
        names: output names, in the model's order.
        shapes: each output's shape without the batch dimension.
        class_scores: per output, whether it is a vector of class scores (agreement and accuracy apply).
        label: the index of the output labels are checked against (None: no class-score output to label).
    """

    names: tuple[str, ...]
    shapes: tuple[tuple[int, ...], ...]
    class_scores: tuple[bool, ...]
    label: Optional[int]

    @property
    def classes(self) -> Optional[int]:
        """The width of the labelled output (the number of classes), or None."""
        return None if self.label is None else int(self.shapes[self.label][-1])

    def note(self) -> Optional[str]:
        """A line for a model with several outputs and none to measure accuracy on."""
        if len(self.names) > 1 and self.label is None:
            return (f"no accuracy: none of the outputs {', '.join(self.names)} is a class-score vector to check "
                    "labels against (give --label-output NAME for one that is)")
        return None


def _softmaxed(model, index: int) -> bool:
    """Is output ``index`` produced by a softmax (a Softmax layer or a layer with softmax activation)?"""
    history = getattr(model.outputs[index], "_keras_history", None)
    layer = getattr(history, "operation", None) or (history[0] if history else None)
    if layer is None:
        return False
    activation = getattr(layer, "activation", None)
    return type(layer).__name__ == "Softmax" or getattr(activation, "__name__", "") == "softmax"


def plan_outputs(model, label_output: Optional[str] = None) -> OutputPlan:
    """The :class:`OutputPlan` of ``model``; ``label_output`` names the labelled output (UsageError if unknown)."""
    from edgesep.converters.graph import output_names

    names = tuple(output_names(model))
    shapes = tuple(tuple(int(d) for d in t.shape[1:]) for t in model.outputs)
    two_d = [len(s) == 1 and s[0] >= 2 for s in shapes]
    if len(names) == 1:
        scores = (two_d[0],)
    else:
        scores = tuple(flat and _softmaxed(model, i) for i, flat in enumerate(two_d))
    if label_output is not None:
        if label_output not in names:
            raise UsageError(f"--label-output {label_output!r} is not an output of {model.name!r}; its outputs: "
                             f"{', '.join(names)}")
        label = names.index(label_output)
        if not two_d[label]:
            raise UsageError(f"--label-output {label_output!r} has shape {shapes[label]}, not a vector of class "
                             "scores")
        scores = tuple(s or i == label for i, s in enumerate(scores))
    else:
        candidates = [i for i, s in enumerate(scores) if s]
        label = candidates[0] if len(candidates) == 1 else None
    return OutputPlan(names, shapes, scores, label)


def keras_outputs(model, x: np.ndarray, batch_size: int = 256) -> list[np.ndarray]:
    """Every output of the Keras model on ``x`` (inference mode, float32), in the model's order."""
    from edgesep.converters.graph import predict_all

    return [np.asarray(o, np.float32) for o in predict_all(model, x, batch=batch_size)]


def artifact_outputs(path: Path, x: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
    """Every output of a .tflite / .onnx artifact on ``x``, in the order of ``names`` (matched by name)."""
    from edgesep.converters.verify import predict_onnx_all, predict_tflite_all

    predictors = {".tflite": predict_tflite_all, ".onnx": predict_onnx_all}
    if path.suffix not in predictors:
        raise ConversionError(f"cannot verify {path.name}: unknown format; known: {', '.join(predictors)}")
    return predictors[path.suffix](path, x, names)


def verify_outputs(path, x: np.ndarray, references: Sequence[np.ndarray], plan: OutputPlan,
                   y: Optional[np.ndarray] = None) -> tuple[OutputCheck, ...]:
    """One ``OutputCheck`` per output of the artifact at ``path`` against the Keras ``references``."""
    from edgesep.converters.verify import agreement, top1

    path = Path(path)
    outputs = artifact_outputs(path, x, plan.names)
    if len(outputs) != len(references):
        raise ConversionError(f"{path.name} has {len(outputs)} outputs, the Keras model {len(references)}")
    checks = []
    for i, (got, want) in enumerate(zip(outputs, references)):
        if got.shape != want.shape:
            raise ConversionError(f"{path.name} output {plan.names[i]!r} is {got.shape}, Keras' is {want.shape}")
        agree, sqnr = agreement(got, want)
        accuracy = top1(got, y) if y is not None and i == plan.label else None
        checks.append(OutputCheck(plan.names[i], float(np.max(np.abs(got - want))), accuracy,
                                  agree if plan.class_scores[i] else None, sqnr))
    return tuple(checks)
