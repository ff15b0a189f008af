"""Tiny real models for the device-harness tests, made with TensorFlow in a subprocess and cached.

``python tests/bench_models.py OUTDIR`` writes float.tflite, int8.tflite (full-integer, int8 in/out),
prelu.tflite (a "third-party-looking" net: ZeroPadding2D -> PAD, PReLU -> PRELU), float.onnx (tf2onnx) and
blocks_split.tflite / blocks_fused.tflite (two blocks named as the builders name them: block1_dw + block1_pw, or
block1_sep) and heavy.tflite (three 3x3 convs of 48 filters: about 100x float.tflite's MACs), all 16x16x3 ->
10 classes, plus models.json describing them; and three models that do not fit the others (for refusals):
wide.tflite (24x24x3 input), two_out.tflite (a second output) and int_in.tflite (an int32 input). ``bench_models()`` returns the paths, building
them once per content of this file (cached under ``$EDGESEP_TEST_CACHE/models``, the run's own folder).
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from importlib import metadata
from pathlib import Path

INPUT_SHAPE = (16, 16, 3)
NAMES = ("float.tflite", "int8.tflite", "prelu.tflite", "float.onnx", "blocks_split.tflite", "blocks_fused.tflite",
         "heavy.tflite", "wide.tflite", "two_out.tflite", "int_in.tflite")
CACHE = Path(os.environ.get("EDGESEP_TEST_CACHE") or Path.home() / ".cache" / "edgesep-test")  # conftest sets it


def _conv_model(keras):
    inp = keras.Input(INPUT_SHAPE, batch_size=1, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu")(inp)
    x = keras.layers.DepthwiseConv2D(3, padding="same")(x)
    x = keras.layers.Conv2D(16, 1, activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x))


def _heavy_model(keras):
    """Clearly slower than ``_conv_model`` on any CPU (about 11 M MACs against its 0.1 M)."""
    inp = keras.Input(INPUT_SHAPE, batch_size=1, name="image")
    x = inp
    for _ in range(3):
        x = keras.layers.Conv2D(48, 3, padding="same", activation="relu")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x))


def _prelu_model(keras):
    inp = keras.Input(INPUT_SHAPE, batch_size=1, name="image")
    x = keras.layers.ZeroPadding2D(2)(inp)
    x = keras.layers.Conv2D(8, 3)(x)
    x = keras.layers.PReLU(shared_axes=[1, 2], alpha_initializer="random_uniform")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x))


def _blocks_model(keras, form):
    """Two blocks named as edgesep's builders name them: block1_dw + block1_pw (split) or block1_sep (fused)."""
    inp = keras.Input(INPUT_SHAPE, batch_size=1, name="image")
    x = keras.layers.Conv2D(8, 3, padding="same", activation="relu", name="stem_conv")(inp)
    for i, filters in ((1, 16), (2, 16)):
        if form == "split":
            x = keras.layers.DepthwiseConv2D(3, padding="same", activation="relu", name=f"block{i}_dw")(x)
            x = keras.layers.Conv2D(filters, 1, activation="relu", name=f"block{i}_pw")(x)
        else:
            x = keras.layers.SeparableConv2D(filters, 3, padding="same", activation="relu", name=f"block{i}_sep")(x)
    x = keras.layers.GlobalAveragePooling2D()(x)
    return keras.Model(inp, keras.layers.Dense(10)(x))


def _misfits(keras) -> dict[str, object]:
    """Models shaped unlike ``_conv_model``: another input size, a second output, an integer input."""
    def head(inp, x):
        x = keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(4, 3)(x))
        return keras.layers.Dense(10)(x)

    wide = keras.Input((24, 24, 3), batch_size=1, name="image")
    two = keras.Input(INPUT_SHAPE, batch_size=1, name="image")
    ints = keras.Input(INPUT_SHAPE, batch_size=1, name="image", dtype="int32")
    as_float = keras.layers.Lambda(lambda t: keras.ops.cast(t, "float32"))(ints)
    return {"wide.tflite": keras.Model(wide, head(wide, wide)),
            "two_out.tflite": keras.Model(two, [head(two, two), keras.layers.Dense(3)(keras.layers.Flatten()(two))]),
            "int_in.tflite": keras.Model(ints, head(ints, as_float))}


def build(out: Path) -> None:
    """Write the models into ``out`` (imports TensorFlow)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    import keras
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    keras.utils.set_random_seed(0)
    model = _conv_model(keras)
    (out / "float.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    rng = np.random.default_rng(0)
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.random((1, *INPUT_SHAPE), dtype=np.float32)] for _ in range(32))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = tf.int8
    conv.inference_output_type = tf.int8
    (out / "int8.tflite").write_bytes(conv.convert())
    (out / "prelu.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(_prelu_model(keras)).convert())
    for form in ("split", "fused"):
        blocks = tf.lite.TFLiteConverter.from_keras_model(_blocks_model(keras, form))
        (out / f"blocks_{form}.tflite").write_bytes(blocks.convert())
    (out / "heavy.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(_heavy_model(keras)).convert())
    for name, misfit in _misfits(keras).items():
        (out / name).write_bytes(tf.lite.TFLiteConverter.from_keras_model(misfit).convert())
    spec = (tf.TensorSpec((1, *INPUT_SHAPE), tf.float32, name="image"),)
    fn = tf.function(lambda x: model(x), input_signature=spec)
    tf2onnx.convert.from_function(fn, input_signature=spec, opset=13, output_path=str(out / "float.onnx"))
    (out / "models.json").write_text(json.dumps({"input_shape": list(INPUT_SHAPE), "names": list(NAMES)}))


def _key() -> str:
    text = Path(__file__).read_bytes() + metadata.version("tensorflow").encode()
    return hashlib.sha256(text).hexdigest()[:16]


def bench_models() -> dict[str, Path]:
    """{name: path} of the tiny models, built (in a subprocess) only when the cache lacks them."""
    out = CACHE / "models" / _key()
    if not (out / "models.json").is_file():
        tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
        tmp.mkdir(parents=True, exist_ok=True)
        env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3")
        proc = subprocess.run([sys.executable, __file__, str(tmp)], capture_output=True, text=True, env=env)
        if proc.returncode != 0:
            raise RuntimeError("building the test models failed:\n" + proc.stderr[-3000:])
        try:
            os.replace(tmp, out)
        except OSError:  # another worker won the race
            shutil.rmtree(tmp, ignore_errors=True)
    return {name: out / name for name in NAMES}


if __name__ == "__main__":
    build(Path(sys.argv[1]))
