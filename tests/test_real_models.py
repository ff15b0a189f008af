"""Real third-party architectures and the models users bring, end to end (slow: real conversions).

keras.applications networks (weights=None, small inputs, randomized BatchNorm statistics): BN folding is exact
(relative error < 1e-5), the folded network converts to int8 TFLite and to ONNX, and the ONNX graph holds no
BatchNorm leftover after a convolution. Each network is built, folded and converted once per session and
shared by its tests. Then, through the real CLI in a subprocess: a grouped convolution ONNX cannot express and a
converter that crashes (SIGSEGV) each end as one ``edgesep: error:`` line with nothing left behind.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from hostile import check_refused, run_edgesep  # noqa: E402
from keras_bn import randomize_bn  # noqa: E402

pytestmark = pytest.mark.slow

SIZE = 32
CLASSES = 10
TOL = 1e-5
SAMPLES = 8

# name -> (constructor, kwargs, input range): the smallest widths keras.applications offers
ARCHITECTURES = {
    "MobileNet": ("MobileNet", {"alpha": 0.25}, (-1.0, 1.0)),
    "MobileNetV2": ("MobileNetV2", {"alpha": 0.35}, (-1.0, 1.0)),
    "MobileNetV3Small": ("MobileNetV3Small", {"alpha": 0.75}, (0.0, 255.0)),
    "MobileNetV3Small-minimalistic": ("MobileNetV3Small", {"alpha": 0.75, "minimalistic": True}, (0.0, 255.0)),
    "MobileNetV3Large": ("MobileNetV3Large", {"alpha": 0.75}, (0.0, 255.0)),
    "MobileNetV3Large-minimalistic": ("MobileNetV3Large", {"alpha": 0.75, "minimalistic": True}, (0.0, 255.0)),
    "EfficientNetB0": ("EfficientNetB0", {}, (0.0, 255.0)),
}


def rel_err(got, want) -> float:
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    return float(np.max(np.abs(got - want)) / max(np.max(np.abs(want)), 1e-30))


@pytest.fixture(scope="module", params=list(ARCHITECTURES))
def network(request, tmp_path_factory):
    """(name, model, images, folded, fold report, number of BNs, int8 path, onnx path) of one architecture."""
    import keras

    from edgesep.converters.fold import fold_batchnorm_with_report
    from edgesep.converters.onnx import export_onnx
    from edgesep.converters.tflite import export_tflite

    constructor, kwargs, (lo, hi) = ARCHITECTURES[request.param]
    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, constructor)(input_shape=(SIZE, SIZE, 3), weights=None, classes=CLASSES,
                                                      **kwargs)
    bns = len(randomize_bn(model))
    x = (lo + (hi - lo) * np.random.default_rng(1).random((SAMPLES, SIZE, SIZE, 3))).astype(np.float32)
    folded, report = fold_batchnorm_with_report(model)
    out = tmp_path_factory.mktemp(request.param)
    int8 = export_tflite(folded, out / "model_int8.tflite", precision="int8", representative_data=x, fold=False)
    onnx_path = export_onnx(folded, out / "model.onnx", fold=False)
    return request.param, model, x, folded, report, bns, int8, onnx_path


def test_fold_is_exact_and_complete(network):
    import keras

    name, model, x, folded, report, bns, _, _ = network
    assert bns > 10 and len(report.folded) == bns and report.kept == (), (name, report.kept)
    assert not any(isinstance(layer, keras.layers.BatchNormalization) for layer in folded.layers)
    err = rel_err(folded(x, training=False), model(x, training=False))
    assert err < TOL, f"{name}: relative error {err:.2e}"


def test_int8_and_onnx_run_and_onnx_matches_keras(network):
    from edgesep.converters.verify import predict_onnx, predict_tflite

    name, model, x, _, _, _, int8, onnx_path = network
    reference = np.asarray(model(x, training=False))
    assert predict_tflite(int8, x).shape == reference.shape == (SAMPLES, CLASSES)
    assert rel_err(predict_onnx(onnx_path, x), reference) < 1e-4, name


def test_onnx_has_no_batchnorm_leftover_after_a_convolution(network):
    import onnx
    from onnx import numpy_helper

    name, _, _, _, _, _, _, onnx_path = network
    graph = onnx.load(str(onnx_path)).graph
    constants = {t.name: numpy_helper.to_array(t) for t in graph.initializer}
    constants.update({n.output[0]: numpy_helper.to_array(a.t) for n in graph.node if n.op_type == "Constant"
                      for a in n.attribute if a.name == "value"})
    conv_outputs = {n.output[0]: n.name for n in graph.node if n.op_type == "Conv"}
    assert conv_outputs, name
    assert not [n.name for n in graph.node if n.op_type == "BatchNormalization"]
    leftovers = [n.name for n in graph.node if n.op_type in ("Mul", "Add", "Sub", "Div")
                 and any(i in conv_outputs for i in n.input)
                 and any(i in constants and constants[i].size > 1 for i in n.input)]
    assert leftovers == [], f"{name}: per-channel affine ops after a Conv: {leftovers[:5]}"


# --------------------------------------------------------------------------- models users bring, through the CLI

def _save(model, path):
    model.save(path)
    return path


def test_grouped_convolution_onnx_cannot_take_asks_for_no_onnx_and_exports_without_it(tmp_path):
    import keras

    inp = keras.Input((16, 16, 8))
    x = keras.layers.Conv1D(16, 3, padding="same", groups=4, name="grouped")(keras.layers.Reshape((256, 8))(inp))
    model = _save(keras.Model(inp, keras.layers.Dense(4)(keras.layers.GlobalAveragePooling1D()(x))),
                  tmp_path / "grouped.keras")
    out = tmp_path / "out"
    check_refused(["export", "--model", model, "--out", out], tmp_path, code=1,
                  needles=("grouped convolution 'grouped'", "--no-onnx"), out=out, bound=120)
    assert not out.exists() or not any(out.iterdir())
    done = run_edgesep(["export", "--model", model, "--no-onnx", "--out", out], tmp_path,
                       timeout=180)
    assert done.code == 0, done.stderr[-2000:]
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "model.tflite"]
    assert "wrote 1 artifact and export.json" in done.stdout


def test_a_converter_crash_is_one_line_naming_the_signal_and_the_step(tmp_path):
    """TFLite's int8 quantizer dies with SIGSEGV on this recurrent model (TF 2.x): the parent reports it."""
    import keras

    inp = keras.Input((8, 8, 3))
    x = keras.layers.Reshape((8, 32))(keras.layers.Conv2D(4, 3, padding="same")(inp))
    model = _save(keras.Model(inp, keras.layers.Dense(10)(keras.layers.LSTM(8)(x))), tmp_path / "rnn.keras")
    rng = np.random.default_rng(0)
    np.savez(tmp_path / "data.npz", x=rng.random((40, 8, 8, 3)).astype(np.float32), y=rng.integers(0, 10, 40))
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("a user's file")
    outcome = check_refused(["export", "--model", model, "--int8", "--data", tmp_path / "data.npz", "--out", out],
                            tmp_path, code=1, needles=("crashed with SIG", "'tflite int8'"), out=out, bound=180)
    assert "Traceback" not in outcome.stderr
