"""``edgesep inspect``: ops, params, MACs, I/O and quantization of real TFLite / ONNX / Keras files.

One tiny split-form network (16x16x3 input, stem 16, blocks (16, stride 1) and (32, stride 2), 10 classes)
is converted once per session with TensorFlow's own TFLiteConverter (float32, float16, full-int8 per-channel
and per-tensor), tf2onnx and onnxruntime's QDQ quantizer. Every expected figure below is computed by hand from
the layer shapes, not read back from the files.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import edgesep  # noqa: E402
from edgesep.cli import main  # noqa: E402
from edgesep.converters import ConversionError  # noqa: E402
from edgesep.converters.inspect import ModelInfo, inspect_model, known_extensions, op_counts  # noqa: E402

H = W = 16
CIN = 3
STEM = 16
BLOCKS = ((16, 1), (32, 2))
CLASSES = 10


def hand_counts() -> dict[str, int]:
    """MACs and parameter counts of the test network, from its layer shapes.

    'same' padding: a stride-s layer maps H to ceil(H / s). Per output element a KxK conv does K*K*Cin MACs,
    a depthwise conv K*K, a 1x1 pointwise conv Cin, the classifier Cin per logit.
    """
    h, w, c = H, W, STEM
    macs = h * w * STEM * 3 * 3 * CIN  # stem 3x3 conv
    kernels = 3 * 3 * CIN * STEM
    bn_channels = STEM
    for filters, stride in BLOCKS:
        h, w = -(-h // stride), -(-w // stride)
        macs += h * w * c * 3 * 3  # depthwise 3x3
        macs += h * w * c * filters  # pointwise 1x1
        kernels += 3 * 3 * c + c * filters
        bn_channels += c + filters  # dw_bn and pw_bn
        c = filters
    macs += c * CLASSES  # global pool then classifier
    dense = c * CLASSES + CLASSES
    return {
        "macs": macs,
        # Keras counts every weight: conv kernels, 4 per BN channel (gamma, beta, moving mean, moving variance)
        # and the classifier's kernel and bias.
        "keras_params": kernels + 4 * bn_channels + dense,
        # A converted model has BatchNorm folded away: each BN leaves one bias per channel on the conv before it
        # (gamma and the moving variance rescale the kernel, beta and the mean become the bias). So it stores
        # keras_params - 3 per BN channel = count_params() - the BN non-trainables (mean, variance) - gamma.
        "folded_params": kernels + bn_channels + dense,
        # The depthwise BNs tf2onnx leaves as a per-channel Mul (+ Add) after the depthwise Conv.
        "dw_channels": sum([STEM, *[f for f, _ in BLOCKS[:-1]]]),
        "weight_layers": 1 + 2 * len(BLOCKS) + 1,  # stem, dw + pw per block, classifier
    }


EXPECTED = hand_counts()


def _randomize_bn_and_bias(model, rng) -> None:
    """Fresh Keras weights give every BN gamma 1 / beta 0 and zero biases; converters then merge the identical
    zero bias tensors into one. Random statistics make every folded bias distinct, as in a trained model."""
    import keras

    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.gamma.shape[0]
            layer.set_weights([rng.uniform(0.5, 1.5, n), rng.normal(0, 0.1, n), rng.normal(0, 0.1, n),
                               rng.uniform(0.5, 1.5, n)])
        elif isinstance(layer, keras.layers.Dense):
            layer.bias.assign(rng.normal(0, 0.1, layer.bias.shape))


def _tflite(model, path, *, precision: str, rng=None, per_channel: bool = True):
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    if precision == "float16":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.target_spec.supported_types = [tf.float16]
    elif precision == "int8":
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.random((1, H, W, CIN), dtype=np.float32)] for _ in range(8))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = tf.int8
        conv.inference_output_type = tf.int8
        conv._experimental_disable_per_channel = not per_channel
    path.write_bytes(conv.convert())
    return path


def _onnx_qdq(src, dst, rng):
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": rng.random((1, H, W, CIN), dtype=np.float32)} for _ in range(4)])

        def get_next(self):
            return next(self.batches, None)

    quantize_static(str(src), str(dst), Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                    weight_type=QuantType.QInt8, activation_type=QuantType.QInt8)
    return dst


MODEL_FILES = {"keras": "split.keras", "fused_keras": "fused.keras", "nested_keras": "nested.keras",
               "float32": "model.tflite", "float16": "model_fp16.tflite", "int8": "model_int8.tflite",
               "int8_per_tensor": "model_int8_pt.tflite", "variables": "model_vars.tflite", "onnx": "model.onnx",
               "onnx_qdq": "model_qdq.onnx", "upsample_keras": "upsample.keras", "upsample": "upsample.tflite",
               "grouped_onnx": "grouped.onnx"}
CACHE = Path(os.environ.get("EDGESEP_TEST_CACHE") or Path.home() / ".cache" / "edgesep-test")  # conftest sets it


def _cache_key() -> str:
    """What the files depend on: this file, the network's code and the converters' versions."""
    from importlib import metadata

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in (Path(__file__), root / "edgesep" / "blocks.py", root / "edgesep" / "models.py"):
        digest.update(path.read_bytes())
    for package in ("tensorflow", "tf2onnx", "onnxruntime", "onnx"):
        digest.update(metadata.version(package).encode())
    return digest.hexdigest()[:16]


@pytest.fixture(scope="session")
def models():
    """Paths of the test network as .keras (split and fused), 4 TFLite variants, ONNX and QDQ ONNX.

    Made with TensorFlow's converters once per content of their inputs (cached under ~/.cache/edgesep-test).
    """
    out = CACHE / "inspect" / _cache_key()
    if not (out / "done").is_file():
        tmp = out.with_name(f"{out.name}.tmp-{os.getpid()}")
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
        _build_models(tmp)
        (tmp / "done").write_text("")
        try:
            os.replace(tmp, out)
        except OSError:  # another session won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return {key: out / name for key, name in MODEL_FILES.items()}


def _build_models(d: Path) -> None:
    import keras
    import tensorflow as tf
    import tf2onnx

    rng = np.random.default_rng(7)
    model = edgesep.build_model(form="split", input_shape=(H, W, CIN), blocks=BLOCKS, num_classes=CLASSES)
    _randomize_bn_and_bias(model, rng)
    fused = edgesep.build_model(form="fused", input_shape=(H, W, CIN), blocks=BLOCKS, num_classes=CLASSES)
    paths = {key: d / name for key, name in MODEL_FILES.items()}
    model.save(paths["keras"])
    fused.save(paths["fused_keras"])
    keras.Sequential([keras.Input((H, W, CIN)), model], name="wrapper").save(paths["nested_keras"])
    _tflite(model, paths["float32"], precision="float32")
    _tflite(model, paths["float16"], precision="float16")
    _tflite(model, paths["int8"], precision="int8", rng=rng)
    _tflite(model, paths["int8_per_tensor"], precision="int8", rng=rng, per_channel=False)
    # Converting a tf.function that reads the model's variables keeps them as resource variables (VAR_HANDLE)
    # and turns the Dense layer into BATCH_MATMUL: a real model whose weights params cannot see.
    fn = tf.function(lambda x: model(x)).get_concrete_function(tf.TensorSpec((1, H, W, CIN), tf.float32))
    paths["variables"].write_bytes(tf.lite.TFLiteConverter.from_concrete_functions([fn], model).convert())
    tf2onnx.convert.from_keras(model, input_signature=[tf.TensorSpec((None, H, W, CIN), tf.float32, name="input")],
                               opset=17, output_path=str(paths["onnx"]))
    _onnx_qdq(paths["onnx"], paths["onnx_qdq"], rng)
    upsample = _upsample_model()
    upsample.save(paths["upsample_keras"])
    _tflite(upsample, paths["upsample"], precision="float32")
    grouped = _grouped_model()
    tf2onnx.convert.from_keras(grouped, input_signature=[tf.TensorSpec((None, H, W, 8), tf.float32, name="input")],
                               opset=17, output_path=str(paths["grouped_onnx"]))


def _upsample_model():
    """A dynamic-batch model whose upsampled feature map TFLite stores as 1 x W until the graph is run."""
    import keras

    inp = keras.Input((H, W, CIN))
    x = keras.layers.Conv2D(8, 3, padding="same")(inp)
    x = keras.layers.Conv2D(16, 3, padding="same")(keras.layers.UpSampling2D()(x))
    return keras.Model(inp, keras.layers.Dense(CLASSES)(keras.layers.GlobalAveragePooling2D()(x)))


def _grouped_model():
    """A grouped convolution, which tf2onnx leaves as a TensorFlow StatefulPartitionedCall node."""
    import keras

    inp = keras.Input((H, W, 8))
    x = keras.layers.Conv2D(16, 3, padding="same", groups=4)(inp)
    return keras.Model(inp, keras.layers.Dense(CLASSES)(keras.layers.GlobalAveragePooling2D()(x)))


# ------------------------------------------------------------------------------------------------ TFLite

def _check_tflite_common(info: ModelInfo):
    assert info.format == "tflite"
    assert info.ops["CONV_2D"] == 1 + len(BLOCKS)  # stem + one pointwise per block
    assert info.ops["DEPTHWISE_CONV_2D"] == len(BLOCKS)
    assert info.ops["FULLY_CONNECTED"] == 1
    assert "MUL" not in info.ops and "ADD" not in info.ops  # BN folded by the converter
    assert info.macs == EXPECTED["macs"]
    assert info.params == EXPECTED["folded_params"]
    assert len(info.inputs) == 1 and len(info.outputs) == 1
    assert info.inputs[0]["shape"] == [None, H, W, CIN]
    assert info.outputs[0]["shape"] == [None, CLASSES]
    assert info.notes == []


def test_tflite_float32(models):
    info = inspect_model(models["float32"])
    _check_tflite_common(info)
    assert info.inputs[0]["dtype"] == "float32" and "scale" not in info.inputs[0]
    q = info.quantization
    # one weight tensor and one bias tensor per conv/FC layer, all float32
    assert q["float"] == 2 * EXPECTED["weight_layers"] and q["dtypes"] == {"float32": q["float"]}
    assert q["per_channel"] == q["per_tensor"] == 0


def test_tflite_float16_stores_half_weights_behind_dequantize(models):
    info = inspect_model(models["float16"])
    _check_tflite_common(info)
    q = info.quantization
    assert q["dtypes"] == {"float16": 2 * EXPECTED["weight_layers"]}
    assert info.ops["DEQUANTIZE"] == q["float"]  # each fp16 constant is dequantized once
    assert info.inputs[0]["dtype"] == "float32"
    assert info.bytes < models["float32"].stat().st_size


def test_tflite_int8_per_channel(models):
    info = inspect_model(models["int8"])
    _check_tflite_common(info)
    for io in (*info.inputs, *info.outputs):
        assert io["dtype"] == "int8"
        assert io["scale"] > 0 and -128 <= io["zero_point"] <= 127 and isinstance(io["zero_point"], int)
    q = info.quantization
    n = EXPECTED["weight_layers"]
    assert q["dtypes"] == {"int8": n, "int32": n}  # int8 weights, int32 biases
    assert q["per_channel"] == 2 * n and q["per_tensor"] == q["float"] == 0
    assert q["activation_dtypes"] == {"int8": sum(q["activation_dtypes"].values())}
    depthwise = [t for t in q["tensors"] if t["dtype"] == "int8" and t["shape"][0] == 1]
    assert len(depthwise) == len(BLOCKS)
    for t in depthwise:  # TFLite depthwise filters [1, kh, kw, C] are quantized along their last axis
        pc = t["per_channel"]
        assert pc["quantized_dimension"] == 3 and pc["count"] == t["shape"][3]
        assert 0 < pc["scale_min"] <= pc["scale_max"]


def test_tflite_int8_per_tensor(models):
    info = inspect_model(models["int8_per_tensor"])
    _check_tflite_common(info)
    q = info.quantization
    assert q["per_channel"] == 0 and q["per_tensor"] == 2 * EXPECTED["weight_layers"]
    assert info.inputs[0]["dtype"] == "int8"


def test_tflite_with_resource_variables_says_params_miss_them(models):
    info = inspect_model(models["variables"])
    assert info.ops["BATCH_MATMUL"] == 1 and info.ops["VAR_HANDLE"] > 0
    assert info.macs == EXPECTED["macs"]  # the classifier's K is read off BATCH_MATMUL's operand shapes
    assert info.params < EXPECTED["folded_params"]
    assert any("VAR_HANDLE" in note for note in info.notes)


def test_tflite_and_onnx_do_not_import_tensorflow(models):
    code = ("import sys; from edgesep.converters.inspect import inspect_model; "
            f"[inspect_model(p) for p in {[str(models['int8']), str(models['onnx'])]!r}]; "
            "print(sorted(m for m in ('tensorflow', 'keras', 'tf2onnx') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "[]"


# -------------------------------------------------------------------------------------------------- ONNX

def test_onnx(models):
    info = inspect_model(models["onnx"])
    assert info.format == "onnx"
    assert info.ops["Conv"] == 1 + 2 * len(BLOCKS)  # depthwise convs are grouped Convs
    assert info.ops.get("MatMul", 0) + info.ops.get("Gemm", 0) == 1
    assert "BatchNormalization" not in info.ops
    assert info.macs == EXPECTED["macs"]
    # tf2onnx folds the BN after regular convs but may leave the depthwise ones as per-channel Mul/Add.
    assert EXPECTED["folded_params"] <= info.params <= EXPECTED["folded_params"] + EXPECTED["dw_channels"]
    assert info.inputs == [{"name": "input", "shape": [None, H, W, CIN], "dtype": "float32"}]
    assert info.outputs[0]["shape"] == [None, CLASSES] and info.outputs[0]["dtype"] == "float32"
    assert info.quantization["per_channel"] == info.quantization["per_tensor"] == 0


def test_onnx_qdq_per_channel_weights(models):
    info = inspect_model(models["onnx_qdq"])
    assert info.macs == EXPECTED["macs"]
    assert info.params == inspect_model(models["onnx"]).params  # same values, stored as int8 / int32
    q = info.quantization
    assert q["float"] == 0
    conv_weights = [t for t in q["tensors"] if t["dtype"] == "int8" and len(t["shape"]) == 4 and t["shape"][0] > 1]
    assert len(conv_weights) == 1 + 2 * len(BLOCKS)
    for t in conv_weights:  # ONNX Conv weights [M, C/group, kh, kw] are quantized per output channel
        assert t["per_channel"]["count"] == t["shape"][0] and t["per_channel"]["quantized_dimension"] == 0


def test_onnx_unknown_shapes_are_noted_not_guessed(tmp_path):
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    fc = numpy_helper.from_array(np.ones((5, 8), np.float32), "fc")
    graph = helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], pads=[1, 1, 1, 1]),
         helper.make_node("Gemm", ["v", "fc"], ["z"], transB=1)],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 3, "h", "w"]),
         helper.make_tensor_value_info("v", TensorProto.FLOAT, [2, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
         helper.make_tensor_value_info("z", TensorProto.FLOAT, None)],
        initializer=[w, fc])
    path = tmp_path / "dyn.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)]), path)
    info = inspect_model(path)
    assert info.macs == 2 * 5 * 8  # Gemm [2, 8] x [8, 5]; the Conv's spatial size is unknown
    assert info.params == 4 * 3 * 3 * 3 + 5 * 8
    assert info.notes == ["MACs are partial: they exclude ops whose shapes are unknown: 1 Conv"]
    assert info.macs_partial
    assert info.inputs[0]["shape"] == [None, 3, None, None]


# ------------------------------------------------------------------------------------------------- Keras

@pytest.mark.parametrize("key, block_layer", [("keras", "DepthwiseConv2D"), ("fused_keras", "SeparableConv2D"),
                                              ("nested_keras", "DepthwiseConv2D")])
def test_keras(models, key, block_layer):
    info = inspect_model(models[key])
    assert info.format == "keras"
    assert info.ops[block_layer] == len(BLOCKS)
    assert info.macs == EXPECTED["macs"]  # both forms do the same arithmetic
    if key != "fused_keras":  # fused has no BN between depthwise and pointwise: fewer BN weights
        assert info.params == EXPECTED["keras_params"]
    assert info.inputs[0]["shape"] == [None, H, W, CIN] and info.inputs[0]["dtype"] == "float32"
    assert info.outputs[0]["shape"] == [None, CLASSES]
    assert info.quantization is None


def test_tflite_with_dynamic_batch_counts_the_shapes_it_runs_at(models):
    # conv 3x3 3->8 at 16x16, conv 3x3 8->16 at 32x32 after upsampling, dense 16->10
    macs = H * W * 8 * 9 * CIN + (2 * H) * (2 * W) * 16 * 9 * 8 + 16 * CLASSES
    info = inspect_model(models["upsample"])
    assert info.inputs[0]["shape"] == [None, H, W, CIN]  # a plain from_keras_model file: dynamic batch
    assert info.macs == macs == inspect_model(models["upsample_keras"]).macs
    assert not info.macs_partial and info.notes == []


def test_onnx_with_ops_onnx_does_not_define_says_its_macs_are_partial(models):
    info = inspect_model(models["grouped_onnx"])
    assert info.ops.get("StatefulPartitionedCall") == 1
    assert info.macs_partial
    assert any("1 StatefulPartitionedCall" in n and "not valid ONNX" in n for n in info.notes), info.notes


def test_all_formats_agree_on_macs(models):
    assert {inspect_model(models[k]).macs for k in ("keras", "float32", "int8", "onnx")} == {EXPECTED["macs"]}


# ---------------------------------------------------------------------------------------- common fields

def test_size_digest_and_dict_round_trip(models):
    path = models["int8"]
    info = inspect_model(path)
    assert info.bytes == path.stat().st_size
    assert info.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert info.path == str(path)
    assert json.loads(json.dumps(info.to_dict())) == info.to_dict()
    assert list(info.ops) == sorted(info.ops)


def test_op_counts(models):
    counts = op_counts(models["float16"])
    assert counts == inspect_model(models["float16"]).ops
    assert counts["DEPTHWISE_CONV_2D"] == len(BLOCKS)


# --------------------------------------------------------------------------------------------------- CLI

def test_cli_json(models, capsys):
    assert main(["inspect", str(models["int8"]), "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    edgetpu = doc.pop("edgetpu")  # the CLI adds the Edge TPU readiness of a .tflite
    assert doc == inspect_model(models["int8"]).to_dict()
    assert edgetpu["compiled"] is False and isinstance(edgetpu["problems"], list)


def test_cli_table(models, capsys):
    assert main(["inspect", str(models["int8"])]) == 0
    out = capsys.readouterr().out
    for text in ("DEPTHWISE_CONV_2D", f"{EXPECTED['macs']:,}", f"{EXPECTED['folded_params']:,}", "int8",
                 "per-channel", "zero point"):
        assert text in out


def _bad_inputs(models, d) -> dict[str, tuple]:
    """name -> (path, words the error must contain)."""
    tfl, onx, ker = (models[k].read_bytes() for k in ("float32", "onnx", "keras"))
    files = {
        "empty.tflite": b"",
        "truncated.tflite": tfl[: len(tfl) // 2],
        "text.tflite": b"just some text, not a model\n",
        "truncated.onnx": onx[: len(onx) // 2],
        "text.onnx": b"just some text, not a model\n",
        "tflite_inside.onnx": tfl,
        "truncated.keras": ker[: len(ker) // 2],
        "text.keras": b"just some text, not a model\n",
        "model.bin": tfl,
    }
    for name, data in files.items():
        (d / name).write_bytes(data)
    os.mkfifo(d / "pipe.tflite")  # reading it would block forever
    with zipfile.ZipFile(d / "garbled.keras", "w") as z:  # a zip with Keras' member names but no model in them
        z.writestr("config.json", "{not json")
        z.writestr("metadata.json", "{}")
    with zipfile.ZipFile(d / "alien.keras", "w") as z:  # well-formed, but of a layer class Keras does not know
        z.writestr("config.json", json.dumps({"module": "nowhere", "class_name": "NoSuchModel", "config": {}}))
        z.writestr("metadata.json", json.dumps({"keras_version": "3.0.0"}))
    return {
        "missing": (d / "absent.tflite", "not found"),
        "directory": (d, "folder"),
        "fifo": (d / "pipe.tflite", "not a regular file"),
        "empty": (d / "empty.tflite", "empty"),
        "truncated tflite": (d / "truncated.tflite", "not a valid TFLite"),
        "text tflite": (d / "text.tflite", "not a TFLite model"),
        "truncated onnx": (d / "truncated.onnx", "not a valid ONNX"),
        "text onnx": (d / "text.onnx", "not a valid ONNX"),
        "tflite named onnx": (d / "tflite_inside.onnx", "rename it to .tflite"),
        "truncated keras": (d / "truncated.keras", "not a valid Keras"),
        "text keras": (d / "text.keras", "not a Keras"),
        "garbled keras": (d / "garbled.keras", "config.json is not JSON"),
        "alien keras": (d / "alien.keras", "cannot load Keras model"),
        "unknown extension": (d / "model.bin", ".keras, .onnx, .tflite"),
    }


@pytest.fixture(scope="module")
def bad_inputs(models, tmp_path_factory):
    return _bad_inputs(models, tmp_path_factory.mktemp("bad"))


BAD = ["missing", "directory", "fifo", "empty", "truncated tflite", "text tflite", "truncated onnx", "text onnx",
       "tflite named onnx", "truncated keras", "text keras", "garbled keras", "alien keras", "unknown extension"]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_and_exit_1(bad_inputs, case, capsys):
    path, words = bad_inputs[case]
    with pytest.raises(ConversionError, match=words.replace(".", r"\.")):
        inspect_model(path)
    assert main(["inspect", str(path)]) == 1
    captured = capsys.readouterr()
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgesep: error: ") and words in lines[0]
    assert captured.out == ""


def test_bad_input_in_a_real_process_has_no_traceback(bad_inputs):
    # (failures found before TensorFlow is imported: its C++ start-up logging would add stderr lines)
    for case in ("truncated tflite", "text onnx", "garbled keras", "unknown extension"):
        path, words = bad_inputs[case]
        out = subprocess.run([sys.executable, "-m", "edgesep", "inspect", str(path), "--json"],
                             capture_output=True, text=True, timeout=120)
        assert out.returncode == 1, (case, out.stderr)
        assert out.stderr.strip().count("\n") == 0 and out.stderr.startswith("edgesep: error: ")
        assert "Traceback" not in out.stderr and out.stdout == ""


def test_cli_usage_errors_exit_2(capsys):
    assert main(["inspect"]) == 2
    assert main(["inspect", "x.tflite", "--bogus"]) == 2
    assert "Traceback" not in capsys.readouterr().err


def test_known_extensions():
    assert known_extensions() == [".h5", ".hdf5", ".keras", ".onnx", ".tflite"]
