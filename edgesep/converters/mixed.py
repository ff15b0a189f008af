"""Mixed precision: an int8 TFLite model with some ops kept in float32, by name or chosen to meet a target.

One calibration of the model (TensorFlow's ``tf.lite.experimental.QuantizationDebugger``) serves every
selective quantization: ``QuantizationDebugOptions(denylisted_nodes=...)`` names the ops that stay float and
``get_nondebug_quantized_model()`` writes the model (the float ops sit between DEQUANTIZE/QUANTIZE ops).

An op is named by the Keras layer it comes from (``conv2``, ``block_3_project``); ops no layer name matches
keep their TFLite output tensor name. Keeping an op float keeps its *output activations* float: an int8 op
cannot read a float tensor, so the ops that read it compute in float too (keeping only the producer would
requantize its output with the same calibrated range, and nothing would change). The mixed model's input
and output are float32.
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Callable, Iterable, Optional, Sequence

import numpy as np

from edgesep.converters._quiet import quiet
from edgesep.errors import UsageError

AUTO = "auto"
DEFAULT_TARGET_SQNR_DB = 30.0
MAX_MAC_SHARE = 0.5  # auto keeps plain int8 rather than run more than half the MACs in float
QUICK_CANDIDATES = 8  # quick mode measures only the ops the debugger's per-layer statistics rank worst
_SKIPPED = ("QUANTIZE", "DEQUANTIZE")
_SCOPE_SUFFIX = re.compile(r"_\d+$")  # Keras 3 traces layer scopes as name_1


@dataclasses.dataclass(frozen=True)
class QuantOp:
    """One compute op of the calibrated model: its output tensor (the debugger's node name) and its layer."""

    index: int
    kind: str
    node: str
    label: str
    macs: int
    readers: tuple[int, ...]


def layer_of(name: str, layers: set[str]) -> Optional[str]:
    """The Keras layer a TFLite tensor name comes from (``model/conv2_1/Relu`` -> ``conv2``), or None."""
    for part in name.split(";"):
        for component in part.split("/")[1:]:
            for candidate in (component, _SCOPE_SUFFIX.sub("", component)):
                if candidate in layers:
                    return candidate
    return None


def read_ops(flatbuffer: bytes, layer_names: Iterable[str]) -> list[QuantOp]:
    """The compute ops of a (calibrated, float) TFLite model with their layer labels, MACs and readers."""
    from ai_edge_litert.interpreter import Interpreter

    from edgesep.converters.inspect.macs import TFLITE_MACS

    with quiet("reading the calibrated model"):
        interpreter = Interpreter(model_content=flatbuffer)
    tensors = {t["index"]: t for t in interpreter.get_tensor_details()}
    details = [op for op in interpreter._get_ops_details() if op["op_name"] not in _SKIPPED and list(op["outputs"])]
    layers = set(layer_names)
    ops = []
    for op in details:
        node = tensors[int(op["outputs"][0])]["name"]
        inputs = [int(i) for i in op["inputs"] if int(i) >= 0]
        weights = tensors[inputs[1]]["name"] if op["op_name"] in TFLITE_MACS and len(inputs) > 1 else ""
        label = layer_of(weights, layers) or layer_of(node, layers) or node
        formula = TFLITE_MACS.get(op["op_name"])
        macs = formula(lambda i: [int(d) for d in tensors[int(i)]["shape"]], op) if formula else 0
        outputs = {int(i) for i in op["outputs"]}
        readers = tuple(int(o["index"]) for o in details if outputs & {int(i) for i in o["inputs"]})
        ops.append(QuantOp(int(op["index"]), op["op_name"], node, label, int(macs), readers))
    return ops


class Selective:
    """One calibration of a Keras model; int8 flatbuffers (float I/O) with any set of ops kept float
    (``edgesep.converters.keep_int16.Int16Selective``: kept at int16 activations instead).

    Args:
        model: the Keras model to quantize (BN-folded, as export quantizes it).
        calibration: float32 NHWC calibration images.
        per_channel: int8 weights per output channel (False: per tensor).
        debug_images: images the debugger's per-layer statistics are taken on (quick mode).
    """

    precision = "float"  # how the kept ops run

    def __init__(self, model, calibration: np.ndarray, per_channel: bool = True,
                 debug_images: Optional[np.ndarray] = None):
        import tensorflow as tf

        from edgesep.converters.graph import output_names
        from edgesep.converters.tflite import frozen_graph

        self.model, self.output_names = model, tuple(output_names(model))
        calib = np.asarray(calibration, np.float32)
        debug = calib[:16] if debug_images is None else np.asarray(debug_images, np.float32)
        with quiet("TFLite int8 calibration"):
            converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen_graph(model)])
            converter.optimizations = [tf.lite.Optimize.DEFAULT]
            converter.representative_dataset = lambda: ([x[None]] for x in calib)
            converter._experimental_disable_per_channel = not per_channel
            self.debugger = tf.lite.experimental.QuantizationDebugger(
                converter=converter, debug_dataset=lambda: ([x[None]] for x in debug))
        self.ops = read_ops(self.debugger.calibrated_model, [layer.name for layer in model.layers])
        self.total_macs = sum(op.macs for op in self.ops)
        self._cache: dict[tuple[str, ...], bytes] = {}
        self._layer_sqnr: Optional[dict[str, float]] = None

    def labels(self) -> list[str]:
        """Every op's name, in graph order, once."""
        return list(dict.fromkeys(op.label for op in self.ops))

    def expand(self, names: Sequence[str]) -> list[QuantOp]:
        """The ops that run float when ``names`` are kept float: theirs and the ops reading their outputs."""
        known = self.labels()
        by_index = {op.index: op for op in self.ops}
        chosen: dict[int, QuantOp] = {}
        for name in names:
            ops = [op for op in self.ops if name in (op.label, op.node)]
            if not ops:
                shown = ", ".join(known[:12]) + (", ..." if len(known) > 12 else "")
                raise UsageError(f"--keep-float: no op named {name!r} in the int8 model; ops: {shown} "
                                 "(edgesep inspect MODEL --sensitivity lists them all)")
            for op in ops:
                chosen[op.index] = op
                chosen.update({i: by_index[i] for i in op.readers if i in by_index})
        return sorted(chosen.values(), key=lambda op: op.index)

    def split(self, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """``{"int16_ops": (), "float_ops": ...}``: the labels of the ops kept, by the precision they run at."""
        return {"int16_ops": (), "float_ops": tuple(dict.fromkeys(op.label for op in self.expand(tuple(names))))}

    def mac_share(self, names: Sequence[str]) -> float:
        """The share of the model's MACs that runs float when ``names`` are kept float."""
        return sum(op.macs for op in self.expand(names)) / self.total_macs if self.total_macs else 0.0

    def quantize(self, names: Sequence[str] = ()) -> bytes:
        """The int8 flatbuffer (float input/output) with ``names`` (and their readers) kept float."""
        import tensorflow as tf

        from edgesep.converters.tflite import named_outputs

        nodes = tuple(op.node for op in self.expand(names))
        if nodes not in self._cache:
            with quiet("TFLite selective int8 quantization"):
                self.debugger.options = tf.lite.experimental.QuantizationDebugOptions(denylisted_nodes=list(nodes))
                flatbuffer = self.debugger.get_nondebug_quantized_model()
            self._cache[nodes] = named_outputs(flatbuffer, self.model)  # a multi-output model's, by name
        return self._cache[nodes]

    def layer_sqnr_db(self) -> dict[str, float]:
        """Each op's own int8 error (the debugger's per-layer statistics): mean per-channel output SQNR, dB."""
        import tensorflow as tf

        if self._layer_sqnr is not None:
            return self._layer_sqnr
        with quiet("TFLite per-layer quantization statistics"):
            self.debugger.options = tf.lite.experimental.QuantizationDebugOptions(
                layer_direct_compare_metrics={"channel_sqnr_db": _channel_sqnr_db})
            self.debugger.run()
        by_node = sorted(((op.node, op.label) for op in self.ops), key=lambda p: -len(p[0]))
        found: dict[str, float] = {}
        for name, metrics in self.debugger.layer_statistics.items():
            bare = re.sub(r":\d+$", "", name.removeprefix("NumericVerify/"))
            label = next((lab for node, lab in by_node if bare.startswith(node)), None)
            value = float(metrics.get("channel_sqnr_db", np.nan))
            if label is not None and np.isfinite(value):
                found[label] = min(value, found.get(label, np.inf))
        self._layer_sqnr = found
        return found


def _channel_sqnr_db(float_values, quant_values, scale, zero_point) -> float:
    """Mean over output channels of 10 log10(signal / error) of one op's int8 output (last axis = channel)."""
    ref = np.asarray(float_values, np.float64)
    got = (np.asarray(quant_values, np.float64) - float(zero_point)) * float(scale)
    axes = tuple(range(ref.ndim - 1))
    signal, noise = np.sum(ref ** 2, axis=axes), np.sum((got - ref) ** 2, axis=axes)
    live = signal > 0
    if not np.any(live):
        return float("nan")
    return float(np.mean(10 * np.log10(signal[live] / np.maximum(noise[live], signal[live] * 1e-12))))


def run_flatbuffer(flatbuffer: bytes, x: np.ndarray) -> np.ndarray:
    """A float-I/O TFLite model's (first) output on ``x``, one image at a time."""
    return run_flatbuffer_all(flatbuffer, x)[0]


def run_flatbuffer_all(flatbuffer: bytes, x: np.ndarray, names: Sequence[str] = ()) -> list[np.ndarray]:
    """A float-I/O TFLite model's every output on ``x`` (in the order of ``names``, the model's output names),
    one image at a time."""
    from ai_edge_litert.interpreter import Interpreter

    from edgesep.converters.verify import tflite_outputs

    with quiet("loading a selectively quantized model"):
        interpreter = Interpreter(model_content=flatbuffer, num_threads=2)
        interpreter.allocate_tensors()
    inp, outs = interpreter.get_input_details()[0], tflite_outputs(interpreter, names)
    results: list[list[np.ndarray]] = [[] for _ in outs]
    for image in np.asarray(x, np.float32):
        interpreter.set_tensor(inp["index"], image[None])
        interpreter.invoke()
        for got, out in zip(results, outs):
            got.append(np.array(interpreter.get_tensor(out["index"]), np.float32))
    return [np.concatenate(got) for got in results]


@dataclasses.dataclass(frozen=True)
class Score:
    """Output SQNR (dB) and top-1 agreement of an int8 model against the float model on some images (a model
    with several outputs: its worst output's of each)."""

    sqnr_db: Optional[float]
    agreement: float

    def to_dict(self) -> dict[str, Any]:
        return {"sqnr_db": self.sqnr_db, "top1_agreement": self.agreement}

    def value(self, metric: str) -> float:
        if metric == "agreement":
            return self.agreement
        return float("inf") if self.sqnr_db is None else self.sqnr_db


def score(selective: Selective, names: Sequence[str], x: np.ndarray, reference) -> Score:
    """How the model with ``names`` kept float compares with ``reference`` (the float model's output on ``x``,
    or a sequence of its every output in the model's order): the worst output's SQNR and agreement."""
    from edgesep.converters.verify import agreement

    references = [reference] if isinstance(reference, np.ndarray) else list(reference)
    outputs = run_flatbuffer_all(selective.quantize(names), x, selective.output_names if len(references) > 1 else ())
    pairs = [agreement(got, ref) for got, ref in zip(outputs, references)]
    sqnrs = [sqnr for _, sqnr in pairs if sqnr is not None]
    return Score(min(sqnrs) if sqnrs else None, min(agree for agree, _ in pairs))


def timed(fn: Callable[[], Any]) -> tuple[Any, float]:
    """``fn()`` and its wall time in seconds."""
    import time

    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start
