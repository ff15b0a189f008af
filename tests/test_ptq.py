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


def _small_separable():
    """mini-XCEPTION in small: a SeparableConv2D (two kernels on two grids), a 1x1 stride-2 shortcut over a
    48x48 input (the strided 1x1 convolution whose gradient segfaults in TensorFlow's oneDNN), an Add."""
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((48, 48, 3))
    c1 = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="c1")(inp)
    x = keras.layers.SeparableConv2D(16, 3, padding="same", activation="relu", name="sep")(c1)
    x = keras.layers.MaxPooling2D(3, 2, padding="same")(x)
    x = keras.layers.Add()([x, keras.layers.Conv2D(16, 1, strides=2, padding="same", name="short")(c1)])
    x = keras.layers.SeparableConv2D(12, 3, padding="same", depth_multiplier=2, name="sep2")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(6, name="fc")(x))


def _study_network(name: str):
    """(BN-folded model, calibration images) of the study's architectures, small: keras.applications
    MobileNetV2 / MobileNet v1 at 32x32 with randomized BatchNorm, the built-in network in both forms
    (untrained), and the mini-XCEPTION-like net above."""
    import keras

    from edgesep.converters.fold import fold_batchnorm
    from keras_bn import randomize_bn

    rng = np.random.default_rng(1)
    if name in ("small_cnn", "mini_xception"):
        model = _small_cnn() if name == "small_cnn" else _small_separable()
        return model, rng.random((32, *model.input_shape[1:]), np.float32)
    keras.utils.set_random_seed(0)
    if name.startswith("builtin"):
        from edgesep.models import build_model

        model = build_model(name.split("_")[1], input_shape=(32, 32, 3), num_classes=10)
    else:
        app = keras.applications.MobileNetV2 if name == "mobilenet_v2" else keras.applications.MobileNet
        model = app(weights=None, input_shape=(32, 32, 3), alpha=0.35 if name == "mobilenet_v2" else 0.25,
                    classes=10, classifier_activation=None)
    randomize_bn(model, seed=0)
    return fold_batchnorm(model), rng.uniform(-1, 1, (32, 32, 32, 3)).astype(np.float32)


STUDY = ["small_cnn", "mini_xception", "builtin_split", "builtin_fused", "mobilenet", "mobilenet_v2"]


@pytest.mark.slow
@pytest.mark.parametrize("name, per_channel", [(n, True) for n in STUDY] + [("mini_xception", False),
                                                                           ("small_cnn", False)])
def test_adaround_weights_survive_conversion_bit_for_bit(name, per_channel, tmp_path):
    """On every architecture of the study (scripts/study_ptq.py): each kernel's AdaRound levels, both kernels
    of a SeparableConv2D included, are the int8 weights of the written flatbuffer."""
    from edgesep.converters.ptq import apply_ptq
    from edgesep.converters.ptq.grid import channel_scales, nearest, parts, tflite_order, weighted_layers
    from edgesep.converters.tflite import export_tflite

    model, calib = _study_network(name)
    iterations = 60 if name in ("small_cnn", "mini_xception") else 8
    rounded, report = apply_ptq(model, calib, ["adaround"], per_channel=per_channel, iterations=iterations,
                                samples=16)
    assert sum(r.flipped for r in report.layers) > 0  # some weights round away from nearest: not trivial
    path = export_tflite(rounded, tmp_path / "m.tflite", precision="int8", representative_data=calib,
                         per_channel=per_channel, io_dtype="float32", fold=False)
    written = _int8_weights(path)
    layers = weighted_layers(rounded)
    assert len(layers) == len(report.layers) and {r.kind for r in report.layers} >= (
        {"SeparableConv2D"} if name in ("mini_xception", "builtin_fused") else {"DepthwiseConv2D"})
    for layer, result in zip(layers, report.layers):
        flipped = 0
        for part in range(len(parts(layer))):
            chosen = tflite_order(layer, nearest(layer.get_weights()[part], channel_scales(layer, per_channel, part)),
                                  part)
            source = model.get_layer(layer.name)
            before = tflite_order(source, nearest(source.get_weights()[part], channel_scales(source, per_channel,
                                                                                               part)), part)
            flipped += int(np.sum(chosen != before))
            match = [n for n, v in written.items() if f"/{layer.name}_" in n and v.shape == chosen.shape]
            assert len(match) == 1, (layer.name, part, list(written))
            np.testing.assert_array_equal(written[match[0]], chosen.astype(np.int8))
        assert flipped == result.flipped, layer.name


@pytest.mark.slow
@pytest.mark.parametrize("name", ["small_cnn", "mini_xception"])
def test_ptq_guard_never_keeps_a_lower_sqnr(name, tmp_path):
    """The guard ships the candidate with the best int8 SQNR on the selection images, so the int8 model of
    what ``--ptq`` returns is never below nearest rounding's there (measured again here, outside the guard)."""
    from edgesep.converters.ptq import apply_ptq
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import agreement, predict_keras, predict_tflite

    model, calib = _study_network(name)
    selection = np.random.default_rng(2).random((32, *model.input_shape[1:]), np.float32)
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
    reference, sqnr = predict_keras(model, selection), {}
    for label, candidate in (("nearest", model), ("chosen", chosen)):
        path = export_tflite(candidate, tmp_path / f"{label}.tflite", precision="int8", representative_data=calib,
                             io_dtype="float32", fold=False)
        sqnr[label] = agreement(predict_tflite(path, selection), reference)[1]
    assert sqnr["chosen"] >= sqnr["nearest"] - 1e-6, sqnr
