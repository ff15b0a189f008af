"""edgesep sweep / edgesep worker: plans, a real multi-node Ray cluster on 127.0.0.1, real devices, SQLite.

Every test that starts Ray is marked ``slow`` (a cluster takes ~15 s to start on 2 cores), and those on the
cluster are marked ``ssh`` and ``adb`` too (its devices); the quick set checks plans, the database and report,
the CLI's one-line errors and the worker's refusals. The cluster is ``ray.cluster_utils.Cluster`` (real
raylets and GCS, one machine): a head owning ``local`` and the real-sshd device, and two worker nodes
owning one emulated adb phone each. Sweeps run as the real CLI in a subprocess joining that cluster with
``--address``, so Ctrl-C and kill -9 hit a real driver.
"""
from __future__ import annotations

import collections
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from edgesep.fleet.plan import PlanError, device_resource, parse_plan

BENCH = """
[bench]
runs = 5
warmup = 1
warmup_secs = 0.0
min_secs = {min_secs}
max_secs = {max_secs}
threads = 1
"""


def _sweep(*args, timeout=300, **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edgesep", "sweep", *map(str, args)], capture_output=True,
                          text=True, timeout=timeout, **kwargs)


def _rows(out: Path, where: str = "1") -> list[dict]:
    db = sqlite3.connect(out / "sweep.db")
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute(f"SELECT * FROM jobs WHERE {where} ORDER BY id")]
    finally:
        db.close()


# ---------------------------------------------------------------- plans (no Ray)

def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "plan.toml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("text, key", [
    ("[[devices]]\ntarget='local'\n", "models"),
    ("[[models]]\nform='fusd'\n[[devices]]\ntarget='local'\n", "models[1].form"),
    ("[[models]]\nwidth='wide'\n[[devices]]\ntarget='local'\n", "models[1].width"),
    ("[[models]]\npath='missing.tflite'\n[[devices]]\ntarget='local'\n", "models[1].path"),
    ("[[models]]\nblocks='huge'\n[[devices]]\ntarget='local'\n", "models[1].blocks"),
    ("[[models]]\n[[devices]]\ntarget='adbx:1'\n", "devices[1].target"),
    ("[[models]]\n[[devices]]\nhost='a'\n", "devices[1].target"),
    ("[[models]]\n[[devices]]\ntarget='local'\ncolour='red'\n", "devices[1].colour"),
    ("[[models]]\n[[devices]]\ntarget='local'\n[[devices]]\ntarget='local'\n", "devices"),
    ("[[models]]\n[[devices]]\ntarget='local'\n[bench]\nruns=0\n", "bench.runs"),
    ("[[models]]\n[[devices]]\ntarget='local'\n[bench]\nmax_sec=1\n", "bench.max_sec"),
    ("[[models]]\n[[devices]]\ntarget='local'\ndelegate='gpux'\n", "devices[1].delegate"),
    ("[[models]]\n[[devices]]\ntarget='local'\n[faults]\nlost_node='retry'\n", "faults.lost_node"),
    ("[[models]]\n[[devices]]\ntarget='local'\n[export]\nprecisions=['int4']\n", "export.precisions"),
    ("[[models]\n", "not valid TOML"),
])
def test_bad_plan_is_one_line_naming_file_and_key(tmp_path, text, key):
    with pytest.raises(PlanError) as info:
        parse_plan(text, tmp_path / "plan.toml")
    message = str(info.value)
    assert message.startswith("plan.toml: ") and key in message and "\n" not in message


def test_bad_plan_on_the_command_line(tmp_path):
    plan = _write(tmp_path, "[[models]]\nform='fusd'\n[[devices]]\ntarget='local'\n")
    proc = _sweep(plan, "--out", tmp_path / "out")
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("edgesep: error: plan.toml: models[1].form: unknown form 'fusd'; valid: fused, "
                                   "split")
    assert not (tmp_path / "out").exists()


def test_builtin_table_multiplies_and_devices_get_resources(tmp_path):
    plan = parse_plan("[[models]]\nwidth=[0.5, 1.0]\ninput_size=16\nseeds=2\nblocks='tiny'\n"
                      "[[devices]]\ntarget='adb:R58M'\nhost='usb-a'\n[[devices]]\ntarget='ssh://pi@pi4:2222'\n"
                      "[[devices]]\ntarget='local'\nhost='lab'\n", tmp_path / "p.toml")
    assert len(plan.models) == 2 * 2 * 2  # forms x widths x seeds
    assert {m.form for m in plan.models} == {"fused", "split"} and {m.seed for m in plan.models} == {0, 1}
    assert [d.resource for d in plan.devices] == ["edgesep/adb:R58M", "edgesep/ssh:pi@pi4:2222", "edgesep/local:lab"]
    assert device_resource("local") == f"edgesep/local:{socket.gethostname()}"


def test_readme_plans_are_valid(tmp_path, bench_models):
    import re
    import shutil

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    section = readme.split("## Measure a fleet", 1)[1]
    laptop, fleet = re.findall(r"```toml\n(.*?)```", section, re.S)[:2]
    shutil.copy(bench_models["float.tflite"], tmp_path / "my_model.tflite")
    plan = parse_plan(laptop, tmp_path / "plan.toml")
    assert len(plan.models) == 9 and [d.target for d in plan.devices] == ["local", "adb:R58M123ABC"]
    plan = parse_plan("[[models]]\n" + fleet, tmp_path / "plan.toml")
    assert [d.host for d in plan.devices] == ["usb-a", "usb-a", "usb-b", None]
    assert plan.faults.lost_node == "requeue" and plan.faults.requeue_timeout == 120


def test_sweep_without_ray_names_the_install_command(tmp_path):
    plan = _write(tmp_path, "[[models]]\n[[devices]]\ntarget='local'\n")
    code = ("import sys; sys.modules['ray'] = None\nfrom edgesep.cli import main\n"
            f"sys.exit(main(['sweep', {str(plan)!r}, '--out', {str(tmp_path / 'out')!r}]))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip() == ("edgesep: error: edgesep sweep needs Ray, which is not installed: "
                                   "pip install 'edgesep[fleet]'")


def test_import_and_help_do_not_import_ray():
    code = ("import sys, edgesep, edgesep.fleet\nfrom edgesep.cli import main\n"
            "try:\n    main(['--help'])\nexcept SystemExit:\n    pass\n"
            "print('ray' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.stdout.strip().splitlines()[-1] == "False", proc.stderr


# ---------------------------------------------------------------- the database and what is read from it (no Ray)

def _job(name: str, form, precision: str, device: str, samples, status: str = "ok", error=None, accuracy=None):
    from edgesep.fleet.jobs import Artifact, MeasureJob
    from edgesep.fleet.plan import DeviceSpec

    art = Artifact(model=name, model_hash="m" + name, form=form, seed=0, path=f"/x/{name}.tflite", format="tflite",
                   precision=precision, sha256="a" + name + precision, bytes=1, accuracy=accuracy,
                   keras_accuracy=None if accuracy is None else 0.95)
    job = MeasureJob(key=f"{name}-{precision}-{device}", artifact=art, device=DeviceSpec(device), bench={"runs": 5})
    result = {"runtime": "ai_edge_litert 2.3.0", "samples_ms": samples,
              "latency_ms": {"p50": sorted(samples)[len(samples) // 2], "mean": sum(samples) / len(samples)}}
    return job, {"result": result if status == "ok" else None, "node_id": "n1", "started": 1.0, "ended": 2.0}, \
        status, error


def test_store_keeps_one_row_per_attempt_and_the_report_reads_the_newest(tmp_path):
    from edgesep.fleet import report
    from edgesep.fleet.store import SweepStore, job_row

    store = SweepStore(tmp_path)
    plan = parse_plan("[[models]]\n[[devices]]\ntarget='local'\n", tmp_path / "p.toml")
    sweep = store.begin_sweep(plan, "embedded")
    fused = [1.0 + 0.01 * i for i in range(30)]
    entries = [_job("b-fused-s0", "fused", "int8", "local", fused, accuracy=0.93),
               _job("b-split-s0", "split", "int8", "local", [2 * v for v in fused], "requeued", "worker node lost"),
               _job("b-split-s0", "split", "int8", "local", [2 * v for v in fused], accuracy=0.94),
               _job("b-split-s0", "split", "int8", "adb:X", [1.0], "failed", "adb:X: device offline")]
    for job, outcome, status, error in entries:
        store.record_job(job_row(job, outcome, status, error, 1, sweep, plan.hash))
    assert store.ok_keys() == {"b-fused-s0-int8-local", "b-split-s0-int8-local"}
    assert [r["status"] for r in store.rows()] == ["ok", "ok", "failed"]
    row = store.rows()[0]
    assert (row["runtime"], row["runtime_version"], row["p50_ms"]) == ("ai_edge_litert", "2.3.0", fused[15])
    ratio = report.fused_split_ratios(store.rows())
    store.close()
    assert len(ratio) == 1 and abs(ratio[0]["ratio"] - 0.5) < 1e-9 and ratio[0]["lo"] <= 0.5 <= ratio[0]["hi"]
    written = report.write_report(tmp_path)
    text = (tmp_path / "report.md").read_text()
    assert written == ["report.md", "latency_heatmap.png", "fused_split_ratios.png"]
    assert "| adb:X | b-split-s0 (tflite int8) | failed |" in text
    assert "faster" not in text and "not judged (unpaired, no A/A control)" in text  # an unpaired ratio: no verdict
    assert "| b-split-s0 | tflite int8 | 0.9500 | 0.9400 | 1.00 |" in text
    lines = Path(report.write_csv(tmp_path)).read_text().splitlines()
    assert len(lines) == 5 and lines[0].startswith("id,sweep_id,key,plan_hash")  # every attempt


def test_sweep_verdicts_say_they_are_unpaired_and_accuracy_near_chance_is_flagged(tmp_path, bench_models):
    import dataclasses

    from edgesep.fleet import report
    from edgesep.fleet.store import SweepStore, job_row

    store = SweepStore(tmp_path)
    plan = parse_plan("[[models]]\n[[devices]]\ntarget='local'\n", tmp_path / "p.toml")
    sweep = store.begin_sweep(plan, "embedded")
    fused = [1.0 + 0.01 * i for i in range(30)]
    for name, form, samples, keras in (("b-fused-s0", "fused", fused, 0.17), ("b-split-s0", "split", fused, 0.95)):
        job, outcome, status, error = _job(name, form, "int8", "local", samples, accuracy=0.15)
        art = dataclasses.replace(job.artifact, path=str(bench_models["int8.tflite"]), keras_accuracy=keras)
        store.record_job(job_row(dataclasses.replace(job, artifact=art), outcome, status, error, 1, sweep, plan.hash))
    store.close()
    report.write_report(tmp_path)
    assert sorted(p.name for p in tmp_path.glob("sweep.db*")) == ["sweep.db"]  # no -wal/-shm left by the reader
    text = (tmp_path / "report.md").read_text()
    assert "(unpaired, no A/A control)" in text and "no A/A control ran" in text
    warnings = report.chance_warnings(report.report_rows(tmp_path))
    assert warnings == ["b-fused-s0: Keras accuracy 0.1700 is near chance (0.1000 for 10 classes): the model has "
                        "barely learned, so its accuracy drops say little (train longer)"]
    assert f"**warning**: {warnings[0]}" in text and "b-split-s0: Keras" not in text


def test_head_watch_says_which_port_stopped_answering_and_checks_at_most_once_a_second():
    from edgesep.fleet.session import HeadLost, HeadWatch
    from sshd import closed_port

    with socket.socket() as gcs:
        gcs.bind(("127.0.0.1", 0))
        gcs.listen()
        raylet = closed_port()
        watch = HeadWatch([("127.0.0.1", gcs.getsockname()[1]), ("127.0.0.1", raylet)], every=3600)
        watch.check()  # not due yet: no connect at all
        with pytest.raises(HeadLost, match=f"nothing answers at 127.0.0.1:{raylet} \\(the raylet of this node\\)"):
            watch.check(now=True)
        HeadWatch([("127.0.0.1", gcs.getsockname()[1])]).check(now=True)  # a live port: no error
    with pytest.raises(HeadLost, match="the head's GCS"):
        HeadWatch([("127.0.0.1", closed_port())]).check(now=True)


def test_parquet_is_written_or_refused_in_one_line(tmp_path):
    import importlib.util

    from edgesep.fleet.store import SweepStore

    SweepStore(tmp_path).close()
    proc = _sweep("--parquet", tmp_path)
    if importlib.util.find_spec("pyarrow") is None:
        assert proc.returncode == 1 and proc.stderr.strip() == (
            "edgesep: error: --parquet needs pyarrow, which is not installed: pip install pyarrow (or use --csv)")
    else:
        assert proc.returncode == 0 and (tmp_path / "sweep.parquet").stat().st_size > 0


@pytest.mark.ray
@pytest.mark.adb
def test_worker_checks_its_devices_answer_before_starting_ray(adb_server, tmp_path):
    proc = subprocess.run([sys.executable, "-m", "edgesep", "worker", "--head", "--device", "adb:127.0.0.1:9",
                           "--adb-server-port", str(adb_server.port)], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
    assert "127.0.0.1:9" in proc.stderr and "ray" not in proc.stdout.lower()


# ---------------------------------------------------------------- a real cluster

@pytest.fixture(scope="module")
def phones(adb_server, tmp_path_factory):
    """Two emulated phones connected to the private adb server."""
    from adbd_emu import AdbdEmulator

    root = tmp_path_factory.mktemp("fleet-phones")
    emus = [AdbdEmulator(root / f"phone{i}").start() for i in range(2)]
    for emu in emus:
        adb_server.adb("connect", emu.serial, check=False)
        adb_server.wait_state(emu.serial, "device")
    yield emus
    for emu in emus:
        adb_server.adb("disconnect", emu.serial, check=False)
        emu.stop()


@pytest.fixture(scope="module")
def cluster(phones, sshd):
    """Head (local + ssh device) and two worker nodes (one phone each), num_cpus=1 each, on 127.0.0.1."""
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"  # Ray's loopback mode, before Ray is imported
    os.environ["RAY_AUTH_MODE"] = "disabled"  # cluster_utils' nodes run without Ray's token authentication
    from ray.cluster_utils import Cluster

    local = device_resource("local")
    head = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
        "resources": {local: 1, device_resource(sshd.target): 1}})
    workers = [head.add_node(num_cpus=1, node_ip_address="127.0.0.1",
                             resources={device_resource(f"adb:{p.serial}"): 1}) for p in phones]
    head.wait_for_nodes()
    head.owner = {local: head.head_node.node_id, device_resource(sshd.target): head.head_node.node_id}
    for phone, node in zip(phones, workers):
        head.owner[device_resource(f"adb:{phone.serial}")] = node.node_id
    head.workers = workers
    yield head
    head.shutdown()


def _plan(tmp_path: Path, models, devices: list[str], min_secs: float = 0.0, faults: str = "") -> Path:
    text = "".join(f"[[models]]\npath = {str(m)!r}\n" for m in models) + "".join(devices)
    return _write(tmp_path, text + BENCH.format(min_secs=min_secs, max_secs=min_secs + 2.0) + faults)


def _devices(sshd, phones, adb_server) -> list[str]:
    local = f"[[devices]]\ntarget = 'local'\nhost = {socket.gethostname()!r}\n"
    ssh = (f"[[devices]]\ntarget = {sshd.target!r}\nssh_config = {str(sshd.config)!r}\n"
           f"remote_python = {sys.executable!r}\n")
    adb = [f"[[devices]]\ntarget = 'adb:{p.serial}'\nadb_server_port = {adb_server.port}\nrunner = 'python'\n"
           for p in phones]
    return [local, ssh, *adb]


def _assert_placed_and_serial(rows: list[dict], owner: dict) -> None:
    by_device = collections.defaultdict(list)
    for row in rows:
        assert row["node_id"] == owner[device_resource(row["device"], row["host"])], row["device"]
        by_device[row["device"]].append((row["started"], row["ended"]))
    for device, spans in by_device.items():
        spans.sort()
        assert all(end <= next_start for (_, end), (next_start, _) in zip(spans, spans[1:])), device


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.adb
def test_sweep_on_cluster_places_each_job_on_its_owner_and_resumes(cluster, sshd, phones, adb_server,
                                                                  bench_models, tmp_path):
    models = [bench_models["float.tflite"], bench_models["int8.tflite"]]
    plan = _plan(tmp_path, models, _devices(sshd, phones, adb_server))
    out = tmp_path / "out"
    proc = _sweep(plan, "--out", out, "--address", cluster.address)
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = _rows(out)
    assert len(rows) == 8 and {r["status"] for r in rows} == {"ok"}
    _assert_placed_and_serial(rows, cluster.owner)
    assert all(r["runtime"] and r["p50_ms"] > 0 and r["artifact_hash"] and r["plan_hash"] for r in rows)
    again = _sweep(plan, "--out", out, "--address", cluster.address, "--resume", "--report", "--csv")
    assert again.returncode == 0, again.stderr[-2000:]
    assert len(_rows(out)) == 8 and "8 already done" in again.stdout  # nothing measured twice
    assert (out / "report.md").read_text().count("| float.tflite (tflite float32) |") == 1
    assert (out / "latency_heatmap.png").stat().st_size > 1000
    assert len((out / "sweep.csv").read_text().splitlines()) == 9


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.adb
def test_builtin_models_are_exported_as_ray_tasks_and_compared(cluster, tmp_path):
    plan = _write(tmp_path, "[[models]]\nform = ['fused', 'split']\nblocks = 'tiny'\ninput_size = 16\nepochs = 1\n"
                            "[export]\nprecisions = ['float32', 'int8']\n[[devices]]\ntarget = 'local'\n"
                            + BENCH.format(min_secs=0.0, max_secs=2.0))
    out = tmp_path / "out"
    proc = _sweep(plan, "--out", out, "--address", cluster.address, "--report", timeout=600)
    assert proc.returncode == 0, proc.stderr[-2000:]
    db = sqlite3.connect(out / "sweep.db")
    exports = db.execute("SELECT model, status, node_id, folder FROM exports").fetchall()
    db.close()
    nodes = {cluster.head_node.node_id, *(w.node_id for w in cluster.workers)}
    assert len(exports) == 2 and all(status == "ok" and node in nodes for _, status, node, _ in exports)
    assert all((out / folder / "export.json").is_file() for *_, folder in exports)
    rows = _rows(out)
    assert sorted((r["form"], r["precision"]) for r in rows) == [("fused", "float32"), ("fused", "int8"),
                                                                ("split", "float32"), ("split", "int8")]
    assert all(r["status"] == "ok" and 0 <= r["accuracy"] <= 1 and r["keras_accuracy"] for r in rows)
    report = (out / "report.md").read_text()
    assert report.count("| local | builtin-*-w1-i16-s0 |") == 2 and "fused_split_ratios.png" in report
    again = _sweep(plan, "--out", out, "--address", cluster.address, "--resume")
    assert again.returncode == 0 and "4 already done" in again.stdout
    db = sqlite3.connect(out / "sweep.db")
    assert db.execute("SELECT count(*) FROM exports").fetchone() == (2,)  # reused from DIR/artifacts
    db.close()


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.adb
def test_refused_without_resume_and_unowned_device_fails_its_jobs(cluster, bench_models, tmp_path):
    plan = _plan(tmp_path, [bench_models["float.tflite"]],
                 ["[[devices]]\ntarget = 'local'\n", "[[devices]]\ntarget = 'adb:NOWHERE'\nhost = 'usb-c'\n"])
    out = tmp_path / "out"
    proc = _sweep(plan, "--out", out, "--address", cluster.address)
    assert proc.returncode == 1
    assert "edgesep: error: adb:NOWHERE: float.tflite: no node of the cluster offers edgesep/adb:NOWHERE" \
        in proc.stderr
    assert sorted((r["device"], r["status"]) for r in _rows(out)) == [("adb:NOWHERE", "failed"), ("local", "ok")]
    again = _sweep(plan, "--out", out, "--address", cluster.address)
    assert again.returncode == 2 and "add --resume" in again.stderr


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.adb
def test_failed_export_is_one_line_and_the_other_models_are_measured(cluster, bench_models, tmp_path):
    bad = tmp_path / "bad.keras"
    bad.write_bytes(b"not a zip archive")
    good = bench_models["float.tflite"]
    plan = _write(tmp_path, f"[[models]]\npath = {str(bad)!r}\n[[models]]\npath = {str(good)!r}\n"
                            "[export]\nprecisions = ['float32']\n[[devices]]\ntarget = 'local'\n"
                            + BENCH.format(min_secs=0.0, max_secs=2.0))
    out = tmp_path / "out"
    proc = _sweep(plan, "--out", out, "--address", cluster.address)
    assert proc.returncode == 1
    assert "edgesep: error: export bad.keras: bad.keras is not a Keras model file" in proc.stderr
    assert [(r["model"], r["status"]) for r in _rows(out)] == [("float.tflite", "ok")]
    db = sqlite3.connect(out / "sweep.db")
    assert db.execute("SELECT model, status FROM exports").fetchall() == [("bad.keras", "failed")]
    db.close()
    assert not (out / "artifacts").exists() or not list((out / "artifacts").rglob("*.tflite"))


def _start_sweep(plan: Path, out: Path, address: str) -> subprocess.Popen:
    from test_fleet_nodes import short_tmp

    tmp = short_tmp()  # a driver killed with SIGKILL keeps its temp folder: here (short: Ray's socket paths)
    return subprocess.Popen([sys.executable, "-m", "edgesep", "sweep", str(plan), "--out", str(out), "--address",
                             address], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "TMPDIR": str(tmp)})


def _wait_rows(out: Path, where: str, n: int, proc: subprocess.Popen, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if (out / "sweep.db").exists():
            try:
                if len(_rows(out, where)) >= n:
                    return
            except sqlite3.OperationalError:  # the driver is creating the tables
                pass
        assert proc.poll() is None, proc.communicate()[1][-2000:]
        time.sleep(0.05)
    raise AssertionError(f"no {n} rows with {where} in {timeout} s")


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.parametrize("signum, code, said", [(signal.SIGINT, 130, "edgesep: interrupted"),
                                                (signal.SIGTERM, 143, "edgesep: interrupted by SIGTERM")])
@pytest.mark.ssh
@pytest.mark.adb
def test_ctrl_c_marks_running_jobs_interrupted_and_resume_finishes(cluster, bench_models, tmp_path, signum, code,
                                                                   said):
    models = [bench_models["float.tflite"], bench_models["int8.tflite"], bench_models["float.onnx"]]
    plan = _plan(tmp_path, models, ["[[devices]]\ntarget = 'local'\n"], min_secs=1.0)
    out = tmp_path / "out"
    proc = _start_sweep(plan, out, cluster.address)
    _wait_rows(out, "status = 'ok'", 1, proc)
    time.sleep(0.5)  # the next job (>= 1 s) is running now
    proc.send_signal(signum)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == code and err.strip().endswith(said)
    rows = _rows(out)
    assert [r["status"] for r in rows][:1] == ["ok"] and "interrupted" in {r["status"] for r in rows}
    assert all(signal.Signals(signum).name in r["error"] for r in rows if r["status"] == "interrupted")
    db = sqlite3.connect(out / "sweep.db")
    assert db.execute("SELECT status FROM sweeps").fetchall() == [("interrupted",)]
    db.close()
    done = _sweep(plan, "--out", out, "--address", cluster.address, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    ok = [r["key"] for r in _rows(out, "status = 'ok'")]
    assert len(ok) == 3 == len(set(ok))


@pytest.mark.ray
@pytest.mark.slow
@pytest.mark.ssh
@pytest.mark.adb
def test_database_survives_kill_9_of_the_driver(cluster, bench_models, tmp_path):
    models = [bench_models[n] for n in ("float.tflite", "int8.tflite", "prelu.tflite", "float.onnx")]
    plan = _plan(tmp_path, models, ["[[devices]]\ntarget = 'local'\n"], min_secs=0.5)
    out = tmp_path / "out"
    proc = _start_sweep(plan, out, cluster.address)
    _wait_rows(out, "status = 'ok'", 2, proc)
    proc.kill()
    proc.communicate()
    db = sqlite3.connect(out / "sweep.db")
    assert db.execute("PRAGMA integrity_check").fetchone() == ("ok",)
    before = {r[0] for r in db.execute("SELECT key FROM jobs WHERE status = 'ok'")}
    db.close()
    assert 2 <= len(before) < 4
    done = _sweep(plan, "--out", out, "--address", cluster.address, "--resume")
    assert done.returncode == 0, done.stderr[-2000:]
    ok = [r["key"] for r in _rows(out, "status = 'ok'")]
    assert len(ok) == 4 == len(set(ok)) and before <= set(ok)


def _lose_phone(cluster, phones, adb_server, bench_models, tmp_path, faults: str, index: int):
    """Start a sweep (local + one phone, 4 models each), remove the phone's node after its first result."""
    models = [bench_models[n] for n in ("float.tflite", "int8.tflite", "prelu.tflite", "float.onnx")]
    devices = ["[[devices]]\ntarget = 'local'\n", _devices_adb(phones[index], adb_server)]
    plan = _plan(tmp_path, models, devices, min_secs=0.5, faults=faults)
    out = tmp_path / "out"
    proc = _start_sweep(plan, out, cluster.address)
    serial = phones[index].serial
    _wait_rows(out, f"device = 'adb:{serial}' AND status = 'ok'", 1, proc)
    node = cluster.workers[index]
    cluster.remove_node(node)
    return proc, out, serial, device_resource(f"adb:{serial}")


def _devices_adb(phone, adb_server) -> str:
    return f"[[devices]]\ntarget = 'adb:{phone.serial}'\nadb_server_port = {adb_server.port}\nrunner = 'python'\n"


@pytest.mark.ray
@pytest.mark.adb
@pytest.mark.slow
@pytest.mark.ssh
def test_lost_node_requeues_once_when_it_returns(cluster, phones, adb_server, bench_models, tmp_path):
    faults = "[faults]\nlost_node = 'requeue'\nrequeue_timeout = 60\n"
    proc, out, serial, resource = _lose_phone(cluster, phones, adb_server, bench_models, tmp_path, faults, 0)
    time.sleep(1.0)
    back = cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", resources={resource: 1})
    cluster.workers[0] = back
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 0, err[-2000:]
    rows = _rows(out)
    local = [r for r in rows if r["device"] == "local"]
    phone = [r for r in rows if r["device"] == f"adb:{serial}"]
    assert len(local) == 4 and {r["status"] for r in local} == {"ok"}
    assert [r["status"] for r in phone].count("ok") == 4 and "requeued" in [r["status"] for r in phone]
    requeued = next(r for r in phone if r["status"] == "requeued")
    assert next(r for r in phone if r["key"] == requeued["key"] and r["status"] == "ok")["node_id"] == back.node_id


@pytest.mark.ray
@pytest.mark.adb
@pytest.mark.slow
@pytest.mark.ssh
def test_lost_node_fails_only_its_devices_jobs(cluster, phones, adb_server, bench_models, tmp_path):
    faults = "[faults]\nlost_node = 'fail'\n"
    proc, out, serial, _ = _lose_phone(cluster, phones, adb_server, bench_models, tmp_path, faults, 1)
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 1
    rows = _rows(out)
    local = [r for r in rows if r["device"] == "local"]
    phone = [r for r in rows if r["device"] == f"adb:{serial}"]
    assert len(local) == 4 and {r["status"] for r in local} == {"ok"}
    assert len(phone) == 4 and {r["status"] for r in phone} == {"ok", "failed"}
    assert all("worker node" in r["error"] for r in phone if r["status"] == "failed")
    assert f"edgesep: error: adb:{serial}: " in err


# ---------------------------------------------------------------- security

def _descendants(pid: int) -> set[int]:
    children = collections.defaultdict(set)
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
            children[ppid].add(int(entry.name))
    found, todo = set(), [pid]
    while todo:
        for child in children[todo.pop()] - found:
            found.add(child)
            todo.append(child)
    return found


def _listening(pids: set[int]) -> list[str]:
    """Local addresses of LISTEN TCP sockets owned by ``pids`` (from /proc/net/tcp and tcp6)."""
    inodes = set()
    for pid in pids:
        try:
            for fd in Path(f"/proc/{pid}/fd").iterdir():
                link = os.readlink(fd)
                if link.startswith("socket:["):
                    inodes.add(link[8:-1])
        except OSError:
            continue
    found = []
    for table in ("tcp", "tcp6"):
        for line in Path(f"/proc/net/{table}").read_text().splitlines()[1:]:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:
                found.append(_address(fields[1]))
    return found


def _address(hex_addr: str) -> str:
    import ipaddress

    host, port = hex_addr.split(":")
    raw = bytes.fromhex(host)
    ip = ipaddress.ip_address(b"".join(raw[i:i + 4][::-1] for i in range(0, len(raw), 4)))
    return f"{getattr(ip, 'ipv4_mapped', None) or ip}:{int(port, 16)}"


def _is_loopback(addr: str) -> bool:
    import ipaddress

    ip = ipaddress.ip_address(addr.rsplit(":", 1)[0])
    return ip.is_loopback or (ip.version == 6 and ip.ipv4_mapped is not None and ip.ipv4_mapped.is_loopback)


@pytest.mark.ray
@pytest.mark.slow
def test_embedded_default_listens_on_loopback_only(bench_models, tmp_path):
    plan = _plan(tmp_path, [bench_models["float.tflite"]], ["[[devices]]\ntarget = 'local'\n"], min_secs=3.0)
    out = tmp_path / "out"
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # Ray's defaults
    proc = subprocess.Popen([sys.executable, "-m", "edgesep", "sweep", str(plan), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    seen: set[str] = set()
    try:
        deadline = time.monotonic() + 120
        while proc.poll() is None and time.monotonic() < deadline:
            seen.update(_listening(_descendants(proc.pid) | {proc.pid}))
            time.sleep(0.5)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err[-2000:]
    assert len(seen) >= 3, seen  # the GCS, the raylet and the driver's own ports were seen
    assert all(_is_loopback(addr) for addr in seen), seen


@pytest.mark.ray
@pytest.mark.parametrize("args, message", [
    (["--address", "10.1.2.3:6379", "--device", "local"], "add --listen ADDR"),
    (["--address", "10.1.2.3:6379", "--device", "local", "--listen", "203.0.113.9"], "not an address of this"),
    (["--address", "127.0.0.1:6379", "--device", "local"], "give the devices to the head itself"),
    (["--device", "local"], "needs --address"),
    (["--address", "10.1.2.3:6379"], "name the devices"),
])
def test_worker_refuses_to_bind_the_network_unless_told(args, message):
    proc = subprocess.run([sys.executable, "-m", "edgesep", "worker", *args], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and message in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


@pytest.mark.ray
@pytest.mark.slow
def test_worker_head_offers_its_device_on_loopback_with_token_auth(bench_models, tmp_path):
    from sshd import closed_port

    port = closed_port()  # free now: the head takes it
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}
    head = subprocess.Popen([sys.executable, "-m", "edgesep", "worker", "--head", "--port", str(port), "--device",
                             "local", "--num-cpus", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=env)
    try:
        plan = _plan(tmp_path, [bench_models["float.tflite"]], ["[[devices]]\ntarget = 'local'\n"])
        deadline = time.monotonic() + 90
        while True:  # the head is up when its GCS port accepts connections
            with socket.socket() as s:
                if s.connect_ex(("127.0.0.1", port)) == 0:
                    break
            assert head.poll() is None and time.monotonic() < deadline, head.communicate()[1][-2000:]
            time.sleep(0.5)
        listening = _listening(_descendants(head.pid))
        proc = _sweep(plan, "--out", tmp_path / "out", "--address", f"127.0.0.1:{port}", env=env)
        assert proc.returncode == 0, proc.stderr[-2000:]
        assert [r["status"] for r in _rows(tmp_path / "out")] == ["ok"]
        assert f"127.0.0.1:{port}" in listening and all(_is_loopback(a) for a in listening), listening
    finally:
        head.terminate()  # passed on to ray start, which stops its processes
        _, err = head.communicate(timeout=60)
    assert "token authentication is on" in err
    assert not _descendants(head.pid)


@pytest.mark.ray
@pytest.mark.slow
def test_paired_groups_judge_as_compare_does_aa_no_difference_and_width_different(tmp_path):
    """[[groups]]: one job per device runs a, b and the A/A control in sessions; the report's verdicts come
    from those sessions. An A/A group (one model against itself) is no difference; width 1.5 vs 1.0 is."""
    from edgesep.fleet.store import SweepStore

    plan = _write(tmp_path, "[[models]]\nname = 'n'\nform = 'fused'\nwidth = [1.0, 1.5]\nepochs = 1\n"
                            "[export]\nprecisions = ['float32']\n[[devices]]\ntarget = 'local'\n"
                            "[bench]\nruns = 60\nwarmup = 5\nmin_secs = 0.5\nmax_secs = 3.0\nthreads = 1\n"
                            "[[groups]]\nname = 'width'\nmodels = ['n-fused-w1.5-i32-s0', 'n-fused-w1-i32-s0']\n"
                            "[[groups]]\nname = 'aa'\nmodels = ['n-fused-w1-i32-s0', 'n-fused-w1-i32-s0']\n")
    out = tmp_path / "out"
    proc = _sweep(plan, "--out", out, "--report", timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    store = SweepStore(out, create=False)
    groups = {g["name"]: g for g in store.group_results()}
    store.close()
    assert {name: len(g["samples"]) for name, g in groups.items()} == {"width": 3, "aa": 3}  # 3 sessions each
    assert all(len(s["a"]) > 5 and len(s["control"]) > 5 for g in groups.values() for s in g["samples"])
    from edgesep.fleet.report import paired_verdicts

    verdicts = {v["group"]: v for v in paired_verdicts(list(groups.values()))}
    assert not verdicts["aa"]["significant"] and verdicts["aa"]["verdict"].startswith("no ")
    assert verdicts["width"]["significant"] and verdicts["width"]["hi"] > 1.0 < verdicts["width"]["lo"]
    assert "n-fused-w1-i32-s0 is " in verdicts["width"]["verdict"] and "faster than n-fused-w1.5" in \
        verdicts["width"]["verdict"]
    text = (out / "report.md").read_text()
    assert "## Paired verdicts" in text and "A/A control" in text and verdicts["width"]["verdict"] in text


def test_groups_by_form_and_precision_pair_the_plans_artifacts(tmp_path):
    """[[groups]] by = "form" pairs each fused built-in point with its split twin; by = "precision" pairs each
    exported model's int8 with its float32 of the same format (no Ray)."""
    from edgesep.fleet.jobs import Artifact, expand_groups, group_jobs

    plan = parse_plan("[[models]]\nform = ['fused', 'split']\nwidth = [1.0, 0.5]\n[[devices]]\ntarget = 'local'\n"
                      "[[groups]]\nby = 'form'\n[[groups]]\nby = 'precision'\nsessions = 2\n", tmp_path / "p.toml")
    groups = expand_groups(plan)
    forms = [(g.a, g.b) for g in groups if g.by is None]
    assert forms == [("builtin-fused-w1-i32-s0", "builtin-split-w1-i32-s0"),
                     ("builtin-fused-w0.5-i32-s0", "builtin-split-w0.5-i32-s0")]
    assert sorted(g.a for g in groups if g.by == "precision") == sorted(m.name for m in plan.models)

    def art(model, fmt, precision):
        return Artifact(model=model, model_hash="h", form=None, seed=0, path=f"/x/{model}-{precision}.{fmt}",
                        format=fmt, precision=precision, sha256=f"{model}{fmt}{precision}", bytes=1)

    arrived = {m.name: [art(m.name, "tflite", "float32"), art(m.name, "tflite", "int8"), art(m.name, "onnx",
                                                                                               "float32")]
               for m in plan.models}
    by_precision = next(g for g in groups if g.by == "precision")
    (job,) = group_jobs(by_precision, arrived, plan)
    assert (job.a.precision, job.b.precision, job.a.format) == ("int8", "float32", "tflite")
    jobs = group_jobs(groups[0], arrived, plan)
    assert sorted((j.a.format, j.a.precision) for j in jobs) == [("onnx", "float32"), ("tflite", "float32"),
                                                                  ("tflite", "int8")]
    assert all(j.a.model.startswith("builtin-fused") and j.b.model.startswith("builtin-split") for j in jobs)
