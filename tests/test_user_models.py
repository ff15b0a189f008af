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
