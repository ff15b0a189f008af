"""edgesep.converters.graph: loading the models users bring, and rebuilding graphs with Keras op nodes.

Keras only (no conversion): op nodes (``x + 3.0``, ``keras.ops.concatenate``) next to the merge layers of the
same class name, ``.hdf5`` files, dynamic input sizes and non-finite weights.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

from edgesep.converters.equalize import equalize_with_report  # noqa: E402
from edgesep.converters.fold import fold_batchnorm_with_report  # noqa: E402
from edgesep.converters.graph import check_exportable, load_model, with_input_size  # noqa: E402
from edgesep.errors import ConversionError, UsageError  # noqa: E402


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def randomize_bn(model, seed: int = 0) -> None:
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.5, n), rng.normal(0, 0.5, n),
                               rng.uniform(0.3, 2.0, n)])


def conv_bn(x, filters: int, name: str):
    x = layers.Conv2D(filters, 3, padding="same", name=f"{name}_conv")(x)
    return layers.BatchNormalization(name=f"{name}_bn")(x)


def op_node_model():
    """Hard-swish as Keras op nodes (``x + 3``, ``* (1/6)``: classes Add / Multiply of keras.src.ops) beside the
    Add and Multiply merge layers, and keras.ops.concatenate beside a Concatenate layer."""
    inp = keras.Input((12, 12, 3))
    a = conv_bn(inp, 8, "a")
    hard = a * layers.ReLU(6.0)(a + 3.0) * (1.0 / 6.0)
    b = conv_bn(inp, 8, "b")
    merged = layers.Multiply()([layers.Add()([hard, b]), b])
    cat = layers.Concatenate()([merged, b])
    both = keras.ops.concatenate([cat, a], axis=-1)
    c = conv_bn(both, 4, "c")
    return keras.Model(inp, layers.Dense(5)(layers.GlobalAveragePooling2D()(c)), name="ops")


def test_op_nodes_rebuild_as_op_nodes_and_fold_exactly():
    model = op_node_model()
    randomize_bn(model)
    modules = {(e["class_name"], e["module"]) for e in model.get_config()["layers"]}
    assert ("Add", "keras.src.ops.numpy") in modules and ("Add", "keras.layers") in modules  # the trap is set
    assert ("Concatenate", "keras.src.ops.numpy") in modules and ("Concatenate", "keras.layers") in modules
    folded, report = fold_batchnorm_with_report(model)
    assert sorted(bn for _, bn in report.folded) == ["a_bn", "b_bn", "c_bn"] and report.kept == ()
    x = np.random.default_rng(1).random((3, 12, 12, 3)).astype(np.float32)
    assert rel_err(folded(x), model(x)) < 1e-5
    equalized, _ = equalize_with_report(model, calibration_data=x)
    assert rel_err(equalized(x), model(x)) < 1e-4


def test_a_custom_layer_class_still_rebuilds():
    class Doubler(layers.Layer):  # unregistered: must be put in scope by class name
        def call(self, x):
            return 2.0 * x

    inp = keras.Input((6, 6, 2))
    out = Doubler(name="double")(conv_bn(inp, 3, "a"))
    model = keras.Model(inp, out)
    randomize_bn(model)
    folded, report = fold_batchnorm_with_report(model)
    x = np.random.default_rng(0).random((2, 6, 6, 2)).astype(np.float32)
    assert report.folded == (("a_conv", "a_bn"),) and rel_err(folded(x), model(x)) < 1e-5


def small_model(input_shape=(16, 16, 3), outputs: int = 1):
    inp = keras.Input(input_shape)
    x = layers.GlobalAveragePooling2D()(layers.ReLU()(conv_bn(inp, 8, "a")))
    outs = [layers.Dense(4, name=f"out{i}")(x) for i in range(outputs)]
    return keras.Model(inp, outs if outputs > 1 else outs[0], name="small")


def test_hdf5_loads_like_h5(tmp_path):
    model = small_model()
    model.save(tmp_path / "m.h5")
    (tmp_path / "m.h5").rename(tmp_path / "pretrained.hdf5")
    loaded = load_model(tmp_path / "pretrained.hdf5")
    x = np.random.default_rng(0).random((2, 16, 16, 3)).astype(np.float32)
    assert rel_err(loaded(x), model(x)) == 0.0
    (tmp_path / "m.pt").write_bytes(b"x")
    with pytest.raises(ConversionError, match=r"expected a Keras model file \(.keras, .h5, .hdf5\)"):
        load_model(tmp_path / "m.pt")


def test_dynamic_input_size_needs_a_size_and_then_keeps_the_weights(tmp_path):
    model = small_model((None, None, 3))
    model.save(tmp_path / "any.keras")
    with pytest.raises(UsageError, match="--input-size H,W") as info:
        load_model(tmp_path / "any.keras")
    assert info.value.exit_code == 2 and "\n" not in str(info.value)
    fixed = load_model(tmp_path / "any.keras", input_size=(20, 24))
    assert tuple(fixed.input_shape) == (None, 20, 24, 3)
    x = np.random.default_rng(0).random((2, 20, 24, 3)).astype(np.float32)
    assert rel_err(fixed(x), model(x)) < 1e-6
    with pytest.raises(UsageError, match="dynamic input size"):
        with_input_size(fixed, (32, 32))  # a fixed-size model keeps its size
    assert with_input_size(fixed, (20, 24)) is fixed


def test_two_outputs_are_exportable_and_non_finite_weights_are_one_line():
    check_exportable(small_model(outputs=2))  # several outputs are first-class (tests/test_multi_output.py)
    model = small_model()
    kernel = model.get_layer("a_conv").kernel
    kernel.assign(np.where(np.arange(kernel.numpy().size).reshape(kernel.shape) == 3, np.inf, kernel.numpy()))
    with pytest.raises(ConversionError, match="a_conv/kernel holds NaN or Infinity") as info:
        check_exportable(model)
    assert "\n" not in str(info.value)
