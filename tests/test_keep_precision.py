"""--keep-precision int16: the ops --keep-float keeps run at 16-bit activations (ai-edge-quantizer), not float.

The network: test_keep_float's outlier network with conv3 a 1x1 *depthwise* convolution, so that undoing the
outlier (channel 0 of conv2 x300, conv3's channel-0 weight /300) survives int8 weights, which are per channel
there. (In test_keep_float's network conv3 is a full convolution: its channel-0 weights are 300x smaller than
the other input channels' in the same output channel and round to zero in int8, a weight loss no activation
precision repairs; int16 says so there, float reaches the target.)
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

from edgesep.cli import main  # noqa: E402
from edgesep.converters.export_config import ExportConfig  # noqa: E402
from edgesep.errors import UsageError  # noqa: E402

from test_keep_float import SHAPE, _dataset, outlier_model  # noqa: E402


def depthwise_outlier_model(seed: int = 0):
    """conv1 -> conv2 (channel 0 x300) -> conv3 (1x1 depthwise, channel 0 /300) -> conv4 -> conv5 -> gap -> head."""
    return outlier_model(seed, depthwise=True)


# ---------------------------------------------------------------------- option rules (no conversion)

def test_keep_precision_option_rules():
    config = ExportConfig.from_options(int8=True, keep_float="auto", keep_precision="int16")
    assert config.keep_precision == "int16" and config.io_dtype == "float32"
    assert ExportConfig.from_dict(json.loads(json.dumps(config.to_dict()))) == config
    plain = ExportConfig.from_options(int8=True, keep_float="auto")
    assert plain.keep_precision == "float" and "keep_precision" not in plain.to_dict()  # export keys unchanged
    with pytest.raises(UsageError, match="add --int8 --keep-float"):
        ExportConfig.from_options(int8=True, keep_precision="int16")
    with pytest.raises(UsageError, match="valid: float, int16"):
        ExportConfig(precisions=("float32", "int8"), io_dtype="float32", keep_float=("conv2",), keep_precision="fp8")


@pytest.mark.parametrize("argv, message", [
    (["--int8", "--keep-precision", "int16"], "--keep-float"),
    (["--keep-float", "conv2", "--keep-precision", "int16"], "add --int8"),
    (["--int8", "--keep-float", "conv2", "--keep-precision", "int4"], "'int4' is not one of"),
])
def test_cli_keep_precision_usage_errors(argv, message, capsys, tmp_path):
    assert main(["export", *argv, "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("edgesep: error:") and message in err[0]
    assert not (tmp_path / "out").exists()


# ---------------------------------------------------------------------- real conversions

@pytest.fixture(scope="module")
def int16_export(tmp_path_factory):
    """``edgesep export --int8 --keep-float auto --keep-precision int16`` of the depthwise outlier network."""
    tmp = tmp_path_factory.mktemp("keep_int16")
    data = _dataset()
    model = depthwise_outlier_model()
    model.save(tmp / "outlier.keras")
    np.savez(tmp / "d.npz", x=np.concatenate([data.x_train, data.x_test]),
             y=np.concatenate([data.y_train, data.y_test]))
    import contextlib
    import io

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["export", "--model", str(tmp / "outlier.keras"), "--data", str(tmp / "d.npz"), "--int8",
                     "--keep-float", "auto", "--keep-precision", "int16", "--out", str(tmp / "out")])
    assert code == 0
    return tmp / "out", out.getvalue()


@pytest.mark.slow
def test_int16_auto_reaches_the_target_with_int16_activations(int16_export):
    from edgesep.converters.keep_int16 import output_dtypes

    out, printed = int16_export
    doc = json.loads((out / "export.json").read_text())
    recipe = doc["keep_float"]
    assert recipe["precision"] == "int16" and recipe["met"] is True and recipe["plain_int8"]["sqnr_db"] < 20
    assert recipe["kept"] == ["conv2"] and recipe["int16_ops"] == ["conv2", "conv3"] and recipe["float_ops"] == []
    assert recipe["selection"]["chosen"]["sqnr_db"] >= 30  # chosen with the int16 model, on selection images
    by_path = {a["path"]: a for a in doc["artifacts"]}
    assert by_path["model_int8.tflite"]["output_sqnr_db_vs_keras"] >= 30  # on the test split it never chose on
    assert recipe["onnx_precision"] == "float" and by_path["model_int8.onnx"]["output_sqnr_db_vs_keras"] >= 30
    assert "int16 ops" in printed and "conv2, conv3" in printed
    # the written flatbuffer: conv2's and conv3's activations int16, every other compute op's int8, float I/O
    from ai_edge_litert import schema_py_generated as schema

    flatbuffer = (out / "model_int8.tflite").read_bytes()
    dtypes = output_dtypes(flatbuffer)
    model = schema.ModelT.InitFromPackedBuf(flatbuffer, 0)
    graph, codes = model.subgraphs[0], [c.builtinCode for c in model.operatorCodes]
    names = {v: k for k, v in vars(schema.BuiltinOperator).items() if not k.startswith("_")}
    compute = {graph.tensors[op.outputs[0]].name.decode(): names[codes[op.opcodeIndex]] for op in graph.operators
               if names[codes[op.opcodeIndex]] not in ("QUANTIZE", "DEQUANTIZE")}
    int16 = sorted(n for n in compute if dtypes[n] == "INT16")
    assert len(int16) == 2 and all(("conv2" in n) != ("conv3" in n) for n in int16)
    assert all(dtypes[n] == "INT8" for n in compute if n not in int16), compute
    assert [dtypes[graph.tensors[i].name.decode()] for i in (*graph.inputs, *graph.outputs)] == ["FLOAT32"] * 2
    float_graph = schema.ModelT.InitFromPackedBuf((out / "model.tflite").read_bytes(), 0).subgraphs[0]
    assert [graph.tensors[i].name for i in graph.outputs] == [float_graph.tensors[i].name for i in float_graph.outputs]


@pytest.mark.slow
def test_int16_model_runs_in_the_runner(int16_export):
    from edgesep.devices.harness import RUNNER_PATH

    out, _ = int16_export
    proc = subprocess.run([sys.executable, str(RUNNER_PATH), "--runs", "3", "--warmup", "1", "--warmup-secs", "0",
                           "--min-secs", "0", "--max-secs", "2", str(out / "model_int8.tflite")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout.strip().splitlines()[-1])["results"][0]
    assert result["error"] is None and len(result["samples_ms"]) >= 3


@pytest.mark.slow
def test_int16_cannot_repair_int8_weights():
    """test_keep_float's network: conv3's int8 weights lose the outlier channel; float repairs it, int16 cannot."""
    from edgesep.converters.keep_int16 import Int16Selective
    from edgesep.converters.mixed import Selective, run_flatbuffer, score
    from edgesep.converters.verify import agreement, predict_keras

    model, data = outlier_model(), _dataset()
    selective = Int16Selective(model, data.calibration(200, 0))
    x = data.x_test[:32]
    reference = predict_keras(model, x)
    assert selective.split(("conv2",)) == {"int16_ops": ("conv2", "conv3"), "float_ops": ()}
    assert score(selective, ("conv2",), x, reference).sqnr_db < 20
    as_float = Selective.quantize(selective, ("conv2",))  # the same calibration, conv2 and conv3 kept float
    assert agreement(run_flatbuffer(as_float, x), reference)[1] > 30


@pytest.mark.slow
def test_an_op_without_an_int16_kernel_runs_float_and_says_so():
    """ai-edge-quantizer has no A16W8 HARD_SWISH: kept with conv1, it comes out float (recorded so), not int8."""
    import keras

    from edgesep.converters.keep_int16 import Int16Selective, output_dtypes
    from edgesep.converters.keep_float import plan
    from edgesep.converters.verify import predict_keras

    keras.utils.set_random_seed(0)
    inp = keras.Input(SHAPE, name="input")
    x = keras.layers.Activation("hard_swish", name="hswish")(keras.layers.Conv2D(8, 3, name="conv1")(inp))
    x = keras.layers.GlobalAveragePooling2D(name="gap")(keras.layers.Conv2D(8, 3, name="conv2")(x))
    model = keras.Model(inp, keras.layers.Dense(10, name="head")(x))
    data = _dataset()
    selective = Int16Selective(model, data.calibration(50, 0))
    x = data.x_test[:16]
    config = ExportConfig.from_options(int8=True, keep_float="conv1", keep_precision="int16")
    recipe = plan(selective, config, selection=None, selection_reference=None, x_test=x,
                  test_reference=predict_keras(model, x))
    assert recipe.precision == "int16" and recipe.int16_ops == ("conv1",) and recipe.float_ops == ("hswish",)
    dtypes = output_dtypes(selective.quantize(("conv1",)))
    kinds = {op.label: dtypes[op.node] for op in selective.ops}
    assert kinds["conv1"] == "INT16" and kinds["hswish"] == "FLOAT32" and kinds["conv2"] == "INT8"
