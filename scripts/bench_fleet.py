"""Fleet figures for the README: sweep wall time with one vs two worker nodes, and scheduling overhead per job.

Usage: ``python scripts/bench_fleet.py [--exports 4] [--epochs 1]`` (needs Ray: ``pip install 'edgesep[fleet]'``).

1. Scaling: an export-heavy plan (the built-in network, tiny blocks, ``--exports`` points: fused/split x
   seeds, each trained for ``--epochs`` and exported) on real ``edgesep worker`` nodes: a head on 127.0.0.1
   with no CPU for exports (it owns the local device) plus one worker node on 127.0.0.2, then plus a second
   on 127.0.0.3 (num_cpus=1 each; separate raylets, object stores and node IPs). Each run gets a fresh training cache, so both train and export the same models.
   Reported: the sweep's wall time (the CLI, start to exit), the export phase (first export start to last
   export end, from the database) and their ratios one node / two nodes.
2. Overhead: four tiny models on three devices, each owned by its own node (127.0.0.2-4), five runs each. On one device the jobs run
   back to back, so the gap between one job's end and the next job's start (both stamped by the device's
   actor) is what the sweep adds per job: collecting the result, one committed SQLite transaction, sending
   the next job through Ray. Reported: median and max gap against the goal (< 50 ms), and the median job.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
os.environ["RAY_AUTH_MODE"] = "disabled"  # a private cluster on loopback, for the benchmark only
os.environ.setdefault("RAY_DEFAULT_OBJECT_STORE_MEMORY_PROPORTION", "0.02")

BENCH = "[bench]\nruns = 5\nwarmup = 1\nwarmup_secs = 0.0\nmin_secs = 0.0\nmax_secs = 2.0\nthreads = 1\n"


@contextlib.contextmanager
def _nodes(tmp: Path, workers: list[tuple[str, int]]) -> Iterator[str]:
    """A real cluster of ``edgesep worker`` nodes: the head on 127.0.0.1 (no export CPU, owns ``local``) and
    one node per (loopback address, CPUs), each owning ``local`` on its address; yields the head's address."""
    from sshd import closed_port

    port = closed_port()
    specs = [(["--head", "--port", str(port), "--num-cpus", "0"], "edgesep: head on")]
    specs += [(["--address", f"127.0.0.1:{port}", "--listen", ip, "--num-cpus", str(cpus)], f"node {ip} joined")
              for ip, cpus in workers]
    procs = []
    try:
        for i, (args, ready) in enumerate(specs):
            err = tmp / f"node{i}.err"
            with open(err, "w") as f:
                procs.append(subprocess.Popen([sys.executable, "-m", "edgesep", "worker", *args, "--device", "local"],
                                              stdout=subprocess.DEVNULL, stderr=f, stdin=subprocess.DEVNULL))
            deadline = time.monotonic() + 180
            while ready not in err.read_text():
                if procs[-1].poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"node did not start: {err.read_text()[-2000:]}")
                time.sleep(0.3)
        yield f"127.0.0.1:{port}"
    finally:
        for proc in reversed(procs):
            proc.terminate()
            proc.wait(timeout=120)


def _sweep(plan: Path, out: Path, address: str, env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgesep", "sweep", str(plan), "--out", str(out), "--address",
                           address], capture_output=True, text=True, env=env)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"sweep failed: {proc.stderr[-2000:]}")
    return seconds


def scaling(tmp: Path, exports: int, epochs: int) -> dict[int, tuple[float, float]]:
    """{worker nodes: (sweep wall s, export phase s)} for 1 and 2 worker nodes."""
    forms = ["fused", "split"]
    seeds = max(1, exports // 2)
    plan = tmp / "exports.toml"
    plan.write_text(f"[[models]]\nform = {forms!r}\nblocks = 'tiny'\ninput_size = 16\nseeds = {seeds}\n"
                    f"epochs = {epochs}\n[export]\nprecisions = ['float32']\n[[devices]]\ntarget = 'local'\n{BENCH}")
    figures = {}
    for workers in (1, 2):
        env = dict(os.environ, EDGESEP_CACHE=str(tmp / f"cache{workers}"))  # train afresh in both runs
        with _nodes(tmp, [(f"127.0.0.{2 + i}", 1) for i in range(workers)]) as address:
            wall = _sweep(plan, tmp / f"out{workers}", address, env)
        db = sqlite3.connect(tmp / f"out{workers}" / "sweep.db")
        start, end, n = db.execute("SELECT min(started), max(ended), count(*) FROM exports "
                                   "WHERE status = 'ok'").fetchone()
        db.close()
        assert n == 2 * seeds, f"{n} exports"
        figures[workers] = (wall, end - start)
        print(f"  {workers} worker node(s): sweep {wall:.1f} s, export phase {end - start:.1f} s ({n} exports; "
              f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores)", flush=True)
    return figures


def overhead(tmp: Path) -> tuple[list[float], list[float]]:
    """(gaps between consecutive jobs of one device, job durations), seconds."""
    from bench_models import bench_models

    models = bench_models()
    hosts = ["127.0.0.2", "127.0.0.3", "127.0.0.4"]
    plan = tmp / "overhead.toml"
    plan.write_text("".join(f"[[models]]\npath = {str(models[n])!r}\n"
                            for n in ("float.tflite", "int8.tflite", "prelu.tflite", "float.onnx"))
                    + "".join(f"[[devices]]\ntarget = 'local'\nhost = '{h}'\n" for h in hosts) + BENCH)
    with _nodes(tmp, [(h, 0) for h in hosts]) as address:
        _sweep(plan, tmp / "overhead", address, dict(os.environ))
    db = sqlite3.connect(tmp / "overhead" / "sweep.db")
    gaps, jobs = [], []
    for host in hosts:
        spans = db.execute("SELECT started, ended FROM jobs WHERE host = ? ORDER BY started", (host,)).fetchall()
        gaps += [b[0] - a[1] for a, b in zip(spans, spans[1:])]
        jobs += [end - start for start, end in spans]
    db.close()
    return gaps, jobs


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--exports", type=int, default=4, help="export jobs in the scaling plan (even)")
    parser.add_argument("--epochs", type=int, default=1, help="training epochs per export job")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgesep-bench-fleet-") as tmp:
        print(f"scaling: {args.exports} export jobs (built-in tiny network, {args.epochs} epoch(s), float32)")
        figures = scaling(Path(tmp), args.exports, args.epochs)
        (w1, e1), (w2, e2) = figures[1], figures[2]
        print(f"  one -> two worker nodes: sweep x{w1 / w2:.2f} faster, export phase x{e1 / e2:.2f} faster")
        print("overhead: 4 models x 3 devices, each on its own node, 5 runs per job")
        gaps, jobs = overhead(Path(tmp))
        med = statistics.median(gaps) * 1000
        print(f"  per job: median {med:.1f} ms, max {max(gaps) * 1000:.1f} ms over {len(gaps)} gaps "
              f"(goal < 50 ms); median job {statistics.median(jobs) * 1000:.0f} ms")
        return 0 if med < 50 else 1


if __name__ == "__main__":
    sys.exit(main())
