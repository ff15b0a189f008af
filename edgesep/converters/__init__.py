"""Keras -> folded Keras -> TFLite / ONNX, and checks of every artifact. Never imports edgesep.devices."""

from edgesep.errors import ConversionError

__all__ = ["ConversionError"]
