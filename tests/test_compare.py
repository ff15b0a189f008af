"""`edgesep compare`: the built-in fused-vs-split experiment on a small config, given models, several devices
(local and a real sshd), a failing device, --resume, the report files and the verdict logic."""
from __future__ import annotations

import json
import os
import re
import shutil
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

import golden
import numpy as np
import pytest

from edgesep.compare import (CompareConfig, ComparisonSpec, Measurement, Variant, accuracy_verdict,
                             builtin_comparisons, judge_sessions, latency_comparisons, latency_verdict, parse_blocks,
                             session_key, sessions)
from edgesep.devices import BenchConfig, BenchResult
from edgesep.report import PLOT_DPI, PLOT_SIZES

SMALL = ["--input-size", "16", "--blocks", "small", "--epochs", "2", "--seeds", "2"]
FAST = ["--runs", "5", "--warmup-secs", "0", "--min-secs", "0.2", "--max-secs", "1", "--threads", "1"]
FAST_COMPARE = [*FAST, "--sessions", "2"]  # two sessions keep the pairing, the control and the resampling real
KINDS = ("float32", "int8", "onnx", "onnx_int8")
VERDICT = re.compile(r"^(no significant difference \(fused/split = [\d.]+, 95% CI [\d.]+–[\d.]+\)"
                     r"|no difference beyond the A/A noise floor \(fused/split = [\d.]+, 95% CI [\d.]+–[\d.]+; "
                     r"A/A control ±[\d.]+%\)"
                     r"|(fused|split) is [\d.]+x faster than (split|fused) \([\d.]+–[\d.]+\))$")
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
GOLDEN = json.loads((Path(__file__).parent / "data" / "compare_golden.json").read_text())


def edgesep(*args, timeout=600):
    """Run the real console entry point; returns (exit code, stdout, stderr)."""
    proc = subprocess.run([sys.executable, "-m", "edgesep", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout, proc.stderr


def error_lines(stderr):
    return [ln for ln in stderr.splitlines() if ln.startswith("edgesep: error: ")]


@pytest.fixture(scope="session")
def local_report(tmp_path_factory):
    """One built-in compare on the local CPU (small network, few epochs, short runs)."""
    out = tmp_path_factory.mktemp("compare") / "report"
    code, stdout, stderr = edgesep("compare", "--device", "local", *SMALL, *FAST_COMPARE, "--out", out)
    assert code == 0, stderr
    return out, json.loads((out / "report.json").read_text()), stdout


# ---------------------------------------------------------------- the built-in experiment on this machine

@pytest.mark.slow
def test_report_json_holds_every_figure(local_report):
    out, doc, _ = local_report
    assert doc["kind"] == "builtin" and doc["status"] == "done"
    assert doc["config"]["input_size"] == 16 and doc["config"]["blocks"] == [[16, 1], [32, 2]]
    assert [v["id"] for v in doc["variants"]] == [f"{f}/{k}" for f in ("fused", "split") for k in KINDS]
    for v in doc["variants"]:
        assert (out / v["path"]).stat().st_size == v["bytes"] and v["params"] > 0 and v["macs"] > 0
        assert v["ops"] and 0.0 <= v["accuracy"] <= 1.0
        assert v["accuracy_drop"] == pytest.approx(v["keras_accuracy"] - v["accuracy"])
    fused_ops = doc["variants"][0]["ops"]
    assert fused_ops.get("DEPTHWISE_CONV_2D") == 2  # the fused form still runs depthwise + 1x1 in TFLite
    section = doc["devices"]["local"]
    assert section["status"] == "done" and section["error"] is None and not section["resumed"]
    assert [(s["format"], s["index"]) for s in section["sessions"]] == [
        ("tflite", 0), ("tflite", 1), ("onnx", 0), ("onnx", 1)]  # two sessions per runtime, each a fresh runner
    for s in section["sessions"]:  # every session also ran the A/A control: the baseline loaded a second time
        assert sorted(s["order"]) == sorted([v["id"] for v in doc["variants"] if v["format"] == s["format"]]
                                            + [f"control:split/{'onnx' if s['format'] == 'onnx' else 'float32'}"])
    assert set(section["controls"]) == {"tflite", "onnx"}
    for v in doc["variants"]:
        r = section["results"][v["id"]]
        lat = r["latency_ms"]
        assert r["error"] is None and len(r["samples_ms"]) >= 5
        assert lat["ci95_p50"][0] <= lat["p50"] <= lat["ci95_p50"][1] and lat["p90"] >= lat["p50"]
        # on-device accuracy through the runner agrees with the host's export verification
        assert abs(r["accuracy"] - v["accuracy"]) <= 2 / doc["dataset"]["test_samples"]
    comparisons = section["comparisons"]
    assert [c["kind"] for c in comparisons] == list(KINDS)
    for c in comparisons:
        assert c["paired"] and c["pairs"] >= 6 and c["lo"] <= c["ratio"] <= c["hi"] and c["sessions"] == 2
        assert c["control"]["floor"] == c["noise_floor"] >= 0 and len(c["per_session"]) == 2
        assert VERDICT.match(c["verdict"]), c["verdict"]
        floor = 1 + c["noise_floor"]
        assert c["significant"] == (c["lo"] > floor or c["hi"] < 1 / floor)  # beyond the interval and the floor
        if c["significant"]:
            assert c["verdict"].startswith("split is" if c["lo"] > 1 else "fused is")
        else:
            assert c["verdict"].startswith("no ")
    acc = doc["accuracy"]
    assert acc["seeds"] == 2
    assert acc["verdict"].startswith(("no difference beyond the seed-to-seed spread", "fused keeps", "split keeps"))
    by_id = {v["id"]: v for v in doc["variants"]}
    for form, int8_variant in (("fused", by_id["fused/int8"]), ("split", by_id["split/int8"])):
        seed1 = json.loads((out / "artifacts" / "seed1" / form / "export.json").read_text())
        assert [a["path"] for a in seed1["artifacts"]] == ["model_int8.tflite"]  # other seeds: accuracy only
        drops = acc["forms"][form]["int8_drop"]
        assert drops["values"] == [pytest.approx(int8_variant["accuracy_drop"]),
                                   pytest.approx(seed1["keras_accuracy"] - seed1["artifacts"][0]["accuracy"])]
        assert drops["min"] <= drops["mean"] <= drops["max"] and drops["std"] >= 0
    gap = abs(acc["forms"]["fused"]["int8_drop"]["mean"] - acc["forms"]["split"]["int8_drop"]["mean"])
    assert acc["verdict"].startswith("no difference") == (gap <= acc["spread"])
    assert {k: s["status"] for k, s in doc["stages"].items()} == {
        "data": "done", "train": "done", "export": "done", "bench local": "done", "plots": "done"}
    golden.check(GOLDEN["builtin"], doc)  # the same keys and deterministic values as before the refactor


@pytest.mark.slow
def test_markdown_and_terminal_show_the_tables_and_verdicts(local_report):
    out, doc, stdout = local_report
    md = (out / "report.md").read_text()
    for c in doc["devices"]["local"]["comparisons"]:
        line = f"local, {c['label']}: {c['verdict']}"
        assert f"- {line}" in md and line in stdout
    for heading in ("## Verdicts", "## Variants", "## int8 accuracy over 2 seed(s)", "## local: latency (done)",
                    "## local: latency ratio fused/split"):
        assert heading in md
    assert "| fused TFLite int8 |" in md and "| split ONNX float32 |" in md
    for plot in doc["plots"]:
        assert f"]({plot['file']})" in md
    # the terminal gets the summary: one line per variant and verdict, unpadded in a pipe, the rest in report.md
    lines = stdout.splitlines()
    assert lines[0].split() == ["variant", "size", "top-1", "local", "p50", "ms", "[95%", "CI]"]
    assert sum(ln.startswith(("fused ", "split ")) for ln in lines) == len(doc["variants"])
    assert len(lines) < 40 and not any(ln != ln.rstrip() for ln in lines)
    assert "every table: report.md or --verbose" in stdout and "edgesep: warning" not in stdout


@pytest.mark.slow
@pytest.mark.parametrize("width", [80, 200])
def test_compare_reads_on_one_screen_in_a_real_terminal(local_report, tmp_path, width):
    """compare --resume (the same figures, no training) in a tmux pane of ``width`` columns, read back with
    capture-pane: under 40 lines, each warning once, verdicts whole (wrapped between words at 80)."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed (.ci/run installs it)")
    out, doc, _ = local_report
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    screen = _tmux_run([sys.executable, "-m", "edgesep", "compare", "--device", "local", *SMALL, *FAST_COMPARE,
                        "--out", str(copy), "--resume"], width, tmp_path)
    lines = screen.rstrip("\n").splitlines()
    assert lines[-1] == "EXIT=0", screen
    assert len(lines) < 40 and max(len(ln) for ln in lines) <= width, screen
    text = " ".join(screen.split())
    section = doc["devices"]["local"]
    for c in section["comparisons"]:
        assert " ".join(f"local, {c['label']}: {c['verdict']}".split()) in text
    for check in section.get("checks") or []:
        assert text.count(" ".join(check["message"].split())) == 1, screen
    assert sum(ln.startswith(("fused ", "split ")) for ln in lines) == len(doc["variants"])
    if width == 200:
        assert any(ln.strip() == f"local, {section['comparisons'][0]['label']}: {section['comparisons'][0]['verdict']}"
                   for ln in lines)


def _tmux_run(argv, width, tmp_path):
    """Run ``argv`` in a detached tmux pane ``width`` columns wide (COLUMNS/LINES unset, so only the pane's size
    counts); the pane's text once it has finished, ending in ``EXIT=code``."""
    import shlex

    sock, done = tmp_path / "tmux.sock", tmp_path / "done"
    command = (f"env -u COLUMNS -u LINES {shlex.join(map(str, argv))}; echo EXIT=$?; touch {shlex.quote(str(done))}; "
               "sleep 600")
    subprocess.run(["tmux", "-S", sock, "-f", "/dev/null", "new-session", "-d", "-x", str(width), "-y", "100",
                    command], check=True, timeout=30)
    try:
        deadline = time.monotonic() + 600
        while not done.exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        return subprocess.run(["tmux", "-S", sock, "capture-pane", "-p"], capture_output=True, text=True,
                              check=True, timeout=30).stdout
    finally:
        subprocess.run(["tmux", "-S", sock, "kill-server"], capture_output=True, timeout=30)


@pytest.mark.slow
def test_plots_are_real_pngs_of_the_stated_size(local_report):
    from PIL import Image

    out, doc, _ = local_report
    kinds = {p["kind"]: p for p in doc["plots"]}
    assert set(kinds) == {"latency", "accuracy_vs_latency", "ratios"}
    assert kinds["latency"]["file"] == "latency_local.png"
    for plot in doc["plots"]:
        data = (out / plot["file"]).read_bytes()
        assert data[:8] == PNG_SIGNATURE and data[12:16] == b"IHDR" and len(data) > 10_000
        width, height = struct.unpack(">II", data[16:24])
        inches = PLOT_SIZES[plot["kind"]]
        assert (width, height) == (plot["width"], plot["height"]) == (inches[0] * PLOT_DPI, inches[1] * PLOT_DPI)
        with Image.open(out / plot["file"]) as img:
            colors = img.convert("RGB").getcolors(maxcolors=1 << 20)
        assert len(colors) > 50  # drawn, not blank
    assert not [p for p in out.iterdir() if p.name.startswith(".")], "temp files left in the report folder"


@pytest.mark.slow
def test_latency_agrees_with_a_separate_bench_run(local_report):
    """The same artifacts through `edgesep bench`: each p50 within a factor of 3 of compare's.

    Both runs time the same files with the same runner and one thread, but minutes apart on a shared 2-core
    machine; the factor is wide enough for that and still catches unit, pairing or bookkeeping mistakes
    (ms vs s, a sample list attached to the wrong variant: fused int8 and ONNX differ by more than 3x).
    """
    out, doc, _ = local_report
    files = [out / v["path"] for v in doc["variants"]]
    code, stdout, stderr = edgesep("bench", *files, *FAST, "--json")
    assert code == 0, stderr
    bench = {Path(r["model"]).resolve(): r for r in json.loads(stdout)["results"]}
    for v in doc["variants"]:
        ours = doc["devices"]["local"]["results"][v["id"]]
        theirs = bench[(out / v["path"]).resolve()]
        assert ours["runtime"] == theirs["runtime"]
        ratio = ours["latency_ms"]["p50"] / theirs["latency_ms"]["p50"]
        assert 1 / 3 < ratio < 3, (v["id"], ours["latency_ms"]["p50"], theirs["latency_ms"]["p50"])


@pytest.mark.slow
def test_resume_reuses_exports_and_device_sessions(local_report, tmp_path):
    out, first, _ = local_report
    copy = tmp_path / "again"
    shutil.copytree(out, copy)
    mtimes = {v["path"]: (copy / v["path"]).stat().st_mtime_ns for v in first["variants"]}
    code, stdout, stderr = edgesep("compare", "--device", "local", *SMALL, *FAST_COMPARE, "--out", copy, "--resume")
    assert code == 0, stderr
    assert re.search(r"--resume reused 4 of 4 exports \(their training skipped\); (\d+) of \1 sessions on local",
                     stdout), stdout
    doc = json.loads((copy / "report.json").read_text())
    section = doc["devices"]["local"]
    assert section["resumed"] and all(s["resumed"] for s in section["sessions"])
    assert all(doc["seeds"][0][form]["train"].get("resumed") for form in ("fused", "split"))
    assert {v["path"]: (copy / v["path"]).stat().st_mtime_ns for v in doc["variants"]} == mtimes  # not re-exported
    for vid, r in section["results"].items():  # the very same samples: reused, not measured again
        assert r["samples_ms"] == first["devices"]["local"]["results"][vid]["samples_ms"] and r["resumed"]


@pytest.mark.slow
def test_an_interrupted_compare_keeps_what_finished(local_report, tmp_path):
    out, _, _ = local_report
    folder = tmp_path / "interrupted"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns("bench"))
    report = folder / "report.json"
    report.unlink()
    proc = subprocess.Popen([sys.executable, "-m", "edgesep", "compare", "--device", "local", *SMALL,
                             *FAST_COMPARE, "--min-secs", "30", "--max-secs", "30", "--out", folder, "--resume"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and proc.poll() is None:
            if report.exists() and json.loads(report.read_text())["devices"]["local"]["status"] == "running":
                break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 130, stderr
    doc = json.loads(report.read_text())  # still whole JSON: every write replaced the file atomically
    assert doc["status"] == "interrupted" and doc["devices"]["local"]["status"] == "interrupted"
    assert {k: s["status"] for k, s in doc["stages"].items()} == {
        "data": "done", "train": "done", "export": "done", "bench local": "interrupted"}
    assert len(doc["variants"]) == 2 * len(KINDS) and doc["accuracy"]["seeds"] == 2
    assert "Status: **interrupted**" in (folder / "report.md").read_text()


@pytest.mark.slow
def test_a_device_without_onnx_runtime_keeps_its_tflite_session(local_report, tmp_path):
    """A device Python that cannot import onnxruntime: the ONNX session fails, the TFLite one stands."""
    from edgesep.compare import DeviceBench

    out, doc, _ = local_report
    hook = tmp_path / "hook"
    hook.mkdir()
    (hook / "sitecustomize.py").write_text(
        "import sys\nclass _NoOrt:\n    def find_spec(self, name, path=None, target=None):\n"
        "        if name.split('.')[0] == 'onnxruntime':\n"
        "            raise ImportError('No module named onnxruntime')\n"
        "sys.meta_path.insert(0, _NoOrt())\n")
    python = tmp_path / "python-without-ort"
    python.write_text(f"#!/bin/sh\nPYTHONPATH={hook} exec {sys.executable} \"$@\"\n")
    python.chmod(0o755)
    bench = BenchConfig(runs=5, warmup_secs=0.0, min_secs=0.0, max_secs=1.0, threads=1)
    variants = [Variant.from_dict(v) for v in doc["variants"]]
    section = DeviceBench("local", {"python": str(python)}, variants, bench, None, tmp_path / "bench",
                          False, lambda *_: None).run()
    assert section.status == "partial" and "no ONNX Runtime" in section.error
    assert [(s.format, s.error is None) for s in section.sessions] == [("tflite", True), ("onnx", False)]
    assert sorted(section.results) == ["fused/float32", "fused/int8", "split/float32", "split/int8"]
    by_kind = {c.spec.kind: c for c in latency_comparisons(section.results, builtin_comparisons(KINDS))}
    assert by_kind["onnx"].verdict == by_kind["onnx_int8"].verdict == "not measured"
    assert by_kind["int8"].ratio is not None
    stored = json.loads((tmp_path / "bench" / "local.json").read_text())["sessions"]
    assert list(stored) == [section.sessions[0].session]  # only the finished session is kept for --resume


# ---------------------------------------------------------------- several devices: local + a real sshd

@pytest.mark.slow
@pytest.mark.ssh
def test_two_devices_report_both_and_a_failing_device_sinks_neither(local_report, sshd, tmp_path):
    from sshd import closed_port

    out, first, _ = local_report
    folder = tmp_path / "multi"
    shutil.copytree(out, folder, ignore=shutil.ignore_patterns("bench"))  # keep the exports, measure afresh
    dead = f"ssh://127.0.0.1:{closed_port()}"
    devices = ["--device", "local", "--device", sshd.target, "--device", dead]
    common = [*devices, *SMALL, *FAST_COMPARE, "--remote-python", sys.executable, "--out", folder, "--resume"]
    code, stdout, stderr = edgesep("compare", *common, "--ssh-config", sshd.config)
    assert code == 1
    lines = error_lines(stderr)
    assert lines[0].startswith(f"edgesep: error: {dead}: cannot reach") and "Connection refused" in lines[0]
    assert lines[-1] == f"edgesep: error: 1 of 3 devices failed; the others' results are in {folder}"
    assert "Traceback" not in stderr
    doc = json.loads((folder / "report.json").read_text())
    assert doc["status"] == "done with failures"
    assert doc["devices"][dead]["status"] == "failed" and doc["devices"][dead]["results"] == {}
    for target in ("local", sshd.target):
        section = doc["devices"][target]
        assert section["status"] == "done" and not section["resumed"], section["error"]
        assert all(r["error"] is None and r["device"] == target for r in section["results"].values())
        assert len(section["results"]) == 2 * len(KINDS) and all(c["ratio"] for c in section["comparisons"])
    assert doc["devices"][sshd.target]["host"]["python"] == ".".join(map(str, sys.version_info[:3]))
    md = (folder / "report.md").read_text()
    for heading in ("## local: latency (done)", f"## {sshd.target}: latency (done)", f"## {dead}: latency (failed)"):
        assert heading in md
    assert f"- {dead}: failed (cannot reach" in md
    ssh_plot = f"latency_ssh_{sshd.user}_127.0.0.1_{sshd.port}.png"
    assert {p["file"] for p in doc["plots"]} >= {"latency_local.png", ssh_plot}
    # edgesep's private dir is gone, with what onnxruntime writes into $TMPDIR on import (the runner's TMPDIR)
    assert list(sshd.device_tmp.iterdir()) == [], "compare left files on the device"

    # --resume with a key the server refuses: finished devices are not contacted, the failed one is retried
    code, _, stderr = edgesep("compare", *common, "--ssh-config", sshd.wrong_key_config)
    assert code == 1 and "authentication refused" not in stderr, stderr
    again = json.loads((folder / "report.json").read_text())
    for target in ("local", sshd.target):
        assert again["devices"][target]["resumed"] and again["devices"][target]["status"] == "done"
        for vid, r in again["devices"][target]["results"].items():
            assert r["samples_ms"] == doc["devices"][target]["results"][vid]["samples_ms"]
    assert again["devices"][dead]["status"] == "failed" and not again["devices"][dead]["resumed"]


# ---------------------------------------------------------------- given model files

def test_compare_two_given_tflite_files(bench_models, tmp_path):
    a, b = bench_models["float.tflite"], bench_models["int8.tflite"]
    out = tmp_path / "given"
    code, stdout, stderr = edgesep("compare", a, b, *FAST_COMPARE, "--out", out)
    assert code == 0, stderr
    doc = json.loads((out / "report.json").read_text())
    assert doc["kind"] == "models" and [v["id"] for v in doc["variants"]] == ["float.tflite", "int8.tflite"]
    assert [v["precision"] for v in doc["variants"]] == ["float32", "int8"]
    (c,) = doc["devices"]["local"]["comparisons"]
    assert c["a"] == "int8.tflite" and c["b"] == "float.tflite" and c["paired"]
    assert c["lo"] <= c["ratio"] <= c["hi"] and ("float.tflite" in c["verdict"] or "no significant" in c["verdict"])
    assert {p["kind"] for p in doc["plots"]} == {"latency", "ratios"}  # no accuracy without --data
    golden.check(GOLDEN["models"], doc)  # the same keys and deterministic values as before the refactor
    assert "int8.tflite vs float.tflite" in stdout and "int8.tflite" in (out / "report.md").read_text()


# ---------------------------------------------------------------- bad input: one line, no traceback

@pytest.mark.parametrize("args, code, needle", [
    (["one.tflite"], 2, "two or more MODEL files"),
    (["a.tflite", "b.tflite", "--seeds", "2"], 2, "--seeds shape the built-in network"),
    (["--seeds", "0"], 2, "0 is not in the range"),
    (["--blocks", "32:3"], 2, "bad --blocks '32:3'"),
    (["--device", "local", "--device", "local"], 2, "each --device may be given once"),
    (["--remote-python", "python3"], 2, "--remote-python applies to remote targets only"),
    (["--ssh-config", "x"], 2, "--ssh-config applies to ssh:// targets only"),
    (["--device", "phone"], 2, "unknown device target 'phone'"),
    (["--device", "ssh://pi@raspberrypi.local", "--ssh-config", "/nonexistent/ssh_config"], 2,
     "ssh config file not found"),
    (["missing-a.tflite", "missing-b.tflite"], 1, "model file not found: missing-a.tflite"),
])
def test_bad_input_is_one_line(args, code, needle, tmp_path):
    out = tmp_path / "out"
    got, _, stderr = edgesep("compare", *args, "--out", out)
    assert got == code, stderr
    lines = [ln for ln in stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("edgesep: error: ") and needle in lines[0], stderr
    assert not out.exists()


def test_config_checks_itself():
    assert parse_blocks("small") == ((16, 1), (32, 2))
    assert parse_blocks("32, 64:2,128:2") == ((32, 1), (64, 2), (128, 2))
    for bad in ("", "32:3", "0", "x", "32,,64"):
        with pytest.raises(ValueError, match="--blocks"):
            parse_blocks(bad)
    with pytest.raises(ValueError, match="input size"):
        CompareConfig(input_size=4)
    assert CompareConfig(int8=False).kinds == ("float32", "onnx")


# ---------------------------------------------------------------- verdicts on synthetic samples

def _measured(vid, samples, session, error=None):
    result = BenchResult(model=vid, device="local", samples_ms=None if samples is None else list(samples),
                         error=error)
    return Measurement(result=result, variant=vid, model=vid, session=session)


def _results(a, b, same_session=True):
    return {"fused/x": _measured("fused/x", a, "s1"),
            "split/x": _measured("split/x", b, "s1" if same_session else "s2")}


COMPARISON = [ComparisonSpec(label="X", kind="x", a="fused/x", b="split/x", a_name="fused", b_name="split")]


def test_verdict_no_significant_difference_when_the_interval_holds_one():
    rng = np.random.default_rng(1)
    same = rng.lognormal(0.0, 0.2, 400)
    (c,) = latency_comparisons(_results(same * rng.lognormal(0, 0.01, 400), same), COMPARISON)
    assert c.lo <= 1.0 <= c.hi and c.verdict.startswith("no significant difference")
    assert latency_verdict("fused", "split", 1.01, 0.97, 1.05) == \
        "no significant difference (fused/split = 1.01, 95% CI 0.97–1.05)"


def test_verdict_names_the_faster_form_with_the_inverted_interval():
    assert latency_verdict("fused", "split", 1 / 1.08, 1 / 1.12, 1 / 1.03) == \
        "fused is 1.08x faster than split (1.03–1.12)"
    assert latency_verdict("fused", "split", 1.25, 1.2, 1.3) == "split is 1.25x faster than fused (1.20–1.30)"
    # close to 1, more digits keep the interval from printing as 1.00
    assert latency_verdict("fused", "split", 1.004, 1.002, 1.006) == "split is 1.004x faster than fused (1.002–1.006)"
    assert latency_verdict("fused", "split", 1.015, 1.01, 1.021).endswith("(1.01–1.02)")
    rng = np.random.default_rng(2)
    split = rng.lognormal(0.0, 0.1, 300)
    (c,) = latency_comparisons(_results(split * 0.8, split), COMPARISON)
    assert c.hi < 1 and c.verdict.startswith("fused is 1.25x faster than split")


def test_paired_rounds_cancel_shared_drift():
    """Drift that hits both forms in the same rounds widens an unpaired interval past 1, not the paired one."""
    rng = np.random.default_rng(3)
    drift = np.exp(np.sin(np.linspace(0, 12, 600)) * 0.4)  # heat/frequency swings over the session
    split = drift * rng.lognormal(0.0, 0.01, 600)
    fused = drift * 0.97 * rng.lognormal(0.0, 0.01, 600)
    (paired,) = latency_comparisons(_results(fused, split), COMPARISON)
    (unpaired,) = latency_comparisons(_results(fused, split, same_session=False), COMPARISON)
    assert paired.paired and not unpaired.paired
    assert paired.hi < 1 and paired.verdict.startswith("fused is")
    assert unpaired.hi - unpaired.lo > 3 * (paired.hi - paired.lo)


def test_only_the_rounds_both_ran_are_paired():
    split = list(np.linspace(1.0, 2.0, 50))
    fused = split + [100.0] * 30  # fused ran on alone after split was done: those rounds have no partner
    (c,) = latency_comparisons(_results(fused, split), COMPARISON)
    assert c.rounds == 50 and c.ratio == pytest.approx(1.0)


def test_a_failed_variant_is_not_compared():
    results = _results([1.0, 1.1], [1.0, 1.2])
    results["split/x"] = _measured("split/x", None, "s1", error="inference failed")
    (c,) = latency_comparisons(results, COMPARISON)
    assert c.ratio is None and c.verdict == "not measured"


def test_accuracy_verdict_needs_a_gap_beyond_the_seed_spread():
    assert accuracy_verdict("fused", "split", [0.004], [0.0]).startswith("one seed")
    overlapping = accuracy_verdict("fused", "split", [0.002, 0.006, 0.004], [0.0, 0.005, 0.003])
    assert overlapping.startswith("no difference beyond the seed-to-seed spread")
    apart = accuracy_verdict("fused", "split", [0.030, 0.034, 0.032], [0.002, 0.004, 0.003])
    assert apart.startswith("split keeps int8 accuracy better: its drop is 2.90 pp smaller than fused's")


def test_sessions_group_by_runtime_and_keys_follow_the_model_bytes():
    variants = [Variant(id=f"{f}/{k}", name=f, label=k, format="onnx" if k.startswith("onnx") else "tflite",
                        precision="float32", file="x", path="x", bytes=1, sha256=f"{f}{k}", ops={}, params=1,
                        macs=1) for f in ("fused", "split") for k in KINDS]
    groups = sessions(variants)
    assert [fmt for fmt, _ in groups] == ["tflite", "onnx"]
    assert [v.id for v in groups[0][1]] == ["fused/float32", "fused/int8", "split/float32", "split/int8"]
    bench = BenchConfig(runs=5)
    shas = [v.sha256 for v in groups[0][1]]
    key = session_key("local", {}, bench, None, shas)
    assert key == session_key("local", {"ssh_config": "other"}, bench, None, shas)
    assert key != session_key("local", {}, BenchConfig(runs=6), None, shas)
    assert key != session_key("local", {}, bench, None, ["new", *shas[1:]])
    assert [c.a for c in builtin_comparisons(KINDS)] == ["fused/float32", "fused/int8", "fused/onnx",
                                                         "fused/onnx_int8"]


def _sessions(vid, sessions, key="g1"):
    """A measurement pooled from several sessions (as DeviceBench pools them)."""
    samples = [x for sess in sessions for x in sess]
    result = BenchResult(model=vid, device="local", samples_ms=samples)
    return Measurement(result=result, variant=vid, model=vid, session=key,
                       session_rounds=tuple(len(x) for x in sessions), session_index=tuple(range(len(sessions))))


def test_verdict_must_clear_the_aa_noise_floor_and_says_when_one_session_is_all():
    assert latency_verdict("fused", "split", 1.01, 1.004, 1.016, floor=0.02) == \
        "no difference beyond the A/A noise floor (fused/split = 1.010, 95% CI 1.004–1.016; A/A control ±2.0%)"
    assert latency_verdict("fused", "split", 1.01, 1.004, 1.016, floor=0.001).startswith("split is 1.010x faster")
    assert latency_verdict("fused", "split", 0.9, 0.85, 0.95, sessions=1).endswith(
        "(1.05–1.18); one session only: the interval omits session-to-session variation")


def test_sessions_and_the_control_decide_the_verdict():
    """Per-session levels that differ (mode flips) cancel in the session-wise ratio; a control that strays as
    far as the difference keeps it from being called."""
    rng = np.random.default_rng(5)
    levels = [1.0, 1.3, 0.9, 1.1, 1.2]
    split = [list(lv * rng.lognormal(0, 0.02, 200)) for lv in levels]
    fused = [list(np.array(s) * 0.97 * rng.lognormal(0, 0.005, 200)) for s in split]
    steady = [list(np.array(s) * rng.lognormal(0, 0.005, 200)) for s in split]  # a control that stays at 1
    wobbly = [list(np.array(s) * f) for s, f in zip(split, (1.04, 0.96, 1.05, 0.95, 1.0))]  # it strays 5%
    results = {"fused/x": _sessions("fused/x", fused), "split/x": _sessions("split/x", split)}
    (quiet,) = latency_comparisons(results, COMPARISON, {"x": _sessions("control:split/x", steady)})
    (noisy,) = latency_comparisons(results, COMPARISON, {"x": _sessions("control:split/x", wobbly)})
    assert quiet.ratio == pytest.approx(0.97, rel=0.01) and quiet.details["sessions"] == 5
    assert quiet.verdict.startswith("fused is 1.03") and quiet.details["significant"]
    assert quiet.details["control"]["variant"] == "control:split/x" and quiet.details["noise_floor"] < 0.02
    assert noisy.hi < 1 and not noisy.details["significant"] and noisy.details["noise_floor"] > 0.03
    assert noisy.verdict.startswith("no difference beyond the A/A noise floor")
    assert quiet.to_dict()["noise_floor"] == quiet.details["noise_floor"]  # details land in report.json


def test_judge_sessions_is_the_same_judgement_for_raw_samples():
    rng = np.random.default_rng(6)
    b = [list(lv * rng.lognormal(0, 0.02, 100)) for lv in (1.0, 1.2, 0.9)]
    a = [list(np.array(s) * 1.1) for s in b]
    same = [list(np.array(s) * rng.lognormal(0, 0.002, 100)) for s in b]
    c = judge_sessions(COMPARISON[0], a, b, control=same)
    assert c.ratio == pytest.approx(1.1) and c.details["sessions"] == 3 and c.details["noise_floor"] < 0.01
    assert c.verdict.startswith("split is 1.10x faster than fused")
    alone = judge_sessions(COMPARISON[0], a[:1], b[:1])
    assert alone.details["control"] is None and alone.verdict.endswith("one session only: the interval omits "
                                                                       "session-to-session variation")


def test_bench_ratios_judge_each_model_against_the_first():
    from edgesep.compare.analysis import bench_ratios

    rng = np.random.default_rng(11)
    base = list(rng.lognormal(0, 0.02, 300))
    results = [BenchResult(model="/m/a.tflite", device="local", samples_ms=base),
               BenchResult(model="/m/b.tflite", device="local", samples_ms=[x * 0.5 for x in base]),
               BenchResult(model="/m/c.onnx", device="local", error="no ONNX Runtime")]
    faster, failed = bench_ratios(results)  # one session, no A/A control: a ratio, never a verdict
    assert faster.spec.label == "b.tflite vs a.tflite" and faster.ratio == pytest.approx(0.5)
    assert faster.verdict == "b.tflite/a.tflite = 0.50 (95% CI 0.50–0.50); one session, no A/A control: not a verdict"
    assert faster.details["significant"] is False
    assert failed.verdict == "not measured" and failed.to_dict()["label"] == "c.onnx vs a.tflite"
    sessions = [[BenchResult(model=r.model, device="local", samples_ms=[x * lv for x in r.samples_ms or []],
                             error=r.error) for r in results] for lv in (1.0, 1.1, 0.95)]
    control = [BenchResult(model="copy", device="local", samples_ms=list(s[0].samples_ms)) for s in sessions]
    faster, failed = bench_ratios(results, sessions, control)
    assert faster.verdict.startswith("b.tflite is 2.00x faster than a.tflite") and faster.details["significant"]
    assert faster.verdict.endswith("; A/A floor ±0.0%; 3 sessions") and faster.details["sessions"] == 3
    assert failed.verdict == "not measured"
    (alone,) = bench_ratios(results[:2], sessions[:2])  # sessions but no control: still not a verdict
    assert alone.verdict.endswith("2 sessions but no A/A control measured: not a verdict")


def test_stability_checks_warn_about_load_cpu_time_heat_modes_and_threads():
    from edgesep.compare import DeviceSection, SessionEntry, stability_checks

    rng = np.random.default_rng(12)
    two_modes = list(np.r_[rng.normal(1.0, 0.01, 300), rng.normal(1.6, 0.02, 200)])
    busy = {"cores": 2, "loadavg_before": [1.8, 1.0, 0.5], "cpu_s": 1.0, "wall_s": 3.0, "temp_c_before": 41.0,
            "temp_c": 52.0}
    calm = {"cores": 2, "loadavg_before": [0.2, 0.2, 0.2], "cpu_s": 2.9, "wall_s": 3.0, "temp_c_before": 41.0,
            "temp_c": 42.0}
    section = DeviceSection(target="local", sessions=(SessionEntry("tflite", "k", index=0, host=busy),),
                            results={"a": _measured("a", two_modes, "k"),
                                     "b": _measured("b", list(rng.lognormal(0, 0.05, 500)), "k")})
    checks = {c["check"]: c["message"] for c in stability_checks(section, threads=None)}
    assert set(checks) == {"load", "threads", "cpu_time", "temperature", "bimodal"}
    assert "load average up to 1.8 on 2 cores" in checks["load"] and "--threads 1" in checks["threads"]
    assert "1.0 s of CPU in 3.0 s (33%)" in checks["cpu_time"] and "rose 11 C" in checks["temperature"]
    assert checks["bimodal"].startswith("a: two speed modes (1 ms and 1.6 ms, 40% slow)")
    quiet = DeviceSection(target="local", sessions=(SessionEntry("tflite", "k", index=0, host=calm),),
                          results={"b": section.results["b"]})
    assert stability_checks(quiet, threads=None) == () and stability_checks(section, threads=1) != ()
