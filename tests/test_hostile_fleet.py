"""The hostile-input suite for the fleet (``edgesep sweep``, ``edgesep worker``), in tests/test_hostile.py's style.

Each case runs the real CLI in a subprocess: the right exit code, exactly one ``edgesep: error:`` line and no
traceback, ``--out`` untouched, nothing new in an isolated $TMPDIR, an answer within a time bound. The cases
that start Ray are marked ``ray`` (and ``slow`` when a whole sweep runs).
"""
from __future__ import annotations

import http.server
import os
import sqlite3
import threading

import pytest

from hostile import check_refused, run_edgesep

USAGE, FAIL = 2, 1


@pytest.fixture
def out(tmp_path):
    folder = tmp_path / "out"
    folder.mkdir()
    (folder / "keep.txt").write_text("the user's own file\n")
    return folder


def _plan(tmp_path, model, extra: str = "", name: str = "plan.toml"):
    path = tmp_path / name
    path.write_text(f"[[models]]\npath = {str(model)!r}\n{extra}[[devices]]\ntarget = 'local'\n"
                    "[bench]\nruns = 3\nwarmup = 1\nmin_secs = 0.0\nmax_secs = 1.0\nthreads = 1\n")
    return path


# ---------------------------------------------------------------- plans that are not plans

@pytest.mark.parametrize("kind", ["missing", "fifo", "device", "not utf-8", "folder with --out"])
def test_plan_file_that_is_no_plan(kind, tmp_path, out):
    plan = {"missing": tmp_path / "gone.toml", "fifo": tmp_path / "pipe.toml", "device": "/dev/zero",
            "not utf-8": tmp_path / "latin1.toml", "folder with --out": tmp_path / "dir.toml"}[kind]
    if kind == "fifo":
        os.mkfifo(plan)
    elif kind == "not utf-8":
        plan.write_bytes(b"[[models]]\nname = '\xe9t\xe9'\n")
    elif kind == "folder with --out":
        plan.mkdir()
    needle = "dir.toml" if kind == "folder with --out" else str(plan).rsplit("/", 1)[-1]
    code = USAGE if kind == "folder with --out" else FAIL
    check_refused(["sweep", plan, "--out", out], tmp_path, code=code, needles=[needle] if code == FAIL else [],
                  out=out, bound=30)


@pytest.mark.parametrize("body, needle", [
    ("[[models]]\nname = '../../escaped'\nform = 'fused'\n", "models[1].name"),
    ("[[models]]\nname = '.hidden'\n", "models[1].name"),
    ("[[models]]\nwidth = nan\n", "models[1].width"),
    ("[[models]]\nwidth = inf\n", "models[1].width"),
    ("[[models]]\n[faults]\nrequeue_timeout = nan\n", "faults.requeue_timeout"),
    ("[[models]]\n[faults]\nrequeue_timeout = inf\n", "faults.requeue_timeout"),
    ("[[models]]\n[[groups]]\nmodels = ['nope', 'builtin-fused-w1-i32-s0']\n", "groups[1].models"),
    ("[[models]]\n[[groups]]\nmodels = ['builtin-fused-w1-i32-s0']\n", "groups[1].models"),
    ("[[models]]\n[[groups]]\nmodels = ['builtin-fused-w1-i32-s0', 'builtin-split-w1-i32-s0']\nsessions = 1\n",
     "groups[1].sessions"),
])
def test_plan_values_that_cannot_work_are_usage_errors(body, needle, tmp_path, out):
    plan = tmp_path / "plan.toml"
    plan.write_text(body + "[[devices]]\ntarget = 'local'\n")
    check_refused(["sweep", plan, "--out", out], tmp_path, code=USAGE, needles=[needle], out=out, bound=30)


def test_model_file_name_cannot_escape_out(tmp_path, out, bench_models):
    plan = tmp_path / "plan.toml"
    plan.write_text(f"[[models]]\npath = {str(bench_models['float.tflite'])!r}\nname = '../../escaped'\n"
                    "[[devices]]\ntarget = 'local'\n")
    check_refused(["sweep", plan, "--out", out], tmp_path, code=USAGE, needles=["name"], out=out, bound=30)
    assert not any(p.name.startswith("escaped") for p in tmp_path.parent.rglob("escaped*"))


def test_option_a_device_does_not_take(tmp_path, out):
    plan = tmp_path / "plan.toml"
    plan.write_text("[[models]]\n[[devices]]\ntarget = 'local'\ncpu_mask = '1'\n")
    outcome = check_refused(["sweep", plan, "--out", out], tmp_path, code=USAGE, needles=["cpu_mask"], out=out,
                            bound=30)
    assert "TypeError" not in outcome.stderr and "__init__" not in outcome.stderr


# ---------------------------------------------------------------- addresses

@pytest.mark.parametrize("address", ["[::1", "127.0.0.1:0", "a b:1", "127.0.0.1:99999"])
def test_malformed_address_is_a_usage_error(address, tmp_path, out, bench_models):
    plan = _plan(tmp_path, bench_models["float.tflite"])
    check_refused(["sweep", plan, "--out", out, "--address", address], tmp_path, code=USAGE, needles=["--address"],
                  out=out, bound=30)


@pytest.fixture
def http_port():
    server = http.server.HTTPServer(("127.0.0.1", 0), http.server.SimpleHTTPRequestHandler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1]
    server.shutdown()
    server.server_close()


@pytest.mark.ray
@pytest.mark.parametrize("what", ["nothing listening", "an http server"])
def test_wrong_address_answers_in_seconds_naming_it(what, tmp_path, out, bench_models, request):
    from sshd import closed_port

    port = request.getfixturevalue("http_port") if what == "an http server" else closed_port()
    plan = _plan(tmp_path, bench_models["float.tflite"])
    address = f"127.0.0.1:{port}"
    check_refused(["sweep", plan, "--out", out, "--address", address], tmp_path, code=FAIL, needles=[address],
                  out=out, bound=20)


# ---------------------------------------------------------------- sweep folders that are not what they claim

def test_report_of_a_folder_that_does_not_exist(tmp_path):
    check_refused(["sweep", "--report", tmp_path / "nowhere"], tmp_path, code=FAIL, needles=["nowhere"], bound=30)


@pytest.mark.parametrize("damage", ["no jobs table", "damaged pages", "not sqlite"])
def test_report_of_a_damaged_database(damage, tmp_path, out):
    db_path = out / "sweep.db"
    if damage == "not sqlite":
        db_path.write_bytes(b"this is not a database" * 100)
    else:
        db = sqlite3.connect(db_path)
        db.execute("CREATE TABLE sweeps (id INTEGER PRIMARY KEY)")
        if damage == "damaged pages":
            db.execute("CREATE TABLE jobs (id INTEGER PRIMARY KEY, key TEXT)")
            db.executemany("INSERT INTO jobs (key) VALUES (?)", [("x" * 500,)] * 200)
        db.commit()
        db.close()
        if damage == "damaged pages":
            data = bytearray(db_path.read_bytes())
            data[4096:12288] = b"\xff" * 8192
            db_path.write_bytes(bytes(data))
    check_refused(["sweep", "--report", out], tmp_path, code=FAIL, needles=["sweep.db"], out=out, bound=30)


def test_report_where_report_md_is_a_folder_writes_nothing(tmp_path, out):
    from edgesep.fleet.store import SweepStore

    SweepStore(out).close()
    (out / "report.md").mkdir()
    check_refused(["sweep", "--report", "--csv", out], tmp_path, code=FAIL, needles=["report.md"], out=out,
                  bound=30)


@pytest.mark.parametrize("csv", [False, True])
def test_report_on_a_read_only_folder_blames_the_folder(csv, tmp_path, out):
    """As root (CI), the folder is a read-only bind mount in a private mount namespace: root writes through
    mode bits, not through a read-only mount. As anyone else, mode 555 does it."""
    import subprocess

    from edgesep.fleet.store import SweepStore
    from hostile import read_only

    SweepStore(out).close()
    prefix: list[str] = []
    if os.geteuid() == 0:
        prefix = read_only(out)
        probe = subprocess.run([*prefix, "true"], capture_output=True, text=True)
        if probe.returncode != 0:
            pytest.skip(f"no private read-only mount here: {probe.stderr.strip()}")
    else:
        out.chmod(0o555)
    try:
        outcome = check_refused(["sweep", "--report", *(["--csv"] if csv else []), out], tmp_path, code=FAIL,
                                needles=[str(out)], out=out, bound=30, prefix=prefix)
    finally:
        out.chmod(0o755)
    assert "database" not in outcome.stderr, outcome.stderr


# ---------------------------------------------------------------- state left behind after a failed sweep

@pytest.mark.ray
@pytest.mark.slow
def test_garbage_model_leaves_no_running_sweep_and_no_ray(tmp_path, out):
    junk = tmp_path / "junk.tflite"
    junk.write_bytes(os.urandom(300))
    plan = _plan(tmp_path, junk)
    run = tmp_path / "run"
    outcome = run_edgesep(["sweep", plan, "--out", run], tmp_path, timeout=180)
    assert outcome.code == FAIL and "junk.tflite" in outcome.stderr and "Traceback" not in outcome.stderr
    assert outcome.new_tmp == [], outcome.new_tmp  # Ray's session, the model cache: gone
    db = sqlite3.connect(run / "sweep.db")
    assert [r[0] for r in db.execute("SELECT status FROM sweeps")] == ["failed"]
    db.close()


@pytest.mark.ray
@pytest.mark.parametrize("args, needle", [
    (["--head", "--port", "12345"], "--port 12345"),
    (["--head", "--listen", "127.0.0.5"], "--listen 127.0.0.5"),
    (["--address", "127.0.0.1:6379", "--listen", "127.0.0.1", "--device", "local"], "own loopback address"),
    (["--address", "127.1:1", "--device", "local"], "own loopback address"),
])
def test_worker_options_that_cannot_work(args, needle, tmp_path):
    check_refused(["worker", *args], tmp_path, code=USAGE, needles=[needle], bound=30)


# ---------------------------------------------------------------- scripts/emulated_pi.py (status only: up/down are the CI's)

@pytest.mark.parametrize("damage", ["[]", '{"pid": "x", "port": 1}', "{not json", '{"pid": 1, "port": 2, '
                                    '"rootfs": "/", "target": "t", "ssh_config": "c", "pythons": {}}'])
def test_emulated_pi_status_with_damaged_state_is_stale(damage, tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    (tmp_path / "live").mkdir()
    (tmp_path / "live" / "state.json").write_text(damage)
    script = Path(__file__).resolve().parent.parent / "scripts" / "emulated_pi.py"
    proc = subprocess.run([sys.executable, str(script), "status", "--json"], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "EDGESEP_PI64_CACHE": str(tmp_path)})
    assert proc.returncode == 3 and "Traceback" not in proc.stderr, proc.stderr
    assert '"state": "stale"' in proc.stdout


def test_emulated_pi_cache_that_is_a_file_is_one_line(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    cache = tmp_path / "cache"
    cache.write_text("not a folder")
    script = Path(__file__).resolve().parent.parent / "scripts" / "emulated_pi.py"
    proc = subprocess.run([sys.executable, str(script), "status"], capture_output=True, text=True, timeout=60,
                          env={**os.environ, "EDGESEP_PI64_CACHE": str(cache)})
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 1 and len(lines) == 1 and lines[0].startswith("emulated_pi: error: ")
    assert "is a file" in lines[0] and cache.read_text() == "not a folder"


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("after", [1.5, 6.0])
def test_ctrl_c_while_ray_starts_leaves_no_process_and_no_temp(after, tmp_path, bench_models):
    import signal
    import time
    from pathlib import Path

    from hostile import interrupt_after

    plan = _plan(tmp_path, bench_models["float.tflite"])
    t0 = time.monotonic()
    outcome = interrupt_after(["sweep", plan, "--out", tmp_path / "run"], tmp_path, signum=signal.SIGINT,
                              when=lambda: time.monotonic() - t0 > after, timeout=120)
    assert outcome.code in (0, 130) and "Traceback" not in outcome.stderr, outcome.stderr[-2000:]
    assert outcome.new_tmp == [], outcome.new_tmp
    marker = str(tmp_path / "isolated-tmp")
    deadline = time.monotonic() + 10
    while True:  # Ray's agents and workers: ended by the driver, none left running for a minute
        left = [p for p in Path("/proc").iterdir() if p.name.isdigit() and marker in _cmdline(p)]
        if not left or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert not left, [_cmdline(p)[:200] for p in left]


def _cmdline(proc) -> str:
    try:
        return (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


@pytest.mark.parametrize("damage", ["[]", '{"fleet": {"key": "KEY"}, "artifacts": [{"path": "m.tflite"}]}',
                                    '{"fleet": {"key": "KEY"}, "artifacts": "model.tflite"}', "{not json",
                                    '{"fleet": "KEY", "artifacts": []}'])
def test_resume_with_a_damaged_export_json_exports_again(damage, tmp_path):
    """--resume reuses an earlier export only when its export.json is whole: else it is exported again."""
    from edgesep.fleet.jobs import export_jobs, reusable_export
    from edgesep.fleet.plan import parse_plan

    plan = parse_plan("[[models]]\nform = 'fused'\n[[devices]]\ntarget = 'local'\n", tmp_path / "plan.toml")
    (job,) = export_jobs(plan)
    folder = tmp_path / job.folder
    folder.mkdir(parents=True)
    (folder / "m.tflite").write_bytes(b"x")
    (folder / "export.json").write_text(damage.replace("KEY", job.key))
    assert reusable_export(tmp_path, job) is None


def test_worker_warnings_are_true_for_what_it_binds(monkeypatch):
    """No Ray start: the words a node would say. A token head on a network address does not claim to have no
    authentication; a head without the token does; a loopback worker says nothing before its sockets exist."""
    from edgesep.fleet import worker

    monkeypatch.setattr(worker, "_check_local", lambda addr: None)
    monkeypatch.delenv("RAY_AUTH_MODE", raising=False)
    token_head = worker.node_command(None, "0.0.0.0", {}, head=True)
    assert len(token_head.warnings) == 1 and "token authentication is on" in token_head.warnings[0]
    assert "no authentication" not in token_head.warnings[0]
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    open_head = worker.node_command(None, "0.0.0.0", {}, head=True)
    assert "no authentication" in open_head.warnings[0]
    loopback = worker.node_command("127.0.0.1:6380", "127.0.0.2", {}, head=False)
    assert loopback.bind == "127.0.0.2" and loopback.warnings == ()  # said once its sockets are seen (test_fleet_nodes)
    assert worker.node_command(None, None, {}, head=True).warnings == ()


@pytest.mark.ray
@pytest.mark.slow
def test_a_long_tmpdir_still_runs_and_leaves_nothing(tmp_path, bench_models):
    """Ray's AF_UNIX socket paths must stay under 108 bytes: a long $TMPDIR is not a traceback."""
    long_tmp = tmp_path / ("t" * 60) / ("u" * 40)
    long_tmp.mkdir(parents=True)
    plan = _plan(tmp_path, bench_models["float.tflite"])
    outcome = run_edgesep(["sweep", plan, "--out", tmp_path / "run"], tmp_path, timeout=180,
                          env={"TMPDIR": str(long_tmp)})
    assert outcome.code == 0 and "Traceback" not in outcome.stderr, outcome.stderr[-2000:]
    assert list(long_tmp.iterdir()) == []
