"""The per-channel clip layer ``ChannelReLU`` that ``relu6="clip"`` puts where a ReLU6 was."""
from __future__ import annotations

_CHANNEL_RELU: list[type] = []


def channel_relu_class() -> type:
    """The ``ChannelReLU`` Keras layer class (``min(max(x, 0), cap)`` with a per-channel ``cap`` weight).

    It is registered as ``edgesep>ChannelReLU`` the first time this is called, so a saved equalized model
    loads after calling this (or with ``custom_objects=custom_objects()``). TFLite converts it to
    ``RELU`` and ``MINIMUM`` against a constant vector.
    """
    if _CHANNEL_RELU:
        return _CHANNEL_RELU[0]
    import keras

    @keras.saving.register_keras_serializable(package="edgesep")
    class ChannelReLU(keras.layers.Layer):
        """ReLU clipped per channel: ``min(max(x, 0), cap)``, ``cap`` a non-trainable vector over the last axis."""

        def __init__(self, initial_cap: float = 6.0, **kwargs):
            super().__init__(**kwargs)
            self.initial_cap = float(initial_cap)

        def build(self, input_shape):
            self.cap = self.add_weight(name="cap", shape=(int(input_shape[-1]),), trainable=False,
                                       initializer=keras.initializers.Constant(self.initial_cap))

        def call(self, x):
            return keras.ops.minimum(keras.ops.relu(x), self.cap)

        def compute_output_shape(self, input_shape):
            return input_shape

        def get_config(self):
            return {**super().get_config(), "initial_cap": self.initial_cap}

    _CHANNEL_RELU.append(ChannelReLU)
    return ChannelReLU


def custom_objects() -> dict[str, type]:
    """``custom_objects`` for ``keras.models.load_model`` of a model saved after ``equalize``."""
    cls = channel_relu_class()
    return {"ChannelReLU": cls, "edgesep>ChannelReLU": cls}


def is_channel_relu(layer) -> bool:
    """Is ``layer`` a ``ChannelReLU`` (made by an earlier equalization)?"""
    return bool(_CHANNEL_RELU) and type(layer) is _CHANNEL_RELU[0]
