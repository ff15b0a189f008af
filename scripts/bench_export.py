"""Benchmark: edgesep's export against calling TFLiteConverter + tf2onnx directly, in one process.

Prints, for the built-in network (split form, trained and cached) and keras.applications' MobileNetV2
(weights=None):
- export time: edgesep (fold + TFLite float32 + ONNX) vs the raw converters (ratio);
- ONNX node counts: edgesep (folded) vs raw tf2onnx, and the BN-style Mul/Add left after convs;
- onnxruntime latency of both ONNX files with graph optimizations disabled (ratio), so the graph as exported
  is what runs.

    python scripts/bench_export.py [--runs 200]
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections import Counter
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402


def raw_export(model, folder: Path) -> tuple[float, Path]:
    import tensorflow as tf
    import tf2onnx

    from edgesep.converters._quiet import quiet

    start = time.perf_counter()
    with quiet("raw export"):  # the same log capture edgesep's exporters run under
        (folder / "raw.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        spec = [tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input")]
        tf2onnx.convert.from_keras(model, input_signature=spec, opset=17, output_path=str(folder / "raw.onnx"))
    return time.perf_counter() - start, folder / "raw.onnx"


def edgesep_export(model, folder: Path) -> tuple[float, Path]:
    from edgesep.converters.fold import fold_batchnorm
    from edgesep.converters.onnx import export_onnx
    from edgesep.converters.tflite import export_tflite

    start = time.perf_counter()
    folded = fold_batchnorm(model)
    export_tflite(folded, folder / "edgesep.tflite", fold=False)
    export_onnx(folded, folder / "edgesep.onnx", fold=False)
    return time.perf_counter() - start, folder / "edgesep.onnx"


def onnx_profile(path: Path) -> tuple[int, int]:
    """(node count, Mul/Add nodes that take a Conv output and a constant)."""
    import onnx

    graph = onnx.load(str(path)).graph
    convs = {o for n in graph.node if n.op_type == "Conv" for o in n.output}
    consts = {i.name for i in graph.initializer}
    bn_style = sum(1 for n in graph.node if n.op_type in ("Mul", "Add") and set(n.input) & convs
                   and set(n.input) & consts)
    return len(graph.node), bn_style


def ort_latency_ms(path: Path, shape, runs: int) -> float:
    """Median onnxruntime latency (ms) at batch 1, one thread, graph optimizations disabled."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])
    feed = {sess.get_inputs()[0].name: np.random.default_rng(0).random((1, *shape), np.float32)}
    for _ in range(10):
        sess.run(None, feed)
    times = []
    for _ in range(runs):
        t = time.perf_counter()
        sess.run(None, feed)
        times.append((time.perf_counter() - t) * 1e3)
    return float(np.median(times))


def interleaved_latency(a: Path, b: Path, shape, runs: int, rounds: int = 5) -> tuple[float, float]:
    la, lb = [], []
    for _ in range(rounds):
        la.append(ort_latency_ms(a, shape, runs // rounds))
        lb.append(ort_latency_ms(b, shape, runs // rounds))
    return float(np.median(la)), float(np.median(lb))


def models():
    import keras

    from edgesep.models import ModelConfig
    from edgesep.train import train_builtin

    yield "built-in split (32x32)", train_builtin(ModelConfig(form="split"))[0]
    yield "MobileNetV2 (224x224, weights=None)", keras.applications.MobileNetV2(weights=None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=200)
    args = parser.parse_args()
    from edgesep.converters._quiet import import_tensorflow

    import_tensorflow()
    from edgesep.models import build_model

    with tempfile.TemporaryDirectory() as tmp:  # warm both paths up so neither pays TF's first-use costs
        tiny = build_model("split", input_shape=(16, 16, 3), blocks=((8, 1),))
        raw_export(tiny, Path(tmp))
        edgesep_export(tiny, Path(tmp))
    print(f"{'model':38} {'raw s':>7} {'edgesep s':>9} {'ratio':>6} {'raw nodes':>9} {'edgesep':>7} "
          f"{'raw BN-Mul/Add':>14} {'ort raw ms':>10} {'ort edgesep ms':>14} {'ratio':>6}")
    for name, model in models():
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            es_s, es_onnx = edgesep_export(model, folder)
            raw_s, raw_onnx = raw_export(model, folder)
            raw_nodes, raw_bn = onnx_profile(raw_onnx)
            es_nodes, es_bn = onnx_profile(es_onnx)
            assert es_bn == 0, "edgesep's ONNX must have no BN-style Mul/Add after a conv"
            raw_ms, es_ms = interleaved_latency(raw_onnx, es_onnx, model.input_shape[1:], args.runs)
        print(f"{name:38} {raw_s:7.2f} {es_s:9.2f} {es_s / raw_s:6.2f} {raw_nodes:9d} {es_nodes:7d} "
              f"{raw_bn:14d} {raw_ms:10.3f} {es_ms:14.3f} {es_ms / raw_ms:6.2f}")


if __name__ == "__main__":
    main()
