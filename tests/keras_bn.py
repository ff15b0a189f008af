"""Test helper: give a Keras model's BatchNormalization layers random inference statistics.

Fresh BatchNorms (mean 0, variance 1, gamma 1, beta 0) fold trivially; randomized ones make folding and
quantization tests mean something on architectures nobody here trained.
"""
from __future__ import annotations

import numpy as np


def randomize_bn(model, seed: int = 0) -> list[str]:
    """Random moving mean/variance (and gamma/beta where present) for every BatchNormalization in ``model``;
    returns their names."""
    import keras

    rng, names = np.random.default_rng(seed), []
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype(np.float32))
            layer.moving_variance.assign(rng.uniform(0.3, 2.0, n).astype(np.float32))
            if layer.scale:
                layer.gamma.assign(rng.uniform(0.5, 1.5, n).astype(np.float32))
            if layer.center:
                layer.beta.assign(rng.normal(0, 0.5, n).astype(np.float32))
            names.append(layer.name)
    return names
