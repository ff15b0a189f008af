"""``--keep-float ... --keep-precision int16``: the kept ops at 16-bit activations (8-bit weights), not float.

TensorFlow's converter cannot mix 8- and 16-bit activations in one model; ai-edge-quantizer can, by per-op
recipes matched on an op's *scope* (its output tensor names joined by ``;``, with a trailing ``;``). The model
it quantizes is the float TFLite model of the same frozen graph the int8 export converts (so the op names are
those of ``edgesep.converters.mixed``), given the ``serving_default`` signature the quantizer needs:

- every op: A8W8 (int8 activations asymmetric per tensor, int8 weights symmetric per channel, or per tensor
  with ``--per-tensor``), as the TFLite converter quantizes;
- the kept ops (and the ops reading their outputs, as with float: an int8 reader would requantize the 16-bit
  output to the same coarse int8 grid): A16W8 (int16 activations symmetric per tensor, int64 bias);
- the model's input and output: not quantized, so QUANTIZE/DEQUANTIZE ops sit at the ends and the model keeps
  the float32 input/output every ``--keep-float`` export has.

Calibration ranges are the global min/max over the calibration images (as the TFLite converter's), not the
quantizer's default moving average, which clips the activations of the rarer large images. A kept op the
quantizer has no A16W8 kernel for comes out int8 (the quantizer skips a recipe it cannot honour); such ops
are quantized again kept float (their scope not quantized) and reported as float, never as int16.
"""
from __future__ import annotations

import re
from typing import Optional, Sequence

import numpy as np

from edgesep.converters import ConversionError
from edgesep.converters._quiet import quiet
from edgesep.converters.mixed import Selective

SIGNATURE = "serving_default"
INSTALL_HINT = "--keep-precision int16 needs ai-edge-quantizer: pip install 'edgesep[quantizer]'"


def with_signature(flatbuffer: bytes) -> bytes:
    """The TFLite model with a ``serving_default`` signature (input ``input``, outputs ``output_K``), which
    ``TFLiteConverter.from_concrete_functions`` does not write and ai-edge-quantizer's calibration needs."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))
    graph = model.subgraphs[0]

    def tensor_map(name: str, index: int):
        entry = schema.TensorMapT()
        entry.name, entry.tensorIndex = name.encode(), int(index)
        return entry

    signature = schema.SignatureDefT()
    signature.signatureKey, signature.subgraphIndex = SIGNATURE.encode(), 0
    signature.inputs = [tensor_map("input", graph.inputs[0])]
    signature.outputs = [tensor_map(f"output_{k}", i) for k, i in enumerate(graph.outputs)]
    model.signatureDefs = [signature]
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _scope(node: str) -> str:
    """The quantizer's scope regex matching exactly the op whose (first) output tensor is ``node``."""
    return "^" + re.escape(node) + ";"


def _global_range(old, new):
    return {"min": np.minimum(old["min"], new["min"]), "max": np.maximum(old["max"], new["max"])}


class Int16Selective(Selective):
    """:class:`~edgesep.converters.mixed.Selective` whose kept ops run at int16 activations (ai-edge-quantizer).

    The candidates, MAC shares, per-layer statistics and the plain int8 model (no op kept) are the TFLite
    converter's, as with float; only a model with kept ops comes from ai-edge-quantizer.
    """

    precision = "int16"

    def __init__(self, model, calibration: np.ndarray, per_channel: bool = True,
                 debug_images: Optional[np.ndarray] = None):
        try:
            import ai_edge_quantizer  # noqa: F401
        except ImportError:
            raise ConversionError(INSTALL_HINT) from None
        self.per_channel = per_channel
        super().__init__(model, calibration, per_channel=per_channel, debug_images=debug_images)
        import tensorflow as tf

        from edgesep.converters.tflite import frozen_graph, named_outputs

        with quiet("TFLite float conversion for ai-edge-quantizer"):
            converter = tf.lite.TFLiteConverter.from_concrete_functions([frozen_graph(model)])
            self._float = with_signature(named_outputs(converter.convert(), model))
        self._calib = np.asarray(calibration, np.float32)
        self._ranges: Optional[dict] = None
        self._int16_cache: dict[tuple[str, ...], tuple[bytes, tuple[int, ...]]] = {}

    def _quantizer(self, int16: Sequence[str], floats: Sequence[str]):
        from ai_edge_quantizer import algorithm_manager, qtyping, quantizer

        ops, granularity = qtyping.TFLOperationName, (qtyping.QuantGranularity.CHANNELWISE if self.per_channel
                                                      else qtyping.QuantGranularity.TENSORWISE)
        aeq = quantizer.Quantizer(self._float)
        aeq.add_static_config(".*", ops.ALL_SUPPORTED, 8, 8, granularity)
        for end in (ops.INPUT, ops.OUTPUT):  # float32 input/output, QUANTIZE/DEQUANTIZE inside
            aeq.update_quantization_recipe(".*", end, algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
        for node in int16:
            aeq.add_static_config(_scope(node), ops.ALL_SUPPORTED, 16, 8, granularity)
        for node in floats:
            aeq.update_quantization_recipe(_scope(node), ops.ALL_SUPPORTED,
                                           algorithm_key=algorithm_manager.AlgorithmName.NO_QUANTIZE)
        return aeq

    def _calibration_ranges(self, aeq) -> dict:
        """Every tensor's min/max over the calibration images (one pass, then reused by every recipe)."""
        if self._ranges is None:
            from ai_edge_quantizer import calibrator, recipe_manager

            recipes = recipe_manager.RecipeManager()
            recipes.load_quantization_recipe(aeq.get_quantization_recipe())
            with quiet("ai-edge-quantizer calibration"):
                calib = calibrator.Calibrator(self._float, num_threads=2, qsv_update_func=_global_range)
                calib.calibrate({SIGNATURE: [{"input": x[None]} for x in self._calib]}, recipes)
            self._ranges = calib.get_model_qsvs()
        return self._ranges

    def _run_quantizer(self, int16: Sequence[str], floats: Sequence[str]) -> bytes:
        aeq = self._quantizer(int16, floats)
        ranges = self._calibration_ranges(aeq)
        try:
            with quiet("ai-edge-quantizer int8/int16 quantization"):
                quantized = bytes(aeq.quantize(ranges, enable_progress_report=False).quantized_model)
            return output_names_as(quantized, self._float)
        except Exception as e:  # the quantizer's own errors carry no common type
            raise ConversionError(f"ai-edge-quantizer could not quantize the model with "
                                  f"{len(int16)} ops at int16: {str(e).strip().splitlines()[0]}") from None

    def quantize_with_fallback(self, names: Sequence[str]) -> tuple[bytes, tuple[int, ...]]:
        """(flatbuffer, indices of the kept ops that run float because the quantizer has no int16 kernel)."""
        ops = self.expand(names)
        key = tuple(op.node for op in ops)
        if key not in self._int16_cache:
            flatbuffer = self._run_quantizer(key, ())
            dtypes = output_dtypes(flatbuffer)
            not16 = [op for op in ops if dtypes.get(op.node) != "INT16"]
            if not16:  # the quantizer skipped their A16W8 recipe (no int16 kernel): quantize again, them float
                floats = tuple(op.node for op in not16)
                flatbuffer = self._run_quantizer(tuple(n for n in key if n not in floats), floats)
            self._int16_cache[key] = (flatbuffer, tuple(op.index for op in not16))
        return self._int16_cache[key]

    def quantize(self, names: Sequence[str] = ()) -> bytes:
        """The int8 flatbuffer (float input/output) with ``names`` (and their readers) at int16 activations;
        with no names, the TFLite converter's plain int8 (the model every other export writes)."""
        if not names:
            return super().quantize(())
        return self.quantize_with_fallback(names)[0]

    def split(self, names: Sequence[str]) -> dict[str, tuple[str, ...]]:
        """``{"int16_ops": ..., "float_ops": ...}``: the labels of the ops kept, by the precision they run at."""
        if not names:
            return {"int16_ops": (), "float_ops": ()}
        floats = set(self.quantize_with_fallback(names)[1])
        ops = self.expand(names)
        return {"int16_ops": _labels(op for op in ops if op.index not in floats),
                "float_ops": _labels(op for op in ops if op.index in floats)}


def output_names_as(flatbuffer: bytes, reference: bytes) -> bytes:
    """``flatbuffer`` with its output tensors named as ``reference``'s (the quantizer appends ``_dequant`` to
    the float output it adds; the quantized tensor feeding it, which held the name, gets ``_quantized``)."""
    from ai_edge_litert import schema_py_generated as schema
    from ai_edge_litert.tools import flatbuffer_utils

    model = flatbuffer_utils.read_model_from_bytearray(bytearray(flatbuffer))  # its buffers may sit past the end
    graph, ref = model.subgraphs[0], schema.ModelT.InitFromPackedBuf(reference, 0).subgraphs[0]
    wanted = [ref.tensors[i].name for i in ref.outputs]
    if len(wanted) != len(graph.outputs):
        raise ConversionError(f"ai-edge-quantizer wrote {len(graph.outputs)} outputs, the model has {len(wanted)}")
    for index, name in zip(graph.outputs, wanted):
        if graph.tensors[index].name == name:
            continue
        for tensor in graph.tensors:
            if tensor.name == name:
                tensor.name = name + b"_quantized"
        graph.tensors[index].name = name
    return bytes(flatbuffer_utils.convert_object_to_bytearray(model))


def _labels(ops) -> tuple[str, ...]:
    return tuple(dict.fromkeys(op.label for op in ops))


def output_dtypes(flatbuffer: bytes) -> dict[str, str]:
    """Each tensor's type in a TFLite flatbuffer by tensor name (``INT8``, ``INT16``, ``FLOAT32``, ...)."""
    from ai_edge_litert import schema_py_generated as schema

    names = {v: k for k, v in vars(schema.TensorType).items() if not k.startswith("_")}
    graph = schema.ModelT.InitFromPackedBuf(flatbuffer, 0).subgraphs[0]
    return {t.name.decode(): names.get(t.type, str(t.type)) for t in graph.tensors}

