"""Study: per-tensor int8 SQNR of equalization with and without calibration data (issue 15, item 5).

keras.applications MobileNet / MobileNetV2 (weights=None, small input) with randomized BatchNorm statistics,
quantized per tensor by ``edgesep.export_tflite``; output SQNR against the float Keras model on held-out
random inputs in [-1, 1] (MobileNet's input range), calibrated on other random inputs.

    python scripts/study_equalize_nodata.py [--net mobilenet|mobilenetv2|builtin] [--size 96] [--alpha 0.25]
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np


def randomize_bn(model, seed: int = 0) -> None:
    """Log-normal gamma / variance, random beta / mean for every BatchNormalization (in place)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        if type(layer).__name__ == "BatchNormalization":
            n = layer.gamma.shape[0]
            layer.gamma.assign(np.exp(rng.normal(0, 1.5, n)).astype("float32"))
            layer.beta.assign(rng.normal(0.5, 1.0, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 0.5, n).astype("float32"))
            layer.moving_variance.assign(np.exp(rng.normal(0, 1.5, n)).astype("float32"))


def build(net: str, size: int, alpha: float):
    """(model, dataset or None)."""
    import keras

    if net == "builtin":
        from edgesep.data import load_dataset
        from edgesep.models import ModelConfig
        from edgesep.train import train_builtin

        digits = load_dataset("digits", (32, 32, 3))
        return train_builtin(ModelConfig(form="split"), dataset=digits)[0], digits
    cls = {"mobilenet": keras.applications.MobileNet, "mobilenetv2": keras.applications.MobileNetV2}[net]
    model = cls(input_shape=(size, size, 3), alpha=alpha, weights=None,
                classifier_activation=None)
    randomize_bn(model)
    return model, None


def sqnr(model, keras_model, work: Path, name: str, calib, x, ref) -> float:
    from edgesep import export_tflite
    from edgesep.converters.verify import agreement, predict_tflite

    path = export_tflite(keras_model, work / f"{name}.tflite", precision="int8", representative_data=calib,
                         per_channel=False, fold=False)
    return agreement(predict_tflite(path, x), ref)[1]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--net", default="mobilenet", choices=["mobilenet", "mobilenetv2", "builtin"])
    parser.add_argument("--size", type=int, default=96)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--samples", type=int, default=64)
    args = parser.parse_args()
    from edgesep.converters.equalize import equalize_with_report
    from edgesep.converters.fold import fold_batchnorm
    from edgesep.converters.verify import predict_keras

    import keras

    keras.utils.set_random_seed(0)  # weights=None draws its initial weights
    model, dataset = build(args.net, args.size, args.alpha)
    shape = model.input_shape[1:]
    rng = np.random.default_rng(1)
    if dataset is None:  # MobileNet's input range, calibration and held-out inputs drawn apart
        calib = rng.uniform(-1.0, 1.0, (args.samples, *shape)).astype(np.float32)
        x = rng.uniform(-1.0, 1.0, (args.samples, *shape)).astype(np.float32)
    else:  # calibration from the training split, held-out inputs from the test split
        calib, x = dataset.calibration(args.samples, 0), dataset.x_test[:args.samples]
    ref = predict_keras(model, x)
    variants = {
        "folded (no CLE)": lambda: fold_batchnorm(model),
        "CLE, no data, data_free (BN statistics absorption)":
            lambda: equalize_with_report(model, data_free=True)[0],
        "CLE, no data, data_free, absorb_bias=False":
            lambda: equalize_with_report(model, data_free=True, absorb_bias=False)[0],
        "equalize_with_report(model) (the no-data default)": lambda: equalize_with_report(model)[0],
        "CLE, calibration data": lambda: equalize_with_report(model, calibration_data=calib)[0],
    }
    with tempfile.TemporaryDirectory() as work:
        base = None
        for i, (name, make) in enumerate(variants.items()):
            t0 = time.perf_counter()
            candidate = make()
            value = sqnr(model, candidate, Path(work), f"m{i}", calib, x, ref)
            base = value if base is None else base
            change = np.max(np.abs(predict_keras(candidate, x) - ref)) / np.max(np.abs(ref))
            print(f"{name:50s} SQNR {value:6.2f} dB  ({value - base:+5.2f} dB)  float change {change:.1e}"
                  f"  [{time.perf_counter() - t0:.0f} s]", flush=True)


if __name__ == "__main__":
    main()
