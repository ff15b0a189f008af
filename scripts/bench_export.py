"""Benchmark: edgesep's whole export against the raw converter calls doing the same conversions, in one process.

For the built-in network (split form, trained and cached) and keras.applications MobileNetV2 (alpha 0.35,
96x96) and EfficientNetB0 (96x96), both weights=None with randomized BatchNorm statistics and data in their
own input domain, it times:
- edgesep: ``export()`` with float32 + int8 + ONNX (so also ONNX int8): folding, every conversion,
  verification of every artifact, the int8 input check and the per-layer quantization-error report;
- raw: TFLiteConverter float32 and full-integer int8 (same calibration tensors), tf2onnx, and onnxruntime's
  quantize_static on that ONNX file (the conversions edgesep makes, nothing else);
and prints the ratio (goal: <= 0.85) with edgesep's time per stage. The two runs of a model alternate
order from one model to the next, so slow drift on a shared machine hits both alike.

    python scripts/bench_export.py [--models builtin,mobilenet_v2,efficientnet_b0] [--calib 200]
"""
from __future__ import annotations

import argparse
import os
import platform
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def randomize_bn(model, seed: int = 0) -> np.random.Generator:
    """Random statistics for every BatchNormalization (gamma, beta, mean, variance), in place: a keras.applications
    network built with weights=None then has the real architecture's folded layers, not identity BatchNorms.
    Returns the generator, for draws that follow."""
    import keras

    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.5, c),
                               rng.uniform(0.5, 2.0, c)])
    return rng


def _pixels(n: int, size: int, seed: int) -> np.ndarray:
    """Smooth random RGB images 0..255: blurry blobs plus noise."""
    from PIL import Image

    rng = np.random.default_rng(seed)
    low = rng.uniform(0, 255, (n, 4, 4, 3)).astype(np.float32)
    up = np.stack([np.asarray(Image.fromarray(img[..., ch], mode="F").resize((size, size), Image.BILINEAR))
                   for img in low for ch in range(3)]).reshape(n, 3, size, size).transpose(0, 2, 3, 1)
    return np.clip(up + rng.normal(0, 20, up.shape), 0, 255).astype(np.float32)


def model_and_data(name: str):
    """(keras model, edgesep Dataset) of one benchmark case."""
    import keras

    from edgesep.data import Dataset, load_dataset

    if name == "builtin":
        from edgesep.models import ModelConfig
        from edgesep.train import train_builtin

        ds = load_dataset("digits", ModelConfig().input_shape)
        return train_builtin(ModelConfig(form="split"), dataset=ds)[0], ds
    keras.utils.set_random_seed(0)
    apps = keras.applications
    if name == "mobilenet_v2":
        model = apps.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35, classes=10)
        x = apps.mobilenet_v2.preprocess_input(_pixels(300, 96, 1))
    elif name == "efficientnet_b0":
        model = apps.EfficientNetB0(weights=None, input_shape=(96, 96, 3), classes=10)
        x = apps.efficientnet.preprocess_input(_pixels(300, 96, 1))
    else:
        raise SystemExit(f"unknown model {name}")
    randomize_bn(model)
    y = np.arange(len(x)) % 10
    return model, Dataset(name, x[:210], y[:210], x[210:], y[210:], tuple(map(str, range(10))), kind="npz")


def raw_conversions(model, calib: np.ndarray, folder: Path) -> float:
    """Seconds for TFLiteConverter float32 + int8, tf2onnx and onnxruntime's quantize_static, called directly."""
    import tensorflow as tf
    import tf2onnx
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static

    from edgesep.converters._quiet import quiet

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter([{"input": calib[i:i + 16]} for i in range(0, len(calib), 16)])

        def get_next(self):
            return next(self.batches, None)

    start = time.perf_counter()
    with quiet("raw conversions"):  # the same log capture edgesep's converters run under
        (folder / "raw.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        converter = tf.lite.TFLiteConverter.from_keras_model(model)
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = lambda: ([x[None]] for x in calib)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        converter.inference_input_type = converter.inference_output_type = tf.int8
        (folder / "raw_int8.tflite").write_bytes(converter.convert())
        spec = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input")]
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(folder / "raw.onnx"))
        quantize_static(str(folder / "raw.onnx"), str(folder / "raw_int8.onnx"), Reader(),
                        quant_format=QuantFormat.QDQ, per_channel=True, activation_type=QuantType.QInt8,
                        weight_type=QuantType.QInt8)
    return time.perf_counter() - start


def edgesep_export(model, ds, folder: Path, calib_samples: int) -> tuple[float, dict[str, float], dict]:
    """Seconds for edgesep's whole export, its time per stage, and export.json."""
    from edgesep.converters.export import ExportConfig, export

    stages: dict[str, float] = {}
    last = [None, time.perf_counter()]

    def progress(stage: str) -> None:
        now = time.perf_counter()
        if last[0] is not None:
            stages[last[0]] = stages.get(last[0], 0.0) + now - last[1]
        last[0], last[1] = stage.split(":")[0], now

    config = ExportConfig(precisions=("float32", "int8"), onnx=True, calib_samples=calib_samples)
    start = time.perf_counter()
    doc = export(model, folder, config, ds, progress=progress)
    end = time.perf_counter()
    progress("end")
    return end - start, stages, doc


def _warm_up() -> None:
    """One tiny conversion of each kind first, so neither side pays the converters' one-time start-up."""
    import keras

    inp = keras.Input((8, 8, 3), name="input")
    model = keras.Model(inp, keras.layers.GlobalAveragePooling2D()(keras.layers.Conv2D(2, 3)(inp)))
    with tempfile.TemporaryDirectory() as tmp:
        raw_conversions(model, np.random.default_rng(0).random((4, 8, 8, 3), np.float32), Path(tmp))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="builtin,mobilenet_v2,efficientnet_b0")
    parser.add_argument("--calib", type=int, default=200, help="calibration images (both sides)")
    args = parser.parse_args()
    from edgesep.converters._quiet import import_tensorflow

    import_tensorflow()
    _warm_up()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; goal: edgesep / raw <= 0.85")
    for i, name in enumerate(args.models.split(",")):
        model, ds = model_and_data(name)
        calib = ds.calibration(args.calib, 0)
        with tempfile.TemporaryDirectory() as tmp:
            runs = [("raw", lambda: raw_conversions(model, calib, Path(tmp))),
                    ("edgesep", lambda: edgesep_export(model, ds, Path(tmp) / "out", args.calib))]
            results = {}
            for label, run in (runs if i % 2 == 0 else runs[::-1]):
                results[label] = run()
        raw = results["raw"]
        total, stages, doc = results["edgesep"]
        int8 = next(a for a in doc["artifacts"] if a["path"] == "model_int8.tflite")
        print(f"\n{name}: edgesep {total:.1f} s, raw conversions {raw:.1f} s, ratio {total / raw:.2f}")
        print("  edgesep stages: " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
        print(f"  int8 on held-out inputs: agreement {int8['top1_agreement_vs_keras']:.3f}, "
              f"SQNR {int8['output_sqnr_db_vs_keras']:.1f} dB")


if __name__ == "__main__":
    main()
