"""Cross-layer equalization (CLE) and bias absorption for per-tensor int8 (Nagel et al. 2019, arXiv 1906.04721).

Two convolutions joined by nothing, or by a ReLU, compute the same function when output channel ``i`` of
the first is divided by ``s_i > 0`` and input channel ``i`` of the second is multiplied by ``s_i``, because
``relu(x / s) = relu(x) / s``. Choosing ``s_i = sqrt(r1_i * r2_i) / r2_i`` (``r1``: the first layer's
output-channel weight range, ``r2``: the second layer's input-channel range) makes both ranges
``sqrt(r1_i * r2_i)``, which evens out the per-channel ranges of BN-folded depthwise kernels that per-tensor
int8 weight quantization cannot represent. Every link of a chain (stem conv -> depthwise -> pointwise ->
depthwise ...) is equalized in turn until the scales stop changing; on a conv -> depthwise -> pointwise
triplet this converges to the cube-root solution (all three ranges ``cbrt(r1 * r2 * r3)``).

Links handled: ``Conv2D``, ``DepthwiseConv2D`` (any depth multiplier) and ``SeparableConv2D`` as producer or
consumer, joined directly or through one ReLU-like activation (``ReLU``, ``LeakyReLU``,
``Activation('relu'|'relu6')``) and scale-equivariant pass-throughs (``ZeroPadding2D``, ``Dropout``,
``MaxPooling2D``, ``Identity``); the depthwise and pointwise kernels inside a ``SeparableConv2D`` form a
link of their own. ReLU6 (any capped ReLU) is not scale-equivariant: ``relu6="clip"`` (the default) makes
it a :func:`channel_relu_class` layer clipping channel ``i`` at ``6 / s_i`` (exact; TFLite adds one
``MINIMUM`` per clip), ``"replace"`` makes it a ReLU (changes the function), ``"keep"`` skips those links.

Bias absorption moves ``c_i >= 0`` out of a ReLU: when a pre-activation channel never falls below ``c_i``,
``relu(x - c) + c = relu(x)``, so the producer's bias drops by ``c`` and the consumer's bias rises by ``W c``.
``c`` is the per-channel minimum of the pre-activation over ``calibration_data`` (then the equalized model
is exact on that data), or with ``data_free=True`` ``max(0, beta - 3 |gamma|)`` of the BatchNormalization
that followed the producer in the input model. Without calibration data and without ``data_free`` nothing is
equalized (the report's ``data`` is ``none`` and its ``warnings`` say why): equalizing blindly lost 8-9 dB of
per-tensor int8 SQNR on MobileNet with BatchNorm statistics that did not describe its inputs. Only consumers
where ``W c`` is exact everywhere take part: 1x1 kernels or ``valid`` padding; a 3x3 ``same``-padded consumer
would be wrong at the zero-padded borders and is skipped with that reason.

The package works in phases, one module each: :mod:`.links` finds the conv pairs that can be equalized,
:mod:`.scaling` computes and applies the per-channel scales, :mod:`.bias` absorbs bias across ReLUs, and
:mod:`.rebuild` writes the new model; :mod:`.api` runs them in order. Every phase returns its values (scales,
caps, weights) instead of editing the links. Keras is imported inside the functions, so importing this
package is cheap.
"""
from __future__ import annotations

from edgesep.converters.equalize.api import NO_DATA, equalize, equalize_with_report
from edgesep.converters.equalize.bias import BN_SIGMAS
from edgesep.converters.equalize.channel_relu import channel_relu_class, custom_objects
from edgesep.converters.equalize.links import MAX_PATH, RELU6_MODES
from edgesep.converters.equalize.records import BiasResult, EqualizeReport, PairResult

__all__ = ["equalize", "equalize_with_report", "NO_DATA", "EqualizeReport", "PairResult", "BiasResult",
           "channel_relu_class", "custom_objects", "RELU6_MODES", "BN_SIGMAS", "MAX_PATH"]
