"""Post-training methods after CLE: bias correction (exact on linear layers, against numpy) and AdaRound (its
integer weights are the ones in the written flatbuffer, bit for bit; the guard never keeps a lower SQNR)."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from edgesep.converters.export_config import ExportConfig  # noqa: E402
from edgesep.errors import UsageError  # noqa: E402


def test_ptq_option_rules():
    assert ExportConfig.from_options(int8=True, ptq="adaround,bias-correction").ptq == ("bias-correction", "adaround")
    with pytest.raises(UsageError, match="unknown --ptq method 'adaroundd'; valid: bias-correction, adaround"):
        ExportConfig.from_options(int8=True, ptq="adaroundd")
    with pytest.raises(UsageError, match="add --int8"):
        ExportConfig.from_options(ptq="bias-correction")
    config = ExportConfig.from_options(int8=True, ptq="bias-correction")
    assert ExportConfig.from_dict(config.to_dict()) == config


def _linear_dense():
    import keras

    keras.utils.set_random_seed(3)
    inp = keras.Input((12,))
    return keras.Model(inp, keras.layers.Dense(5, name="fc")(inp))


def test_bias_correction_is_exact_on_a_linear_layer():
    from edgesep.converters.ptq import apply_ptq

    model = _linear_dense()
    x = np.random.default_rng(0).normal(1.0, 2.0, (40, 12)).astype(np.float32)
    for per_channel in (True, False):
        corrected, report = apply_ptq(model, x, ["bias-correction"], per_channel=per_channel)
        w, b = (np.asarray(v, np.float64) for v in model.get_layer("fc").get_weights())
        top = np.max(np.abs(w), axis=0, keepdims=True) if per_channel else np.max(np.abs(w))
        s = top / 127
        w_q = np.clip(np.round(w / s), -127, 127) * s
        expected_b = b + x.astype(np.float64).mean(axis=0) @ (w - w_q)  # numpy oracle
        got_w, got_b = corrected.get_layer("fc").get_weights()
        np.testing.assert_allclose(got_w, w_q, rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(got_b, expected_b, rtol=1e-5, atol=1e-6)
        mean_float = (x @ w + b).mean(axis=0)
        mean_quant = (x @ got_w.astype(np.float64) + got_b).mean(axis=0)
        np.testing.assert_allclose(mean_quant, mean_float, rtol=1e-5, atol=1e-5)
        assert report.layers[0].bias_shift_rms > 0
    np.testing.assert_array_equal(model.get_layer("fc").get_weights()[1], _linear_dense().get_layer("fc").get_weights()[1])


def _small_cnn():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((12, 12, 3))
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same", depth_multiplier=2, activation="relu", name="dw")(x)
    x = keras.layers.Conv2D(12, 1, activation="relu", name="pw")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(6, name="fc")(x))


def _int8_weights(path) -> dict[str, np.ndarray]:
    """The int8 constant tensors of a TFLite file by name (read with the interpreter)."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(path))
    found = {}
    for t in interpreter.get_tensor_details():
        if t["dtype"] == np.int8 and len(t["shape"]) >= 2:
            try:
                found[t["name"]] = np.array(interpreter.get_tensor(t["index"]))
            except ValueError:
                continue
    return found


@pytest.mark.slow
@pytest.mark.parametrize("per_channel", [True, False])
def test_adaround_weights_survive_conversion_bit_for_bit(per_channel, tmp_path):
    from edgesep.converters.ptq import apply_ptq
    from edgesep.converters.ptq.grid import channel_scales, nearest, tflite_order, weighted_layers
    from edgesep.converters.tflite import export_tflite

    model = _small_cnn()
    calib = np.random.default_rng(1).random((48, 12, 12, 3), np.float32)
    rounded, report = apply_ptq(model, calib, ["adaround"], per_channel=per_channel, iterations=60)
    assert sum(r.flipped for r in report.layers) > 0  # some weights round away from nearest: not trivial
    path = export_tflite(rounded, tmp_path / "m.tflite", precision="int8", representative_data=calib,
                         per_channel=per_channel, io_dtype="float32", fold=False)
    written = _int8_weights(path)
    for layer, result in zip(weighted_layers(rounded), report.layers):
        chosen = tflite_order(layer, nearest(layer.get_weights()[0], channel_scales(layer, per_channel)))
        before = tflite_order(layer, nearest(model.get_layer(layer.name).get_weights()[0],
                                             channel_scales(model.get_layer(layer.name), per_channel)))
        assert int(np.sum(chosen != before)) == result.flipped
        match = [name for name, v in written.items() if f"/{layer.name}_" in name and v.shape == chosen.shape]
        assert len(match) == 1, (layer.name, list(written))
        np.testing.assert_array_equal(written[match[0]], chosen.astype(np.int8))


@pytest.mark.slow
def test_ptq_guard_never_keeps_a_lower_sqnr():
    from edgesep.converters.ptq import apply_ptq

    model = _small_cnn()
    rng = np.random.default_rng(2)
    calib, selection = rng.random((48, 12, 12, 3), np.float32), rng.random((32, 12, 12, 3), np.float32)
    chosen, report = apply_ptq(model, calib, ["bias-correction", "adaround"], iterations=40, selection=selection)
    guard = report.guard
    scores = guard["sqnr_db"]
    assert guard["selection_samples"] == 32 and set(scores) == {"bias-correction+adaround", "bias-correction",
                                                                "none"}
    assert scores[guard["chosen"]] == max(scores.values()) and scores["none"] > 10
    if guard["chosen"] == "none":
        assert chosen is model and report.layers == ()
    else:
        assert all(layer.bias_shift_rms is not None for layer in report.layers)
