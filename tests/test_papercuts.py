"""Small things a new user trips over (issue 22): each one asserted where it shows."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from oneline import assert_one_error_line


def _edgesep(*args, env=None, timeout=300):
    env = {k: v for k, v in (env or os.environ).items() if k != "TF_CPP_MIN_LOG_LEVEL"}  # our own quieting counts
    proc = subprocess.run([sys.executable, "-m", "edgesep", *map(str, args)], capture_output=True, text=True,
                          env=env, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


@pytest.fixture(scope="module")
def keras_files(tmp_path_factory):
    """A tiny Keras model saved as .keras, .h5 and .hdf5 (made in a child: this process stays TF-free)."""
    d = tmp_path_factory.mktemp("keras")
    code = ("import sys, keras; inp = keras.Input((8, 8, 3)); x = keras.layers.Conv2D(4, 3)(inp); "
            "m = keras.Model(inp, keras.layers.Dense(2)(keras.layers.GlobalAveragePooling2D()(x))); "
            "[m.save(sys.argv[1] + '/tiny' + e) for e in ('.keras', '.h5', '.hdf5')]")
    subprocess.run([sys.executable, "-c", code, str(d)], check=True, capture_output=True, timeout=300)
    return {ext: d / f"tiny{ext}" for ext in (".keras", ".h5", ".hdf5")}


@pytest.mark.slow
@pytest.mark.parametrize("ext", [".keras", ".h5", ".hdf5"])
def test_inspect_reads_keras_and_legacy_h5_without_tensorflow_log(keras_files, ext):
    code, stdout, stderr = _edgesep("inspect", keras_files[ext])
    assert code == 0, stderr
    assert stderr == "", f"TensorFlow's start-up log reached the terminal:\n{stderr}"
    assert "Conv2D" in stdout and "Dense" in stdout
    assert "KiB" in stdout and " KB" not in stdout  # sizes are binary: 1024 bytes to the KiB


def test_sizes_are_labelled_kib():
    from edgesep.report.inspect import info_tables
    from rich.console import Console

    info = {"path": "m.tflite", "format": "tflite", "bytes": 11162, "sha256": "0" * 64, "params": 10, "macs": 2500,
            "macs_partial": False, "ops": {"CONV_2D": 1}, "inputs": [], "outputs": [], "quantization": None,
            "notes": []}
    console = Console(width=120, record=True, color_system=None)
    for section in info_tables(info):
        console.print(section)
    text = console.export_text()
    assert "10.9 KiB" in text and "2.5 K)" in text  # bytes in KiB; MACs stay decimal (2.5 K)


def test_export_of_a_pipe_says_it_would_block(tmp_path):
    fifo = tmp_path / "model.keras"
    os.mkfifo(fifo)
    code, _, stderr = _edgesep("export", "--model", fifo, "--out", tmp_path / "out", timeout=60)
    assert_one_error_line(code, stderr, "not a regular file", "pipe")
    assert not (tmp_path / "out").exists()


def test_export_of_a_tflite_points_to_bench_and_bench_of_a_keras_points_to_export(tmp_path):
    tflite = tmp_path / "model.tflite"
    tflite.write_bytes(b"\0\0\0\0TFL3" + b"\0" * 64)
    code, _, stderr = _edgesep("export", "--model", tflite, "--out", tmp_path / "out", timeout=60)
    assert_one_error_line(code, stderr, "already exported", "edgesep bench")
    keras_file = tmp_path / "model.keras"
    keras_file.write_bytes(b"PK\3\4" + b"\0" * 64)
    code, _, stderr = _edgesep("bench", keras_file, timeout=60)
    assert_one_error_line(code, stderr, "is a Keras model", f"edgesep export --model {keras_file}")


def test_importing_onnxruntime_leaves_no_session_file_in_tmpdir(tmp_path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    code = "from edgesep.converters._quiet import import_onnxruntime; import_onnxruntime()"
    subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "TMPDIR": str(tmp)}, timeout=120)
    assert list(tmp.iterdir()) == []  # onnxruntime's telemetry writes .ses into $TMPDIR when it loads


def test_ssh_error_has_no_blank_line_before_it_when_stderr_is_not_a_terminal(tmp_path):
    model = tmp_path / "m.tflite"
    model.write_bytes(b"\0\0\0\0TFL3" + b"\0" * 64)
    code, _, stderr = _edgesep("bench", model, "--device", "ssh://nobody@127.0.0.1:1", timeout=120)
    assert_one_error_line(code, stderr, "ssh://nobody@127.0.0.1:1")
    assert stderr.startswith("edgesep: error: "), repr(stderr)


def _result(model: str, samples, host):
    from edgesep.devices import BenchResult

    return BenchResult.from_dict({"model": model, "device": "local", "runtime": "tflite_runtime", "threads": 1,
                                  "latency_ms": {"p50": float(samples[0])}, "samples_ms": list(samples),
                                  "host": host})


@pytest.mark.parametrize("load, warned", [(3.5, True), (0.2, False)])
def test_bench_of_several_models_warns_when_the_machine_was_loaded(capsys, load, warned):
    from edgesep.cli.bench import _bench_output

    host = {"cpu": "x", "cores": 2, "loadavg_before": [load, load, load], "cpu_s": 9.0, "wall_s": 10.0}
    results = [_result(f"{d}/m.tflite", [1.0 + 0.01 * (i % 3) for i in range(30)], host) for d in ("a", "b")]
    _bench_output(results, as_json=True, out_file=None, threads=1)
    err = capsys.readouterr().err
    assert ("load average up to 3.5 on 2 cores" in err) is warned, err
    assert err.count("edgesep: warning:") == (1 if warned else 0)


def test_sweep_parquet_without_pyarrow_refuses_before_writing_anything(tmp_path):
    code = ("import sys, builtins; real = builtins.__import__\n"
            "def imp(name, *a, **k):\n"
            "    if name.split('.')[0] == 'pyarrow': raise ImportError('no pyarrow')\n"
            "    return real(name, *a, **k)\n"
            "builtins.__import__ = imp\n"
            "from edgesep.cli import main; sys.exit(main(sys.argv[1:]))")
    proc = subprocess.run([sys.executable, "-c", code, "sweep", "--csv", "--parquet", "--out", str(tmp_path / "s"),
                           str(tmp_path / "missing.toml")], capture_output=True, text=True, timeout=120)
    assert_one_error_line(proc.returncode, proc.stderr, "--parquet needs pyarrow")
    assert not (tmp_path / "s").exists()
