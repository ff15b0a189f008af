"""Block registry and the MobileNet-style builder."""
import numpy as np
import pytest

from edgesep import blocks
from edgesep.models import ModelConfig, build_model


def test_registry_lists_builtin_forms_and_rejects_unknown():
    assert {"fused", "split"} <= set(blocks.list_blocks())
    with pytest.raises(ValueError, match="unknown block form .*; known: .*fused.*split"):
        blocks.get_block("nope")


def test_register_block_adds_a_form_without_touching_callers():
    name = "test_plain_conv"

    @blocks.register_block(name)
    def _plain(x, filters, *, kernel_size, strides, name, **_):
        from keras import layers

        return layers.Conv2D(filters, kernel_size, strides=strides, padding="same", name=f"{name}_conv")(x)

    try:
        model = build_model(form=name, input_shape=(16, 16, 3), blocks=((8, 1), (8, 2)))
        assert [l.name for l in model.layers if l.name.startswith("block")] == ["block1_conv", "block2_conv"]
        with pytest.raises(ValueError, match="already registered"):
            blocks.register_block(name)(_plain)
    finally:
        blocks._BLOCKS.pop(name)


@pytest.mark.parametrize("form,expected", [
    ("split", ["block1_dw", "block1_dw_bn", "block1_dw_relu", "block1_pw", "block1_pw_bn", "block1_pw_relu"]),
    ("fused", ["block1_sep", "block1_sep_bn", "block1_sep_relu"]),
])
def test_layer_names_are_stable(form, expected):
    model = build_model(form=form, input_shape=(16, 16, 3), blocks=((8, 1),))
    names = [l.name for l in model.layers]
    assert [n for n in names if n.startswith("block1")] == expected
    assert names[:4] == ["input", "stem_conv", "stem_bn", "stem_relu"] and names[-2:] == ["pool", "classifier"]


def test_split_and_fused_have_same_shapes_and_strides():
    import keras

    cfg = dict(input_shape=(32, 32, 3), blocks=((16, 1), (32, 2), (32, 2)))
    split, fused = build_model("split", **cfg), build_model("fused", **cfg)
    assert split.output_shape == fused.output_shape == (None, 10)
    assert split.get_layer("block3_pw").output.shape == fused.get_layer("block3_sep").output.shape == (None, 8, 8, 32)
    # split has BN + ReLU between depthwise and pointwise: one more BN per block
    count = lambda m, t: sum(isinstance(l, t) for l in m.layers)  # noqa: E731
    assert count(split, keras.layers.BatchNormalization) == count(fused, keras.layers.BatchNormalization) + 3
    assert split.get_layer("block1_dw_relu").max_value == 6.0


def test_activation_and_width_knobs():
    relu = build_model("split", input_shape=(16, 16, 3), activation="relu", width=0.5, blocks=((32, 1),))
    assert relu.get_layer("block1_dw_relu").max_value is None
    assert relu.get_layer("block1_pw").filters == 16
    assert relu.get_layer("stem_bn").momentum == pytest.approx(blocks.DEFAULT_BN_MOMENTUM)
    with pytest.raises(ValueError, match="activation"):
        build_model("split", activation="gelu")


@pytest.mark.parametrize("bad", [dict(form="triple"), dict(input_shape=(32, 32)), dict(num_classes=1),
                                 dict(width=0), dict(blocks=((16, 3),)), dict(bn_momentum=1.0)])
def test_model_config_validates(bad):
    with pytest.raises(ValueError):
        ModelConfig(**bad)


def test_model_config_round_trips():
    cfg = ModelConfig(form="fused", input_shape=[24, 24, 1], blocks=[[8, 2]])
    assert ModelConfig(**cfg.to_dict()) == cfg
    assert cfg.key() == ModelConfig(**cfg.to_dict()).key()
    model = build_model(**{k: v for k, v in cfg.to_dict().items()})
    assert model.predict(np.zeros((2, 24, 24, 1), np.float32), verbose=0).shape == (2, 10)
