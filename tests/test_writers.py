"""The export front door: ExportConfig owns every option rule, the writer registry, the output folder
(staged set, stale artifacts removed, one export at a time, --out checked first) and the Edge TPU writer."""
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from edgesep.converters.export_config import ExportConfig
from edgesep.errors import EdgeTpuError, OutputError, UsageError

DATA = Path(__file__).parent / "data"


@pytest.mark.parametrize("options, message", [
    ({"per_tensor": True}, "add --int8"),
    ({"equalize": True}, "add --int8"),
    ({"edgetpu": True}, "--edgetpu compiles the int8 model; add --int8"),
    ({"int16x8": True, "edgetpu": True}, "--edgetpu compiles the int8 model; add --int8"),
    ({"relu6": "clip"}, "--relu6 says how --equalize"),
    ({"no_guard": True}, "--no-guard switches off"),
    ({"int8": True, "edgetpu": True, "io_dtype": "float32"}, "--edgetpu needs integer input/output"),
    ({"io_dtype": "int4"}, "unknown io_dtype 'int4'; valid: int8, uint8, float32"),
    ({"int8": True, "equalize": True, "relu6": "gelu"}, "unknown relu6 mode 'gelu'; valid: clip, replace, keep"),
    ({"calib_samples": 0}, "calib_samples must be >= 1"),
])
def test_every_option_rule_is_the_configs(options, message):
    with pytest.raises(UsageError, match=message) as e:
        ExportConfig.from_options(**options)
    assert e.value.exit_code == 2 and "\n" not in str(e.value)


def test_quantized_exports_need_data_one_rule_one_error():
    for flag in ("int8", "int16x8"):
        config = ExportConfig.from_options(**{flag: True})
        config.check_data(True)
        with pytest.raises(UsageError, match=f"--{flag} with --model needs --data to calibrate") as e:
            config.check_data(False)
        assert e.value.exit_code == 2
    ExportConfig().check_data(False)  # float needs no calibration


def test_config_rules_hold_for_the_python_api_too():
    with pytest.raises(UsageError, match="unknown precision 'int4'; valid: float32, float16, int8"):
        ExportConfig(precisions=("int4",))
    with pytest.raises(UsageError, match="nothing to export"):
        ExportConfig(precisions=(), onnx=False)
    with pytest.raises(UsageError, match="add --int8"):
        ExportConfig(per_channel=False)
    with pytest.raises(UsageError, match="opset 8"):
        ExportConfig(opset=8)
    config = ExportConfig.from_options(int8=True, fp16=True, equalize=True, relu6="replace", edgetpu=True)
    assert config.artifact_keys() == ("tflite:float32", "tflite:fp16", "tflite:int8", "onnx:float32", "onnx:int8",
                                      "edgetpu")
    assert ExportConfig.from_options(int16x8=True, per_tensor=True, no_onnx=True).artifact_keys() == (
        "tflite:float32", "tflite:int16x8")  # --no-onnx skips both ONNX files
    assert ExportConfig.from_dict(config.to_dict()) == config


def test_the_writer_registry():
    from edgesep.converters import writers

    assert writers.list_writers()[:7] == ("tflite:float32", "tflite:fp16", "tflite:int8", "tflite:int16x8",
                                          "onnx:float32", "onnx:int8", "edgetpu")
    with pytest.raises(UsageError, match="unknown artifact 'tflite:int4'; known: tflite:float32, tflite:fp16"):
        writers.get_writer("tflite:int4")
    with pytest.raises(ValueError, match="already registered"):
        writers.register_writer(writers.get_writer("onnx:float32"))
    with pytest.raises(UsageError, match="edgetpu needs tflite:int8 written before it"):
        writers.writers_for(("tflite:float32", "edgetpu"))
    int8 = writers.get_writer("tflite:int8")
    assert int8.file_name == "model_int8.tflite" and int8.needs == ("calibration",) and int8.verify is not None
    tpu = writers.get_writer("edgetpu")
    assert tpu.verify is None and tpu.delegate == "edgetpu" and "Edge TPU" in tpu.runtime


def test_out_is_checked_before_any_conversion(tmp_path, monkeypatch):
    import edgesep.converters.fold as fold
    from edgesep.converters.export import export

    def never(*args, **kwargs):
        raise AssertionError("converted before checking --out")

    monkeypatch.setattr(fold, "fold_with_report", never)
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="exists and is not a folder"):
        export(object(), tmp_path / "file", ExportConfig())
    monkeypatch.setenv("PATH", str(tmp_path))  # no edgetpu_compiler
    dataset = type("Data", (), {"x_test": __import__("numpy").zeros((1, 8, 8, 3))})()
    model = type("Model", (), {"input_shape": (None, 8, 8, 3)})()
    with pytest.raises(EdgeTpuError, match="edgetpu_compiler not found"):
        export(model, tmp_path / "out", ExportConfig(precisions=("float32", "int8"), edgetpu=True), dataset)
    assert not (tmp_path / "out").exists()


def test_a_second_export_into_the_same_out_refuses_at_once(tmp_path):
    out = tmp_path / "out"
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time\nfrom edgesep.io import locked_dir\n"
                               f"with locked_dir({str(out)!r}):\n    print('locked', flush=True)\n    time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        proc = subprocess.run([sys.executable, "-m", "edgesep", "export", "--out", str(out)],
                              capture_output=True, text=True, timeout=120)
    finally:
        holder.kill()
        holder.wait()
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1, proc.stderr
    assert lines[0] == f"edgesep: error: another edgesep is writing to {out}; wait for it or use another --out"


@pytest.mark.slow
def test_reexport_replaces_the_artifact_set_and_edgetpu_is_a_writer(tmp_path, monkeypatch, trained_split, digits):
    """A re-export leaves only its own artifacts; the Edge TPU writer compiles inside the staged set (a
    stand-in compiler speaking the real one's command line and report: the compiler is x86-64 only)."""
    from edgesep.converters.export import export

    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    compiler = bin_dir / "edgetpu_compiler"
    compiler.write_text(f"#!/bin/sh\nexec {sys.executable} {DATA / 'edgetpu_compiler_standin.py'} \"$@\"\n")
    compiler.chmod(compiler.stat().st_mode | stat.S_IEXEC)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    (tmp_path / "out").mkdir()
    (out / "mine.txt").write_text("the user's own file")
    config = ExportConfig(precisions=("float32", "int8"), onnx=True, calib_samples=50, edgetpu=True)
    doc = export(trained_split[0], out, config, digits).to_dict()
    names = sorted(p.name for p in out.iterdir())
    assert names == ["export.json", "mine.txt", "model.onnx", "model.tflite", "model_int8.onnx", "model_int8.tflite",
                     "model_int8_edgetpu.log", "model_int8_edgetpu.tflite"]
    tpu = doc["artifacts"][-1]
    assert (tpu["path"], tpu["delegate"], tpu["precision"]) == ("model_int8_edgetpu.tflite", "edgetpu", "int8")
    assert doc["edgetpu"]["compiled"] and doc["edgetpu"]["output_model"] == str(out / "model_int8_edgetpu.tflite")
    assert doc["edgetpu"]["log_path"] == str(out / "model_int8_edgetpu.log") and doc["edgetpu"]["operators"]
    assert json.loads((out / "export.json").read_text()) == json.loads(json.dumps(doc))
    again = export(trained_split[0], out, ExportConfig(precisions=("float32",), onnx=False), digits).to_dict()
    assert sorted(p.name for p in out.iterdir()) == ["export.json", "mine.txt", "model.tflite"]
    assert [a["path"] for a in again["artifacts"]] == ["model.tflite"] and "edgetpu" not in again


def test_a_registered_writer_is_asked_for_by_key(tmp_path):
    """A new artifact is one register_writer call: --artifact KEY asks for it, no other option needed."""
    from edgesep.converters.export import check_export

    config = ExportConfig.from_options(writers=("onnx:float32", "tflite:fp16"))
    assert config.artifact_keys() == ("tflite:float32", "onnx:float32", "tflite:fp16")
    assert config.to_dict()["writers"] == ["onnx:float32", "tflite:fp16"] and "writers" not in ExportConfig().to_dict()
    assert ExportConfig.from_dict(config.to_dict()) == config
    assert [w.key for w in check_export(config, tmp_path / "out")] == list(config.artifact_keys())
    with pytest.raises(UsageError, match="artifact onnx:int8 is calibrated: add --int8"):
        check_export(ExportConfig(writers=("onnx:int8",)), tmp_path / "out")
    with pytest.raises(UsageError, match="unknown artifact 'tflite:int9'; known: tflite:float32"):
        check_export(ExportConfig(writers=("tflite:int9",)), tmp_path / "out")
