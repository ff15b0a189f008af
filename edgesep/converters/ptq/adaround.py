"""AdaRound (Nagel et al. 2020, arXiv 2004.10568) for one layer, on the converter's own weight grid.

Each weight ``w`` rounds down or up: ``w~ = s * clip(floor(w / s) + h(V), -127, 127)`` with ``h`` a rectified
sigmoid of a free variable ``V``; Adam minimizes the layer's output error against the float layer,
``mean((f(x_q, w~) - f(x_f, w))^2)`` (pre-activation, ``x_q`` the inputs the layer gets in the model
quantized so far, ``x_f`` those of the float model), plus a regularizer that anneals ``h`` to 0 or 1. The
largest weight of each channel stays at +-127 so the converter finds the same step ``s``. A bounded number
of iterations on a small batch of calibration images keeps it cheap.
"""
from __future__ import annotations

import dataclasses
from typing import Callable

import numpy as np

from edgesep.converters.ptq.grid import QMAX

ZETA, GAMMA = 1.1, -0.1
ITERATIONS = 300
BATCH = 16
LEARNING_RATE = 1e-2
REG_WEIGHT = 0.01
WARMUP = 0.2
BETA = (20.0, 2.0)


@dataclasses.dataclass(frozen=True)
class Rounding:
    """The integer levels AdaRound chose for one kernel and how many differ from nearest rounding."""

    q: np.ndarray
    flipped: int
    loss_nearest: float
    loss_adaround: float


def _h(v):
    import tensorflow as tf

    return tf.clip_by_value(tf.sigmoid(v) * (ZETA - GAMMA) + GAMMA, 0.0, 1.0)


def _initial_v(rest: np.ndarray) -> np.ndarray:
    """V with h(V) = rest (the fractional part of w / s), so optimization starts at the float weight."""
    p = np.clip((rest - GAMMA) / (ZETA - GAMMA), 1e-4, 1 - 1e-4)
    return np.log(p / (1 - p)).astype(np.float32)


def adaround(kernel: np.ndarray, scale: np.ndarray, apply: Callable, x_q: np.ndarray, target: np.ndarray,
             iterations: int = ITERATIONS, seed: int = 0) -> Rounding:
    """Choose up/down rounding of ``kernel`` on steps ``scale`` so that ``apply(x_q, kernel~)`` meets ``target``.

    Args:
        kernel: the float kernel (Keras layout); scale: its steps (broadcastable).
        apply: ``(inputs, kernel) -> pre-activation outputs`` of the layer without bias (TF ops).
        x_q: the layer's inputs in the quantized model; target: the float layer's outputs minus its bias.
    """
    import tensorflow as tf

    w = np.asarray(kernel, np.float64) / scale
    base = np.floor(w)
    fixed = np.abs(w) >= QMAX - 1e-6  # the channel's extreme stays on +-127: the converter keeps the step
    v = tf.Variable(_initial_v(w - base))
    base_t, scale_t = tf.constant(base, tf.float32), tf.constant(scale, tf.float32)
    near_t, fixed_t = tf.constant(np.clip(np.round(w), -QMAX, QMAX), tf.float32), tf.constant(fixed)
    optimizer = tf.keras.optimizers.Adam(LEARNING_RATE)
    near_error = float(np.mean((np.asarray(apply(x_q, (np.clip(np.round(w), -QMAX, QMAX) * scale).astype(np.float32)))
                                - target) ** 2))
    norm = tf.constant(1.0 / max(near_error, 1e-30), tf.float32)  # the error in units of nearest rounding's

    def levels(soft):
        return tf.where(fixed_t, near_t, tf.clip_by_value(base_t + soft, -QMAX, QMAX))

    @tf.function(reduce_retracing=True)
    def step(xb, yb, beta):
        with tf.GradientTape() as tape:
            h = _h(v)
            error = tf.reduce_mean(tf.square(apply(xb, levels(h) * scale_t) - yb)) * norm
            reg = tf.reduce_mean(1.0 - tf.pow(tf.abs(2.0 * h - 1.0), beta))
            loss = error + REG_WEIGHT * reg * tf.cast(beta < BETA[0], tf.float32)
        optimizer.apply_gradients([(tape.gradient(loss, v), v)])

    rng = np.random.default_rng(seed)
    for i in range(iterations):
        idx = rng.choice(len(x_q), size=min(BATCH, len(x_q)), replace=False)
        progress = max(0.0, (i / iterations - WARMUP) / (1 - WARMUP))
        beta = BETA[0] + (BETA[1] - BETA[0]) * progress if i >= WARMUP * iterations else BETA[0]
        step(tf.constant(x_q[idx]), tf.constant(target[idx]), tf.constant(beta, tf.float32))
    q = levels(tf.cast(_h(v) >= 0.5, tf.float32)).numpy().astype(np.float64)
    nearest = near_t.numpy().astype(np.float64)
    losses = [float(np.mean((np.asarray(apply(x_q, (k * scale).astype(np.float32))) - target) ** 2))
              for k in (nearest, q)]
    return Rounding(q, int(np.sum(q != nearest)), losses[0], losses[1])
