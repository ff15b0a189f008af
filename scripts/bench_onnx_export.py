"""Benchmark: edgesep's ONNX conversion against tf2onnx's default one on the same graph, in one process.

edgesep's ``export_onnx`` runs tf2onnx's optimizer passes on the graph itself; tf2onnx's default copies the
whole graph before each pass. For keras.applications networks (weights=None, randomized BatchNorm statistics,
small inputs: the ones tests/test_applications.py exports) it times, in CPU seconds of this process:
- edgesep: ``export_onnx(folded, path, fold=False)`` (trace, freeze, tf2onnx, output names, onnx.checker);
- default: the same trace and freeze, then ``tf2onnx.convert.from_graph_def`` with tf2onnx's defaults;
prints both files' node counts (tf2onnx itself varies by a couple of Reshape nodes from run to run on NASNet,
either way) and the largest difference of their outputs on random input (0: the same function), and prints the
ratio edgesep / default per model and overall (goal: <= 0.85). The two runs alternate order from one model
to the next, so slow drift on a shared machine hits both alike.

    python scripts/bench_onnx_export.py [--models NASNetMobile,DenseNet121,ConvNeXtTiny,EfficientNetV2B0]
"""
from __future__ import annotations

import argparse
import collections
import os
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
from bench_export import randomize_bn  # noqa: E402  (scripts/ is on sys.path when a script runs)

SIZE = 32


def _network(name: str):
    import keras

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, name)(weights=None, input_shape=(SIZE, SIZE, 3), classes=10)
    randomize_bn(model)
    return model


def default_tf2onnx(model, path: Path) -> Path:
    """The same trace and freeze as edgesep, then tf2onnx's ``from_graph_def`` as it comes."""
    import tensorflow as tf
    import tf2onnx
    from tensorflow.python.framework.convert_to_constants import convert_variables_to_constants_v2

    from edgesep.converters.graph import flat_outputs

    spec = tf.TensorSpec((None, *model.input_shape[1:]), tf.float32, name="input")
    infer = tf.function(lambda x: flat_outputs(model(x, training=False)), autograph=False).get_concrete_function(spec)
    frozen = convert_variables_to_constants_v2(infer)
    proto, _ = tf2onnx.convert.from_graph_def(frozen.graph.as_graph_def(), name=model.name, opset=17,
                                              input_names=[t.name for t in frozen.inputs],
                                              output_names=[t.name for t in frozen.outputs])
    path.write_bytes(proto.SerializeToString())
    return path


def _ops(path: Path) -> collections.Counter:
    import onnx

    return collections.Counter(n.op_type for n in onnx.load(str(path)).graph.node)


def _outputs(path: Path, x: np.ndarray) -> np.ndarray:
    import onnxruntime as ort

    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {session.get_inputs()[0].name: x})[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="NASNetMobile,DenseNet121,ConvNeXtTiny,EfficientNetV2B0")
    args = parser.parse_args()
    from edgesep.converters.fold import fold_batchnorm
    from edgesep.converters.grouped import for_onnx
    from edgesep.converters.onnx import export_onnx

    totals = {"edgesep": 0.0, "default": 0.0}
    x = np.random.default_rng(1).normal(0, 1, (4, SIZE, SIZE, 3)).astype(np.float32)
    with tempfile.TemporaryDirectory(prefix="edgesep-bench-onnx-") as tmp:
        for i, name in enumerate(args.models.split(",")):
            folded = for_onnx(fold_batchnorm(_network(name)))
            runs = {"edgesep": lambda p: export_onnx(folded, p, fold=False),
                    "default": lambda p: default_tf2onnx(folded, p)}
            seconds, paths = {}, {}
            for kind in (sorted(runs) if i % 2 else sorted(runs, reverse=True)):
                start = time.process_time()
                paths[kind] = runs[kind](Path(tmp) / f"{name}-{kind}.onnx")
                seconds[kind] = time.process_time() - start
                totals[kind] += seconds[kind]
            nodes = {kind: sum(_ops(path).values()) for kind, path in paths.items()}
            diff = float(np.max(np.abs(_outputs(paths["edgesep"], x) - _outputs(paths["default"], x))))
            print(f"{name:18s} edgesep {seconds['edgesep']:6.1f} s  default {seconds['default']:6.1f} s  "
                  f"ratio {seconds['edgesep'] / seconds['default']:.2f}  "
                  f"nodes {nodes['edgesep']} / {nodes['default']}  max |diff| {diff:.2e}",
                  flush=True)
    print(f"overall: edgesep {totals['edgesep']:.1f} s / default {totals['default']:.1f} s CPU = "
          f"{totals['edgesep'] / totals['default']:.2f} (goal <= 0.85)")


if __name__ == "__main__":
    main()
