"""ONNX export through tf2onnx, from the BN-folded Keras model."""
from __future__ import annotations

from pathlib import Path

from edgesep.converters import ConversionError
from edgesep.converters._quiet import quiet
from edgesep.converters.export_config import OPSETS
from edgesep.io import write_bytes


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
    with quiet("ONNX conversion"):
        import tensorflow as tf
        import tf2onnx

        spec = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input")]
        proto, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=opset)
    return write_bytes(Path(path), proto.SerializeToString())
