"""Mixed precision (--keep-float) and per-op sensitivity, on a network whose conv2 activations have an outlier
channel: one channel 300x the others, undone by conv3's weights, so plain int8 crushes conv2's other channels."""
from __future__ import annotations

import json
import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from edgesep.cli import main  # noqa: E402
from edgesep.converters.export_config import ExportConfig  # noqa: E402
from edgesep.errors import UsageError  # noqa: E402

SHAPE = (16, 16, 3)
OUTLIER = 300.0


def outlier_model(seed: int = 0, depthwise: bool = False):
    """conv1 -> conv2 (channel 0 x300) -> conv3 (1x1, reads channel 0 /300) -> conv4 -> conv5 -> gap -> head.

    ``depthwise``: conv3 is a 1x1 depthwise convolution (its per-channel int8 weights keep channel 0).
    """
    import keras

    keras.utils.set_random_seed(seed)
    inp = keras.Input(SHAPE, name="input")
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv1")(inp)
    x = keras.layers.Conv2D(16, 3, padding="same", activation="relu", name="conv2")(x)
    third = keras.layers.DepthwiseConv2D(1, activation="relu", name="conv3") if depthwise else \
        keras.layers.Conv2D(16, 1, activation="relu", name="conv3")
    x = third(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv4")(x)
    x = keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv5")(x)
    x = keras.layers.GlobalAveragePooling2D(name="gap")(x)
    model = keras.Model(inp, keras.layers.Dense(10, name="head")(x))
    conv2, conv3 = model.get_layer("conv2"), model.get_layer("conv3")
    w, b = conv2.get_weights()
    w[..., 0] *= OUTLIER
    b[0] *= OUTLIER
    conv2.set_weights([w, b])
    w, b = conv3.get_weights()
    w[:, :, 0, :] /= OUTLIER
    conv3.set_weights([w, b])
    return model


def _dataset():
    from edgesep.data import Dataset

    rng = np.random.default_rng(1)
    x, y = rng.random((400, *SHAPE), np.float32), rng.integers(0, 10, 400)
    return Dataset("random", x[:300], y[:300], x[300:], y[300:], tuple(str(i) for i in range(10)), kind="npz")


# ---------------------------------------------------------------------- option rules (no conversion)

@pytest.mark.parametrize("kwargs, message", [
    (dict(keep_float=("conv2",)), "add --int8"),
    (dict(precisions=("float32", "int8"), keep_float=("conv2",)), "--io-dtype float32"),
    (dict(precisions=("float32", "int8"), io_dtype="float32", target_sqnr_db=30.0), "--keep-float auto"),
    (dict(precisions=("float32", "int8"), io_dtype="float32", keep_float=("auto",), target_sqnr_db=30.0,
          target_agreement=0.9), "one target"),
    (dict(precisions=("float32", "int8"), io_dtype="float32", keep_float=("auto",), target_agreement=1.5),
     "(0, 1]"),
])
def test_keep_float_option_rules(kwargs, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("]", r"\]")):
        ExportConfig(**kwargs)


def test_keep_float_options_from_the_cli():
    config = ExportConfig.from_options(int8=True, keep_float="auto")
    assert config.io_dtype == "float32" and config.keep_float == ("auto",) and config.target_sqnr_db == 30.0
    assert ExportConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    named = ExportConfig.from_options(int8=True, keep_float="conv2, conv3", io_dtype=None)
    assert named.keep_float == ("conv2", "conv3") and named.target_sqnr_db is None
    assert ExportConfig.from_options(int8=True, keep_float="conv2,conv2", io_dtype=None).keep_float == ("conv2",)
    assert ExportConfig.from_options(int8=True, io_dtype=None).io_dtype == "int8"
    for bad in ("conv2,,conv3", "auto,conv2"):
        with pytest.raises(UsageError):
            ExportConfig.from_options(int8=True, keep_float=bad)


def test_cli_keep_float_usage_errors(capsys):
    assert main(["export", "--int8", "--keep-float", "conv2", "--io-dtype", "int8", "--out", "unused"]) == 2
    assert "--io-dtype float32" in capsys.readouterr().err
    assert main(["export", "--target-sqnr", "25", "--out", "unused"]) == 2


# ---------------------------------------------------------------------- real conversions

@pytest.fixture(scope="module")
def selective():
    from edgesep.converters.mixed import Selective

    model = outlier_model()
    data = _dataset()
    return model, data, Selective(model, data.calibration(200, 0))


@pytest.mark.slow
def test_sensitivity_puts_the_outlier_layer_first(selective):
    from edgesep.converters.sensitivity import rank
    from edgesep.converters.verify import predict_keras

    model, data, sel = selective
    x = data.x_test[:48]
    estimates = []
    report = rank(sel, x, predict_keras(model, x), quick=False, on_estimate=lambda n, s: estimates.append((n, s)))
    assert report.plain.sqnr_db < 20  # plain int8 loses the other channels of conv2
    first = report.rows[0]
    assert first.name == "conv2" and set(first.float_ops) == {"conv2", "conv3"}
    assert first.score.sqnr_db > 30 and first.sqnr_gain_db > 10
    assert 0 < first.mac_share < 0.5 and estimates and estimates[0][0] == len(report.rows) == 7
    assert all(r.sqnr_gain_db < first.sqnr_gain_db for r in report.rows[1:])
    quick = rank(sel, x, predict_keras(model, x), quick=True)
    assert quick.rows[0].name == "conv2" and quick.rows[0].layer_sqnr_db < 20


@pytest.mark.slow
def test_keep_float_names_an_unknown_op(selective):
    _, _, sel = selective
    with pytest.raises(UsageError, match="no op named 'nope'.*conv2"):
        sel.expand(("nope",))


@pytest.mark.slow
def test_keep_float_auto_export_reaches_the_target(selective, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    from edgesep.converters.export import export

    model, data, _ = selective
    config = ExportConfig.from_options(int8=True, keep_float="auto", target_sqnr=30.0)
    doc = export(model, tmp_path / "out", config, data).to_dict()
    recipe = doc["keep_float"]
    assert recipe["met"] is True and recipe["target"] == 30.0 and recipe["target_metric"] == "sqnr_db"
    assert recipe["kept"] == ["conv2"] and 1 <= len(recipe["float_ops"]) <= 3
    assert recipe["chosen_on"]["images"].startswith("training images") and recipe["plain_int8"]["sqnr_db"] < 20
    by_path = {a["path"]: a for a in doc["artifacts"]}
    assert by_path["model_int8.tflite"]["output_sqnr_db_vs_keras"] >= 30  # on the test split it never chose on
    assert by_path["model_int8.onnx"]["output_sqnr_db_vs_keras"] >= 30 and recipe["onnx_float_nodes"] >= 2
    interpreter = Interpreter(model_path=str(tmp_path / "out" / "model_int8.tflite"))
    dtypes = {t["index"]: t["dtype"] for t in interpreter.get_tensor_details()}
    float_convs = [op for op in interpreter._get_ops_details()
                   if op["op_name"] == "CONV_2D" and dtypes[op["outputs"][0]] == np.float32]
    assert len(float_convs) == 2  # conv2 and conv3 compute in float, the rest in int8
    assert json.loads((tmp_path / "out" / "export.json").read_text())["keep_float"] == json.loads(json.dumps(recipe))


@pytest.mark.slow
def test_keep_float_auto_unreachable_keeps_plain_int8(selective, tmp_path):
    from edgesep.converters.export import export

    model, data, _ = selective
    config = ExportConfig.from_options(int8=True, keep_float="auto", target_sqnr=200.0, no_onnx=True)
    doc = export(model, tmp_path / "out", config, data).to_dict()
    recipe = doc["keep_float"]
    assert recipe["met"] is False and recipe["kept"] == [] and recipe["float_ops"] == []
    assert any("not reached" in w and "plain int8" in w for w in doc["warnings"])
    assert all(step["mac_share"] > 0 for step in recipe["steps"])


@pytest.mark.slow
def test_cli_inspect_sensitivity(selective, tmp_path, capsys):
    model, data, _ = selective
    path = tmp_path / "outlier.keras"
    model.save(path)
    np.savez(tmp_path / "d.npz", x=np.concatenate([data.x_train, data.x_test]),
             y=np.concatenate([data.y_train, data.y_test]))
    assert main(["inspect", str(path), "--sensitivity", "--quick", "--data", str(tmp_path / "d.npz"),
                 "--samples", "32", "--json"]) == 0
    out = capsys.readouterr()
    doc = json.loads(out.out)
    assert doc["ranking"][0]["op"] == "conv2" and doc["quick"] and "about" in out.err
    assert main(["inspect", str(path), "--sensitivity"]) == 2


def test_too_few_training_images_for_auto_name_keep_float_not_the_guard():
    """2 images in --data leave 1 training image: --keep-float auto said 'the equalize guard needs ...', which
    the user never asked for."""
    from types import SimpleNamespace

    from edgesep.converters.keep_float import selection_images
    from edgesep.errors import DataError

    dataset = SimpleNamespace(x_train=np.zeros((1, 4, 4, 3), np.float32))
    config = ExportConfig.from_options(int8=True, keep_float="auto")
    with pytest.raises(DataError, match=r"^--keep-float auto needs at least 2 training images"):
        selection_images(dataset, config)
