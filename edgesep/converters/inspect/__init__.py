"""What a model file holds: ops by type, parameters, MACs, size, inputs/outputs and quantization.

One reader per format (:mod:`.tflite`, :mod:`.onnx`, :mod:`.keras`) behind a tiny registry (:mod:`.reader`),
and the MAC table (:mod:`.macs`). The extension picks the reader and the content must match it; every problem
is a one-line ``ConversionError``. Nothing here renders: the tables are in ``edgesep.report``.

Definitions shared by every format:

* **params** — elements of the model's stored constant tensors of rank >= 1 that are floating point or
  quantized (weights, biases). Integer shape/axis constants, rank-0 scalars (clip bounds, epsilons) and
  quantization scales/zero points are not parameters. For Keras it is ``model.count_params()``.
* **MACs** — multiply-accumulates of one inference in convolutions (incl. depthwise and transposed),
  fully-connected layers and matrix products, at the model's stored shapes with a dynamic batch dim
  taken as 1. Elementwise ops, pooling and normalisation are not counted.

TFLite is read with ai-edge-litert's interpreter and ONNX with the ``onnx`` package, so neither imports
TensorFlow; Keras is imported only to read ``.keras`` files.
"""
from __future__ import annotations

from edgesep.converters.inspect.base import ModelInfo
from edgesep.converters.inspect.reader import inspect_model, known_extensions, op_counts

__all__ = ["ModelInfo", "inspect_model", "known_extensions", "op_counts"]
