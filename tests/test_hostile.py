"""The hostile-input suite: every bad input a tired user gives ends in one line, a real exit code, nothing left.

Each case runs the real CLI in a subprocess (tests/hostile.py): exit code 2 for usage errors and 1 for
failures, exactly one ``edgesep: error:`` line and no traceback, ``--out`` byte-identical to before, nothing
new in an isolated $TMPDIR, and an answer within a time bound. Cases are grouped by kind; the kinds, not the
examples, are what the code handles.
"""
from __future__ import annotations

import os
import socket
import threading

import numpy as np
import pytest

from oneline import assert_one_error_line
from hostile import SIGNALS, check_refused, interrupt_after, run_edgesep, run_in_process, snapshot

USAGE, FAIL = 2, 1


@pytest.fixture(scope="module")
def tiny(bench_models):
    return bench_models


@pytest.fixture
def out(tmp_path):
    """An existing output folder with a file in it, which no refused command may touch."""
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("the user's own file\n")
    return folder


# ---------------------------------------------------------------- usage errors: options that cannot work (exit 2)

USAGE_CASES = {
    "form with model": (["export", "--form", "fused", "--model", "m.keras"], "--form"),
    "per-tensor without int8": (["export", "--per-tensor"], "--int8"),
    "relu6 without equalize": (["export", "--int8", "--relu6", "clip"], "--equalize"),
    "no-guard without equalize": (["export", "--int8", "--no-guard"], "--equalize"),
    "edgetpu with float io": (["export", "--int8", "--edgetpu", "--io-dtype", "float32"], "--io-dtype"),
    "calib samples zero": (["export", "--calib-samples", "0"], "--calib-samples"),
    "io dtype unknown": (["export", "--int8", "--io-dtype", "int4"], "--io-dtype"),
    "unknown command": (["exprot"], "exprot"),
    "unknown option": (["export", "--int9"], "--int9"),
    "bench without model": (["bench"], "MODEL"),
    "threads zero": (["bench", "MODEL", "--threads", "0"], "--threads"),
    "runs negative": (["bench", "MODEL", "--runs", "-1"], "--runs"),
    "max secs inf": (["bench", "MODEL", "--max-secs", "inf"], "--max-secs"),
    "max secs nan": (["bench", "MODEL", "--max-secs", "nan"], "--max-secs"),
    "min secs inf": (["bench", "MODEL", "--min-secs", "inf"], "--min-secs"),
    "warmup secs nan": (["bench", "MODEL", "--warmup-secs", "nan"], "--warmup-secs"),
    "ipv6 bracket unclosed": (["bench", "MODEL", "--device", "ssh://[::1"], "ssh://[::1"),
    "unknown scheme": (["bench", "MODEL", "--device", "telnet://pi"], "telnet"),
    "remote python unbalanced quote": (["bench", "MODEL", "--device", "ssh://pi@127.0.0.1", "--remote-python",
                                        "'"], "--remote-python"),
    "duplicate device with space": (["compare", "MODEL", "MODEL", "--device", "local", "--device", " local"],
                                    "once"),
    "delegate option without =": (["bench", "MODEL", "--delegate-option", "usb"], "KEY=VALUE"),
    "ssh config for local": (["bench", "MODEL", "--ssh-config", "cfg"], "--ssh-config"),
    "compare one model": (["compare", "MODEL"], "two or more"),
    "compare width zero": (["compare", "--width", "0"], "--width"),
    "compare blocks garbage": (["compare", "--blocks", "32,,x"], "--blocks"),
    "compare max secs inf": (["compare", "--max-secs", "inf"], "--max-secs"),
    "option without its value": (["bench", "MODEL", "--threads"], "(see 'edgesep bench --help')"),
    "option as an option's value": (["bench", "MODEL", "--runs", "2", "--out", "--json"],
                                    "--out needs a value, not the option --json"),
}


@pytest.mark.parametrize("case", sorted(USAGE_CASES))
def test_usage_errors_exit_2(case, tiny, out, tmp_path, capfd, monkeypatch):
    """In-process (the parse fails before any work), with the same contract as the subprocess cases."""
    args, needle = USAGE_CASES[case]
    args = [str(tiny["float.tflite"]) if a == "MODEL" else a for a in args]
    if args[0] == "export":
        args += ["--out", str(out)]
    before = snapshot(out)
    outcome = run_in_process(args, tmp_path, capfd, monkeypatch)
    assert outcome.code == USAGE, (outcome.code, outcome.stderr[-2000:])
    assert_one_error_line(outcome.code, outcome.stderr, needle)
    assert snapshot(out) == before and outcome.new_tmp == [] and outcome.seconds < 30


def test_usage_error_in_a_real_process(tiny, out, tmp_path):
    """One usage error through the real console path (python -m edgesep): exit 2, one line."""
    check_refused(["bench", tiny["float.tflite"], "--max-secs", "nan"], tmp_path, code=USAGE,
                  needles=["--max-secs"], out=out, bound=30)


# ---------------------------------------------------------------- files that are not what they claim (exit 1)

def _garbage(path, n=256):
    path.write_bytes(np.random.default_rng(0).integers(0, 256, n, dtype=np.uint8).tobytes())
    return path


def test_inspect_missing_file(tmp_path):
    check_refused(["inspect", tmp_path / "nope.tflite"], tmp_path, code=FAIL, needles=["nope.tflite"], bound=30)


def test_inspect_garbage_tflite(tmp_path):
    check_refused(["inspect", _garbage(tmp_path / "junk.tflite")], tmp_path, code=FAIL, needles=["junk.tflite"],
                  bound=60)


def test_inspect_garbage_onnx(tmp_path):
    check_refused(["inspect", _garbage(tmp_path / "junk.onnx")], tmp_path, code=FAIL, needles=["junk.onnx"],
                  bound=60)


def test_inspect_directory(tmp_path):
    (tmp_path / "d.tflite").mkdir()
    check_refused(["inspect", tmp_path / "d.tflite"], tmp_path, code=FAIL, needles=["d.tflite"], bound=30)


def test_inspect_fifo_does_not_hang(tmp_path):
    os.mkfifo(tmp_path / "pipe.tflite")
    check_refused(["inspect", tmp_path / "pipe.tflite"], tmp_path, code=FAIL, needles=["pipe.tflite"], bound=30)


def test_bench_fifo_refused(tmp_path):
    os.mkfifo(tmp_path / "pipe.tflite")
    check_refused(["bench", tmp_path / "pipe.tflite"], tmp_path, code=FAIL, needles=["pipe.tflite"], bound=30)


def test_bench_missing_model(tmp_path):
    check_refused(["bench", tmp_path / "missing.tflite"], tmp_path, code=FAIL, needles=["missing.tflite"], bound=30)


def test_bench_garbage_model(tmp_path):
    check_refused(["bench", _garbage(tmp_path / "junk.tflite"), "--runs", "1", "--min-secs", "0"], tmp_path,
                  code=FAIL, needles=["junk.tflite"], bound=60)


def test_bench_wrong_suffix(tmp_path, tiny):
    other = tmp_path / "model.pb"
    other.write_bytes(tiny["float.tflite"].read_bytes())
    check_refused(["bench", other], tmp_path, code=FAIL, needles=["model.pb"], bound=30)


def test_export_missing_model(out, tmp_path):
    check_refused(["export", "--model", tmp_path / "gone.keras", "--out", out], tmp_path, code=FAIL,
                  needles=["gone.keras"], out=out, bound=60)


def test_export_garbage_model(out, tmp_path):
    check_refused(["export", "--model", _garbage(tmp_path / "junk.keras"), "--out", out], tmp_path, code=FAIL,
                  needles=["junk.keras"], out=out, bound=90)


def test_a_model_saved_before_it_was_built(out, tmp_path, capfd, monkeypatch):
    """A Sequential saved without keras.Input has no inputs: one line for inspect and export, not Keras'
    AttributeError traceback. In-process (TensorFlow is loaded once)."""
    import warnings

    import keras

    path = tmp_path / "unbuilt.keras"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Keras warns that the model is not built: the case under test
        keras.Sequential([keras.layers.Dense(4)]).save(path)
    for args in (["inspect", path], ["export", "--model", path, "--no-onnx", "--out", out]):
        outcome = run_in_process(args, tmp_path, capfd, monkeypatch)
        assert outcome.code == FAIL, (args, outcome.stderr[-2000:])
        assert_one_error_line(outcome.code, outcome.stderr, "unbuilt.keras", "never built")
        assert outcome.new_tmp == []
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]


def test_export_model_with_unknown_suffix(out, tmp_path):
    check_refused(["export", "--model", _garbage(tmp_path / "model.txt"), "--out", out], tmp_path, code=FAIL,
                  needles=["model.txt"], out=out, bound=60)


@pytest.mark.parametrize("reference, needle", [("wide.tflite", "input shape"), ("two_out.tflite", "outputs"),
                                                ("int_in.tflite", "int32"), ("junk.tflite", "junk.tflite")])
def test_quant_error_reference_that_does_not_fit(reference, needle, tiny, tmp_path, capfd, monkeypatch):
    """A --reference that is not the int8 model's float model (other input shape, other number of outputs, an
    integer input, not a model at all): one line naming it, exit 1. In-process: the refusal comes before any
    per-layer work."""
    ref = _garbage(tmp_path / reference) if reference == "junk.tflite" else tiny[reference]
    outcome = run_in_process(["inspect", tiny["int8.tflite"], "--quant-error", "--reference", ref, "--samples",
                              "2"], tmp_path, capfd, monkeypatch)
    assert outcome.code == FAIL, (outcome.code, outcome.stderr[-2000:])
    assert_one_error_line(outcome.code, outcome.stderr, needle, reference)
    assert outcome.new_tmp == [] and outcome.seconds < 60


@pytest.mark.slow  # the child starts TensorFlow to read the model
def test_a_folder_named_edgesep_in_the_current_folder(out, tmp_path):
    """The console script (here: its code, run without the current folder on sys.path) runs export's watched
    child; a folder named ``edgesep`` where the user stands (a checkout's parent) is not imported in its place."""
    import subprocess
    import sys
    import zipfile

    (tmp_path / "edgesep" / "cli").mkdir(parents=True)
    console_script = "import sys; del sys.path[0]; from edgesep.cli import main; sys.exit(main())"
    junk = tmp_path / "junk.keras"  # a zip, as a .keras file is: the parent lets it through to the child
    with zipfile.ZipFile(junk, "w") as archive:
        archive.writestr("notes.txt", "not a model")
    proc = subprocess.run([sys.executable, "-c", console_script, "export", "--model", str(junk), "--out", str(out)],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == FAIL, proc.stderr[-2000:]
    assert_one_error_line(proc.returncode, proc.stderr, "junk.keras")


# ---------------------------------------------------------------- data that do not fit (exit 1)

def _npz(path, x, y):
    np.savez(path, x=x, y=y)
    return path


def _tiny_shape(tiny):
    import json

    return tuple(json.loads((tiny["float.tflite"].parent / "models.json").read_text())["input_shape"])


def _bench_data(tiny, tmp_path, data):
    return ["bench", tiny["float.tflite"], "--data", data, "--runs", "1", "--min-secs", "0", "--warmup-secs", "0"]


def test_bench_data_missing(tiny, tmp_path):
    check_refused(_bench_data(tiny, tmp_path, tmp_path / "none.npz"), tmp_path, code=FAIL, needles=["none.npz"])


def test_bench_data_npz_without_x(tiny, tmp_path):
    path = tmp_path / "bad.npz"
    np.savez(path, images=np.zeros((4, 2)), y=np.zeros(4, int))
    check_refused(_bench_data(tiny, tmp_path, path), tmp_path, code=FAIL, needles=["bad.npz"])


def test_bench_data_wrong_image_shape(tiny, tmp_path):
    path = _npz(tmp_path / "shape.npz", np.zeros((6, 5, 5, 7), np.float32), np.zeros(6, int))
    check_refused(_bench_data(tiny, tmp_path, path), tmp_path, code=FAIL, needles=["shape.npz"])


@pytest.mark.parametrize("labels", ["huge", "negative", "float", "too many classes"])
def test_bench_data_bad_labels(tiny, tmp_path, labels):
    shape = _tiny_shape(tiny)
    x = np.random.default_rng(0).random((6, *shape), np.float32)
    y = {"huge": np.array([0, 1, 2, 3, 4, 30_000_000]), "negative": np.array([0, 1, -1, 2, 3, 4]),
         "float": np.array([0.5, 1, 2, 3, 4, 5]), "too many classes": np.array([0, 1, 2, 3, 4, 999])}[labels]
    check_refused(_bench_data(tiny, tmp_path, _npz(tmp_path / "labels.npz", x, y)), tmp_path, code=FAIL,
                  needles=["label"], bound=60)


def test_bench_data_non_finite_images(tiny, tmp_path):
    shape = _tiny_shape(tiny)
    x = np.full((6, *shape), np.nan, np.float32)
    check_refused(_bench_data(tiny, tmp_path, _npz(tmp_path / "nan.npz", x, np.zeros(6, int))), tmp_path,
                  code=FAIL, needles=["nan.npz"], bound=60)


@pytest.mark.parametrize("name, needle", [("x.npy", "unsupported data"), ("photo.png", "one image"),
                                          ("/dev/null", "unsupported data")])
def test_data_that_is_neither_a_folder_nor_an_npz(name, needle, out, tmp_path, capfd, monkeypatch):
    """Named as what it is (not 'holds images: give --preprocess', exit 2), before the model is even read."""
    data = name if name.startswith("/") else _garbage(tmp_path / name, 64)
    model = _garbage(tmp_path / "m.keras")
    outcome = run_in_process(["export", "--int8", "--model", model, "--data", data, "--out", out], tmp_path, capfd,
                             monkeypatch)
    assert outcome.code == FAIL, (outcome.code, outcome.stderr[-2000:])
    assert_one_error_line(outcome.code, outcome.stderr, needle, str(data))
    assert outcome.new_tmp == [] and outcome.seconds < 30


def test_export_data_empty_folder(out, tmp_path):
    (tmp_path / "empty").mkdir()
    check_refused(["export", "--data", tmp_path / "empty", "--out", out], tmp_path, code=FAIL, needles=["empty"],
                  out=out, bound=60)


def test_export_data_corrupt_image(out, tmp_path):
    for cls in ("a", "b"):
        (tmp_path / "imgs" / cls).mkdir(parents=True)
        _garbage(tmp_path / "imgs" / cls / "x.png", 64)
    check_refused(["export", "--data", tmp_path / "imgs", "--out", out], tmp_path, code=FAIL, needles=["x.png"],
                  out=out, bound=60)


# ---------------------------------------------------------------- outputs that cannot be written

def test_export_out_is_a_file(tmp_path):
    target = tmp_path / "out.txt"
    target.write_text("not a folder\n")
    check_refused(["export", "--out", target], tmp_path, code=FAIL, needles=["out.txt"], out=target, bound=30)


def test_compare_out_is_a_file(tmp_path, tiny):
    target = tmp_path / "report.txt"
    target.write_text("not a folder\n")
    check_refused(["compare", tiny["float.tflite"], tiny["int8.tflite"], "--out", target, "--runs", "1"], tmp_path,
                  code=FAIL, needles=["report.txt"], out=target, bound=30)


def test_export_out_under_a_file(tmp_path):
    (tmp_path / "file").write_text("x")
    check_refused(["export", "--out", tmp_path / "file" / "out"], tmp_path, code=FAIL, needles=["file"], bound=30)


def test_standard_output_that_is_full(tiny, tmp_path):
    """stdout on a full disk (/dev/full): one line on stderr, exit 1, not rich's OSError traceback."""
    import subprocess
    import sys

    with open("/dev/full", "w") as full:
        proc = subprocess.run([sys.executable, "-m", "edgesep", "inspect", str(tiny["float.tflite"])], stdout=full,
                              stderr=subprocess.PIPE, text=True, timeout=120,
                              env={**os.environ, "TMPDIR": str(tmp_path), "TF_CPP_MIN_LOG_LEVEL": "3"})
    assert proc.returncode == FAIL
    assert_one_error_line(proc.returncode, proc.stderr, "cannot write the output", "no space left")


@pytest.fixture
def tiny_fs(tmp_path):
    """A 1 MiB tmpfs (root only): full after a few writes; unmounted afterwards."""
    import subprocess

    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)]).returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield mnt
    subprocess.run(["umount", "-l", str(mnt)])


def test_export_out_read_only(tiny_fs, tmp_path):
    import subprocess

    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    check_refused(["export", "--out", tiny_fs / "out"], tmp_path, code=FAIL, needles=["read-only"], bound=30)


def test_bench_out_on_read_only_fs_refused_before_measuring(tiny, tiny_fs, tmp_path):
    import subprocess

    subprocess.run(["mount", "-o", "remount,ro", str(tiny_fs)], check=True)
    check_refused(["bench", tiny["float.tflite"], "--runs", "2", "--min-secs", "0", "--out", tiny_fs / "b.json"],
                  tmp_path, code=FAIL, needles=["read-only"], bound=30)


def test_bench_out_on_full_disk_still_prints_results(tiny, tiny_fs, tmp_path):
    filler = tiny_fs / "filler"
    with open(filler, "wb") as f:  # fill the tmpfs: a new empty file still fits, its content does not
        try:
            while True:
                f.write(b"\0" * 65536)
                f.flush()
        except OSError:
            pass
    outcome = run_edgesep(["bench", tiny["float.tflite"], "--runs", "2", "--min-secs", "0", "--warmup-secs", "0",
                           "--json", "--out", tiny_fs / "bench.json"], tmp_path)
    assert outcome.code == FAIL
    assert '"results"' in outcome.stdout, "the finished measurement was lost"
    assert_one_error_line(outcome.code, outcome.stderr, "no space left")
    assert sorted(p.name for p in tiny_fs.iterdir()) == ["filler"], "a partial file was left"


# ---------------------------------------------------------------- devices that do not answer

def test_ssh_connection_refused(tiny, tmp_path):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    check_refused(["bench", tiny["float.tflite"], "--device", f"ssh://nobody@127.0.0.1:{port}"], tmp_path,
                  code=FAIL, needles=["127.0.0.1"], bound=30)


def test_ssh_server_that_never_speaks(tiny, tmp_path):
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(4)
    accepted = []
    stop = threading.Event()

    def accept():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                accepted.append(server.accept()[0])  # keep it open, say nothing
            except OSError:
                pass

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        check_refused(["bench", tiny["float.tflite"], "--device", f"ssh://pi@127.0.0.1:{server.getsockname()[1]}"],
                      tmp_path, code=FAIL, needles=["127.0.0.1"], bound=40)
    finally:
        stop.set()
        thread.join()
        for conn in accepted:
            conn.close()
        server.close()


def _listening(port: int, settle: float = 5.0) -> bool:
    """Whether something accepts on 127.0.0.1:PORT (a server being stopped gets ``settle`` seconds to go)."""
    import time

    deadline = time.monotonic() + settle
    while True:
        with socket.socket() as s:
            up = s.connect_ex(("127.0.0.1", port)) == 0
        if not up or time.monotonic() > deadline:
            return up
        time.sleep(0.1)


@pytest.mark.adb
@pytest.mark.parametrize("already_running", [False, True])
def test_devices_stops_only_the_adb_server_it_started(already_running, tmp_path):
    """``edgesep devices --adb-server-port P`` with no server on P starts one (adb does) and stops it again; a
    server that was already running there is the user's and stays. Real adb client, private HOME and port."""
    from adbd_emu import AdbServer

    server = AdbServer(tmp_path / "home")
    if already_running:
        server.adb("start-server")
    try:
        outcome = run_edgesep(["devices", "--adb-server-port", server.port], tmp_path,
                              env={"HOME": str(tmp_path / "home")})
        assert outcome.code == 0 and "no adb devices attached" in outcome.stdout, outcome.stderr
        assert [e for e in outcome.new_tmp if not e.startswith("adb.")] == []  # adb.UID.log: the adb server's own
        assert _listening(server.port, settle=0 if already_running else 5) == already_running
    finally:
        server.adb("kill-server", check=False)


# ---------------------------------------------------------------- interruptions: like Ctrl-C, whatever the signal

@pytest.mark.slow
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP", "SIGINT"])
def test_export_interrupted_leaves_nothing(signame, trained_split, out, tmp_path):
    before = snapshot(out)
    def converting():  # the export's private staging folder exists and holds a first artifact
        return any(p.name.startswith(".edgesep") and p.is_dir() and any(p.iterdir()) for p in out.iterdir())

    outcome = interrupt_after(["export", "--int8", "--out", out], tmp_path, signum=SIGNALS[signame],
                              when=converting)
    assert outcome.code != 0 and "Traceback" not in outcome.stderr, outcome.stderr[-2000:]
    assert "interrupted" in outcome.stderr
    assert snapshot(out) == before, "staging or artifacts left in --out"
    assert outcome.new_tmp == [], f"left in $TMPDIR: {outcome.new_tmp}"


@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_bench_interrupted_exit_code(signame, tiny, tmp_path):
    outcome = interrupt_after(["bench", tiny["float.tflite"], "--runs", "100000", "--min-secs", "60",
                               "--max-secs", "60"], tmp_path, signum=SIGNALS[signame], when="")
    assert outcome.code == 128 + SIGNALS[signame], outcome.stderr[-2000:]
    assert "Traceback" not in outcome.stderr and f"interrupted by {signame}" in outcome.stderr
    assert outcome.seconds < 30


# ---------------------------------------------------------------- damaged state: measured again, never "failed"

@pytest.mark.parametrize("damage", ["[]", '{"target": "local", "sessions": [1, 2]}',
                                    '{"target": "local", "sessions": {"k": {"results": {"v": {"bad": 1}}}}}',
                                    '{"target": "local", "sessions": {"k": 3}}', "{not json"])
def test_compare_resume_with_damaged_session_file_measures_again(damage, tiny, tmp_path):
    import json

    out = tmp_path / "report"
    (out / "bench").mkdir(parents=True)
    (out / "bench" / "local.json").write_text(damage)
    outcome = run_edgesep(["compare", tiny["float.tflite"], tiny["int8.tflite"], "--device", "local", "--runs", "3",
                           "--min-secs", "0", "--warmup-secs", "0", "--out", out, "--resume"], tmp_path)
    assert outcome.code == 0, outcome.stderr[-2000:]
    section = json.loads((out / "report.json").read_text())["devices"]["local"]
    assert section["status"] == "done" and not section["resumed"]
    stored = json.loads((out / "bench" / "local.json").read_text())
    assert stored["target"] == "local" and stored["sessions"], "the new sessions were stored for the next --resume"


@pytest.mark.ssh
@pytest.mark.parametrize("signame", ["SIGTERM", "SIGHUP"])
def test_ssh_bench_interrupted_leaves_the_device_empty(signame, sshd, bench_models, litert_python, tmp_path):
    assert list(sshd.device_tmp.iterdir()) == []

    def measuring():  # the private folder exists on the device: runner and model pushed
        return any(sshd.device_tmp.iterdir())

    outcome = interrupt_after(["bench", bench_models["float.tflite"], "--device", sshd.target, "--ssh-config",
                               sshd.config, "--remote-python", litert_python, "--runs", "100000", "--min-secs",
                               "60", "--max-secs", "60"], tmp_path, signum=SIGNALS[signame], when=measuring,
                              timeout=120)
    assert outcome.code == 128 + SIGNALS[signame], outcome.stderr[-2000:]
    assert "Traceback" not in outcome.stderr
    assert list(sshd.device_tmp.iterdir()) == [], "the device's private folder was left behind"
    assert outcome.seconds < 60
