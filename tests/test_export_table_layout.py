"""The export table is the first thing a new user sees: readable at 80 columns, ops never split mid-name."""
import re

import pytest

OPS_TFLITE = {"CONV_2D": 5, "DEPTHWISE_CONV_2D": 4, "FULLY_CONNECTED": 1, "MEAN": 1, "SOFTMAX": 1}
OPS_INT8 = {**OPS_TFLITE, "QUANTIZE": 1, "DEQUANTIZE": 1}
OPS_ONNX = {"Clip": 9, "Conv": 9, "Add": 1, "GlobalAveragePool": 1, "MatMul": 1, "Softmax": 1, "Squeeze": 1}


def _doc():
    def art(path, precision, ops, agree=None, sqnr=None):
        return {"path": path, "format": path.rsplit(".", 1)[1], "precision": precision, "bytes": 134963, "sha256": "0",
                "runtime": "TFLite" if path.endswith(".tflite") else "ONNX Runtime",
                "ops": ops, "max_abs_error_vs_keras": 1.4e-06, "accuracy": 0.9889,
                "top1_agreement_vs_keras": agree, "output_sqnr_db_vs_keras": sqnr}

    from edgesep.converters.records import ExportResult

    return ExportResult.from_dict({
            "model": {"name": "edgesep_split", "form": "split", "input_shape": [1, 32, 32, 3], "params": 0, "macs": 0},
            "keras_accuracy": 0.9889,
            "dataset": {"name": "digits", "test_samples": 540,
                        "input": {"kind": "builtin", "preprocess": {"spec": "unit"}}},
            "artifacts": [art("model.tflite", "float32", OPS_TFLITE), art("model_fp16.tflite", "float16", OPS_TFLITE),
                          art("model_int8.tflite", "int8", OPS_INT8, 0.998, 31.8),
                          art("model.onnx", "float32", OPS_ONNX)]})


def _render(width):
    from rich.console import Console

    from edgesep.report import export_table

    console = Console(width=width, record=True, color_system=None)
    console.print(export_table(_doc()))
    return console.export_text()


@pytest.mark.parametrize("width", [80, 120])
def test_export_table_fits_and_never_splits_an_op(width):
    text = _render(width)
    lines = text.splitlines()
    assert max(len(line.rstrip()) for line in lines) <= width
    words = text.split()
    for ops in (OPS_TFLITE, OPS_INT8, OPS_ONNX):
        for name, count in ops.items():
            assert f"{name}×{count}" in words, f"{name}×{count} was split or lost at {width} columns"
    for name in ("model.tflite", "model_fp16.tflite", "model_int8.tflite", "model.onnx"):
        assert name in words
    assert "…" not in text, "a cell was cut"
    assert re.search(r"model_int8\.tflite\s+int8\s+131\.8 KiB\s+1\.4e-06\s+0\.998\s+31\.8\s+0\.9889", text) or \
        re.search(r"model_int8\.tflite\s+TFLite\s+int8\s+131\.8 KiB\s+CONV_2D", text)
    # which runtime each artifact is for: a column when there is room, else one line below the table
    assert "for: TFLite: model.tflite, model_fp16.tflite, model_int8.tflite; ONNX Runtime: model.onnx" in \
        " ".join(words) or re.search(r"model\.onnx\s+ONNX Runtime\s+float32", text)
    assert len(lines) <= 16, f"{len(lines)} lines for 4 artifacts at {width} columns"


def test_wide_terminal_keeps_ops_in_a_column_narrow_lists_them_once_per_op_set():
    wide, narrow = _render(160), _render(80)
    assert "ops of" not in wide and "ops" in wide.splitlines()[1].split()
    # model.tflite and model_fp16.tflite have the same ops: one line names both
    assert "ops of model.tflite, model_fp16.tflite:" in narrow
    assert narrow.count("ops of ") == 3


def _bench_results():
    def result(model, p50):
        return {"model": model, "device": "local", "runtime": "ai_edge_litert 2.3.0", "threads": 2,
                "delegate": "xnnpack", "fully_delegated": True, "init_ms": 0.761, "first_ms": 0.0195,
                "latency_ms": {"mean": p50, "std": 0.001, "min": p50, "p50": p50, "p90": p50 * 1.02,
                               "p99": p50 * 1.1, "ci95_p50": [p50, p50 * 1.001], "n": 2460},
                "samples_ms": [p50], "accuracy": 0.987, "error": None}

    return [result("out/model.tflite", 0.0789), result("out/model_int8.tflite", 0.0496)]


@pytest.mark.parametrize("width", [80, 200])
def test_bench_table_drops_the_least_important_columns_to_fit(width):
    from rich.console import Console

    from edgesep.report import bench_table

    console = Console(width=width, record=True, color_system=None)
    table = bench_table(_bench_results())
    table.caption = "AMD EPYC, 2 cores"
    console.print(table)
    text = console.export_text()
    assert max(len(line.rstrip()) for line in text.splitlines()) <= width
    words = text.split()
    assert "model.tflite" in words and "model_int8.tflite" in words and "AMD" in words
    assert "0.0789" in words and "0.9870" in words  # p50 and accuracy always stay
    if width == 80:
        assert "not shown at this width: p99," in text and "p99 ms" not in text
    else:
        assert "not shown" not in text and "p99 ms" in text and "first ms" in text
