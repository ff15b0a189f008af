"""The two separable block forms behind one registry.

``fused``: Keras ``SeparableConv2D`` (depthwise then pointwise, nothing between) -> BN -> activation.
``split``: MobileNet's ``DepthwiseConv2D`` -> BN -> act -> 1x1 ``Conv2D`` -> BN -> act.

Layer names are stable so folding and reports can name what they touched: with ``name="block3"`` the
split form makes ``block3_dw``, ``block3_dw_bn``, ``block3_dw_relu``, ``block3_pw``, ``block3_pw_bn``,
``block3_pw_relu``; the fused form makes ``block3_sep``, ``block3_sep_bn``, ``block3_sep_relu``.
Keras is imported inside the functions, so importing this module is cheap.
"""
from __future__ import annotations

from typing import Callable

from edgesep.registry import Registry

ACTIVATIONS = ("relu6", "relu")
FORMS = ("fused", "split")  # the two built-in forms edgesep compares (ratios are fused / split)
DEFAULT_BN_MOMENTUM = 0.9  # 0.99 leaves moving statistics unconverged after a short training run

_BLOCKS: Registry[Callable] = Registry("block form", error=ValueError)


def register_block(name: str) -> Callable[[Callable], Callable]:
    """Decorator registering a block builder ``fn(x, filters, *, kernel_size, strides, ...)`` under ``name``."""

    def decorate(fn: Callable) -> Callable:
        return _BLOCKS.add(name, fn)

    return decorate


def list_blocks() -> list[str]:
    """Names of the registered block forms, sorted."""
    return sorted(_BLOCKS.names())


def get_block(name: str) -> Callable:
    """The builder registered under ``name``; an unknown name raises listing the known ones."""
    return _BLOCKS.get(name)


def build_block(form: str, x, filters: int, **kwargs):
    """Apply the registered block ``form`` to tensor ``x``; ``kwargs`` go to its builder."""
    return get_block(form)(x, filters, **kwargs)


def separable_block(
    x,
    filters: int,
    *,
    form: str = "fused",
    kernel_size: int = 3,
    strides: int = 1,
    depth_multiplier: int = 1,
    activation: str = "relu6",
    bn_momentum: float = DEFAULT_BN_MOMENTUM,
    name: str = "block",
):
    """A depthwise-separable block of the given ``form`` applied to ``x``.

    Args:
        x: input Keras tensor (NHWC).
        filters: output channels of the pointwise convolution.
        form: a registered block form (``fused`` or ``split`` built in).
        kernel_size: depthwise kernel size.
        strides: depthwise stride.
        depth_multiplier: depthwise channel multiplier.
        activation: ``relu6`` or ``relu``.
        bn_momentum: BatchNormalization momentum.
        name: prefix of every layer name.

    Returns:
        The block's output tensor.
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"unknown activation {activation!r}; known: {', '.join(ACTIVATIONS)}")
    return build_block(
        form, x, filters, kernel_size=kernel_size, strides=strides, depth_multiplier=depth_multiplier,
        activation=activation, bn_momentum=bn_momentum, name=name,
    )


def _bn_act(x, activation: str, bn_momentum: float, name: str):
    from keras import layers

    x = layers.BatchNormalization(momentum=bn_momentum, name=f"{name}_bn")(x)
    max_value = 6.0 if activation == "relu6" else None
    return layers.ReLU(max_value=max_value, name=f"{name}_relu")(x)


@register_block("fused")
def _fused(x, filters, *, kernel_size, strides, depth_multiplier, activation, bn_momentum, name):
    from keras import layers

    x = layers.SeparableConv2D(
        filters, kernel_size, strides=strides, padding="same", depth_multiplier=depth_multiplier,
        use_bias=False, name=f"{name}_sep",
    )(x)
    return _bn_act(x, activation, bn_momentum, f"{name}_sep")


@register_block("split")
def _split(x, filters, *, kernel_size, strides, depth_multiplier, activation, bn_momentum, name):
    from keras import layers

    x = layers.DepthwiseConv2D(
        kernel_size, strides=strides, padding="same", depth_multiplier=depth_multiplier, use_bias=False,
        name=f"{name}_dw",
    )(x)
    x = _bn_act(x, activation, bn_momentum, f"{name}_dw")
    x = layers.Conv2D(filters, 1, padding="same", use_bias=False, name=f"{name}_pw")(x)
    return _bn_act(x, activation, bn_momentum, f"{name}_pw")
