"""Every keras.applications family of issue 21, and a RegNet-like grouped network, through the default export.

Each network (weights=None, randomized BatchNorm statistics, a small input) is exported the way a user does,
``export(model, out, ExportConfig(), dataset)`` = ``edgesep export --model M.keras --data D.npz`` (float32
TFLite and ONNX), with data made by the family's own ``preprocess_input`` and labelled with the model's own
predictions (correct input: no warning may fire). Every artifact matches Keras (relative error < 1e-3, SQNR > 60 dB), the
ONNX output keeps the model's output name, and the export says nothing is wrong. One parametrized test, one
network built at a time (slow: about half a minute to a minute each on two cores).
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytestmark = pytest.mark.slow

CLASSES = 10
SAMPLES = 24

# name -> (constructor, preprocess_input's module, input size): the smallest input each family takes
FAMILIES = {
    "Xception": ("Xception", "xception", 71),
    "NASNetMobile": ("NASNetMobile", "nasnet", 32),
    "DenseNet121": ("DenseNet121", "densenet", 32),
    "ResNet50": ("ResNet50", "resnet50", 32),
    "EfficientNetV2B0": ("EfficientNetV2B0", "efficientnet_v2", 32),
    "ConvNeXtTiny": ("ConvNeXtTiny", "convnext", 32),
    "MobileNetV3Small": ("MobileNetV3Small", "mobilenet_v3", 32),
    "InceptionV3": ("InceptionV3", "inception_v3", 75),
    "RegNetLike": (None, None, 32),
}
INPUT_INDEPENDENT = {"MobileNetV3Small"}  # untrained at this size, its output does not depend on its input


def regnet_like(size: int):
    """A RegNet-style network: stages of (1x1 conv, 3x3 grouped conv with group width 8, 1x1 conv) + residual."""
    import keras
    from keras import layers

    inp = keras.Input((size, size, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, strides=2, padding="same")(inp)))
    for stage, width in enumerate((24, 48)):
        shortcut = layers.BatchNormalization()(layers.Conv2D(width, 1, strides=2)(x))
        y = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(width, 1)(x)))
        y = layers.Conv2D(width, 3, strides=2, padding="same", groups=width // 8, name=f"s{stage}_grouped")(y)
        y = layers.ReLU()(layers.BatchNormalization()(y))
        y = layers.BatchNormalization()(layers.Conv2D(width, 1)(y))
        x = layers.ReLU()(layers.Add()([shortcut, y]))
    x = layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, layers.Dense(CLASSES, activation="softmax", name="predictions")(x), name="regnet_like")


def _network(name: str):
    """(model, test inputs made by the family's preprocess_input from 0..255 pixels)."""
    import keras

    from keras_bn import randomize_bn

    constructor, module, size = FAMILIES[name]
    keras.utils.set_random_seed(0)
    if constructor is None:
        model = regnet_like(size)
    else:
        model = getattr(keras.applications, constructor)(weights=None, input_shape=(size, size, 3),
                                                          classes=CLASSES)
    randomize_bn(model)
    pixels = np.random.default_rng(1).uniform(0, 255, (SAMPLES, size, size, 3)).astype(np.float32)
    x = getattr(keras.applications, module).preprocess_input(pixels) if module else pixels / np.float32(255.0)
    return model, x


@pytest.mark.parametrize("name", list(FAMILIES))
def test_the_default_export_of_every_family_passes_its_checks(name, tmp_path):
    import onnxruntime as ort

    from edgesep.converters.export import ExportConfig, export
    from edgesep.converters.graph import output_names
    from edgesep.data import Dataset

    model, x = _network(name)
    labels = np.argmax(np.asarray(model(x, training=False)), axis=-1)  # correct labels: no warning may fire
    half = SAMPLES // 2
    data = Dataset(name, x[:half], labels[:half], x[half:], labels[half:], tuple(map(str, range(CLASSES))),
                   kind="npz")
    result = export(model, tmp_path / "out", ExportConfig(), data)
    assert [a.key for a in result.artifacts] == ["tflite:float32", "onnx:float32"]
    scale = float(np.max(np.abs(np.asarray(model(x[half:], training=False)))))
    for art in result.artifacts:
        assert art.max_abs_error_vs_keras / scale < 1e-3, (name, art.path, art.max_abs_error_vs_keras, scale)
        assert art.check().output_sqnr_db_vs_keras > 60, (name, art.path)  # float32: the same function
        assert art.accuracy == 1.0 and art.check().top1_agreement_vs_keras == 1.0, (name, art.path)
    # MobileNetV3Small at 32x32 with random weights answers the same for every image (the input's variation dies
    # out by its last blocks, whatever the images): the export says so, and nothing else
    expected = 1 if name in INPUT_INDEPENDENT else 0
    assert len(result.warnings) == expected and all("same for all" in w for w in result.warnings), result.warnings
    assert result.keras_accuracy == 1.0
    assert result.fold["kept"] == [] or name in ("DenseNet121", "NASNetMobile"), result.fold["kept"]
    session = ort.InferenceSession(str(tmp_path / "out" / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == output_names(model)


def test_mobilenetv3small_with_a_1000_way_softmax_int8_collapses_loudly(tmp_path):
    """Issue 21's silent failure: the int8 output is all zeros (0 dB, 0 % agreement); now a loud warning."""
    import keras

    from edgesep.converters.export import ExportConfig, export
    from edgesep.data import Dataset
    from keras_bn import randomize_bn

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=1000)
    randomize_bn(model)
    x = np.random.default_rng(1).uniform(0, 255, (60, 32, 32, 3)).astype(np.float32)
    data = Dataset("pixels", x[:40], None, x[40:], None, (), kind="npz")
    result = export(model, tmp_path / "out", ExportConfig(precisions=("float32", "int8"), onnx=False,
                                                          calib_samples=40), data)
    check = result.artifact("tflite:int8").check()
    assert check.output_sqnr_db_vs_keras < 10 and check.top1_agreement_vs_keras < 0.5
    loud = [w for w in result.warnings if "COLLAPSED" in w]
    assert len(loud) == 1 and "'predictions'" in loud[0] and "--int16x8" in loud[0]
