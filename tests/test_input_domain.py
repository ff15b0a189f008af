"""The model's input domain: presets equal Keras' own preprocess_input, the model tells its preset, a .npz
reaches the converter unchanged, and int8 calibrated in the model's domain is as good as the raw converter."""
import json

import numpy as np
import pytest
from PIL import Image

from edgesep.data import PRESETS, load_dataset

SIZE = 16


def _rows(x):
    """The samples of ``x`` as a sorted list of bytes (the train/test split reorders them)."""
    return sorted(np.ascontiguousarray(r, dtype=np.float32).tobytes() for r in x)


@pytest.fixture(scope="module")
def image_folder(tmp_path_factory):
    """12 distinct RGB images at SIZE x SIZE (no resizing on load) and their pixels as PIL reads them."""
    root = tmp_path_factory.mktemp("imgs")
    rng = np.random.default_rng(3)
    pixels = []
    for c in ("a", "b"):
        (root / c).mkdir()
        for i in range(6):
            img = rng.integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
            Image.fromarray(img).save(root / c / f"{i}.png")
            pixels.append(np.asarray(Image.open(root / c / f"{i}.png").convert("RGB")))
    return root, np.stack(pixels)


def _keras_preprocessors():
    from keras.applications import (densenet, efficientnet, imagenet_utils, mobilenet, mobilenet_v2,
                                     mobilenet_v3, resnet50, vgg16, xception)

    return {
        "symmetric": [mobilenet_v2.preprocess_input, mobilenet.preprocess_input, xception.preprocess_input,
                      lambda x: imagenet_utils.preprocess_input(x, mode="tf")],
        "raw": [efficientnet.preprocess_input, mobilenet_v3.preprocess_input],
        "caffe": [resnet50.preprocess_input, vgg16.preprocess_input,
                  lambda x: imagenet_utils.preprocess_input(x, mode="caffe")],
        "torch": [densenet.preprocess_input, lambda x: imagenet_utils.preprocess_input(x, mode="torch")],
    }


def test_presets_equal_keras_preprocess_input(image_folder):
    root, pixels = image_folder
    for preset, functions in _keras_preprocessors().items():
        ds = load_dataset(str(root), (SIZE, SIZE, 3), preprocess=preset)
        got = _rows(np.concatenate([ds.x_train, ds.x_test]))
        for fn in functions:
            expected = np.asarray(fn(pixels.astype(np.float32).copy()))  # Keras works in place on float arrays
            assert got == _rows(expected), (preset, fn)
        assert ds.preprocess is PRESETS[preset] and ds.input_doc()["preprocess"]["name"] == preset
    unit = load_dataset(str(root), (SIZE, SIZE, 3), preprocess="unit")
    assert _rows(np.concatenate([unit.x_train, unit.x_test])) == _rows(pixels.astype(np.float32) / 255.0)


def test_explicit_preprocess_is_pixel_times_scale_plus_offset(image_folder):
    root, pixels = image_folder
    ds = load_dataset(str(root), (SIZE, SIZE, 3), preprocess="scale=0.5,offset=-10,bgr")
    expected = pixels[..., ::-1].astype(np.float32) * np.float32(0.5) - np.float32(10)
    assert _rows(np.concatenate([ds.x_train, ds.x_test])) == _rows(expected)
    assert ds.input_doc()["preprocess"] == {"name": "custom", "spec": "scale=0.5,offset=-10,bgr",
                                            "scale": [0.5], "offset": [-10.0], "bgr": True,
                                            "families": "given explicitly"}


def _bare(name, first=None):
    import keras

    inp = keras.Input((SIZE, SIZE, 3))
    x = first(inp) if first is not None else inp
    x = keras.layers.Conv2D(4, 3)(x)
    return keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)), name=name)


def test_the_model_tells_its_preset():
    import keras

    from edgesep.converters.input_domain import suggest_preprocess

    apps = keras.applications
    cases = {
        "symmetric": [apps.MobileNetV2(weights=None, input_shape=(32, 32, 3), alpha=0.35, classes=3),
                      apps.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=3,
                                            include_preprocessing=False, minimalistic=True),
                      _bare("xception"), _bare("resnet50v2")],
        "raw": [apps.EfficientNetB0(weights=None, input_shape=(32, 32, 3), classes=3),
                apps.MobileNetV3Small(weights=None, input_shape=(32, 32, 3), classes=3, minimalistic=True),
                _bare("my_net", keras.layers.Rescaling(1 / 127.5, offset=-1))],
        "caffe": [_bare("resnet50"), _bare("vgg16")],
        "torch": [_bare("densenet121")],
    }
    for preset, models in cases.items():
        for model in models:
            recipe, reason = suggest_preprocess(model)
            assert recipe is PRESETS.get(preset), (model.name, preset, reason)
    nested = keras.Sequential([keras.Input((32, 32, 3)), cases["symmetric"][0], keras.layers.Dense(2)])
    assert suggest_preprocess(nested)[0] is PRESETS["symmetric"]
    for model in (_bare("my_net"), _bare("scaled", keras.layers.Rescaling(2.0, offset=-1))):
        recipe, reason = suggest_preprocess(model)
        assert recipe is None and "no keras.applications name" in reason


def test_user_model_with_images_needs_a_stated_preprocessing(image_folder, tmp_path, capsys):
    from edgesep.cli import main

    root, _ = image_folder
    _bare("my_net").save(tmp_path / "m.keras")
    out = tmp_path / "out"
    assert main(["export", "--model", str(tmp_path / "m.keras"), "--data", str(root), "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgesep: error: --data") and "--preprocess unit|symmetric" in err[0]
    assert not out.exists()
    np.savez(tmp_path / "d.npz", x=np.zeros((12, SIZE, SIZE, 3), np.float32), y=np.arange(12) % 3)
    for args, text in ((["--data", str(tmp_path / "d.npz"), "--preprocess", "raw"], "--preprocess is for images"),
                       (["--data", str(root), "--preprocess", "imagenet"], "unknown --preprocess 'imagenet'"),
                       (["--resize"], "--resize says how --data becomes model input")):
        assert main(["export", "--model", str(tmp_path / "m.keras"), *args, "--out", str(out)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and text in err[0], err
    assert main(["export", "--preprocess", "caffe", "--out", str(out)]) == 2
    assert "the built-in network is trained on images in [0, 1]" in capsys.readouterr().err


def test_bench_data_uses_the_preprocessing_export_recorded(image_folder, tmp_path, bench_models):
    from edgesep.bench import accuracy_npz
    from edgesep.data import DataOptions

    root, pixels = image_folder
    model = tmp_path / "m" / "float.tflite"
    model.parent.mkdir()
    model.write_bytes(bench_models["float.tflite"].read_bytes())  # input 16x16x3
    notes = []
    made = accuracy_npz(DataOptions(str(root)), [model], tmp_path, note=notes.append)
    assert np.load(made)["x"].max() <= 1.0 and "--preprocess unit" in notes[-1] and "no export.json" in notes[-1]
    from edgesep.converters.records import DatasetSummary
    from export_records import minimal_export

    doc = minimal_export(dataset=DatasetSummary("folder", 1, None, {"preprocess": PRESETS["symmetric"].to_dict()}))
    (model.parent / "export.json").write_text(json.dumps(doc))
    made = accuracy_npz(DataOptions(str(root)), [model], tmp_path, note=notes.append)
    x = np.load(made)["x"]
    assert x.min() < -0.9 and "--preprocess symmetric" in notes[-1] and "export.json" in notes[-1]
    made = accuracy_npz(DataOptions(str(root), "raw"), [model], tmp_path, note=notes.append)
    assert np.load(made)["x"].max() > 200 and len(notes) == 2  # given: no note
    # a second model with no export.json beside it gets its own preprocessing, not the first one's
    other = tmp_path / "other" / "float.tflite"
    other.parent.mkdir()
    other.write_bytes(bench_models["int8.tflite"].read_bytes())
    made = accuracy_npz(DataOptions(str(root)), [model, other], tmp_path, note=notes.append)
    arrays = dict(np.load(made))
    from edgesep.devices.runner import _pick_x

    mine, theirs = (_pick_x(arrays, (1, 16, 16, 3), str(p)) for p in (model, other))
    assert mine.min() < -0.9 and theirs.min() >= 0.0 and theirs.max() <= 1.0
    assert np.array_equal(arrays["x"], mine)  # the first model's, for a runner that knows no x@SHA


# ---------------------------------------------------------------- real models (slow)

def _randomize_batchnorm(model, seed=0):
    """Random BN statistics and affine parameters, so that folding changes every convolution."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.5, c),
                               rng.uniform(0.5, 2.0, c)])


def _pixels(n, size, seed):
    """Smooth random RGB images 0..255 (blurry blobs plus noise), float32."""
    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (n, 4, 4, 3)).astype(np.float32)
    up = np.stack([np.asarray(Image.fromarray(img[..., ch], mode="F").resize((size, size), Image.BILINEAR))
                   for img in low for ch in range(3)]).reshape(n, 3, size, size).transpose(0, 2, 3, 1)
    return np.clip(up + rng.normal(0, 20, up.shape), 0, 255).astype(np.float32)


def _sqnr(outputs, reference):
    return 10 * np.log10(np.sum(reference.astype(np.float64) ** 2) / np.sum((outputs - reference) ** 2.0))


def _raw_int8(model, calib):
    """The TFLite converter's own int8 of the unfolded model, calibrated on ``calib``: no edgesep code. (From the
    traced, frozen inference function: ``from_keras_model`` converts the same graph but first saves a SavedModel,
    which costs EfficientNetB0 about 15 s on two cores.)"""
    import tensorflow as tf
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32)
    infer = tf.function(lambda x: model(x, training=False)).get_concrete_function(spec)
    converter = tf.lite.TFLiteConverter.from_concrete_functions([convert_variables_to_constants_v2(infer)])
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.mark.slow
@pytest.mark.parametrize("family", ["mobilenet_v2", "efficientnet_b0"])
def test_int8_in_the_models_domain_matches_the_raw_converter(family, tmp_path, monkeypatch):
    import keras
    import tensorflow as tf

    from edgesep.converters.export import ExportConfig, export
    from edgesep.converters.verify import predict_keras, predict_tflite

    keras.utils.set_random_seed(0)
    if family == "mobilenet_v2":
        model = keras.applications.MobileNetV2(weights=None, input_shape=(48, 48, 3), alpha=0.35, classes=10,
                                               classifier_activation=None)
        x = keras.applications.mobilenet_v2.preprocess_input(_pixels(160, 48, 1))  # [-1, 1]
    else:
        model = keras.applications.EfficientNetB0(weights=None, input_shape=(48, 48, 3), classes=10,
                                                  classifier_activation=None)
        x = keras.applications.efficientnet.preprocess_input(_pixels(160, 48, 1))  # 0..255, Rescaling inside
    _randomize_batchnorm(model)
    labels = np.argmax(np.asarray(model(x, training=False)), axis=-1)  # labels the model gets right: no warning
    np.savez(tmp_path / "data.npz", x=x, y=labels)
    ds = load_dataset(str(tmp_path / "data.npz"), (48, 48, 3), num_classes=10)
    calib = ds.calibration(100, seed=0)

    made = []  # every converter edgesep builds; their representative datasets are what was calibrated on
    for constructor in ("from_keras_model", "from_concrete_functions"):
        def recording(*args, _make=getattr(tf.lite.TFLiteConverter, constructor), **kwargs):
            made.append(_make(*args, **kwargs))
            return made[-1]

        monkeypatch.setattr(tf.lite.TFLiteConverter, constructor, staticmethod(recording))
    doc = export(model, tmp_path / "out", ExportConfig(precisions=("int8",), onnx=False, calib_samples=100), ds).to_dict()
    monkeypatch.undo()
    feeds = [getattr(c.representative_dataset, "input_gen", c.representative_dataset) for c in made]
    seen = [np.concatenate([batch[0] for batch in feed()]) for feed in feeds if feed is not None]
    assert len(seen) == 1 and seen[0].dtype == np.float32
    np.testing.assert_array_equal(seen[0], calib)  # the .npz values, unscaled and unclipped
    assert set(_rows(seen[0])) <= set(_rows(x))
    assert (seen[0].min() < -0.9) if family == "mobilenet_v2" else (seen[0].max() > 200)

    reference = predict_keras(model, ds.x_test)
    ours = _sqnr(predict_tflite(tmp_path / "out" / "model_int8.tflite", ds.x_test), reference)
    (tmp_path / "raw.tflite").write_bytes(_raw_int8(model, calib))
    raw = _sqnr(predict_tflite(tmp_path / "raw.tflite", ds.x_test), reference)
    print(f"{family}: edgesep int8 SQNR {ours:.2f} dB, raw converter {raw:.2f} dB")
    assert ours >= raw - 1.0, (family, ours, raw)
    check = doc["int8_check"]
    assert check["output_sqnr_db"] == pytest.approx(ours, abs=1e-6) and check["held_out_samples"] == len(ds.x_test)
    # MobileNetV2 (alpha 0.35, 48x48, random weights) gives the same logits for every image (spread 5e-7 of
    # their size): the export says so, and nothing else
    same = [w for w in doc["warnings"] if "is the same for all" in w]
    assert check["saturated_values"] < 0.01 and len(same) == (family == "mobilenet_v2") == len(doc["warnings"])
    assert doc["dataset"]["input"]["as_given"] is True and doc["dataset"]["input"]["kind"] == "npz"


@pytest.mark.slow
def test_calibration_outside_the_data_domain_is_reported(tmp_path):
    """The failure this issue found: calibrated on [0, 1], used on [-1, 1]: export warns and says so."""
    import keras

    from edgesep.converters.export import ExportConfig, export
    from edgesep.data import Dataset
    from edgesep.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("split", input_shape=(16, 16, 3), blocks=((8, 1),), num_classes=4)
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (120, 16, 16, 3)).astype(np.float32)
    y = np.argmax(np.asarray(model(x, training=False)), axis=-1)  # the model is right on its own domain
    clipped = Dataset("clipped", np.clip(x[:80], 0, 1), y[:80], x[80:], y[80:], ("0", "1", "2", "3"), kind="npz")
    doc = export(model, tmp_path, ExportConfig(precisions=("int8",), onnx=False, calib_samples=50), clipped).to_dict()
    check = doc["int8_check"]
    assert check["int8_range"][0] >= -0.01 and 0.4 < check["saturated_values"] < 0.6
    assert "saturate" in doc["warnings"][0] and "far from the data's" in doc["warnings"][1]
    assert all("COLLAPSED" in w for w in doc["warnings"][2:])  # and the int8 output may well have collapsed
    from rich.console import Console

    from edgesep.converters.records import ExportResult
    from edgesep.report import export_table

    console = Console(width=200, record=True)
    console.print(export_table(ExportResult.from_dict(doc)))
    text = console.export_text()
    assert "tensors used as given" in text and "warning: " in text and "held-out inputs" in text
