"""Cross-layer equalization and bias absorption keep the function and even out depthwise ranges.

Small untrained networks get spread BatchNorm statistics (log-normal gammas and variances), which makes the
folded depthwise kernels' per-channel ranges differ by hundreds, as in trained MobileNets.
"""
from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from keras import layers  # noqa: E402

import edgesep  # noqa: E402
from edgesep.blocks import separable_block  # noqa: E402
from edgesep.converters import ConversionError  # noqa: E402
from edgesep.converters.equalize import (NO_DATA, channel_relu_class, custom_objects, equalize,  # noqa: E402
                                         equalize_with_report)
from edgesep.converters.fold import fold_batchnorm  # noqa: E402
from edgesep.models import build_model  # noqa: E402

TOL = 1e-4  # max |a - b| / max |b|
SHAPE = (16, 16, 3)
BLOCKS = ((16, 1), (24, 2))


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def spread_bn(model, seed: int = 0, beta_mean: float = 0.5):
    """Give every BatchNormalization log-normal gamma / variance and random beta / mean (in place)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.gamma.assign(np.exp(rng.normal(0, 1.5, n)).astype("float32"))
            layer.beta.assign(rng.normal(beta_mean, 1.0, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(np.exp(rng.normal(0, 1.5, n)).astype("float32"))
    return model


def probe(model, x, name: str = "pool"):
    """The output of layer ``name`` (pre-classifier features) and the model output on ``x``."""
    sub = keras.Model(model.inputs, [model.get_layer(name).output, model.outputs[0]])
    return [np.asarray(v) for v in sub.predict(x, verbose=0)]


def block_model(form: str, depth_multiplier: int, activation: str = "relu"):
    inputs = keras.Input(SHAPE, name="input")
    x = layers.Conv2D(8, 3, padding="same", use_bias=False, name="stem_conv")(inputs)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(max_value=6.0 if activation == "relu6" else None, name="stem_relu")(x)
    for i, (filters, stride) in enumerate(BLOCKS, start=1):
        x = separable_block(x, filters, form=form, strides=stride, depth_multiplier=depth_multiplier,
                            activation=activation, name=f"block{i}")
    x = layers.GlobalAveragePooling2D(name="pool")(x)
    outputs = layers.Dense(10, activation="softmax", name="classifier")(x)
    return spread_bn(keras.Model(inputs, outputs))


def dw_ratio(model, name: str) -> float:
    """max/min per-output-channel max|w| of a depthwise kernel, computed here from the model's weights."""
    layer = model.get_layer(name)
    kernel = (layer.depthwise_kernel if isinstance(layer, layers.SeparableConv2D) else layer.kernel).numpy()
    ranges = np.max(np.abs(kernel.reshape(-1, kernel.shape[2] * kernel.shape[3])), axis=0)
    return float(ranges.max() / ranges.min())


def snapshot(model):
    return [np.array(w) for w in model.get_weights()], json.dumps(model.get_config(), sort_keys=True, default=str)


@pytest.fixture(autouse=True)
def seeded():
    keras.utils.set_random_seed(0)  # kernel initializers draw from Keras' global seed


@pytest.fixture(scope="module")
def x():
    return np.random.default_rng(1).random((24, *SHAPE), dtype=np.float32)


@pytest.fixture(scope="module")
def x_other():
    return np.random.default_rng(2).random((24, *SHAPE), dtype=np.float32)


# --- exactness with ReLU ---

@pytest.mark.parametrize("form,multiplier", [("split", 1), ("fused", 1), ("split", 2), ("fused", 2)])
def test_exact_with_relu(form, multiplier, x):
    model = block_model(form, multiplier)
    new, report = equalize_with_report(model, absorb_bias=False, data_free=True)
    for got, want, what in zip(probe(new, x), probe(model, x), ("features", "output")):
        assert rel_err(got, want) <= TOL, f"{form} x{multiplier} {what}: {rel_err(got, want):.2e}"
    assert report.converged and report.iterations > 1
    assert len(report.pairs) == 4 and not report.skipped
    internal = [p for p in report.pairs if p.producer.endswith("/depthwise")]
    assert len(internal) == (2 if form == "fused" else 0)
    assert all(isinstance(layer, (layers.InputLayer, layers.Conv2D, layers.DepthwiseConv2D, layers.SeparableConv2D,
                                  layers.ReLU, layers.GlobalAveragePooling2D, layers.Dense)) for layer in new.layers)
    assert not any(isinstance(layer, layers.BatchNormalization) for layer in new.layers)


def chain_model(sequential: bool):
    """conv -> ReLU -> depthwise (multiplier 2) -> ReLU -> 1x1 conv, channels scaled by up to e^+-3."""
    stack = [layers.Conv2D(6, 3, padding="same", name="conv"), layers.ReLU(name="relu1"),
             layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw"), layers.ReLU(name="relu2"),
             layers.Conv2D(5, 1, name="pw")]
    if sequential:
        model = keras.Sequential([keras.Input(SHAPE), *stack])
    else:
        inputs = keras.Input(SHAPE)
        y = inputs
        for layer in stack:
            y = layer(y)
        model = keras.Model(inputs, y)
    rng = np.random.default_rng(3)
    for layer in (model.get_layer(n) for n in ("conv", "dw", "pw")):
        kernel, bias = layer.get_weights()
        out_shape = kernel.shape[2:] if layer.name == "dw" else kernel.shape[-1:]  # dw: output c * m + j
        channel_scale = np.exp(rng.uniform(-3, 3, out_shape))
        layer.set_weights([kernel * channel_scale, rng.normal(0.1, 0.1, bias.shape) * channel_scale.reshape(-1)])
    return model


def ranges(model):
    conv, dw, pw = (model.get_layer(n).kernel.numpy() for n in ("conv", "dw", "pw"))
    return (np.abs(conv).max(axis=(0, 1, 2)), np.abs(dw).max(axis=(0, 1)),  # dw: (in, multiplier)
            np.abs(pw).max(axis=(0, 1, 3)))


@pytest.mark.parametrize("sequential", [False, True])
def test_conv_depthwise_pointwise_chain(sequential, x):
    model = chain_model(sequential)
    new, report = equalize_with_report(model, tol=1e-7, max_iter=2000, data_free=True)
    assert rel_err(new.predict(x, verbose=0), model.predict(x, verbose=0)) <= TOL
    assert report.converged and [p.kind for p in report.pairs] == ["Conv2D -> DepthwiseConv2D",
                                                                   "DepthwiseConv2D -> Conv2D"]
    conv_out, dw, pw_in = ranges(new)
    # the fixed point: each link's two sides have equal per-channel ranges (the cube-root solution)
    np.testing.assert_allclose(conv_out, dw.max(axis=1), rtol=1e-4)
    np.testing.assert_allclose(dw.reshape(-1), pw_in, rtol=1e-4)
    before = ranges(model)
    assert np.ptp(np.log(dw)) < np.ptp(np.log(before[1]))


# --- evening out the depthwise ranges ---

def test_depthwise_range_ratio_at_least_halved(x):
    model = spread_bn(build_model("split", SHAPE, 10, blocks=BLOCKS, activation="relu"))
    folded = fold_batchnorm(model)
    new, report = equalize_with_report(model, data_free=True)
    for name in ("block1_dw", "block2_dw"):
        before, after = dw_ratio(folded, name), dw_ratio(new, name)
        assert before > 50, f"{name}: spread BN should give a wide spread, got {before:.1f}"
        assert after <= before / 2, f"{name}: range ratio {before:.1f} -> {after:.1f}"
    reported = {name: (b, a) for name, b, a in report.depthwise_range_ratio}
    assert reported["block1_dw"] == pytest.approx((dw_ratio(folded, "block1_dw"), dw_ratio(new, "block1_dw")))


def test_fused_moves_range_spread_into_the_inner_depthwise(x):
    """In SeparableConv2D the BN folds into the pointwise kernel's output channels: the inner depthwise kernel
    starts even, and CLE spreads the pointwise spread over the chain, inner depthwise included (reported)."""
    model = spread_bn(build_model("fused", SHAPE, 10, blocks=BLOCKS, activation="relu"))
    folded = fold_batchnorm(model)
    new, report = equalize_with_report(model, data_free=True)
    widest = {tag: max(max(p.producer_ratio[i], p.consumer_ratio[i]) for p in report.pairs) for tag, i in
              (("before", 0), ("after", 1))}
    assert widest["after"] < widest["before"] / 10, widest
    for name, before, after in report.depthwise_range_ratio:
        assert before == pytest.approx(dw_ratio(folded, name)) and before < 5
        assert after == pytest.approx(dw_ratio(new, name)) and after > before


# --- ReLU6 modes ---

@pytest.fixture(scope="module")
def relu6_model():
    keras.utils.set_random_seed(0)
    return spread_bn(build_model("split", SHAPE, 10, blocks=BLOCKS, activation="relu6"), beta_mean=4.0)


def test_relu6_replace_changes_function_and_reports_it(relu6_model, x):
    labels = np.argmax(relu6_model.predict(x, verbose=0), -1)
    new, report = equalize_with_report(relu6_model, relu6="replace", calibration_data=x, eval_data=(x, labels))
    replaced = [name for name, _ in report.activations]
    assert replaced == ["stem_relu", "block1_dw_relu", "block1_pw_relu", "block2_dw_relu"]
    assert all(new.get_layer(n).max_value is None for n in replaced)
    assert new.get_layer("block2_pw_relu").max_value == 6.0  # feeds the pool, not a conv: untouched
    features = rel_err(probe(new, x)[0], probe(relu6_model, x)[0])
    assert features > 1e-2, f"pooled features changed by only {features:.2e}"
    change = rel_err(new.predict(x, verbose=0), relu6_model.predict(x, verbose=0))
    assert change > 0 and report.max_output_change == pytest.approx(change, rel=1e-3)
    assert report.float_accuracy["before"] == 1.0
    agreement = float(np.mean(np.argmax(new.predict(x, verbose=0), -1) == labels))
    assert report.float_accuracy["after"] == pytest.approx(agreement)


def test_relu6_clip_is_exact_and_saves(relu6_model, x, x_other, tmp_path):
    new, report = equalize_with_report(relu6_model, absorb_bias=False, data_free=True)  # clip is the default
    assert report.relu6 == "clip"
    assert rel_err(new.predict(x_other, verbose=0), relu6_model.predict(x_other, verbose=0)) <= TOL
    clip_cls = channel_relu_class()
    clips = [layer for layer in new.layers if isinstance(layer, clip_cls)]
    assert len(clips) == 4 and len(report.pairs) == 4
    caps = clips[1].cap.numpy()
    assert caps.max() / caps.min() > 2  # 6 / s_i differs per channel
    path = tmp_path / "eq.keras"
    new.save(path)
    loaded = keras.models.load_model(path, custom_objects=custom_objects(), compile=False)
    assert rel_err(loaded.predict(x, verbose=0), new.predict(x, verbose=0)) == 0.0


@pytest.mark.slow
def test_relu6_clip_converts_to_tflite_exactly(relu6_model, x, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from edgesep.converters.inspect import op_counts
    from edgesep.converters.tflite import export_tflite

    new = equalize(relu6_model, absorb_bias=False, data_free=True)
    tfl = export_tflite(new, tmp_path / "eq.tflite")
    assert op_counts(tfl).get("MINIMUM") == 4
    it = Interpreter(model_path=str(tfl))
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    got = []
    for image in x[:8]:
        it.set_tensor(inp["index"], image[None])
        it.invoke()
        got.append(it.get_tensor(out["index"])[0])
    assert rel_err(got, relu6_model.predict(x[:8], verbose=0)) <= TOL


def test_equalizing_twice_keeps_the_clips_exact(relu6_model, x_other):
    once = equalize(relu6_model, absorb_bias=False, data_free=True)
    # clips are exact: not skipped
    twice, report = equalize_with_report(once, relu6="keep", absorb_bias=False, data_free=True)
    assert len(report.pairs) == 4 and not report.skipped and not report.activations
    assert report.iterations <= 2  # already at the fixed point
    assert rel_err(twice.predict(x_other, verbose=0), relu6_model.predict(x_other, verbose=0)) <= TOL


def test_relu6_keep_skips_those_pairs(relu6_model, x):
    new, report = equalize_with_report(relu6_model, relu6="keep", data_free=True)
    assert not report.pairs and not report.activations
    assert len(report.skipped) == 4 and all("relu6='keep'" in reason for _, _, reason in report.skipped)
    assert rel_err(new.predict(x, verbose=0), relu6_model.predict(x, verbose=0)) <= TOL
    fused = spread_bn(build_model("fused", SHAPE, 10, blocks=BLOCKS, activation="relu6"))
    _, fused_report = equalize_with_report(fused, relu6="keep", data_free=True)
    assert [p.producer for p in fused_report.pairs] == ["block1_sep/depthwise", "block2_sep/depthwise"]


def test_excluded_links_are_left_alone_and_the_rest_stays_exact(relu6_model, x_other):
    _, full = equalize_with_report(relu6_model, absorb_bias=False, data_free=True)
    new, report = equalize_with_report(relu6_model, absorb_bias=False, exclude=["block1_dw"], data_free=True)
    assert [p.producer for p in report.pairs] == [p.producer for p in full.pairs if p.producer != "block1_dw"]
    assert ("block1_dw", "block1_pw", "excluded") in report.skipped
    assert isinstance(new.get_layer("block1_dw_relu"), layers.ReLU)  # no per-channel clip on the excluded link
    assert new.get_layer("block1_dw_relu").max_value == 6.0
    assert rel_err(new.predict(x_other, verbose=0), relu6_model.predict(x_other, verbose=0)) <= TOL
    folded = fold_batchnorm(relu6_model)
    untouched, none = equalize_with_report(relu6_model, absorb_bias=False, exclude=[p.producer for p in full.pairs],
                                           data_free=True)
    assert not none.pairs and not none.activations
    for a, b in zip(untouched.get_weights(), folded.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_excluding_an_unknown_link_is_one_line(relu6_model):
    with pytest.raises(ConversionError, match=r"cannot exclude 'pool': not a link producer .*links: block1_dw") as e:
        equalize(relu6_model, exclude=["pool"])
    assert "\n" not in str(e.value)


# --- bias absorption ---

def test_bias_absorption_from_calibration_is_exact_on_that_data(x):
    model = spread_bn(build_model("split", SHAPE, 10, blocks=BLOCKS, activation="relu"), beta_mean=3.0)
    plain = equalize(model, absorb_bias=False, data_free=True)
    new, report = equalize_with_report(model, calibration_data=x)
    assert [(b.producer, b.consumer, b.source) for b in report.bias_absorbed] == [
        ("block1_dw", "block1_pw", "calibration"), ("block2_dw", "block2_pw", "calibration")]
    assert all(b.channels > 0 and b.max_amount > 0 for b in report.bias_absorbed)
    shift = plain.get_layer("block1_dw").bias.numpy() - new.get_layer("block1_dw").bias.numpy()
    assert shift.max() == pytest.approx(report.bias_absorbed[0].max_amount, rel=1e-5)
    for got, want in zip(probe(new, x), probe(model, x)):
        assert rel_err(got, want) <= TOL
    skipped = {(p, c): r for p, c, r in report.bias_skipped}
    assert "zero-padded borders" in skipped[("block1_pw", "block2_dw")]


def wide_bn_model(margin: bool):
    """Split model whose dw BNs give pre-activations ~ beta + gamma * z with z well inside +-3 (margin) or not."""
    model = spread_bn(build_model("split", SHAPE, 10, blocks=BLOCKS, activation="relu"), beta_mean=3.0)
    rng = np.random.default_rng(5)
    for name in ("block1_dw_bn", "block2_dw_bn"):
        bn = model.get_layer(name)
        n = bn.gamma.shape[0]
        bn.gamma.assign(rng.uniform(0.2, 1.0, n).astype("float32"))
        bn.beta.assign(rng.uniform(3.0, 5.0, n).astype("float32"))
    from edgesep.train import recalibrate_batchnorm

    recalibrate_batchnorm(model, np.random.default_rng(6).random((64, *SHAPE), dtype=np.float32))
    for name in ("block1_dw_bn", "block2_dw_bn"):  # stated variance 100x (margin) or 1/100 of the real one
        bn = model.get_layer(name)
        bn.moving_variance.assign(bn.moving_variance.numpy() * (100.0 if margin else 0.01))
    return model


def pre_activation_ok(model, x) -> bool:
    """Does every dw pre-activation stay >= beta - 3 |gamma| on x (the premise of BN-based absorption)?"""
    for name in ("block1_dw_bn", "block2_dw_bn"):
        bn = model.get_layer(name)
        c = np.maximum(0, bn.beta.numpy() - 3 * np.abs(bn.gamma.numpy()))
        values = keras.Model(model.inputs, bn.output).predict(x, verbose=0)
        if np.any(values.reshape(-1, values.shape[-1]).min(axis=0) < c):
            return False
    return True


@pytest.mark.parametrize("margin", [True, False])
def test_bias_absorption_from_batchnorm_holds_exactly_when_its_premise_does(margin, x):
    model = wide_bn_model(margin)
    new, report = equalize_with_report(model, data_free=True)
    assert [b.source for b in report.bias_absorbed] == ["batchnorm", "batchnorm"]
    assert all(b.channels == b.total for b in report.bias_absorbed)
    premise = pre_activation_ok(model, x)
    assert premise == margin
    err = rel_err(probe(new, x)[0], probe(model, x)[0])
    assert (err <= TOL) == premise, f"premise {premise}, relative error {err:.2e}"


def test_no_absorption_without_statistics_or_data(x):
    folded = fold_batchnorm(spread_bn(build_model("split", SHAPE, 10, blocks=BLOCKS, activation="relu")))
    new, report = equalize_with_report(folded, data_free=True)
    assert not report.bias_absorbed
    reasons = {(p, c): r for p, c, r in report.bias_skipped}
    assert "no BatchNormalization statistics" in reasons[("block1_dw", "block1_pw")]
    assert rel_err(new.predict(x, verbose=0), folded.predict(x, verbose=0)) <= TOL


# --- without calibration data ---

def test_without_data_nothing_is_equalized_and_the_report_says_why(relu6_model, x):
    with pytest.warns(UserWarning, match="not equalized: no calibration_data"):
        new, report = equalize_with_report(relu6_model)
    _, blind = equalize_with_report(relu6_model, data_free=True)  # what it would have done
    assert report.data == "none" and not report.pairs and not report.bias_absorbed and not report.activations
    assert blind.pairs and {(p, c): r for p, c, r in report.skipped if r == NO_DATA} == {
        (p.producer, p.consumer): NO_DATA for p in blind.pairs}
    assert len(report.notes) == 1 and "data_free=True" in report.notes[0] and "'batchnorm'" in report.notes[0]
    assert blind.data == "batchnorm statistics (data_free)" and blind.notes == ()
    _, spelled = equalize_with_report(relu6_model, absorb_bias="batchnorm")  # the other spelling of data_free
    assert spelled.to_dict() == blind.to_dict()
    folded = fold_batchnorm(relu6_model)
    assert all(np.array_equal(a, b) for a, b in zip(new.get_weights(), folded.get_weights()))
    assert len(new.get_weights()) == len(folded.get_weights())
    doc = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert doc["data"] == "none" and doc["notes"] == list(report.notes) and doc["pairs"] == []
    _, calibrated = equalize_with_report(relu6_model, calibration_data=x)
    assert calibrated.data == "calibration" and calibrated.pairs and calibrated.notes == ()


def mobilenet_sqnr(tmp_path) -> dict[str, float]:
    """Per-tensor int8 output SQNR (dB, vs the float model, on held-out inputs) of MobileNet alpha 0.25 at 96x96
    (weights=None, spread BatchNorm statistics): folded, equalized by the no-data default, and data-free."""
    from edgesep import export_tflite
    from edgesep.converters.verify import agreement, predict_keras, predict_tflite

    model = spread_bn(keras.applications.MobileNet(input_shape=(96, 96, 3), alpha=0.25, weights=None,
                                                   classifier_activation=None))
    rng = np.random.default_rng(1)
    calib, held_out = (rng.uniform(-1, 1, (64, 96, 96, 3)).astype(np.float32) for _ in range(2))
    reference = predict_keras(model, held_out)
    with pytest.warns(UserWarning, match="no calibration_data"):
        default = equalize(model)
    candidates = {"folded": fold_batchnorm(model), "default": default,
                  "data_free": equalize(model, data_free=True)}
    out = {}
    for name, candidate in candidates.items():
        path = export_tflite(candidate, tmp_path / f"{name}.tflite", precision="int8", representative_data=calib,
                             per_channel=False, fold=False)
        out[name] = agreement(predict_tflite(path, held_out), reference)[1]
    return out


@pytest.mark.slow
def test_no_data_default_keeps_mobilenet_per_tensor_sqnr(tmp_path):
    sqnr = mobilenet_sqnr(tmp_path)
    assert sqnr["data_free"] < sqnr["folded"] - 3.0, f"blind equalization should lose SQNR here: {sqnr}"
    assert sqnr["default"] >= sqnr["folded"] - 0.05, sqnr


# --- the input model and bad arguments ---

@pytest.mark.parametrize("relu6", ["replace", "clip", "keep"])
def test_input_model_untouched(relu6, relu6_model, x):
    weights, config = snapshot(relu6_model)
    out = relu6_model.predict(x, verbose=0)
    new = equalize(relu6_model, relu6=relu6, calibration_data=x)
    assert new is not relu6_model
    after_weights, after_config = snapshot(relu6_model)
    assert after_config == config
    assert all(np.array_equal(a, b) for a, b in zip(weights, after_weights))
    assert np.array_equal(relu6_model.predict(x, verbose=0), out)


def test_report_is_json_and_public_api(relu6_model, x):
    _, report = equalize_with_report(relu6_model, relu6="clip", calibration_data=x)
    doc = json.loads(json.dumps(report.to_dict(), allow_nan=False))
    assert doc["relu6"] == "clip" and doc["pairs"][0]["producer_range_ratio"]["before"] > 1
    assert {"fold", "bias_absorbed", "bias_skipped", "depthwise_range_ratio", "iterations"} <= set(doc)
    assert edgesep.equalize is equalize


@pytest.mark.parametrize("kwargs,message", [
    ({"relu6": "bogus"}, "valid: clip, replace, keep"),
    ({"max_iter": 0}, "max_iter must be >= 1"),
    ({"absorb_bias": "yes"}, "absorb_bias must be True, False or 'batchnorm'"),
    ({"calibration_data": np.zeros((0, *SHAPE), np.float32)}, "calibration_data is empty"),
])
def test_bad_arguments(kwargs, message, relu6_model):
    with pytest.raises(ConversionError, match=message):
        equalize(relu6_model, **kwargs)


def test_not_a_model():
    with pytest.raises(ConversionError, match="keras.Model"):
        equalize(object())
