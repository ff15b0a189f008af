"""Warnings that must be true: a collapsed quantized output is loud, a Keras accuracy at chance level says
so, a Keras output that is the same for every input says so, saturation counts only values beyond half a
quantization step, and a .npz without labels loads."""
from __future__ import annotations

import numpy as np
import pytest

from edgesep.converters.records import ArtifactRecord, OutputCheck
from edgesep.converters.truth import chance_level, collapsed_outputs, constant_outputs, same_for_every_input


def _art(precision: str, *checks: OutputCheck) -> ArtifactRecord:
    return ArtifactRecord(f"tflite:{precision}", f"model_{precision}.tflite", "tflite", precision, "TFLite", 1, "0",
                          {}, checks)


def test_a_collapsed_int8_output_is_named_with_causes_and_fixes():
    healthy = OutputCheck("scores", 1e-3, None, 0.99, 38.0)
    collapsed = OutputCheck("probs", 1e-3, None, 0.0, 0.0)
    lines = collapsed_outputs([_art("float32", collapsed), _art("int8", healthy, collapsed)])
    assert len(lines) == 1
    assert "model_int8.tflite" in lines[0] and "'probs'" in lines[0] and "COLLAPSED" in lines[0]
    assert "0.0 dB" in lines[0] and "0 %" in lines[0]
    for fix in ("--keep-float", "--int16x8", "--per-tensor", "softmax"):
        assert fix in lines[0]
    assert collapsed_outputs([_art("int8", OutputCheck("boxes", 1e-3, None, None, 9.0))])  # SQNR alone
    assert collapsed_outputs([_art("int8", healthy), _art("int16x8", healthy)]) == []


def test_chance_level_accuracy_says_check_the_input_domain():
    line = chance_level(0.11, 10)
    assert line is not None and "--preprocess / the input domain" in line and "0.1100" in line
    assert chance_level(0.97, 10) is None and chance_level(None, 10) is None and chance_level(0.5, 1) is None
    assert chance_level(0.14, 10) is not None and chance_level(0.2, 10) is None


def test_a_keras_output_that_is_the_same_for_every_input_is_named():
    """keras.applications with weights=None can answer 0.1 for every class and every image: then the top-1
    agreement of int8 with it is a tie broken by rounding; the export says so, and a low agreement there is not
    called a collapse (a low SQNR still is). A model whose output varies with its input is left alone."""
    rng = np.random.default_rng(0)
    uniform = np.full((20, 10), 0.1, np.float32) + rng.normal(0, 7e-9, (20, 10)).astype(np.float32)
    varying = 0.1 + rng.normal(0, 4e-4, (20, 10)).astype(np.float32)
    (line,) = constant_outputs([uniform], ["probs"])
    assert "same for all 20 inputs" in line and "says nothing" in line and "'probs'" not in line
    (line,) = constant_outputs([varying, np.zeros((20, 4), np.float32)], ["cls", "box"])
    assert "'box'" in line
    assert constant_outputs([varying], ["probs"]) == [] and constant_outputs([uniform[:1]], ["probs"]) == []
    tied = same_for_every_input([uniform], ["probs"])
    assert tied == ["probs"]
    assert collapsed_outputs([_art("int8", OutputCheck("probs", 1e-3, None, 0.15, 36.0))], tied) == []
    assert collapsed_outputs([_art("int8", OutputCheck("probs", 1e-3, None, 0.15, 3.0))], tied)
    assert collapsed_outputs([_art("int8", OutputCheck("probs", 1e-3, None, 0.15, 36.0))])


def test_saturation_counts_only_values_beyond_half_a_step(monkeypatch):
    from edgesep.converters import input_domain

    lo, hi = -127 * 2 / 255, 128 * 2 / 255  # int8 range of [-1, 1] data: [-0.9961, 1.0039]
    monkeypatch.setattr(input_domain, "int8_input_range", lambda path: (lo, hi))
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (20, 8, 8, 3)).astype(np.float32)
    x[:, 0, 0, :] = -1.0  # the symmetric range's end: half a step below lo, rounds onto it
    check = input_domain.int8_input_check("m.tflite", x, x)
    assert check.saturated_values == 0.0 and check.warnings == ()
    wrong = (x * 1.5).astype(np.float32)  # genuinely outside
    check = input_domain.int8_input_check("m.tflite", x, wrong)
    assert check.saturated_values > 0.2 and "saturate" in check.warnings[0]


def test_npz_without_labels_loads_unlabelled(tmp_path):
    from edgesep.data import load_dataset

    np.savez(tmp_path / "x.npz", x=np.random.default_rng(0).random((30, 8, 8, 3)).astype(np.float32))
    ds = load_dataset(str(tmp_path / "x.npz"), (8, 8, 3), num_classes=10)
    assert not ds.labelled and ds.y_train is None and ds.y_test is None
    assert len(ds.x_train) + len(ds.x_test) == 30 and len(ds.x_test) > 0 and len(ds.calibration(10)) == 10
    np.savez(tmp_path / "y.npz", y=np.arange(3))
    from edgesep.errors import DataError

    with pytest.raises(DataError, match="must contain an array 'x'"):
        load_dataset(str(tmp_path / "y.npz"), (8, 8, 3))


@pytest.mark.slow
def test_inspect_says_macs_partial_naming_a_custom_op(tmp_path):
    import tensorflow as tf

    from edgesep.converters.inspect import inspect_model

    @tf.function(input_signature=[tf.TensorSpec((1, 8, 8, 3), tf.float32)])
    def f(x):
        y = tf.nn.conv2d(x, tf.ones((3, 3, 3, 4)), 1, "SAME")
        return tf.nn.dilation2d(y, tf.zeros((3, 3, 4)), [1, 1, 1, 1], "SAME", "NHWC", [1, 1, 1, 1])

    converter = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()])
    converter.allow_custom_ops = True  # Dilation2D has no TFLite kernel: it stays a custom op
    (tmp_path / "custom.tflite").write_bytes(converter.convert())
    info = inspect_model(tmp_path / "custom.tflite")
    assert info.ops.get("Dilation2D") == 1 and info.macs == 8 * 8 * 4 * 27
    assert info.macs_partial and any("Dilation2D" in n for n in info.notes)


@pytest.mark.slow
def test_inspect_keras_says_macs_partial_naming_a_custom_layer_with_weights():
    import keras

    from edgesep.converters.inspect.keras import keras_contents

    class MyDense(keras.layers.Layer):
        def build(self, shape):
            self.w = self.add_weight(shape=(shape[-1], 3))

        def call(self, x):
            return keras.ops.matmul(x, self.w)

    inp = keras.Input((4,))
    contents = keras_contents(keras.Model(inp, MyDense()(keras.layers.Dense(4)(inp))))
    assert contents.macs_partial and any("MyDense" in n for n in contents.notes)
    plain = keras_contents(keras.Model(inp, keras.layers.Dense(3)(inp)))
    assert not plain.macs_partial and plain.notes == []


def test_a_keras_output_whose_top_classes_are_within_one_int8_step_is_no_collapse():
    """EfficientNetB0 (weights=None) on 0..255 images: every class 0.1 +- 5e-6, top-1 margins 5e-7, varying a
    little with the input (not 'the same for every input'); its int8 model at 36 dB agreed on 0 % and was called
    COLLAPSED. Now named as a near tie; a real classifier's scores are left alone, and a low SQNR still counts."""
    from edgesep.converters.truth import near_ties, tie_lines

    rng = np.random.default_rng(0)
    flat = 0.1 + rng.normal(0, 2e-6, (20, 10))
    confident = np.eye(10)[rng.integers(0, 10, 20)] * 0.8 + 0.02
    ties = near_ties([flat, confident, flat[:, :1]], ["cls", "ok", "one"])
    assert list(ties) == ["cls"]
    low = [_art("int8", OutputCheck("cls", 1e-3, None, 0.0, 36.1))]
    (line,) = tie_lines(ties, low, 20, True)
    assert "'cls'" in line and "less than one int8 step" in line and "20 inputs" in line
    assert tie_lines(ties, [_art("int8", OutputCheck("cls", 1e-3, None, 0.9, 36.1))], 20, True) == []  # no doubt
    assert tie_lines(ties, [_art("float32", OutputCheck("cls", 1e-7, None, 0.2, 99.0))], 20, True) == []
    assert collapsed_outputs(low, list(ties)) == []
    assert collapsed_outputs([_art("int8", OutputCheck("cls", 1e-3, None, 0.0, 4.0))], list(ties))
    uniform = np.full((20, 10), 0.1)
    assert near_ties([uniform], ["probs"]) == {}  # constant: constant_outputs' line, not both
