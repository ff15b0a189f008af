"""Two files of the same name in different folders are told apart in every output (issue 22)."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest

from edgesep.report.text import distinct_labels


@pytest.mark.parametrize("paths, labels", [
    (["out/model_int8.tflite", "out-fused/model_int8.tflite"], ["out/model_int8.tflite", "out-fused/model_int8.tflite"]),
    (["a.tflite", "b.tflite"], ["a.tflite", "b.tflite"]),
    (["/x/run/a/m.tflite", "/y/run/a/m.tflite", "z/m.tflite"], ["x/run/a/m.tflite", "y/run/a/m.tflite", "z/m.tflite"]),
    (["./out/m.tflite", "out/m.onnx"], ["m.tflite", "m.onnx"]),
    (["out/m.tflite", "out/m.tflite"], ["out/m.tflite (1)", "out/m.tflite (2)"]),
    (["out\\m.tflite", "fused\\m.tflite"], ["out/m.tflite", "fused/m.tflite"]),
])
def test_shortest_distinct_suffix(paths, labels):
    assert distinct_labels(paths) == labels


def test_bench_tells_same_named_files_apart_in_table_verdict_and_json(bench_models, tmp_path):
    for folder in ("out", "out-fused"):
        (tmp_path / folder).mkdir()
        shutil.copy(bench_models["float.tflite"], tmp_path / folder / "model.tflite")
    args = [sys.executable, "-m", "edgesep", "bench", "out/model.tflite", "out-fused/model.tflite", "--runs", "5",
            "--warmup-secs", "0", "--min-secs", "0.1", "--max-secs", "1", "--threads", "1"]
    proc = subprocess.run([*args, "--json"], capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    doc = json.loads(proc.stdout)
    assert [r["label"] for r in doc["results"]] == ["out/model.tflite", "out-fused/model.tflite"]
    proc = subprocess.run(args, capture_output=True, text=True, cwd=tmp_path, timeout=300)
    assert proc.returncode == 0, proc.stderr
    text = " ".join(proc.stdout.split())
    assert text.count("out/model.tflite") >= 2 and text.count("out-fused/model.tflite") >= 2, proc.stdout
    assert "out-fused/model.tflite vs out/model.tflite:" in text
    assert all(line == line.rstrip() for line in proc.stdout.splitlines())  # a pipe gets no padding
