"""BatchNorm folding is exact: checked against a numpy conv -> batchnorm oracle and the original Keras model."""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from hypothesis import given, note, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from keras import layers  # noqa: E402

import edgesep  # noqa: E402
from keras_bn import randomize_bn  # noqa: E402
from edgesep.converters import ConversionError  # noqa: E402
from edgesep.converters.fold import FoldReport, fold_batchnorm, fold_with_report  # noqa: E402

TOL = 1e-5  # max |a - b| / max |b|, float32
MAX_ERR: dict[str, float] = {}  # largest relative error seen per check, printed at the end (pytest -s)


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


def check_close(got, want, what: str) -> None:
    err = rel_err(got, want)
    MAX_ERR[what] = max(MAX_ERR.get(what, 0.0), err)
    assert err <= TOL, f"{what}: relative error {err:.3g} > {TOL}"


def teardown_module():
    print("\nmax relative errors: " + ", ".join(f"{k}={v:.2e}" for k, v in sorted(MAX_ERR.items())))


# --- numpy oracle: conv (grouped, strided, dilated, same/valid) and inference batchnorm, float64 ---

def _out_and_pad(size: int, k: int, stride: int, dilation: int, padding: str) -> tuple[int, int, int]:
    span = (k - 1) * dilation + 1
    if padding == "valid":
        return (size - span) // stride + 1, 0, 0
    out = -(-size // stride)
    total = max((out - 1) * stride + span - size, 0)
    return out, total // 2, total - total // 2


def np_conv(x, kernel, strides=(1, 1), padding="valid", dilation=(1, 1), groups=1):
    """NHWC conv with an HWIO kernel of shape (kh, kw, C / groups, F); output channel g * F/groups + o."""
    n, h, w, _ = x.shape
    kh, kw, cg, f = kernel.shape
    oh, top, bottom = _out_and_pad(h, kh, strides[0], dilation[0], padding)
    ow, left, right = _out_and_pad(w, kw, strides[1], dilation[1], padding)
    xp = np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
    out = np.zeros((n, oh, ow, f))
    for i in range(kh):
        for j in range(kw):
            r, c = i * dilation[0], j * dilation[1]
            patch = xp[:, r:r + (oh - 1) * strides[0] + 1:strides[0], c:c + (ow - 1) * strides[1] + 1:strides[1]]
            patch = patch.reshape(n, oh, ow, groups, cg)
            k = kernel[i, j].reshape(cg, groups, f // groups)
            out += np.einsum("nhwgc,cgo->nhwgo", patch, k).reshape(n, oh, ow, f)
    return out


def np_depthwise(x, kernel, strides, padding, dilation):
    """Depthwise conv, kernel (kh, kw, C, multiplier); output channel c * multiplier + m."""
    kh, kw, c, m = kernel.shape
    return np_conv(x, kernel.reshape(kh, kw, 1, c * m), strides, padding, dilation, groups=c)


def np_batchnorm(y, bn: dict):
    out = (y - bn["moving_mean"]) / np.sqrt(bn["moving_variance"] + bn["epsilon"])
    return out * bn.get("gamma", 1.0) + bn.get("beta", 0.0)


# --- hypothesis: one conv -> BN model per example ---

@st.composite
def conv_cases(draw, kind: str):
    equal = kind != "Conv2D"  # TF depthwise kernels need equal strides / dilations in both directions
    kh = draw(st.integers(1, 4))
    kw = kh if equal else draw(st.integers(1, 4))
    strided = draw(st.booleans())
    if strided:  # strides up to the kernel size: TF's CPU conv leaves output columns uninitialised for a
        # 'same' conv whose stride exceeds its kernel over a one-column output (kernel 2, stride 3, width 2-3)
        sh = draw(st.integers(1, min(3, kh)))
        strides, dilation = (sh, sh if equal else draw(st.integers(1, min(3, kw)))), (1, 1)
    else:
        dh = draw(st.integers(1, 3))
        strides, dilation = (1, 1), (dh, dh if equal else draw(st.integers(1, 3)))
    padding = draw(st.sampled_from(["same", "valid"]))
    min_h, min_w = (kh - 1) * dilation[0] + 1, (kw - 1) * dilation[1] + 1
    h, w = draw(st.integers(min_h, min_h + 7)), draw(st.integers(min_w, min_w + 7))
    channels = draw(st.integers(1, 6))
    case = dict(kind=kind, kernel=(kh, kw), strides=strides, dilation=dilation, padding=padding,
                input_shape=(h, w, channels), use_bias=draw(st.booleans()),
                multiplier=draw(st.integers(1, 3)), filters=draw(st.integers(1, 8)), groups=1,
                center=draw(st.booleans()), scale=draw(st.booleans()),
                epsilon=draw(st.floats(1e-5, 1e-1, allow_nan=False)), seed=draw(st.integers(0, 2**32 - 1)))
    if kind == "Conv2D":
        case["groups"] = draw(st.sampled_from([g for g in range(1, channels + 1) if channels % g == 0]))
        case["filters"] = case["groups"] * draw(st.integers(1, 3))
    return case


def _conv_layer(case, dtype=None):
    common = dict(strides=case["strides"], padding=case["padding"], dilation_rate=case["dilation"],
                  use_bias=case["use_bias"], name="conv", dtype=dtype)
    if case["kind"] == "Conv2D":
        return layers.Conv2D(case["filters"], case["kernel"], groups=case["groups"], **common)
    if case["kind"] == "DepthwiseConv2D":
        return layers.DepthwiseConv2D(case["kernel"], depth_multiplier=case["multiplier"], **common)
    return layers.SeparableConv2D(case["filters"], case["kernel"], depth_multiplier=case["multiplier"], **common)


def _randomize(layer, rng) -> dict[str, np.ndarray]:
    """Fill ``layer``'s weights with random float32 values (positive variances); return them in float64."""
    values = {}
    for v in layer.weights:
        shape = tuple(v.shape)
        if v.name == "moving_variance":
            value = np.exp(rng.uniform(np.log(1e-3), np.log(1e2), shape))
        elif v.name in ("moving_mean", "gamma", "beta", "bias"):
            value = rng.uniform(-3, 3, shape)
        else:
            value = rng.normal(0, 1 / np.sqrt(np.prod(shape[:-1])), shape)
        v.assign(value.astype(np.float32))
        values[v.name] = np.array(v.numpy(), np.float64)
    return values


def _float64_conv(case, weights: dict, x) -> np.ndarray:
    """The case's convolution layer built in float64 with ``weights`` (by name), run on ``x``."""
    layer = _conv_layer(case, dtype="float64")
    layer.build((None, *case["input_shape"]))
    layer.set_weights([weights[v.name] for v in layer.weights])
    return np.asarray(layer(x.astype(np.float64)))


def _conv_oracle(case, x, conv: dict):
    """The convolution (with its bias, if any) in float64 numpy."""
    args = (case["strides"], case["padding"], case["dilation"])
    if case["kind"] == "Conv2D":
        y = np_conv(x, conv["kernel"], *args, groups=case["groups"])
    elif case["kind"] == "DepthwiseConv2D":
        y = np_depthwise(x, conv["kernel"], *args)
    else:
        y = np_conv(np_depthwise(x, conv["depthwise_kernel"], *args), conv["pointwise_kernel"])
    return y + conv.get("bias", 0.0)


def _oracle(case, x, conv: dict, bn: dict):
    return np_batchnorm(_conv_oracle(case, x, conv), bn)


@pytest.mark.parametrize("kind", ["Conv2D", "DepthwiseConv2D", "SeparableConv2D"])
@settings(max_examples=25, deadline=None)
@given(data=st.data())
def test_fold_matches_numpy_conv_then_batchnorm(kind, data):
    case = data.draw(conv_cases(kind))
    rng = np.random.default_rng(case["seed"])
    inputs = keras.Input(case["input_shape"])
    conv = _conv_layer(case)
    bn = layers.BatchNormalization(center=case["center"], scale=case["scale"], epsilon=case["epsilon"], name="bn")
    model = keras.Model(inputs, bn(conv(inputs)))
    conv_w, bn_w = _randomize(conv, rng), _randomize(bn, rng)
    bn_w["epsilon"] = bn.epsilon

    folded, report = fold_with_report(model)

    assert report == FoldReport(folded=(("conv", "bn"),), kept=())
    assert [type(layer).__name__ for layer in folded.layers] == ["InputLayer", kind]
    assert folded.get_layer("conv").use_bias
    x = rng.normal(size=(2, *case["input_shape"])).astype(np.float32)
    want = _oracle(case, x.astype(np.float64), conv_w, bn_w)
    folded_w = {v.name: np.array(v.numpy(), np.float64) for v in folded.get_layer("conv").weights}
    check_close(_conv_oracle(case, x.astype(np.float64), folded_w), want, f"{kind} folded weights vs numpy")
    got, keras_out = np.asarray(folded(x)), np.asarray(model(x))
    if max(rel_err(got, want), rel_err(keras_out, want)) > TOL:
        # TensorFlow's own float32 kernel is wrong here (TF 2.21's oneDNN conv2d, e.g. kernel (1, 2), strides
        # (1, 2) on a width of 3: the second row's output is the bias alone; right with TF_ENABLE_ONEDNN_OPTS=0
        # or in float64). Both models are checked again in float64 (TF's Eigen kernels) instead: the model as
        # given against the numpy oracle (its sanity), the folded one against it too.
        note(f"TensorFlow's float32 {kind} is off by {max(rel_err(got, want), rel_err(keras_out, want)):.3g}")
        check_close(np_batchnorm(_float64_conv(case, conv_w, x), bn_w), want, "keras float64 vs numpy (oracle)")
        check_close(_float64_conv({**case, "use_bias": True}, folded_w, x), want, f"{kind} float64 vs numpy")
        return
    check_close(got, want, f"{kind} vs numpy")
    check_close(got, keras_out, f"{kind} vs keras")
    check_close(keras_out, want, "keras vs numpy (oracle sanity)")


# --- whole models ---

def bn_names(model) -> list[str]:
    return [layer.name for layer in model.layers if isinstance(layer, layers.BatchNormalization)]


def assert_all_folded(model, x, what: str):
    names = randomize_bn(model)
    folded, report = fold_with_report(model)
    assert bn_names(folded) == []
    assert report.kept == ()
    assert [bn for _, bn in report.folded] == names
    assert [layer.name for layer in folded.layers] == [l.name for l in model.layers if l.name not in names]
    for conv, _ in report.folded:
        assert folded.get_layer(conv).use_bias
        assert type(folded.get_layer(conv)) is type(model.get_layer(conv))
    check_close(folded(x), model(x), what)
    return folded, report


@pytest.mark.parametrize("form", ["fused", "split"])
def test_builtin_model_folds_completely(form):
    model = edgesep.build_model(form=form, input_shape=(24, 24, 3), blocks=((16, 1), (24, 2), (32, 2)))
    x = np.random.default_rng(1).uniform(0, 1, (4, 24, 24, 3)).astype(np.float32)
    folded, report = assert_all_folded(model, x, f"build_model {form}")
    check_close(features(folded, x), features(model, x), f"build_model {form}")
    expected = [("stem_conv", "stem_bn")] + (
        [(f"block{i}_sep", f"block{i}_sep_bn") for i in (1, 2, 3)] if form == "fused" else
        [pair for i in (1, 2, 3) for pair in ((f"block{i}_dw", f"block{i}_dw_bn"), (f"block{i}_pw", f"block{i}_pw_bn"))])
    assert list(report.folded) == expected


@pytest.mark.slow
@pytest.mark.parametrize("app", ["MobileNet", "MobileNetV2"])
def test_keras_applications_fold_exactly(app):
    model = getattr(keras.applications, app)(input_shape=(96, 96, 3), alpha=0.35 if app == "MobileNetV2" else 0.25,
                                              weights=None, classifier_activation=None)
    x = np.random.default_rng(2).uniform(-1, 1, (2, 96, 96, 3)).astype(np.float32)
    _, report = assert_all_folded(model, x, app)
    assert len(report.folded) == (27 if app == "MobileNet" else 52)


def _kept_case(build):
    """Build, randomize BN, fold; the folded model must still equal the original."""
    inputs = keras.Input((10, 10, 3))
    model = keras.Model(inputs, build(inputs))
    randomize_bn(model, seed=3)
    folded, report = fold_with_report(model)
    x = np.random.default_rng(4).normal(size=(2, 10, 10, 3)).astype(np.float32)
    check_close(folded(x), model(x), "models with kept BNs")
    return folded, report


def test_bn_after_add_stays():
    def build(x):
        a = layers.Conv2D(4, 3, padding="same", use_bias=False, name="a")(x)
        b = layers.Conv2D(4, 1, name="b")(x)
        return layers.BatchNormalization(name="bn")(layers.Add(name="add")([a, b]))

    folded, report = _kept_case(build)
    assert report.folded == ()
    assert report.kept == (("bn", "follows Add 'add', not a conv"),)
    assert bn_names(folded) == ["bn"] and not folded.get_layer("a").use_bias


def test_conv_feeding_two_consumers_stays():
    def build(x):
        y = layers.Conv2D(4, 3, use_bias=False, name="conv")(x)
        return layers.Add(name="add")([layers.BatchNormalization(name="bn")(y), layers.ReLU(name="relu")(y)])

    folded, report = _kept_case(build)
    assert report.kept == (("bn", "conv 'conv' output also feeds other layers"),)
    assert bn_names(folded) == ["bn"] and not folded.get_layer("conv").use_bias


def test_conv_output_also_a_model_output_stays():
    inputs = keras.Input((6, 6, 2))
    y = layers.Conv2D(3, 1, name="conv")(inputs)
    model = keras.Model(inputs, [y, layers.BatchNormalization(name="bn")(y)])
    randomize_bn(model)
    folded, report = fold_with_report(model)
    assert report.kept == (("bn", "conv 'conv' output also feeds other layers"),)
    x = np.ones((1, 6, 6, 2), np.float32)
    for got, want in zip(folded(x), model(x)):
        check_close(got, want, "models with kept BNs")


def test_conv_with_activation_inside_stays():
    folded, report = _kept_case(
        lambda x: layers.BatchNormalization(name="bn")(layers.Conv2D(4, 3, activation="relu", name="conv")(x)))
    assert report.kept == (("bn", "conv 'conv' has activation relu inside"),)
    assert bn_names(folded) == ["bn"]


def test_bn_on_a_non_channel_axis_stays():
    folded, report = _kept_case(
        lambda x: layers.BatchNormalization(axis=1, name="bn")(layers.Conv2D(4, 3, name="conv")(x)))
    assert report.kept == (("bn", "BN normalizes axis 1, not the channel axis"),)
    assert bn_names(folded) == ["bn"]


def test_shared_conv_and_nested_model_stay_and_the_rest_folds():
    inner_in = keras.Input((10, 10, 3))
    inner = keras.Model(inner_in, layers.BatchNormalization(name="inner_bn")(layers.Conv2D(3, 1, name="ic")(inner_in)),
                        name="inner")

    def build(x):
        shared = layers.Conv2D(3, 1, name="shared")
        y = layers.BatchNormalization(name="bn_shared")(shared(shared(x)))
        z = layers.BatchNormalization(name="bn_ok")(layers.DepthwiseConv2D(3, name="dw")(inner(y)))
        return layers.BatchNormalization(name="bn_input")(z)

    folded, report = _kept_case(build)
    assert report.folded == (("dw", "bn_ok"),)
    assert dict(report.kept) == {
        "bn_shared": "conv 'shared' is shared (called 2 times)",
        "bn_input": "follows BatchNormalization 'bn_ok', not a conv",
        "inner/inner_bn": "inside nested Functional 'inner'",
    }
    assert bn_names(folded) == ["bn_shared", "bn_input"]


def test_sequential_model_folds_and_input_model_is_untouched():
    model = keras.Sequential([
        keras.Input((12, 12, 3)),
        layers.Conv2D(6, 3, strides=2, padding="same", use_bias=False, name="conv"),
        layers.BatchNormalization(name="bn"),
        layers.ReLU(name="relu"),
        layers.SeparableConv2D(8, 3, depth_multiplier=2, name="sep"),
        layers.BatchNormalization(name="sep_bn", center=False),
        layers.BatchNormalization(name="bn_after_bn"),
    ], name="seq")
    randomize_bn(model, seed=5)
    before = [w.copy() for w in model.get_weights()]
    count, variables = len(model.layers), {id(v) for v in model.weights}

    folded, report = fold_with_report(model)

    assert isinstance(folded, keras.Sequential) and folded.name == "seq"
    assert report.folded == (("conv", "bn"), ("sep", "sep_bn"))
    assert report.kept == (("bn_after_bn", "follows BatchNormalization 'sep_bn', not a conv"),)
    assert [layer.name for layer in folded.layers] == ["conv", "relu", "sep", "bn_after_bn"]
    x = np.random.default_rng(6).normal(size=(3, 12, 12, 3)).astype(np.float32)
    check_close(folded(x), model(x), "Sequential")
    assert len(model.layers) == count and not model.get_layer("conv").use_bias
    assert all(np.array_equal(a, b) for a, b in zip(model.get_weights(), before))
    assert not {id(v) for v in folded.weights} & variables
    assert not {id(layer) for layer in folded.layers} & {id(layer) for layer in model.layers}


def features(model, x):
    """The pooled features before the softmax classifier (softmax would hide small errors)."""
    return keras.Model(model.input, model.get_layer("pool").output)(x)


def test_model_loaded_from_a_keras_file(tmp_path):
    model = edgesep.build_model(form="split", input_shape=(16, 16, 3), blocks=((8, 2),))
    randomize_bn(model)
    path = tmp_path / "m.keras"
    model.save(path)
    loaded = keras.models.load_model(path)
    folded, report = fold_with_report(loaded)
    assert len(report.folded) == 3 and report.kept == ()
    x = np.random.default_rng(7).uniform(0, 1, (2, 16, 16, 3)).astype(np.float32)
    check_close(features(folded, x), features(model, x), "loaded .keras")
    check_close(folded(x), model(x), "loaded .keras")


def test_model_without_bn_comes_back_as_an_equal_copy():
    inputs = keras.Input((8, 8, 3))
    model = keras.Model(inputs, layers.Dense(2, name="d")(layers.Conv2D(4, 3, activation="relu", name="c")(inputs)))
    copy, report = fold_with_report(model)
    assert report == FoldReport() and report.to_dict() == {"folded": [], "kept": []}
    assert copy is not model and [l.name for l in copy.layers] == [l.name for l in model.layers]
    x = np.random.default_rng(8).normal(size=(1, 8, 8, 3)).astype(np.float32)
    np.testing.assert_array_equal(copy(x), model(x))


def test_fold_batchnorm_is_the_model_of_fold_with_report_and_public():
    assert edgesep.fold_batchnorm is fold_batchnorm
    assert edgesep.fold_with_report is fold_with_report and edgesep.FoldReport is FoldReport
    # one naming pattern: x(model) -> model, x_with_report(model) -> (model, report); the old name stays
    assert edgesep.fold_batchnorm_with_report is fold_with_report
    assert edgesep.equalize.__name__ + "_with_report" == edgesep.equalize_with_report.__name__
    assert fold_batchnorm.__name__ + "_with_report" == edgesep.fold_batchnorm_with_report.__name__
    inputs = keras.Input((5, 5, 2))
    model = keras.Model(inputs, layers.BatchNormalization(name="bn")(layers.Conv2D(2, 1, name="c")(inputs)))
    assert bn_names(fold_batchnorm(model)) == []


def test_report_to_dict_and_validation():
    report = FoldReport(folded=[["c", "bn"]], kept=[("bn2", "follows Add 'add', not a conv")])
    assert report.folded == (("c", "bn"),)
    assert report.to_dict() == {"folded": [{"conv": "c", "bn": "bn"}],
                                "kept": [{"bn": "bn2", "reason": "follows Add 'add', not a conv"}]}
    with pytest.raises(ValueError, match="pairs"):
        FoldReport(folded=(("c",),))


class _Subclassed(keras.Model):
    def __init__(self):
        super().__init__()
        self.conv, self.bn = layers.Conv2D(2, 1), layers.BatchNormalization()

    def call(self, x):
        return self.bn(self.conv(x))


@pytest.mark.parametrize("bad, message", [
    (lambda: "model.keras", "can only fold a keras.Model"),
    (lambda: keras.Sequential([layers.Conv2D(2, 1), layers.BatchNormalization()]), "is not built"),
    (lambda: _Subclassed(), "subclassed"),
])
def test_bad_input_is_a_one_line_conversion_error(bad, message):
    model = bad()
    if isinstance(model, _Subclassed):
        model(np.zeros((1, 4, 4, 2), np.float32))
    with pytest.raises(ConversionError, match=message) as info:
        fold_batchnorm(model)
    assert "\n" not in str(info.value)
