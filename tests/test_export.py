"""The export pipeline on the trained built-in model: TFLite float32/fp16/int8, ONNX, verification, export.json."""
import json
from collections import Counter

import numpy as np
import pytest

pytestmark = pytest.mark.slow


def _artifact(doc, precision, fmt="tflite"):
    return next(a for a in doc["artifacts"] if a["precision"] == precision and a["format"] == fmt)


def test_builtin_training_reaches_95_percent_and_is_cached(trained_split, digits):
    from edgesep.models import ModelConfig
    from edgesep.train import train_builtin

    model, info = trained_split
    assert info["test_accuracy"] >= 0.95
    again, info2 = train_builtin(ModelConfig(form="split"), dataset=digits)
    assert info2["cached"] and info2["cache_path"] == info["cache_path"] or info["cached"]
    for a, b in zip(model.get_weights(), again.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_export_json_follows_design_schema(split_export):
    doc, out = split_export
    on_disk = json.loads((out / "export.json").read_text())
    assert on_disk == json.loads(json.dumps(doc))
    assert doc["model"]["form"] == "split" and doc["model"]["input_shape"] == [1, 32, 32, 3]
    assert doc["model"]["params"] > 0 and doc["model"]["macs"] > 0
    dataset = dict(doc["dataset"])
    assert dataset.pop("input")["preprocess"]["name"] == "unit"
    assert dataset == {"name": "digits", "test_samples": 540, "calibration_samples": 200}
    check = doc["int8_check"]
    assert check["held_out_samples"] == 540 and check["top1_agreement"] >= 0.95 and check["output_sqnr_db"] > 20
    assert check["int8_range"][0] <= 0.0 and check["int8_range"][1] >= 0.99 and doc["warnings"] == []
    assert {a["path"] for a in doc["artifacts"]} == {"model.tflite", "model_fp16.tflite", "model_int8.tflite",
                                                     "model.onnx", "model_int8.onnx"}
    for art in doc["artifacts"]:
        data = (out / art["path"]).read_bytes()
        assert art["bytes"] == len(data) and len(art["sha256"]) == 64
        assert art["ops"] and art["accuracy"] is not None
        assert art["top1_agreement_vs_keras"] >= 0.95 and art["output_sqnr_db_vs_keras"] > 20
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "staging folder left behind"
    assert len(doc["fold"]["folded"]) == 9 and doc["fold"]["kept"] == []


def test_export_json_has_per_layer_quantization_error(split_export):
    doc, _ = split_export
    qe = doc["quant_error"]
    assert len(qe["layers"]) >= 9 and len(qe["worst"]) == 3
    assert set(qe["worst"]) <= {row["layer"] for row in qe["layers"]}
    assert qe["output"]["top1_agreement"] >= 0.95 and qe["output"]["sqnr_db"] > 10


def test_float_artifacts_match_keras(split_export):
    doc, _ = split_export
    assert _artifact(doc, "float32")["max_abs_error_vs_keras"] < 1e-4
    assert _artifact(doc, "float32", "onnx")["max_abs_error_vs_keras"] < 1e-4
    assert _artifact(doc, "float16")["max_abs_error_vs_keras"] < 2e-2
    for art in doc["artifacts"]:
        if art["precision"] != "int8":
            assert abs(art["accuracy"] - doc["keras_accuracy"]) <= 0.005


def test_int8_is_full_integer_and_keeps_accuracy(split_export):
    from edgesep.converters.inspect import inspect_model

    doc, out = split_export
    art = _artifact(doc, "int8")
    assert art["ops"]["DEPTHWISE_CONV_2D"] == 4 and art["ops"]["CONV_2D"] == 5
    assert not {"MUL", "ADD", "DEQUANTIZE", "QUANTIZE"} & set(art["ops"])
    info = inspect_model(out / "model_int8.tflite")
    assert info.inputs[0]["dtype"] == "int8" and info.outputs[0]["dtype"] == "int8"
    assert art["accuracy"] >= doc["keras_accuracy"] - 0.01


def test_onnx_has_no_batchnorm_left_next_to_convs(split_export):
    import onnx

    _, out = split_export
    graph = onnx.load(str(out / "model.onnx")).graph
    _assert_no_bn_after_conv(graph)
    assert Counter(n.op_type for n in graph.node)["Conv"] == 9


def _bn_style_after_conv(graph):
    """Mul/Add nodes that scale or shift a Conv output by a constant (a residual Add of two convs is fine)."""
    conv_outputs = {o for n in graph.node if n.op_type == "Conv" for o in n.output}
    constants = {i.name for i in graph.initializer} | {o for n in graph.node if n.op_type == "Constant"
                                                         for o in n.output}
    return [n for n in graph.node if n.op_type in ("Mul", "Add", "BatchNormalization")
            and set(n.input) & conv_outputs and set(n.input) & constants]


def _assert_no_bn_after_conv(graph):
    assert not [n for n in graph.node if n.op_type == "BatchNormalization"]
    assert _bn_style_after_conv(graph) == []


def test_mobilenet_v2_onnx_is_clean_where_raw_tf2onnx_is_not(tmp_path):
    import keras
    import onnx
    import tensorflow as tf
    import tf2onnx

    from edgesep.converters.onnx import export_onnx

    model = keras.applications.MobileNetV2(input_shape=(64, 64, 3), alpha=0.35, weights=None)
    spec = [tf.TensorSpec((None, 64, 64, 3), tf.float32, name="input")]
    raw, _ = tf2onnx.convert.from_keras(model, input_signature=spec, opset=17)
    assert len(_bn_style_after_conv(raw.graph)) >= 17  # the Mul tf2onnx leaves after every depthwise conv
    path = export_onnx(model, tmp_path / "mnv2.onnx")
    _assert_no_bn_after_conv(onnx.load(str(path)).graph)
    from edgesep.converters.verify import predict_keras, predict_onnx

    x = np.random.default_rng(0).random((4, 64, 64, 3), np.float32)
    np.testing.assert_allclose(predict_onnx(path, x), predict_keras(model, x), atol=1e-5)


def test_per_tensor_int8_recorded_and_applied(trained_split, digits, tmp_path):
    from edgesep.converters.export import ExportConfig, export
    from edgesep.converters.inspect import inspect_model

    doc = export(trained_split[0], tmp_path, ExportConfig(precisions=("int8",), onnx=False, per_channel=False,
                                                          io_dtype="uint8", calib_samples=50), digits).to_dict()
    assert doc["export_config"]["per_channel"] is False
    info = inspect_model(tmp_path / "model_int8.tflite")
    assert info.quantization["per_channel"] == 0 and info.quantization["per_tensor"] > 0
    assert info.inputs[0]["dtype"] == "uint8"
    assert doc["artifacts"][0]["accuracy"] is not None


def test_export_without_data_verifies_on_random_images(tmp_path):
    from edgesep.converters.export import ExportConfig, export
    from edgesep.models import build_model

    doc = export(build_model("fused", input_shape=(16, 16, 3), blocks=((8, 2),)), tmp_path,
                 ExportConfig(onnx=True)).to_dict()
    assert doc["dataset"]["name"] == "random" and doc["keras_accuracy"] is None
    assert all(a["accuracy"] is None and a["max_abs_error_vs_keras"] < 1e-4 for a in doc["artifacts"])


def test_int8_needs_calibration_data(tmp_path):
    from edgesep.converters import ConversionError
    from edgesep.errors import UsageError
    from edgesep.converters.export import ExportConfig, export
    from edgesep.converters.tflite import export_tflite
    from edgesep.models import build_model

    model = build_model("split", input_shape=(16, 16, 3), blocks=((8, 1),))
    with pytest.raises(ConversionError, match="representative data"):
        export_tflite(model, tmp_path / "m.tflite", precision="int8")
    with pytest.raises(UsageError, match="needs --data to calibrate"):
        export(model, tmp_path, ExportConfig(precisions=("int8",)))
    with pytest.raises(ConversionError, match="shape"):
        export_tflite(model, tmp_path / "m.tflite", precision="int8", representative_data=np.zeros((2, 8, 8, 3)))
    assert list(tmp_path.iterdir()) == []


def test_failed_step_leaves_no_model_file(trained_split, digits, tmp_path, monkeypatch):
    import edgesep.converters.onnx as onnx_mod
    from edgesep.converters import ConversionError
    from edgesep.converters.export import ExportConfig, export

    def broken(*args, **kwargs):
        raise ConversionError("ONNX conversion failed: simulated")

    monkeypatch.setattr(onnx_mod, "export_onnx", broken)
    with pytest.raises(ConversionError, match="simulated"):
        export(trained_split[0], tmp_path, ExportConfig(precisions=("float32",)), digits)
    assert list(tmp_path.iterdir()) == []


def test_per_tensor_with_equalize_does_not_lose_fidelity(trained_split, digits, tmp_path):
    from edgesep.converters.export import ExportConfig, export

    plain = export(trained_split[0], tmp_path / "plain",
                   ExportConfig(precisions=("int8",), onnx=False, per_channel=False), digits).to_dict()
    cle = export(trained_split[0], tmp_path / "cle",
                 ExportConfig(precisions=("int8",), onnx=False, per_channel=False, equalize=True), digits).to_dict()
    assert "equalize" not in plain and cle["export_config"]["equalize"] is True
    assert cle["export_config"]["equalize_guard"] is True
    plain_acc, cle_acc = plain["artifacts"][0]["accuracy"], cle["artifacts"][0]["accuracy"]
    guard = cle["equalize"]["guard"]
    # the guard's baseline is the int8 model the plain export wrote (same calibration images); the accuracy it
    # reports is of the artifact written, on the test split, which it did not choose on
    assert guard["accuracy_without_equalize"] == plain_acc and guard["accuracy"] == cle_acc
    assert guard["calibration_samples"] == cle["dataset"]["calibration_samples"] == 200
    assert guard["selection_samples"] == 200 and "held out" in guard["selection"]
    assert guard["chosen_on"]["images"] == "training images held out beside the calibration draw"
    assert guard["score"] == guard["agreement"]["chosen"] and "agreement" in guard["chosen_on"]["score"]
    agree, sqnr = guard["agreement"], guard["output_sqnr_db"]
    if guard["outcome"] == "kept every link":
        assert agree["every_link"] >= agree["without_equalize"] and not guard["trials"]
        assert sqnr["every_link"] >= sqnr["without_equalize"]
    else:  # equalizing every link lost agreement or SQNR on the selection images, so links were left out
        assert (agree["every_link"] < agree["without_equalize"] or sqnr["every_link"] < sqnr["without_equalize"])
        assert guard["trials"]
    if guard["outcome"] != "reverted":
        assert agree["chosen"] >= agree["without_equalize"] and sqnr["chosen"] >= sqnr["without_equalize"]
    assert guard["links"] == 8
    if guard["outcome"] == "reverted":  # the unequalized int8 model; the section still shows what was tried
        assert guard["links_kept"] == 0 and not guard["excluded"]
    else:
        assert guard["links_kept"] == len(cle["equalize"]["pairs"]) == 8 - len(guard["excluded"])
    # one per-channel clip (MINIMUM) per equalized ReLU6 link of the int8 model
    assert cle["artifacts"][0]["ops"].get("MINIMUM", 0) == (0 if guard["outcome"] == "reverted" else guard["links_kept"])
    from rich.console import Console

    from edgesep.converters.records import ExportResult
    from edgesep.report import export_table

    console = Console(width=200, record=True)
    console.print(export_table(ExportResult.from_dict(cle)))
    assert f"equalize guard: {guard['outcome']} ({guard['links_kept']}/8 links" in console.export_text()
    ratios = cle["equalize"]["depthwise_range_ratio"]
    assert len(ratios) == 4
    if guard["outcome"] in ("kept every link", "reverted"):
        assert all(r["after"] < r["before"] for r in ratios)


def test_relu6_mode_of_equalize_is_the_users_choice(trained_split, digits, tmp_path):
    from edgesep.converters.export import ExportConfig, export

    config = dict(precisions=("int8",), onnx=False, per_channel=False, equalize=True, calib_samples=50,
                  equalize_guard=False)
    clip = export(trained_split[0], tmp_path / "clip", ExportConfig(**config), digits).to_dict()
    replace = export(trained_split[0], tmp_path / "replace", ExportConfig(**config, relu6="replace"), digits).to_dict()
    # clip keeps the function with a per-channel MINIMUM after each equalized ReLU6; replace swaps in ReLU
    assert clip["equalize"]["relu6"] == "clip" and clip["artifacts"][0]["ops"]["MINIMUM"] == 8
    assert replace["equalize"]["relu6"] == "replace" and "MINIMUM" not in replace["artifacts"][0]["ops"]
    assert replace["export_config"]["relu6"] == "replace"
    assert "guard" not in clip["equalize"] and clip["export_config"]["equalize_guard"] is False
    from edgesep.errors import UsageError

    with pytest.raises(UsageError, match="relu6"):
        ExportConfig(relu6="gelu")


def test_onnx_int8_is_static_qdq_per_channel_and_keeps_accuracy(split_export):
    """export --int8 also writes model_int8.onnx (onnxruntime's static QDQ quantization, the same calibration
    images), verified like every artifact: on the built-in task within 0.5 points of the float model."""
    import onnx
    from onnx import numpy_helper

    doc, out = split_export
    art = _artifact(doc, "int8", "onnx")
    assert art["path"] == "model_int8.onnx" and art["runtime"] == "ONNX Runtime"
    assert abs(art["accuracy"] - doc["keras_accuracy"]) <= 0.005 and art["top1_agreement_vs_keras"] >= 0.98
    assert art["ops"]["QuantizeLinear"] > 0 and art["ops"]["DequantizeLinear"] > 0 and art["ops"]["Conv"] == 9
    graph = onnx.load(str(out / "model_int8.onnx")).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    weight_scales = [init[n.input[1]] for n in graph.node if n.op_type == "DequantizeLinear"
                     and init.get(n.input[0]) is not None and init[n.input[0]].ndim == 4]
    assert len(weight_scales) == 9 and all(s.ndim == 1 and s.size > 1 for s in weight_scales)  # per channel


def test_onnx_int8_per_tensor_and_no_onnx(trained_split, digits, tmp_path):
    import onnx
    from onnx import numpy_helper

    from edgesep.converters.export import ExportConfig, export

    doc = export(trained_split[0], tmp_path / "pt", ExportConfig(precisions=("int8",), per_channel=False,
                                                                 calib_samples=50), digits).to_dict()
    assert [a["path"] for a in doc["artifacts"]] == ["model_int8.tflite", "model.onnx", "model_int8.onnx"]
    graph = onnx.load(str(tmp_path / "pt" / "model_int8.onnx")).graph
    init = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    scales = [init[n.input[1]] for n in graph.node if n.op_type == "DequantizeLinear"
              and init.get(n.input[0]) is not None and init[n.input[0]].ndim == 4]
    assert scales and all(s.size == 1 for s in scales)
    none = export(trained_split[0], tmp_path / "none", ExportConfig(precisions=("int8",), onnx=False,
                                                                    calib_samples=50), digits).to_dict()
    assert [a["path"] for a in none["artifacts"]] == ["model_int8.tflite"]


def test_int16x8_end_to_end(trained_split, tmp_path, capsys):
    """--int16x8: 16-bit activations, 8-bit weights, verified, recorded, and benchable."""
    from edgesep.cli import main
    from edgesep.converters.inspect import inspect_model

    out = tmp_path / "out"
    assert main(["export", "--int16x8", "--no-onnx", "--out", str(out)]) == 0
    doc = json.loads((out / "export.json").read_text())
    art = _artifact(doc, "int16x8")
    assert art["path"] == "model_int16x8.tflite" and art["float_ops"] == [] and "warnings" not in doc
    assert abs(art["accuracy"] - doc["keras_accuracy"]) <= 0.01 and art["output_sqnr_db_vs_keras"] > 20
    info = inspect_model(out / "model_int16x8.tflite")
    assert info.quantization["per_channel"] > 0
    capsys.readouterr()
    assert main(["bench", str(out / "model_int16x8.tflite"), "--runs", "3", "--min-secs", "0", "--warmup-secs", "0",
                 "--data", "digits", "--json"]) == 0
    (result,) = json.loads(capsys.readouterr().out)["results"]
    assert result["error"] is None and abs(result["accuracy"] - art["accuracy"]) < 1e-9


def test_int16x8_names_the_ops_without_a_16x8_kernel(tmp_path):
    import keras

    from edgesep.converters.export import ExportConfig, export
    from edgesep.data import Dataset

    keras.utils.set_random_seed(0)
    inp = keras.Input((8, 8, 3))
    x = keras.layers.Activation("hard_swish")(keras.layers.Conv2D(4, 3, padding="same")(inp))
    model = keras.Model(inp, keras.layers.Dense(3)(keras.layers.GlobalAveragePooling2D()(x)), name="hswish")
    rng = np.random.default_rng(0)
    x = rng.random((40, 8, 8, 3), np.float32)
    data = Dataset("r", x[:30], None, x[30:], None, (), kind="npz")  # unlabelled: no accuracy to be at chance
    doc = export(model, tmp_path, ExportConfig(precisions=("float32", "int16x8"), onnx=False, calib_samples=20), data).to_dict()
    assert _artifact(doc, "int16x8")["float_ops"] == ["HARD_SWISH"]
    assert len(doc["warnings"]) == 1 and doc["warnings"][0].startswith("model_int16x8.tflite: HARD_SWISH has no 16x8")
