"""Coral Edge TPU (``converters.edgetpu``: the compiler; ``devices.coral``: the runtime): compiler-report parsing
on logs in edgetpu_compiler's real format, the model checks on real TFLite files, and the one-line errors when
the compiler or the runtime is missing."""
from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from edgesep.converters import edgetpu
from edgesep.converters.edgetpu import (compile_edgetpu, edgetpu_problems, is_edgetpu_compiled,
                                        parse_compiler_output, parse_size)
from edgesep.devices import coral
from edgesep.errors import EdgeTpuError

DATA = Path(__file__).parent / "data"


def _report(name: str):
    return parse_compiler_output((DATA / name).read_text())


def test_fully_mapped_report_without_the_cpu_lines():
    r = _report("edgetpu_full.txt")
    assert r.compiled and r.compiler_version == "16.0.384591198" and r.compile_ms == 412
    assert (r.input_model, r.output_model) == ("model_int8.tflite", "model_int8_edgetpu.tflite")
    assert r.on_chip_bytes == round(71.25 * 1024) and r.off_chip_bytes == 0
    assert r.on_chip_remaining_bytes == round(7.83 * 1024 ** 2)
    assert (r.subgraphs, r.total_ops) == (1, 14)
    assert (r.ops_on_edgetpu, r.ops_on_cpu) == (14, 0)  # both lines absent: everything mapped
    assert r.fully_mapped is True
    assert [(o.operator, o.count, o.mapped) for o in r.operators] == [
        ("MEAN", 1, True), ("CONV_2D", 7, True), ("DEPTHWISE_CONV_2D", 4, True), ("FULLY_CONNECTED", 1, True),
        ("SOFTMAX", 1, True)]
    assert sum(o.count for o in r.operators) == r.total_ops
    assert r.log_path == "model_int8_edgetpu.log" and r.errors == []


def test_partially_mapped_report():
    r = _report("edgetpu_partial.txt")
    assert (r.subgraphs, r.total_ops, r.ops_on_edgetpu, r.ops_on_cpu) == (2, 294, 289, 5)
    assert r.off_chip_bytes == round(1.70 * 1024 ** 2) and r.on_chip_remaining_bytes == 0
    assert r.fully_mapped is False
    cpu = [o for o in r.operators if not o.mapped]
    assert sum(o.count for o in cpu) == r.ops_on_cpu == 5
    assert {o.operator for o in cpu} == {"CONCATENATION", "TRANSPOSE", "RESHAPE"}
    assert cpu[0].status == "Operation is otherwise supported, but not mapped due to some unspecified limitation"
    assert sum(o.count for o in r.operators) == 294
    d = r.to_dict()
    assert d["fully_mapped"] is False and d["operators"][1]["mapped"] is False


def test_operation_log_file_format():
    r = _report("edgetpu_op_log.log")
    assert (r.input_model, r.output_model) == ("mnist4.tflite", "mnist4_edgetpu.tflite")
    statuses = {o.operator: o.status for o in r.operators}
    assert statuses["DEQUANTIZE"] == "Operation is working on an unsupported data type"
    assert statuses["CONV_2D"] == "Mapped to Edge TPU" and len(r.operators) == 7
    assert r.fully_mapped is False and r.ops_on_cpu is None  # the .log holds no counts


def test_short_report_without_operator_table_and_failure_report():
    r = _report("edgetpu_v15_short.txt")
    assert r.compiled and r.operators == [] and (r.ops_on_edgetpu, r.ops_on_cpu) == (31, 0)
    bad = _report("edgetpu_not_quantized.txt")
    assert not bad.compiled and bad.errors == ["Invalid model: vision_classifier_fungi_mobile_v1.tflite",
                                               "Model not quantized"]
    assert bad.ops_on_cpu is None and bad.fully_mapped is None


@pytest.mark.parametrize("text, expected", [("7.04MiB", 7381975), ("1.25 KiB", 1280), ("0.00B", 0),
                                            ("51.43 MiB", 53928264), ("oops", None)])
def test_parse_size(text, expected):
    assert parse_size(text) == expected


def test_read_compiler_log_beside_a_compiled_model(tmp_path):
    (tmp_path / "m_edgetpu.log").write_text((DATA / "edgetpu_op_log.log").read_text())
    r = edgetpu.read_compiler_log(tmp_path / "m_edgetpu.tflite")
    assert r.compiled and r.log_path.endswith("m_edgetpu.log") and len(r.operators) == 7
    assert edgetpu.read_compiler_log(tmp_path / "other_edgetpu.tflite") is None


# ------------------------------------------------------------------------------------------------
# model checks on real TFLite files

@pytest.fixture(scope="module")
def models():
    from bench_models import bench_models

    return bench_models()


def _edit(src: Path, dst: Path, change) -> Path:
    """Rewrites a .tflite through the TFLite schema's object API (tests only)."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as schema

    model = schema.ModelT.InitFromObj(schema.Model.GetRootAsModel(src.read_bytes(), 0))
    change(model, schema)
    builder = flatbuffers.Builder(1024)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(bytes(builder.Output()))
    return dst


def test_full_integer_model_is_acceptable(models):
    assert edgetpu_problems(models["int8.tflite"]) == []
    assert not is_edgetpu_compiled(models["int8.tflite"])


def test_float_model_problems_are_listed(models):
    problems = edgetpu_problems(models["float.tflite"])
    assert problems[0].startswith("input 'serving_default_image") and "FLOAT32; the Edge TPU needs int8 or uint8 inputs" in problems[0]
    assert any(p.startswith("output ") and "FLOAT32" in p for p in problems)
    assert problems[-1].startswith("not fully integer: ") and "float tensor(s)" in problems[-1]
    with pytest.raises(EdgeTpuError, match=r"^float.tflite is not compilable for the Edge TPU: input 'serving_default_image"):
        compile_edgetpu(models["float.tflite"], Path("/nonexistent-out"), compiler="/nonexistent/edgetpu_compiler")


def test_batch_and_dynamic_shape_problems(models, tmp_path):
    def batch4_dynamic(model, schema):
        sg = model.subgraphs[0]
        t = sg.tensors[sg.inputs[0]]
        t.shape = [4] + list(t.shape[1:])
        t.shapeSignature = [-1] + list(t.shape[1:])

    edited = _edit(models["int8.tflite"], tmp_path / "batch4.tflite", batch4_dynamic)
    problems = edgetpu_problems(edited)
    assert any("has batch 4; the Edge TPU needs batch 1" in p for p in problems)
    assert any("has a dynamic shape [-1, 16, 16, 3]; the Edge TPU needs static shapes" in p for p in problems)
    assert not any(p.startswith("not fully integer") for p in problems)


def test_compiled_model_is_recognised(models, tmp_path):
    def as_compiled(model, schema):
        code = schema.OperatorCodeT()
        code.builtinCode = schema.BuiltinOperator.CUSTOM
        code.deprecatedBuiltinCode = schema.BuiltinOperator.CUSTOM
        code.customCode = edgetpu.EDGETPU_CUSTOM_OP.encode()
        model.operatorCodes.append(code)

    compiled = _edit(models["int8.tflite"], tmp_path / "model_edgetpu.tflite", as_compiled)
    assert is_edgetpu_compiled(compiled)
    assert edgetpu_problems(compiled) == ["the model is already compiled for the Edge TPU"]
    path, report = edgetpu.prepare_model(compiled, tmp_path / "work")
    assert path == compiled and report is None  # nothing to compile, no .log beside it
    assert edgetpu.inspect_edgetpu(compiled) == {"compiled": True, "report": None}
    assert edgetpu.inspect_edgetpu(models["int8.tflite"]) == {"compiled": False, "problems": []}


def test_not_a_tflite_file(tmp_path):
    bogus = tmp_path / "x.tflite"
    bogus.write_bytes(b"not a model at all")
    with pytest.raises(EdgeTpuError, match=r"x.tflite is not a TFLite flatbuffer"):
        is_edgetpu_compiled(bogus)


# ------------------------------------------------------------------------------------------------
# missing compiler / runtime

def test_missing_compiler_is_one_line_with_the_install_hint(models, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    assert edgetpu.find_compiler() is None
    with pytest.raises(EdgeTpuError) as e:
        compile_edgetpu(models["int8.tflite"], tmp_path / "out")
    msg = str(e.value)
    assert msg.startswith("edgetpu_compiler not found on this host: install the Debian package edgetpu-compiler "
                          "from Coral's apt repository") and "\n" not in msg
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_missing_runtime_is_one_line_with_the_install_hint(monkeypatch):
    monkeypatch.setattr(coral, "RUNTIME_LIBRARY", "libedgetpu-not-here.so.1")
    monkeypatch.setattr(coral.ctypes.util, "find_library", lambda name: None)
    assert coral.find_runtime() is None
    with pytest.raises(EdgeTpuError) as e:
        coral.require_runtime()
    msg = str(e.value)
    assert "libedgetpu1-std" in msg and "matching tflite_runtime" in msg and "\n" not in msg


@pytest.mark.skipif(coral.find_runtime() is not None, reason="libedgetpu is installed here")
def test_runner_without_the_edgetpu_runtime_says_how_to_install(models):
    runner = Path(coral.__file__).with_name("runner.py")
    proc = subprocess.run([sys.executable, str(runner), "--delegate", "edgetpu", "--delegate-option", "device=usb",
                           "--runs", "1", "--warmup-secs", "0", "--min-secs", "0", str(models["int8.tflite"])],
                          capture_output=True, text=True, timeout=120)
    (entry,) = json.loads(proc.stdout)["results"]
    assert entry["error"].startswith("cannot load delegate library libedgetpu.so.1: ")
    assert "install libedgetpu1-std from Coral's apt repository" in entry["error"] and "\n" not in entry["error"]
    assert "matching tflite_runtime" in entry["error"] and not entry.get("samples_ms")


def test_prepare_models_needs_the_compiler_for_uncompiled_models(models, tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with pytest.raises(EdgeTpuError, match="^edgetpu_compiler not found on this host"):
        edgetpu.prepare_models([models["int8.tflite"]], tmp_path / "work")
    paths, reports = edgetpu.prepare_models([models["float.onnx"]], tmp_path / "work")
    assert paths == [models["float.onnx"]] and reports == [None]


@pytest.mark.parametrize("option, ok", [("usb", True), ("usb:0", True), ("pci:1", True), ("pci", True),
                                        (None, True), ("usb:x", False), ("tpu", False)])
def test_device_option(option, ok):
    if ok:
        assert coral.delegate_options(option) == ({"device": option} if option else {})
    else:
        with pytest.raises(EdgeTpuError, match="unknown Edge TPU device"):
            coral.check_device_option(option)


@pytest.mark.skipif(edgetpu.find_compiler() is None, reason="edgetpu_compiler is not installed")
def test_real_compiler_on_the_int8_model(models, tmp_path):
    path, report = compile_edgetpu(models["int8.tflite"], tmp_path)
    assert path.name == "int8_edgetpu.tflite" and is_edgetpu_compiled(path)
    assert report.compiled and report.total_ops and report.operators
    assert sorted(p.name for p in tmp_path.iterdir()) == ["int8_edgetpu.log", "int8_edgetpu.tflite"]


def test_compiler_and_runtime_sit_on_their_own_side_of_the_layers():
    """converters.edgetpu never imports devices; devices.coral never imports converters (nor TensorFlow)."""
    import ast

    import edgesep.converters.flatbuffer as flatbuffer

    def imported(module) -> set:
        names = set()
        for node in ast.walk(ast.parse(Path(module.__file__).read_text())):
            if isinstance(node, ast.ImportFrom) and node.module:
                names.add(node.module)
            elif isinstance(node, ast.Import):
                names.update(alias.name for alias in node.names)
        return names

    for module in (edgetpu, flatbuffer):
        assert not any(n.startswith(("edgesep.devices", "tensorflow", "keras")) for n in imported(module))
    assert not any(n.startswith(("edgesep.converters", "tensorflow", "keras")) for n in imported(coral))
