"""`edgesep bench` with several models: verdicts that survive an A/A test (issue 22).

Several sessions (a fresh runner each, the order alternating), an A/A control of the first model (a temporary
copy measured as another model) and each model judged against the first beyond the control's noise floor.
Real runner sessions on this machine, with tiny models and short runs.
"""
from __future__ import annotations

import json
import shutil

import pytest
from oneline import assert_one_error_line

from edgesep.cli import main

SMALL = ["--runs", "24", "--warmup", "1", "--warmup-secs", "0", "--min-secs", "0.15", "--max-secs", "3",
         "--threads", "1"]


def bench(capsys, *args):
    """The CLI in this process; returns (exit code, stdout, stderr)."""
    code = main(["bench", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture
def tmpdir_env(tmp_path, monkeypatch):
    """A private TMPDIR, to see what a bench leaves behind in it."""
    import tempfile

    folder = tmp_path / "tmp"
    folder.mkdir()
    monkeypatch.setenv("TMPDIR", str(folder))
    monkeypatch.setattr(tempfile, "tempdir", None)  # gettempdir() reads TMPDIR again
    return folder


def test_byte_identical_copies_are_never_called_different(bench_models, tmp_path, tmpdir_env, capsys):
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        shutil.copy(bench_models["float.tflite"], tmp_path / folder / "model.tflite")
    for seed in range(3):
        code, out, err = bench(capsys, tmp_path / "a/model.tflite", tmp_path / "b/model.tflite", *SMALL,
                               "--seed", seed, "--json")
        assert code == 0, err
        doc = json.loads(out)
        (comparison,) = doc["comparisons"]
        assert doc["sessions"] == 3 and len(doc["results"]) == 2  # the control is no user model
        assert doc["control"]["of"] == "a/model.tflite" and doc["control"]["floor"] >= 0
        assert comparison["significant"] is False, comparison["verdict"]
        assert comparison["verdict"].startswith("no "), comparison["verdict"]
        assert comparison["noise_floor"] == doc["control"]["floor"] and comparison["sessions"] == 3
        assert list(tmpdir_env.iterdir()) == []  # the control's copy (and all the rest) removed


def test_a_tiny_model_is_faster_than_a_heavy_one_and_says_what_it_rests_on(bench_models, tmp_path, capsys):
    out_file = tmp_path / "bench.json"
    code, out, err = bench(capsys, bench_models["float.tflite"], bench_models["heavy.tflite"], *SMALL,
                           "--out", out_file)
    assert code == 0, err
    text = " ".join(out.split())
    assert "heavy.tflite vs float.tflite: float.tflite is " in text and "x faster than heavy.tflite" in text
    assert "; 3 sessions" in text and "A/A floor ±" in text
    assert "A/A control (a copy of float.tflite measured as another model)" in text
    doc = json.loads(out_file.read_text())
    (comparison,) = doc["comparisons"]
    assert comparison["significant"] is True and comparison["ratio"] > 1 and comparison["lo"] > 1
    assert comparison["label"] == "heavy.tflite vs float.tflite" and doc["control"]["sessions"] == 3
    assert comparison["control"]["variant"] == "float.tflite (A/A control)"
    assert [r["label"] for r in doc["results"]] == ["float.tflite", "heavy.tflite"]
    for r in doc["results"]:  # each result pools its three sessions
        assert r["latency_ms"]["n"] == len(r["samples_ms"]) >= 24


def test_one_session_prints_ratios_but_no_verdict(bench_models, capsys):
    code, out, err = bench(capsys, bench_models["float.tflite"], bench_models["heavy.tflite"], *SMALL,
                           "--sessions", "1", "--json")
    assert code == 0, err
    doc = json.loads(out)
    (comparison,) = doc["comparisons"]
    assert doc["sessions"] == 1 and doc["control"] is None and comparison["significant"] is False
    assert comparison["ratio"] > 1 and "faster" not in comparison["verdict"]
    assert comparison["verdict"].endswith("one session, no A/A control: not a verdict")


@pytest.mark.parametrize("value", ["0", "-1", "nan", "2.5"])
def test_bad_sessions_are_one_line_usage_errors(bench_models, value, capsys):
    code, _, err = bench(capsys, bench_models["float.tflite"], bench_models["float.tflite"], "--sessions", value)
    assert code == 2
    assert_one_error_line(code, err, "--sessions")


def test_load_warnings_read_every_session_and_warn_once():
    from edgesep.compare.analysis import host_checks

    quiet = {"cores": 2, "loadavg_before": [0.1, 0.1, 0.1], "cpu_s": 1.0, "wall_s": 1.0}
    busy = {"cores": 2, "loadavg_before": [3.5, 3.5, 3.5], "cpu_s": 0.5, "wall_s": 1.0}
    checks = host_checks([quiet, busy, quiet], threads=1)
    assert [c["check"] for c in checks] == ["load", "cpu_time"]  # the later, loaded session counts too
    assert "load average up to 3.5 on 2 cores" in checks[0]["message"]
    assert host_checks([quiet, {}], threads=None) == ()
