"""TFLite export: float32, float16 and full-integer int8, from the BN-folded Keras model."""
from __future__ import annotations

import weakref
from pathlib import Path
from typing import Optional

import numpy as np

from edgesep.converters import ConversionError
from edgesep.converters._quiet import quiet
from edgesep.converters.export_config import IO_DTYPES, PRECISIONS, QUANTIZED  # spelled once, there
from edgesep.io import write_bytes


def export_tflite(model, path, *, precision: str = "float32", representative_data: Optional[np.ndarray] = None,
                  per_channel: bool = True, io_dtype: str = "int8", fold: bool = True) -> Path:
    """Convert a Keras model to a TFLite flatbuffer at ``path`` (written atomically).

    The model is BN-folded first (``fold=True``) and given a static batch of 1, as edge runtimes and the
    Edge TPU compiler expect.

    Args:
        model: a ``keras.Model``.
        path: output file.
        precision: ``float32``, ``float16`` (fp16 weights), ``int8`` (full integer, TFLITE_BUILTINS_INT8) or
            ``int16x8`` (16-bit activations, 8-bit weights, float I/O; ops without a 16x8 kernel stay float).
        representative_data: float32 NHWC calibration images; required for ``int8``.
        per_channel: int8 weights per output channel (True) or per tensor.
        io_dtype: int8 input/output type: ``int8``, ``uint8`` or ``float32``.
        fold: fold BatchNorm into the convolutions before converting.

    Returns:
        The written path.

    Raises:
        ConversionError: bad arguments or a failed conversion.
    """
    if precision not in PRECISIONS:
        raise ConversionError(f"unknown precision {precision!r}; valid: {', '.join(PRECISIONS)}")
    if io_dtype not in IO_DTYPES:
        raise ConversionError(f"unknown io_dtype {io_dtype!r}; valid: {', '.join(IO_DTYPES)}")
    if precision in QUANTIZED:
        representative_data = _check_calibration(representative_data, model)
    if fold:
        from edgesep.converters.fold import fold_batchnorm

        model = fold_batchnorm(model)
    flatbuffer = _convert(model, precision, representative_data, per_channel, io_dtype)
    return write_bytes(Path(path), flatbuffer)


def _check_calibration(data: Optional[np.ndarray], model) -> np.ndarray:
    if data is None or len(data) == 0:
        raise ConversionError("int8 export needs representative data (calibration images); none were given")
    data = np.asarray(data, np.float32)
    expected = tuple(model.input_shape[1:])
    if tuple(data.shape[1:]) != expected:
        raise ConversionError(f"calibration images have shape {tuple(data.shape[1:])}, model expects {expected}")
    return data


_FROZEN: "weakref.WeakKeyDictionary" = weakref.WeakKeyDictionary()


def _frozen_graph(model):
    """The model's inference function at batch 1 with its weights as constants, traced once per model.

    Converting this (``from_concrete_functions``) gives the same flatbuffer as ``from_keras_model`` but skips
    the SavedModel round trip the latter makes on every call: float32, fp16, int8 and int16x8 of one export
    share one trace.
    """
    import hashlib

    digest = hashlib.sha1()
    for weight in model.get_weights():  # a model changed in place since is traced again
        digest.update(np.ascontiguousarray(weight).tobytes())
    cached = _FROZEN.get(model)
    if cached is not None and cached[0] == digest.digest():
        return cached[1]
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((1, *model.input_shape[1:]), tf.float32, name="input")
    infer = tf.function(_inference(model), autograph=False)
    frozen = convert_variables_to_constants_v2(infer.get_concrete_function(spec))
    _FROZEN[model] = (digest.digest(), frozen)
    return frozen


frozen_graph = _frozen_graph  # public name for the other converters (mixed precision calibrates on it)


def _inference(model):
    from edgesep.converters.graph import flat_outputs, output_names

    names = output_names(model)

    def serving_default(input):  # noqa: A002  (the input tensor's name in the flatbuffer)
        outputs = flat_outputs(model(input, training=False))
        return outputs[0] if len(outputs) == 1 else dict(zip(names, outputs))  # signature outputs by name
    return serving_default


def _convert(model, precision: str, calib: Optional[np.ndarray], per_channel: bool, io_dtype: str) -> bytes:
    import tensorflow as tf

    with quiet(f"TFLite {precision} conversion"):
        converter = tf.lite.TFLiteConverter.from_concrete_functions([_frozen_graph(model)])
        if precision == "float16":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.target_spec.supported_types = [tf.float16]
        elif precision == "int8":
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([x[None]] for x in calib)
            converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
            io = {"int8": tf.int8, "uint8": tf.uint8, "float32": tf.float32}[io_dtype]
            converter.inference_input_type = io
            converter.inference_output_type = io
            converter._experimental_disable_per_channel = not per_channel
        elif precision == "int16x8":  # 16-bit activations, 8-bit weights; float I/O; ops without a kernel stay float
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([x[None]] for x in calib)
            converter.target_spec.supported_ops = [
                tf.lite.OpsSet.EXPERIMENTAL_TFLITE_BUILTINS_ACTIVATIONS_INT16_WEIGHTS_INT8,
                tf.lite.OpsSet.TFLITE_BUILTINS]
            converter._experimental_disable_per_channel = not per_channel
        flatbuffer = converter.convert()
    return named_outputs(flatbuffer, model)


def named_outputs(flatbuffer: bytes, model) -> bytes:
    """``flatbuffer`` (converted from ``frozen_graph(model)``) with each output tensor named after the model
    output it is; a single output stays as it is."""
    return flatbuffer if len(model.outputs) == 1 else _name_outputs(flatbuffer, model, _frozen_graph(model))


def _name_outputs(flatbuffer: bytes, model, frozen) -> bytes:
    """The flatbuffer with each output tensor named after the model output it is, found through the traced
    function (its dict of outputs, flattened by sorted key, gives the graph outputs ``Identity_k``; shapes are
    checked): readers then map outputs by name, whatever order the converter left them in."""
    from tensorflow.lite.tools import flatbuffer_utils

    from edgesep.converters.graph import output_names

    shapes = dict(zip(output_names(model), (tuple(t.shape[1:]) for t in model.outputs)))
    keys = sorted(shapes)
    if [tuple(t.shape[1:]) for t in frozen.outputs] != [shapes[k] for k in keys]:
        raise ConversionError(f"cannot tell the traced outputs of {model.name!r} apart by name")
    by_graph_name = {t.name.split(":")[0]: key for t, key in zip(frozen.outputs, keys)}
    model = flatbuffer_utils.convert_bytearray_to_object(flatbuffer)
    graph = model.subgraphs[0]
    names = [graph.tensors[i].name.decode() for i in graph.outputs]
    if sorted(n for n in names if n in by_graph_name) != sorted(by_graph_name):
        raise ConversionError(f"cannot tell the TFLite outputs {names} apart as the model's {keys}")
    for i in graph.outputs:
        graph.tensors[i].name = by_graph_name[graph.tensors[i].name.decode()].encode()
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def float_ops(path) -> list[str]:
    """Ops of a quantized TFLite model that compute in float (no quantized kernel), by name, sorted, unique."""
    from ai_edge_litert.interpreter import Interpreter

    with quiet(f"loading {Path(path).name}"):
        interpreter = Interpreter(model_path=str(path))
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    found = {op["op_name"] for op in interpreter._get_ops_details()
             if op["op_name"] not in ("QUANTIZE", "DEQUANTIZE") and list(op["outputs"])
             and dtypes.get(int(op["outputs"][0])) == np.float32}
    return sorted(found)
