"""bench --profile of the forms export writes besides plain float/int8.

An fp16 .tflite (export --fp16): its weights' DEQUANTIZE ops take only constants, so TFLite computes them once
at load; cut apart they failed under XNNPACK ('inference failed') and left the convolution reading its weights
as a run-time input (the per-op sum 2.7x the whole on a one-conv model). A --keep-float model: its QUANTIZE/
DEQUANTIZE ops have no model scope, and the op column showed the scope (functional_1) for every layer."""
from __future__ import annotations

import numpy as np
import pytest

from edgesep.devices.opcut import cut_model


@pytest.fixture(scope="module")
def fp16_model(tmp_path_factory):
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((12, 12, 3)), keras.layers.Conv2D(8, 3, name="conv")])
    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.target_spec.supported_types = [tf.float16]
    path = tmp_path_factory.mktemp("fp16") / "model_fp16.tflite"
    path.write_bytes(converter.convert())
    return path


@pytest.mark.slow
def test_fp16_weight_dequantize_is_folded_into_its_readers_single_op_model(fp16_model, tmp_path):
    from ai_edge_litert.interpreter import Interpreter

    ops = cut_model(fp16_model, tmp_path)
    assert [op.type for op in ops].count("DEQUANTIZE") == 2
    for op in ops:
        if op.type == "DEQUANTIZE":
            assert op.path is None and "computed once when the model loads" in op.reason
    (conv,) = [op for op in ops if op.type == "CONV_2D"]
    whole = Interpreter(model_path=str(fp16_model))  # default delegates (XNNPACK), as bench runs it
    single = Interpreter(model_path=str(conv.path))
    whole.allocate_tensors()
    single.allocate_tensors()
    assert len(single.get_input_details()) == 1  # the image only: the weights stay constants
    x = np.random.default_rng(0).random((1, 12, 12, 3), dtype=np.float32)
    for interp in (whole, single):
        interp.set_tensor(interp.get_input_details()[0]["index"], x)
        interp.invoke()
    got = single.get_tensor(single.get_output_details()[0]["index"])
    np.testing.assert_allclose(got, whole.get_tensor(whole.get_output_details()[0]["index"]), rtol=1e-5, atol=1e-5)


def test_op_column_drops_the_model_scope_when_quantize_ops_lack_it():
    from rich.console import Console

    from edgesep.report.profile import profile_table

    names = ["tfl.quantize", "functional_1/c1_1/Relu;functional_1/c1_1/convolution", "tfl.dequantize",
             "functional_1/gc_1/Relu;convolution", "functional_1/global_average_pooling2d_1/Mean", "tfl.quantize1",
             "Identity1", "head_a", "Identity_11", "head_b"]
    ops = [{"index": i, "name": n, "type": "CONV_2D", "ms": 0.01, "share": 0.1, "macs": None} for i, n in enumerate(names)]
    console = Console(width=120, record=True, file=open("/dev/null", "w"))
    console.print(profile_table({"model": "m.tflite", "ops": ops, "profile": {"method": "single-op models"}}))
    rows = [line.split()[1] for line in console.export_text().splitlines() if line.strip()[:1].isdigit()]
    assert rows == ["tfl.quantize", "c1_1", "tfl.dequantize", "gc_1", "global_average_pooling2d_1", "tfl.quantize1",
                    "Identity1", "head_a", "Identity_11", "head_b"]
