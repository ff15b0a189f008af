"""Models users bring: Keras 3 Sequential models and grouped convolutions, exported everywhere (ONNX included).

Real conversions (slow): a Sequential model with and without an ``Input`` exports TFLite and ONNX with the
ONNX output named after the model's output; a ``Conv2D(groups == channels)`` becomes an exact depthwise
convolution in every artifact and other groups an ONNX ``Conv`` with its ``group`` attribute; a grouped
convolution ONNX still cannot take is refused before any conversion work, naming ``--no-onnx``.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytestmark = pytest.mark.slow

SIZE = 16


def _images(n: int = 6, channels: int = 3) -> np.ndarray:
    return np.random.default_rng(0).random((n, SIZE, SIZE, channels)).astype(np.float32)


def _sequential(with_input: bool):
    import keras

    keras.utils.set_random_seed(0)
    layers = [keras.layers.Conv2D(8, 3, activation="relu", name="conv"),
              keras.layers.Conv2D(8, 3, groups=8, name="dw"), keras.layers.BatchNormalization(name="bn"),
              keras.layers.GlobalAveragePooling2D(name="pool"), keras.layers.Dense(4, name="scores")]
    if with_input:
        return keras.Sequential([keras.Input((SIZE, SIZE, 3)), *layers], name="seq")
    model = keras.Sequential(layers, name="seq")
    model.build((None, SIZE, SIZE, 3))
    return model


def _grouped():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.Conv2D(8, 3, padding="same", name="stem")(inp)
    y = keras.layers.Conv2D(16, 3, padding="same", groups=8, name="dw")(y)  # groups == channels, multiplier 2
    y = keras.layers.BatchNormalization(name="dw_bn")(y)
    y = keras.layers.Conv2D(16, 3, padding="same", groups=4, name="g4", activation="relu")(y)
    y = keras.layers.GlobalAveragePooling2D()(y)
    return keras.Model(inp, keras.layers.Dense(5, name="logits")(y), name="grouped")


@pytest.mark.parametrize("with_input", [True, False], ids=["with-Input", "without-Input"])
def test_sequential_model_exports_tflite_and_onnx(tmp_path, with_input):
    import onnxruntime as ort

    from edgesep.converters.export import ExportConfig, export

    model = _sequential(with_input)
    doc = export(model, tmp_path / "out", ExportConfig(), preprocess="unit")
    assert [a.path for a in doc.artifacts] == ["model.tflite", "model.onnx"]
    assert all(a.max_abs_error_vs_keras < 1e-4 for a in doc.artifacts), doc.artifacts
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == ["scores"]
    assert [i.name for i in session.get_inputs()] == ["input"]


def test_groups_equal_to_channels_become_an_exact_depthwise_convolution():
    import keras

    from edgesep.converters.grouped import depthwise_grouped

    model = _grouped()
    new = depthwise_grouped(model)
    assert type(new.get_layer("dw")) is keras.layers.DepthwiseConv2D
    assert new.get_layer("dw").depth_multiplier == 2
    assert type(new.get_layer("g4")) is keras.layers.Conv2D and new.get_layer("g4").groups == 4
    x = _images()
    err = np.max(np.abs(np.asarray(new(x, training=False)) - np.asarray(model(x, training=False))))
    assert err < 1e-5
    assert depthwise_grouped(new) is new  # nothing left to rewrite


def test_grouped_model_exports_onnx_with_group_attribute_and_depthwise_tflite(tmp_path):
    import onnx

    from edgesep.converters.export import ExportConfig, export

    model = _grouped()
    doc = export(model, tmp_path / "out", ExportConfig(), preprocess="unit")
    tflite, onnx_art = doc.artifacts
    assert tflite.ops.get("DEPTHWISE_CONV_2D") == 1 and tflite.ops.get("CONV_2D") == 2
    assert all(a.max_abs_error_vs_keras < 1e-4 for a in doc.artifacts), doc.artifacts
    graph = onnx.load(str(tmp_path / "out" / onnx_art.path)).graph
    groups = sorted(next((a.i for a in n.attribute if a.name == "group"), 1) for n in graph.node if n.op_type == "Conv")
    assert groups == [1, 4, 8]  # the stem, g4 as a grouped Conv, dw as a depthwise (group = channels) Conv
    assert [o.name for o in graph.output] == ["logits"]


def test_a_grouped_convolution_onnx_cannot_take_is_refused_before_any_work(tmp_path, monkeypatch):
    import keras

    from edgesep.converters import export as export_module
    from edgesep.errors import ConversionError

    inp = keras.Input((SIZE, SIZE, 4))
    y = keras.layers.Conv1D(8, 3, groups=2, name="grouped_1d")(keras.layers.Reshape((SIZE * SIZE, 4))(inp))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling1D()(y)))
    monkeypatch.setattr(export_module, "_export_into", lambda *a, **k: pytest.fail("conversion work started"))
    with pytest.raises(ConversionError, match=r"grouped convolution 'grouped_1d' \(Conv1D groups=2\).*--no-onnx"):
        export_module.export(model, tmp_path / "out", export_module.ExportConfig(), preprocess="unit")
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


# --------------------------------------------------------------------------- Lambda and custom layers

USER_LAYERS = '''
import keras


@keras.saving.register_keras_serializable(package="user")
class Scale(keras.layers.Layer):
    def __init__(self, factor=2.0, **kwargs):
        super().__init__(**kwargs)
        self.factor = factor

    def call(self, x):
        return x * self.factor

    def get_config(self):
        return {**super().get_config(), "factor": self.factor}


def hard_swish(x):
    return x * keras.ops.relu6(x + 3.0) / 6.0
'''


@pytest.fixture(scope="module")
def lambda_model(tmp_path_factory):
    """(model file, custom-objects file, data .npz): Lambda layers (a lambda and a named function of the user's
    module, which the CLI's process cannot import by itself) and a registered custom layer between BN'd convs."""
    import importlib
    import sys

    import keras

    folder = tmp_path_factory.mktemp("lambda")
    (folder / "lib").mkdir()
    module_file = folder / "lib" / "user_layers.py"
    module_file.write_text(USER_LAYERS)
    sys.path.insert(0, str(folder / "lib"))
    try:
        user = importlib.import_module("user_layers")
    finally:
        sys.path.remove(str(folder / "lib"))
    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.BatchNormalization(name="bn1")(keras.layers.Conv2D(8, 3, padding="same", name="c1")(inp))
    y = keras.layers.Lambda(lambda t: t * 0.5 + 0.1, name="affine")(y)
    y = user.Scale(1.5, name="scale")(keras.layers.Lambda(user.hard_swish, name="hswish")(y))
    y = keras.layers.BatchNormalization(name="bn2")(keras.layers.Conv2D(8, 3, padding="same", name="c2")(y))
    model = keras.Model(inp, keras.layers.Dense(4, name="scores")(keras.layers.GlobalAveragePooling2D()(y)))
    model.save(folder / "lambda.keras")
    rng = np.random.default_rng(0)
    np.savez(folder / "data.npz", x=rng.random((60, SIZE, SIZE, 3)).astype(np.float32), y=rng.integers(0, 4, 60))
    return folder / "lambda.keras", module_file, folder / "data.npz"


def test_a_lambda_model_asks_for_trust_then_for_its_module_in_one_line(lambda_model, tmp_path):
    from hostile import check_refused

    model, module_file, _ = lambda_model
    out = tmp_path / "out"
    check_refused(["export", "--model", model, "--out", out], tmp_path, code=1, out=out,
                  needles=("Lambda layer", "--trust-model"))
    check_refused(["export", "--model", model, "--trust-model", "--out", out], tmp_path, code=1, out=out,
                  needles=("'hard_swish'", "--custom-objects FILE.py"))


def test_trusted_lambda_and_custom_layers_fold_equalize_and_export(lambda_model, tmp_path):
    from edgesep.converters.export import ExportConfig, export
    from edgesep.source import ModelSource

    model_file, module_file, data = lambda_model
    loaded = ModelSource(model=str(model_file), data=str(data), trust_model=True,
                         custom_objects=str(module_file)).load()
    model, dataset = loaded.model, loaded.dataset
    result = export(model, tmp_path / "out", ExportConfig(precisions=("float32", "int8"), equalize=True), dataset)
    assert [f["bn"] for f in result.fold["folded"]] == ["bn1", "bn2"]
    assert result.artifact("tflite:float32").max_abs_error_vs_keras < 1e-4
    assert result.artifact("onnx:float32").max_abs_error_vs_keras < 1e-4
    assert result.artifact("tflite:int8").check().output_sqnr_db_vs_keras > 20


def test_custom_objects_must_be_a_python_file_and_import(tmp_path):
    from edgesep.converters.custom_objects import LoadOptions
    from edgesep.errors import UsageError

    (tmp_path / "bad.py").write_text("raise RuntimeError('boom')\n")
    with pytest.raises(UsageError, match="Python file"):
        LoadOptions(custom_objects=str(tmp_path / "layers.txt"))
    with pytest.raises(UsageError, match="not found"):
        LoadOptions(custom_objects=str(tmp_path / "missing.py"))
    with pytest.raises(UsageError, match="importing .*bad.py failed: RuntimeError: boom"):
        LoadOptions(custom_objects=str(tmp_path / "bad.py")).objects()


# --------------------------------------------------------------------------- unlabelled data, a collapsed int8 output

def test_unlabelled_npz_calibrates_and_verifies_and_a_collapsed_softmax_is_loud(tmp_path):
    """A 1000-way softmax over near-equal scores: int8 (scale 1/256) rounds every probability to 0."""
    import keras

    from edgesep.converters.export import ExportConfig, export
    from edgesep.source import ModelSource

    keras.utils.set_random_seed(0)
    inp = keras.Input((SIZE, SIZE, 3))
    y = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(8, 3, name="conv")(inp))
    dense = keras.layers.Dense(1000, activation="softmax", name="probs", kernel_initializer="zeros",
                               bias_initializer=keras.initializers.RandomUniform(-0.5, 0.5))
    keras.Model(inp, dense(y), name="wide").save(tmp_path / "wide.keras")
    np.savez(tmp_path / "x.npz", x=_images(60))
    loaded = ModelSource(str(tmp_path / "wide.keras"), data=str(tmp_path / "x.npz")).load()
    model, dataset = loaded.model, loaded.dataset
    assert not dataset.labelled
    result = export(model, tmp_path / "out", ExportConfig(precisions=("float32", "int8"), onnx=False), dataset)
    assert result.keras_accuracy is None and all(a.accuracy is None for a in result.artifacts)
    check = result.artifact("tflite:int8").check()
    assert check.top1_agreement_vs_keras is not None and check.output_sqnr_db_vs_keras < 10
    loud = [w for w in result.warnings if "COLLAPSED" in w]
    assert len(loud) == 1 and "model_int8.tflite" in loud[0] and "--int16x8" in loud[0]
    assert result.artifact("tflite:float32").check().output_sqnr_db_vs_keras > 60


def test_trust_model_loads_a_lambda_layer_from_a_legacy_h5_file_too(tmp_path):
    """--trust-model on a .h5/.hdf5 holding a Lambda layer: Keras' legacy loader has a safe mode too, and
    edgesep dropped --trust-model for it, so the file was refused with 'add --trust-model' though it was given."""
    import keras

    from edgesep.converters.graph import load_model
    from edgesep.errors import ConversionError

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Lambda(lambda t: t * 2.0, name="double"),
                              keras.layers.Conv2D(4, 3, name="conv")])
    for name in ("lambda.h5", "lambda.hdf5"):
        model.save(tmp_path / name)
        with pytest.raises(ConversionError, match="--trust-model"):
            load_model(tmp_path / name)
        loaded = load_model(tmp_path / name, trust_model=True)
        assert [layer.name for layer in loaded.layers] == ["double", "conv"]
    # inspect too: it had no --trust-model, so a Lambda model could not be inspected nor ranked (--sensitivity
    # named --trust-model, which inspect refused as no such option)
    from edgesep.cli import main
    from edgesep.converters.inspect import inspect_model

    with pytest.raises(ConversionError, match="--trust-model"):
        inspect_model(tmp_path / "lambda.h5")
    assert dict(inspect_model(tmp_path / "lambda.h5", trust_model=True).ops)["Lambda"] == 1
    assert main(["inspect", str(tmp_path / "lambda.hdf5"), "--json"]) == 1
    assert main(["inspect", str(tmp_path / "lambda.hdf5"), "--trust-model", "--json"]) == 0


def test_a_weights_only_h5_file_is_named_as_such(tmp_path):
    """model.save_weights('m.weights.h5') renamed m.h5: one line saying it holds weights only (before: Keras'
    'No model config found'), exit 1, nothing written, for export and inspect."""
    import keras

    from hostile import check_refused

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3)])
    model.save_weights(tmp_path / "m.weights.h5")
    (tmp_path / "m.weights.h5").rename(tmp_path / "m.h5")
    out = tmp_path / "out"
    check_refused(["export", "--model", tmp_path / "m.h5", "--out", out], tmp_path, code=1, out=out,
                  needles=("weights only", "model.save"))
    from edgesep.converters.inspect import inspect_model
    from edgesep.errors import ConversionError

    with pytest.raises(ConversionError, match="weights only"):
        inspect_model(tmp_path / "m.h5")


def test_ptq_copies_a_model_with_a_lambda_layer():
    """export --trust-model --ptq on a Lambda model died in a traceback: the PTQ copy went through
    keras.models.clone_model, which refuses a Lambda's code in safe mode. The copy is the model's own, weights
    apart."""
    import keras

    from edgesep.converters.ptq.walk import clone

    model = keras.Sequential([keras.Input((8, 8, 3)), keras.layers.Conv2D(4, 3, name="conv"),
                              keras.layers.Lambda(lambda t: t * 2.0, name="double")])
    copy = clone(model)
    x = np.random.default_rng(0).random((2, 8, 8, 3), dtype=np.float32)
    np.testing.assert_allclose(np.asarray(copy(x)), np.asarray(model(x)), rtol=1e-6)
    copy.layers[0].kernel.assign(np.zeros(copy.layers[0].kernel.shape, np.float32))
    assert np.any(np.asarray(model.layers[0].kernel) != 0)  # its own weights
