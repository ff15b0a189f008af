"""ONNX export through tf2onnx, from the BN-folded Keras model."""
from __future__ import annotations

import os
from pathlib import Path

from edgesep.converters import ConversionError
from edgesep.converters._quiet import import_onnxruntime, quiet
from edgesep.converters.export_config import OPSETS
from edgesep.io import write_bytes

_CATCH_ERRORS = "TF2ONNX_CATCH_ERRORS"  # tf2onnx's switch: set (to false), optimizer passes run uncopied


def export_onnx(model, path, *, opset: int = 17, fold: bool = True) -> Path:
    """Convert a Keras model to ONNX at ``path`` (written atomically), batch dimension left dynamic.

    Folding first matters: tf2onnx leaves the BatchNorm after a depthwise convolution as a Mul/Add pair.

    Args:
        model: a ``keras.Model`` with one NHWC input.
        path: output ``.onnx`` file.
        opset: ONNX opset.
        fold: fold BatchNorm into the convolutions before converting.

    Returns:
        The written path.
    """
    if opset not in OPSETS:
        raise ConversionError(f"unsupported ONNX opset {opset}; use {OPSETS.start}..{OPSETS.stop - 1}")
    if fold:
        from edgesep.converters.fold import fold_batchnorm

        model = fold_batchnorm(model)
    refuse_unsupported(model)
    from edgesep.converters.graph import output_names
    from edgesep.converters.grouped import for_onnx

    names = output_names(model)
    model = for_onnx(model)
    with quiet("ONNX conversion"):
        import tensorflow as tf
        import tf2onnx

        from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

        spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input")
        infer = tf.function(_outputs_of(model), autograph=False).get_concrete_function(spec)
        frozen = convert_variables_to_constants_v2(infer)  # weights and captured tensors become constants
        proto = _convert(tf2onnx, frozen.graph.as_graph_def(), name=model.name, opset=opset,
                         input_names=[t.name for t in frozen.inputs], output_names=[t.name for t in frozen.outputs])
    _name_outputs(proto, names)
    check_onnx(proto, model)
    return write_bytes(Path(path), proto.SerializeToString())


def _convert(tf2onnx, graph_def, **kwargs):
    """tf2onnx's ``from_graph_def`` with its optimizer passes run on the graph itself, not on copies.

    By default tf2onnx copies the whole graph before each optimizer pass (a dozen passes per round, rounds until
    nothing changes) so that a failing pass can be skipped; on networks of a few hundred layers those copies are
    a fifth to two fifths of the conversion (``scripts/bench_onnx_export.py``). ``TF2ONNX_CATCH_ERRORS`` (set to
    false) is tf2onnx's own switch for that, the way it converts large models. Should a pass fail without the
    copies, the conversion runs again tf2onnx's default way, so a model converts exactly as it did before.
    A ``TF2ONNX_CATCH_ERRORS`` the user set is left as it is.
    """
    if _CATCH_ERRORS in os.environ:
        return tf2onnx.convert.from_graph_def(graph_def, **kwargs)[0]
    os.environ[_CATCH_ERRORS] = "FALSE"
    try:
        return tf2onnx.convert.from_graph_def(graph_def, **kwargs)[0]
    except Exception:  # a pass failed on the graph itself: convert again, failing passes skipped on copies
        pass
    finally:
        os.environ.pop(_CATCH_ERRORS, None)
    return tf2onnx.convert.from_graph_def(graph_def, **kwargs)[0]


def refuse_unsupported(model) -> None:
    """A one-line ``ConversionError`` (with the ``--no-onnx`` hint) for a model ONNX export cannot take, raised
    before any conversion work."""
    from edgesep.converters.grouped import onnx_blockers

    blockers = onnx_blockers(model)
    if blockers:
        raise ConversionError(f"ONNX export does not support grouped convolution {blockers[0]} (only Conv2D, "
                              "channels_last, at the model's top level); export without ONNX (--no-onnx)")


def _outputs_of(model):
    """The model's inference as a function of one tensor returning a list of its outputs, in order.

    (Converting the frozen graph of a traced function rather than ``tf2onnx.convert.from_keras``: the latter
    fails on Keras 3 Sequential models with ``KeyError: 'keras_tensor_N'``.)
    """
    from edgesep.converters.graph import flat_outputs

    def serving(input):  # noqa: A002  (the input's name in the ONNX graph)
        return flat_outputs(model(input, training=False))
    return serving


def _name_outputs(proto, names: list[str]) -> None:
    """Name the ONNX graph's input ``input`` and its outputs (tf2onnx: ``Identity:0``...) after the model's."""
    graph = proto.graph
    if len(graph.output) != len(names):
        raise ConversionError(f"ONNX conversion wrote {len(graph.output)} outputs, the model has {len(names)}")
    renames = {out.name: name for out, name in zip(graph.output, names)}
    renames.update({inp.name: inp.name.split(":")[0] for inp in graph.input})
    for node in graph.node:
        node.output[:] = [renames.get(n, n) for n in node.output]
        node.input[:] = [renames.get(n, n) for n in node.input]
    for value in (*graph.input, *graph.output):
        value.name = renames.get(value.name, value.name)


def check_onnx(proto, model=None) -> None:
    """Raise a one-line ``ConversionError`` unless ``proto`` (an ONNX ModelProto or file) passes ``onnx.checker``.

    tf2onnx writes some TensorFlow ops it cannot express as nodes that neither ONNX nor onnxruntime knows; the
    message names a grouped convolution of ``model`` (the Keras model converted) if it has one, or else the node.
    """
    import onnx

    if not isinstance(proto, onnx.ModelProto):
        proto = onnx.load(str(proto))
    unknown = [n for n in proto.graph.node if not onnx.defs.has(n.op_type, n.domain or "")]
    if unknown:
        grouped = [f"{layer.name!r} ({type(layer).__name__} groups={layer.groups})"
                   for layer in getattr(model, "layers", []) if getattr(layer, "groups", 1) > 1]
        what = (f"grouped convolution {grouped[0]}" if grouped
                else f"node {unknown[0].name!r} ({unknown[0].op_type})")
        raise ConversionError(f"ONNX export does not support {what}: tf2onnx left a TensorFlow "
                              f"{unknown[0].op_type} node that ONNX does not define; export without ONNX (--no-onnx)")
    try:
        onnx.checker.check_model(proto)
    except onnx.checker.ValidationError as e:
        raise ConversionError(f"tf2onnx wrote an invalid ONNX model ({str(e).strip().splitlines()[0]}); "
                              f"export without ONNX (--no-onnx)") from None


def quantize_onnx(float_path, path, calibration, *, per_channel: bool = True, batch_size: int = 16,
                  exclude=()) -> Path:
    """Static int8 quantization (QDQ) of a float ONNX model with onnxruntime's tools, written to ``path``.

    Weights int8 (per output channel, or per tensor), activations int8 with MinMax ranges from
    ``calibration`` (the same images the TFLite int8 model is calibrated on); the input and output stay float.
    The nodes named in ``exclude`` stay float (``--keep-float``).

    Raises:
        ConversionError: the quantizer failed (one line; its log in ``log``).
    """
    import tempfile

    import numpy as np

    with quiet("ONNX int8 quantization"):
        import_onnxruntime()  # first, so that its session file goes to a throwaway folder
        import onnx
        from onnxruntime.quantization import (CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType,
                                              quantize_static)

        name = onnx.load(str(float_path)).graph.input[0].name
        data = np.asarray(calibration, np.float32)
        batches = iter([{name: data[i:i + batch_size]} for i in range(0, len(data), batch_size)])

        class _Batches(CalibrationDataReader):
            def get_next(self):
                return next(batches, None)

        with tempfile.TemporaryDirectory(prefix="edgesep-onnx-int8-") as tmp:
            out = Path(tmp) / "model_int8.onnx"
            quantize_static(str(float_path), str(out), _Batches(), quant_format=QuantFormat.QDQ,
                            per_channel=per_channel, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                            calibrate_method=CalibrationMethod.MinMax, nodes_to_exclude=list(exclude))  # per batch only min/max are kept
            quantized = out.read_bytes()
    return write_bytes(Path(path), quantized)
