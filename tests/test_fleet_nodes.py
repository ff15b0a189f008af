"""The fleet on real, separate Ray nodes: a head and two ``edgesep worker`` nodes on 127.0.0.1/.2/.3.

Each node is a real ``ray start`` (own raylet, object store, node IP and temp folder) started by the real
``edgesep worker`` CLI, owning one ``local`` device (the workers' named by their loopback address). Sweeps run
as the real CLI joining the head. The nodes are small (one CPU each, a 1% object store) and stopped by id.
"""
from __future__ import annotations

import contextlib
import ipaddress
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from test_fleet import _address, _descendants

pytestmark = [pytest.mark.ray, pytest.mark.slow]
NODE_ENV = {"RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION": "0.01", "RAY_AUTH_MODE": "disabled"}
WORKERS = ("127.0.0.2", "127.0.0.3")


def short_tmp() -> Path:
    """A $TMPDIR short enough for Ray's socket paths (else Ray's folder goes to /tmp), removed when the test
    process exits: a node or driver killed with SIGKILL leaves its folder there."""
    import atexit
    import shutil
    import tempfile

    path = Path(tempfile.mkdtemp(prefix="es-", dir="/tmp"))
    atexit.register(shutil.rmtree, path, True)
    return path


class Node:
    """One ``edgesep worker`` process and its stderr file."""

    def __init__(self, args, folder: Path, name: str, ready: str):
        self.args, self.err, self.ready = args, folder / f"{name}.err", ready
        self.proc = None

    def start(self, timeout: float = 120) -> "Node":
        tmp = short_tmp()  # where a killed node's folder stays
        with open(self.err, "w") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "edgesep", "worker", *self.args],
                                         stdout=subprocess.DEVNULL, stderr=err, stdin=subprocess.DEVNULL,
                                         env={**os.environ, **NODE_ENV, "TMPDIR": str(tmp)})
        deadline = time.monotonic() + timeout
        while self.ready not in self.err.read_text():
            assert self.proc.poll() is None and time.monotonic() < deadline, self.err.read_text()[-2000:]
            time.sleep(0.3)
        return self

    def pids(self) -> set[int]:
        return _descendants(self.proc.pid) | {self.proc.pid}

    def kill(self) -> None:
        """SIGKILL the node's own processes (the host is lost: nothing gets to clean up)."""
        for pid in self.pids():
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.proc.wait()

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.terminate()
        return self.proc.wait(timeout=90)


def _ssh_device(request) -> list[str]:
    """The real-sshd device for the worker on 127.0.0.2 (none where OpenSSH is missing: the ssh tests skip)."""
    import shutil

    if not all(shutil.which(tool) for tool in ("/usr/sbin/sshd", "ssh", "scp", "ssh-keygen")):
        return []
    sshd = request.getfixturevalue("sshd")
    return ["--device", sshd.target, "--ssh-config", str(sshd.config)]


@pytest.fixture(scope="module")
def nodes(tmp_path_factory, request):
    """A head on 127.0.0.1 owning ``local``; workers on 127.0.0.2 (``local`` and the real-sshd device) and
    127.0.0.3 (``local``)."""
    from sshd import closed_port

    folder = tmp_path_factory.mktemp("nodes")
    ssh = {WORKERS[0]: _ssh_device(request)}
    port = closed_port()
    head = Node(["--head", "--port", str(port), "--device", "local", "--num-cpus", "1"], folder, "head",
                "edgesep: head on 127.0.0.1").start()
    workers = {}
    try:
        for ip in WORKERS:
            workers[ip] = Node(["--address", f"127.0.0.1:{port}", "--listen", ip, "--device", "local",
                                *ssh.get(ip, []), "--num-cpus", "1"], folder, ip, f"node {ip} joined").start()
        yield {"address": f"127.0.0.1:{port}", "head": head, "workers": workers}
    finally:
        for node in [*workers.values(), head]:
            if node.proc is not None:
                node.stop()


def _plan(tmp_path: Path, models, min_secs: float = 0.0, faults: str = "") -> Path:
    text = "".join(f"[[models]]\npath = {str(m)!r}\n" for m in models)
    text += "[[devices]]\ntarget = 'local'\n" + "".join(f"[[devices]]\ntarget = 'local'\nhost = '{ip}'\n"
                                                        for ip in WORKERS)
    text += (f"[bench]\nruns = 3\nwarmup = 1\nwarmup_secs = 0.0\nmin_secs = {min_secs}\nmax_secs = {min_secs + 2}\n"
             f"threads = 1\n{faults}")
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


def _sweep(*args, **kwargs):
    tmp = short_tmp()  # where a killed driver's folder stays
    return subprocess.Popen([sys.executable, "-m", "edgesep", "sweep", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, **NODE_ENV, "TMPDIR": str(tmp)},
                            **kwargs)


def _rows(out: Path) -> list[dict]:
    db = sqlite3.connect(out / "sweep.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM jobs ORDER BY id")]
    finally:
        db.close()


def _sockets(pids: set[int]) -> tuple[list[str], list[str]]:
    """(local addresses of LISTEN sockets, remote addresses of connected ones) owned by ``pids``."""
    inodes = set()
    for pid in pids:
        try:
            inodes |= {os.readlink(fd)[8:-1] for fd in Path(f"/proc/{pid}/fd").iterdir()
                       if os.readlink(fd).startswith("socket:[")}
        except OSError:
            continue
    listening, peers = [], []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[9] in inodes:
                (listening if fields[3] == "0A" else peers).append(_address(fields[1] if fields[3] == "0A"
                                                                             else fields[2]))
    return listening, peers


def _ip(addr: str):
    return ipaddress.ip_address(addr.rsplit(":", 1)[0].strip("[]"))


def test_each_device_runs_on_its_own_node_and_all_traffic_stays_on_loopback(nodes, bench_models, tmp_path):
    out = tmp_path / "out"
    sweep = _sweep(_plan(tmp_path, [bench_models["float.tflite"], bench_models["int8.tflite"]]), "--out", out,
                   "--address", nodes["address"])
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err[-2000:]
    rows = _rows(out)
    assert len(rows) == 6 and {r["status"] for r in rows} == {"ok"}
    assert {(r["host"], r["node_ip"]) for r in rows} == {(None, "127.0.0.1"), *((ip, ip) for ip in WORKERS)}
    assert len({r["node_id"] for r in rows}) == 3  # three nodes, not three names of one
    for name, node in [("127.0.0.1", nodes["head"]), *nodes["workers"].items()]:
        listening, peers = _sockets(node.pids())
        assert listening and peers, name
        assert all(_ip(a).is_loopback for a in peers), (name, peers)  # no traffic leaves 127/8
        # the head binds 127.0.0.1 only; Ray binds a worker node's raylet and worker processes on every interface
        # unless its address is exactly 127.0.0.1, with no setting to change it (see RAYLET_WILDCARD in
        # edgesep/fleet/worker.py), which edgesep worker says; its agents bind the node's address
        allowed = {ipaddress.ip_address(name)} | ({ipaddress.ip_address("0.0.0.0"), ipaddress.ip_address("::")}
                                                   if name != "127.0.0.1" else set())
        assert all(_ip(a) in allowed or getattr(_ip(a), "ipv4_mapped", None) in allowed for a in listening), \
            (name, listening)
        # the warning is true: it names wildcard ports the node listens on, and only a node that has them says it
        said = re.search(r"every interface at port\(s\) ([\d, ]+) of this node", node.err.read_text())
        wildcard = {int(a.rsplit(":", 1)[1]) for a in listening if _ip(a).is_unspecified}
        assert bool(said) == bool(wildcard), (name, listening)
        assert not said or set(map(int, said.group(1).split(", "))) <= wildcard, (name, said.group(1), wildcard)


@pytest.mark.ssh
def test_ssh_device_owned_by_a_worker_runs_all_its_jobs_on_that_worker(nodes, bench_models, sshd, tmp_path):
    out = tmp_path / "out"
    plan = tmp_path / "plan.toml"
    plan.write_text("".join(f"[[models]]\npath = {str(bench_models[m])!r}\n" for m in ("float.tflite", "int8.tflite"))
                    + "[[devices]]\ntarget = 'local'\n"
                    + f"[[devices]]\ntarget = {sshd.target!r}\nhost = '127.0.0.2'\nssh_config = {str(sshd.config)!r}\n"
                    f"remote_python = {sys.executable!r}\n"
                    "[bench]\nruns = 3\nwarmup = 1\nwarmup_secs = 0.0\nmin_secs = 0.0\nmax_secs = 2\nthreads = 1\n")
    sweep = _sweep(plan, "--out", out, "--address", nodes["address"])
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err[-2000:]
    rows = _rows(out)
    assert len(rows) == 4 and {r["status"] for r in rows} == {"ok"}, rows
    ssh = [r for r in rows if r["device"] == sshd.target]
    local = [r for r in rows if r["device"] == "local"]
    assert len(ssh) == 2 and {(r["node_ip"], r["host"]) for r in ssh} == {("127.0.0.2", "127.0.0.2")}
    assert {r["node_ip"] for r in local} == {"127.0.0.1"}
    assert len({r["node_id"] for r in ssh}) == 1 and not {r["node_id"] for r in ssh} & {r["node_id"] for r in local}
    assert all(r["runtime"] and r["p50_ms"] > 0 for r in ssh)


def test_worker_killed_mid_job_is_requeued_and_finished_when_it_returns(nodes, bench_models, tmp_path):
    out = tmp_path / "out"
    lost = nodes["workers"]["127.0.0.2"]
    plan = _plan(tmp_path, [bench_models["float.tflite"], bench_models["int8.tflite"]], min_secs=4.0,
                 faults="[faults]\nlost_node = 'requeue'\nrequeue_timeout = 120\n")
    sweep = _sweep(plan, "--out", out, "--address", nodes["address"])
    deadline = time.monotonic() + 120
    while not any("ray::DeviceActor" in _cmdline(pid) for pid in lost.pids()):  # its device has a job
        assert time.monotonic() < deadline and sweep.poll() is None
        time.sleep(0.2)
    time.sleep(1.0)
    lost.kill()
    time.sleep(2.0)
    lost.start()
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 0, err[-2000:]
    rows = _rows(out)
    mine = [r for r in rows if r["host"] == "127.0.0.2"]
    others = [r for r in rows if r["host"] != "127.0.0.2"]
    assert [r["status"] for r in mine].count("requeued") == 1 and [r["status"] for r in mine].count("ok") == 2
    requeued = next(r for r in mine if r["status"] == "requeued")
    redone = next(r for r in mine if r["key"] == requeued["key"] and r["status"] == "ok")
    assert redone["attempt"] == 2 and redone["node_ip"] == "127.0.0.2" and redone["node_id"] != requeued["node_id"]
    assert len(others) == 4 and {r["status"] for r in others} == {"ok"}  # the other nodes' jobs: untouched


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().decode(errors="replace")
    except OSError:
        return ""


def test_driver_killed_mid_sweep_resumes(nodes, bench_models, tmp_path):
    out = tmp_path / "out"
    plan = _plan(tmp_path, [bench_models["float.tflite"], bench_models["int8.tflite"]], min_secs=2.0)
    sweep = _sweep(plan, "--out", out, "--address", nodes["address"])
    deadline = time.monotonic() + 120
    while not ((out / "sweep.db").is_file() and _count(out) >= 1):
        assert time.monotonic() < deadline and sweep.poll() is None
        time.sleep(0.2)
    sweep.kill()
    sweep.wait()
    done = _count(out)
    assert 1 <= done < 6
    again = _sweep(plan, "--out", out, "--address", nodes["address"], "--resume")
    stdout, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    rows = _rows(out)
    assert sorted(r["status"] for r in rows) == ["ok"] * 6 and f"{done} already done" in stdout


def _count(out: Path) -> int:
    try:
        db = sqlite3.connect(f"{(out / 'sweep.db').as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return db.execute("SELECT count(*) FROM jobs WHERE status = 'ok'").fetchone()[0]
        finally:
            db.close()
    except sqlite3.Error:
        return 0


def test_driver_killed_inside_a_paired_group_resumes_only_its_missing_sessions(nodes, bench_models, tmp_path):
    out = tmp_path / "out"
    plan = tmp_path / "plan.toml"
    plan.write_text("".join(f"[[models]]\npath = {str(bench_models[m])!r}\n" for m in ("blocks_fused.tflite",
                                                                                       "blocks_split.tflite"))
                    + "[[devices]]\ntarget = 'local'\n[bench]\nruns = 20\nwarmup = 1\nwarmup_secs = 0.0\n"
                    "min_secs = 1.5\nmax_secs = 3.0\nthreads = 1\n[[groups]]\nname = 'form'\n"
                    "models = ['blocks_fused.tflite', 'blocks_split.tflite']\nsessions = 3\n")
    sweep = _sweep(plan, "--out", out, "--address", nodes["address"])
    deadline = time.monotonic() + 180
    while not _query(out, "SELECT count(*) FROM group_pending"):  # a session of the group is stored
        assert time.monotonic() < deadline and sweep.poll() is None, sweep.communicate()[1][-2000:]
        time.sleep(0.1)
    sweep.kill()
    sweep.wait()
    before = _query(out, "SELECT session, a_ms, b_ms, control_ms FROM group_pending ORDER BY session", one=False)
    assert 1 <= len(before) < 3 and not _query(out, "SELECT count(*) FROM groups WHERE status = 'ok'")
    again = _sweep(plan, "--out", out, "--address", nodes["address"], "--resume")
    _, err = again.communicate(timeout=300)
    assert again.returncode == 0, err[-2000:]
    (group, count), = _query(out, "SELECT id, sessions FROM groups WHERE status = 'ok'", one=False)
    after = _query(out, f"SELECT session, a_ms, b_ms, control_ms FROM group_sessions WHERE group_id = {group} "
                        "ORDER BY session", one=False)
    assert count == 3 and [s[0] for s in after] == [0, 1, 2]
    assert after[:len(before)] == before  # the stored sessions kept, not measured again
    assert _query(out, "SELECT count(*) FROM group_pending") == 0


def _query(out: Path, sql: str, one: bool = True):
    try:
        db = sqlite3.connect(f"{(out / 'sweep.db').as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            rows = db.execute(sql).fetchall()
        finally:
            db.close()
    except sqlite3.Error:
        return 0 if one else []
    return rows[0][0] if one else rows


def test_embedded_head_killed_mid_job_ends_in_one_line_and_resume_finishes(bench_models, tmp_path):
    """The default sweep (Ray embedded in the driver): its head's own processes (gcs_server, raylet, agents, the
    device's worker) SIGKILLed while a job runs; the driver survives them and must say so itself."""
    out, tmp = tmp_path / "out", short_tmp()
    plan = tmp_path / "plan.toml"
    plan.write_text("".join(f"[[models]]\npath = {str(bench_models[m])!r}\n" for m in ("float.tflite", "int8.tflite"))
                    + "[[devices]]\ntarget = 'local'\n[bench]\nruns = 3\nwarmup = 1\nwarmup_secs = 0.0\n"
                    "min_secs = 2.0\nmax_secs = 4.0\nthreads = 1\n")
    env = {**os.environ, **NODE_ENV, "TMPDIR": str(tmp)}
    sweep = subprocess.Popen([sys.executable, "-m", "edgesep", "sweep", str(plan), "--out", str(out)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    deadline = time.monotonic() + 180
    while not any("ray::DeviceActor" in _cmdline(pid) for pid in _descendants(sweep.pid)):  # a job is running
        assert time.monotonic() < deadline and sweep.poll() is None, sweep.communicate()[1][-2000:]
        time.sleep(0.2)
    time.sleep(1.0)
    head = _descendants(sweep.pid)
    assert {"gcs_server", "raylet"} <= {name for pid in head for name in ("gcs_server", "raylet")
                                        if f"/{name} " in _cmdline(pid).replace("\0", " ")}
    for _ in range(2):  # again: whatever the raylet forked meanwhile
        for pid in _descendants(sweep.pid):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        time.sleep(0.2)
    killed = time.monotonic()
    _, err = sweep.communicate(timeout=60)  # Ray alone would wait 60 s for the GCS, then end the process mutely
    assert sweep.returncode == 1 and time.monotonic() - killed < 45, err[-2000:]
    errors = [ln for ln in err.splitlines() if "error" in ln.lower()]
    assert len(errors) == 1 and "Traceback" not in err, err[-2000:]
    assert errors[0].startswith("edgesep: error: the Ray head is gone: nothing answers at 127.0.0.1:")
    assert "--resume" in errors[0]
    db = sqlite3.connect(out / "sweep.db")
    try:
        assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert db.execute("SELECT status FROM sweeps").fetchall() == [("failed",)]  # not left 'running'
        statuses = [r[0] for r in db.execute("SELECT status FROM jobs")]
    finally:
        db.close()
    assert "interrupted" in statuses and set(statuses) <= {"ok", "interrupted"}  # never 'requeued' to a dead head
    assert list(tmp.iterdir()) == []  # the driver removed its Ray folder
    again = subprocess.run([sys.executable, "-m", "edgesep", "sweep", str(plan), "--out", str(out), "--resume"],
                           capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr[-2000:]
    done = statuses.count("ok")
    assert f"{2 - done} ok" in again.stdout and f"{done} already done" in again.stdout
    assert sorted({r["key"]: r["status"] for r in _rows(out) if r["status"] == "ok"}.values()) == ["ok", "ok"]


def test_worker_pointed_at_nothing_answers_in_seconds(tmp_path):
    from hostile import check_refused
    from sshd import closed_port

    address = f"127.0.0.1:{closed_port()}"
    check_refused(["worker", "--address", address, "--listen", "127.0.0.2", "--device", "local"], tmp_path,
                  code=1, needles=[address], bound=20)


@pytest.mark.parametrize("signame", ["SIGINT", "SIGTERM"])
def test_head_stopped_by_a_signal_says_one_line_and_leaves_nothing(signame, tmp_path):
    from hostile import SIGNALS, interrupt_after
    from sshd import closed_port

    outcome = interrupt_after(["worker", "--head", "--port", str(closed_port()), "--device", "local", "--num-cpus",
                               "1"], tmp_path, signum=SIGNALS[signame], when="edgesep: head on", timeout=180,
                              env=NODE_ENV)
    assert outcome.code == 128 + SIGNALS[signame], outcome.stderr[-2000:]
    assert "Traceback" not in outcome.stderr and "Aborted" not in outcome.stderr
    assert outcome.stderr.strip().splitlines()[-1].startswith("edgesep: interrupted")
    assert outcome.new_tmp == [], outcome.new_tmp  # the node's session, logs and caches


def test_sweep_without_the_token_of_a_token_head_is_one_line_naming_the_token(tmp_path, bench_models):
    from hostile import check_refused
    from sshd import closed_port

    port = closed_port()
    head = Node(["--head", "--port", str(port), "--device", "local", "--num-cpus", "1"], tmp_path, "head",
                "edgesep: head on 127.0.0.1")
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("RAY_AUTH_MODE", raising=False)
        mp.setitem(NODE_ENV, "RAY_AUTH_MODE", "token")
        head.start()
    try:
        plan = _plan(tmp_path, [bench_models["float.tflite"]])
        address = f"127.0.0.1:{port}"
        check_refused(["sweep", plan, "--out", tmp_path / "out", "--address", address], tmp_path, code=1,
                      needles=[address, "token"], bound=45, env={"RAY_AUTH_MODE": "disabled"})
    finally:
        assert head.stop() == 128 + signal.SIGTERM


def test_worker_not_back_within_requeue_timeout_fails_its_jobs_in_one_line_each(nodes, bench_models, tmp_path):
    out = tmp_path / "out"
    lost = nodes["workers"]["127.0.0.3"]
    plan = _plan(tmp_path, [bench_models["float.tflite"], bench_models["int8.tflite"]], min_secs=4.0,
                 faults="[faults]\nlost_node = 'requeue'\nrequeue_timeout = 5\n")
    sweep = _sweep(plan, "--out", out, "--address", nodes["address"])
    deadline = time.monotonic() + 120
    while not any("ray::DeviceActor" in _cmdline(pid) for pid in lost.pids()):
        assert time.monotonic() < deadline and sweep.poll() is None
        time.sleep(0.2)
    time.sleep(1.0)
    lost.kill()
    try:
        _, err = sweep.communicate(timeout=300)
    finally:
        lost.start()  # the fixture's node again, for whoever comes next
    assert sweep.returncode == 1
    rows = _rows(out)
    mine = [r for r in rows if r["host"] == "127.0.0.3"]
    statuses = sorted(r["status"] for r in mine)  # the kill hit its first job (or, on a slow machine, its second)
    assert statuses in (["failed", "failed", "requeued"], ["failed", "ok", "requeued"]), statuses
    assert all("not back within 5 s" in r["error"] for r in mine if r["status"] == "failed")
    assert [r["status"] for r in rows if r["host"] != "127.0.0.3"] == ["ok"] * 4
    errors = [ln for ln in err.splitlines() if ln.startswith("edgesep: error: ")]
    assert len(errors) == statuses.count("failed") + 1 and "Traceback" not in err  # one per job, a summary
