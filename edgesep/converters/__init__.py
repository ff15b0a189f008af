"""Keras -> folded Keras -> TFLite / ONNX, and checks of every artifact. Never imports edgesep.devices."""


class ConversionError(RuntimeError):
    """A model could not be loaded, converted or verified; the message is one line for the user."""
