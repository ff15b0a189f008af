"""The per-layer quantization error report, on real TFLite conversions of a small network with spread BN."""
from __future__ import annotations

import json
import os
import shutil

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import keras  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from ai_edge_litert.interpreter import Interpreter, OpResolverType  # noqa: E402

from edgesep.cli import main  # noqa: E402
from edgesep.converters import ConversionError  # noqa: E402
from edgesep.converters.fold import fold_batchnorm  # noqa: E402
from edgesep.converters.quant_error import quant_error_report  # noqa: E402
from edgesep.converters.tflite import export_tflite  # noqa: E402
from edgesep.models import build_model  # noqa: E402

from test_equalize import BLOCKS, SHAPE, dw_ratio, spread_bn  # noqa: E402

pytestmark = pytest.mark.slow  # every test reads int8 models converted by TFLite's converter

LAYERS = ["stem_conv", "block1_dw", "block1_pw", "block2_dw", "block2_pw", "pool", "classifier"]


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """A spread-BN split model, its images, and float32 / int8 per-channel / int8 per-tensor TFLite files."""
    keras.utils.set_random_seed(0)
    model = spread_bn(build_model("split", SHAPE, 10, blocks=BLOCKS, activation="relu"))
    x = np.random.default_rng(1).random((32, *SHAPE), dtype=np.float32)
    out = tmp_path_factory.mktemp("qerr")
    paths = {"float": export_tflite(model, out / "model.tflite"),
             "channel": export_tflite(model, out / "model_int8.tflite", precision="int8", representative_data=x),
             "tensor": export_tflite(model, out / "pt" / "model_int8.tflite", precision="int8",
                                     representative_data=x, per_channel=False)}
    return model, x, paths


@pytest.fixture(scope="module")
def reports(bundle):
    model, x, paths = bundle
    return {"channel": quant_error_report(paths["float"], paths["channel"], x),
            "tensor": quant_error_report(paths["float"], paths["tensor"], x)}


def test_names_layers_and_worst(reports, bundle):
    model, _, _ = bundle
    doc = reports["channel"]
    assert [r["layer"] for r in doc["layers"]] == [*LAYERS, "softmax"]  # names read from the flatbuffer
    assert [r["op"] for r in doc["layers"][:3]] == ["CONV_2D", "DEPTHWISE_CONV_2D", "CONV_2D"]
    by_sqnr = sorted((r for r in doc["layers"] if r["sqnr_db"] is not None), key=lambda r: r["sqnr_db"])
    assert doc["worst"] == [r["layer"] for r in by_sqnr[:3]]
    assert doc["samples"] == 32 and doc["weights"] == "per-channel"
    folded = fold_batchnorm(model)
    for row in doc["depthwise"]:
        assert row["range_ratio"] == pytest.approx(dw_ratio(folded, row["layer"]), rel=1e-4)
        assert row["range_ratio"] > 50
    json.dumps(doc, allow_nan=False)


def test_rows_are_consistent(reports):
    for row in reports["tensor"]["layers"]:
        assert row["rmse"] <= row["max_abs_error"] + 1e-12
        if row["scale"]:
            assert row["rmse_per_scale"] == pytest.approx(row["rmse"] / row["scale"])
        lo, hi = row["float_range"]
        assert lo <= hi


def run_output(path, x) -> np.ndarray:
    """The model's output on each image, dequantized: the plain interpreter (same built-in kernels as the
    report, whose numbers XNNPACK would move in the last digits), no preserved tensors."""
    it = Interpreter(model_path=str(path),
                     experimental_op_resolver_type=OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES)
    it.allocate_tensors()
    inp, out = it.get_input_details()[0], it.get_output_details()[0]
    results = []
    for image in x:
        if inp["dtype"] == np.int8:
            scale, zero = inp["quantization"]
            image = np.clip(np.round(image / scale + zero), -128, 127).astype(np.int8)
        it.set_tensor(inp["index"], image[None])
        it.invoke()
        y = it.get_tensor(out["index"])[0].astype(np.float64)
        if out["dtype"] == np.int8:
            scale, zero = out["quantization"]
            y = (y - zero) * scale
        results.append(y)
    return np.array(results)


def test_output_sqnr_matches_an_independent_run(reports, bundle):
    _, x, paths = bundle
    ref, got = run_output(paths["float"], x), run_output(paths["tensor"], x)
    sqnr = 10 * np.log10(np.sum(ref ** 2) / np.sum((got - ref) ** 2))
    doc = reports["tensor"]
    assert doc["output"]["sqnr_db"] == pytest.approx(sqnr, abs=1e-6)
    assert doc["layers"][-1]["sqnr_db"] == doc["output"]["sqnr_db"]
    assert doc["output"]["top1_agreement"] == pytest.approx(np.mean(ref.argmax(1) == got.argmax(1)))


def test_per_channel_beats_per_tensor_on_spread_depthwise(reports):
    channel = {r["layer"]: r for r in reports["channel"]["layers"]}
    tensor = {r["layer"]: r for r in reports["tensor"]["layers"]}
    assert reports["tensor"]["weights"] == "per-tensor"
    for name in ("block1_dw", "block2_dw"):
        assert channel[name]["weight_sqnr_db"] > tensor[name]["weight_sqnr_db"] + 5, name
        assert channel[name]["sqnr_db"] > tensor[name]["sqnr_db"], name


def test_keras_reference_gives_the_same_numbers(reports, bundle):
    model, x, paths = bundle
    doc = quant_error_report(model, paths["tensor"], x[:8])
    first8 = quant_error_report(paths["float"], paths["tensor"], x[:8])
    assert [r["layer"] for r in doc["layers"]] == [r["layer"] for r in first8["layers"]]
    for a, b in zip(doc["layers"], first8["layers"]):
        assert a["rmse"] == pytest.approx(b["rmse"], rel=1e-4, abs=1e-7)
    assert doc["reference"].startswith("keras:")


def test_bad_inputs(bundle, tmp_path):
    _, x, paths = bundle
    with pytest.raises(ConversionError, match="int8 model not found"):
        quant_error_report(paths["float"], tmp_path / "missing.tflite", x)
    with pytest.raises(ConversionError, match="no quantized ops"):
        quant_error_report(paths["float"], paths["float"], x)
    with pytest.raises(ConversionError, match=r"data images have shape \(8, 8, 3\)"):
        quant_error_report(paths["float"], paths["channel"], np.zeros((2, 8, 8, 3), np.float32))
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(b"not a flatbuffer")
    with pytest.raises(ConversionError, match="cannot load TFLite model"):
        quant_error_report(paths["float"], junk, x)


def test_cli_inspect_quant_error(bundle, tmp_path, capsys):
    _, _, paths = bundle
    assert main(["inspect", str(paths["channel"]), "--quant-error", "--samples", "4", "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["quant_error"]["samples"] == 4 and doc["quant_error"]["data"] == "digits"
    assert doc["quant_error"]["reference"].endswith("model.tflite")
    assert "ops" in doc  # the inspect sections stay
    assert main(["inspect", str(paths["channel"]), "--quant-error", "--samples", "4"]) == 0
    assert "Quantization error" in capsys.readouterr().out
    lonely = tmp_path / "model_int8.tflite"
    shutil.copy(paths["channel"], lonely)
    assert main(["inspect", str(lonely), "--quant-error"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("edgesep: error: --quant-error needs a float reference") and err.count("\n") == 1
    assert main(["inspect", str(lonely), "--data", "digits"]) == 2
    shutil.copy(paths["float"], tmp_path / "model.tflite")  # an equalized export: model.tflite is not its float
    from export_records import minimal_export

    (tmp_path / "export.json").write_text(json.dumps(minimal_export(equalize={"relu6": "clip"})))
    assert main(["inspect", str(lonely), "--quant-error", "--samples", "2", "--json"]) == 0
    assert "was equalized" in json.loads(capsys.readouterr().out)["quant_error"]["notes"][0]
    # the accuracy guard reverted the equalization: model.tflite is the int8 model's float model again
    reverted = minimal_export(equalize={"relu6": "clip", "guard": {"outcome": "reverted"}})
    (tmp_path / "export.json").write_text(json.dumps(reverted))
    assert main(["inspect", str(lonely), "--quant-error", "--samples", "2", "--json"]) == 0
    assert not any("equalized" in n for n in json.loads(capsys.readouterr().out)["quant_error"]["notes"])
