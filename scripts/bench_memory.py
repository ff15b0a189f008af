"""Benchmark: the runner's memory figures against an independent reading of its process from outside.

For each model (a float MLP with ~32 MB of weights as .tflite and .onnx, and the built-in network as .tflite)
it starts ``runner.py`` exactly as the local device does, follows its progress lines on stderr, and reads
``/proc/PID/status`` of the runner process from this process:
- ``baseline``: VmRSS when the runner announces the load (``load 0/1``) and ``loaded``: VmRSS when it reports
  the load done (``load 1/1``);
- ``peak``: the highest VmRSS sampled every millisecond during the timed steady state (the runner reports VmHWM
  over the same phase, reset through /proc/self/clear_refs just before it).
It prints the runner's figures, the outside readings and their ratios; goal: every ratio within 10 %. Exit 1
if a figure misses it.

    python scripts/bench_memory.py [--secs 2] [--units 2048]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
TOLERANCE = 0.10


def make_models(folder: Path, units: int) -> list[Path]:
    """A float MLP (1x1 conv, 4096 -> units -> 10) as .tflite and .onnx, and the built-in network as .tflite."""
    import tensorflow as tf

    from edgesep.converters.onnx import export_onnx
    from edgesep.models import build_model

    x = inputs = tf.keras.Input((32, 32, 3))
    x = tf.keras.layers.Conv2D(4, 1)(x)
    x = tf.keras.layers.Dense(units, "relu")(tf.keras.layers.Flatten()(x))
    mlp = tf.keras.Model(inputs, tf.keras.layers.Dense(10)(x))
    paths = [folder / "mlp.tflite", folder / "mlp.onnx", folder / "split.tflite"]
    paths[0].write_bytes(tf.lite.TFLiteConverter.from_keras_model(mlp).convert())
    export_onnx(mlp, paths[1], fold=False)
    paths[2].write_bytes(tf.lite.TFLiteConverter.from_keras_model(build_model("split")).convert())
    return paths


def status(pid: int) -> dict[str, float]:
    """VmRSS and VmHWM (MB) of process ``pid``, read from outside."""
    out = {}
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(rest.split()[0]) / 1024.0
    return out


class Watcher:
    """Reads the runner's status at its progress events and samples VmRSS during the steady state."""

    def __init__(self, pid: int):
        self.pid = pid
        self.readings: dict[str, float] = {}
        self.sampled_peak = 0.0
        self._steady = threading.Event()
        self._done = threading.Event()
        self._sampler = threading.Thread(target=self._sample, daemon=True)
        self._sampler.start()

    def _sample(self) -> None:
        self._steady.wait()
        while not self._done.is_set():
            self.sampled_peak = max(self.sampled_peak, status(self.pid).get("VmRSS", 0.0))
            time.sleep(0.001)

    def event(self, event: dict) -> None:
        phase, done, total = event.get("phase"), event.get("done"), event.get("total")
        if phase == "load" and done == 0:
            self.readings["baseline"] = status(self.pid).get("VmRSS")
        elif phase == "load" and done == total:
            self.readings["loaded"] = status(self.pid).get("VmRSS")
        elif phase == "steady" and not self._steady.is_set():
            self._steady.set()
        elif phase == "steady" and done == total:
            self._done.set()

    def stop(self) -> None:
        self._steady.set()
        self._done.set()
        self._sampler.join()


def measure(model: Path, secs: float) -> tuple[dict, dict]:
    """(the runner's memory_mb, the outside readings) for one model in its own runner process."""
    from edgesep.devices import BenchConfig
    from edgesep.devices.harness import RUNNER_PATH, runner_args
    from edgesep.devices.runner import PROGRESS_PREFIX

    config = BenchConfig(runs=1, warmup=5, warmup_secs=0.2, min_secs=secs, max_secs=secs * 2)
    proc = subprocess.Popen([sys.executable, str(RUNNER_PATH), *runner_args(config, [str(model)])],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    watcher = Watcher(proc.pid)
    chunks: list[str] = []
    reader = threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True)  # a big document
    reader.start()  # must not block the runner while its progress lines are read here
    for line in proc.stderr:
        if line.startswith(PROGRESS_PREFIX):
            watcher.event(json.loads(line[len(PROGRESS_PREFIX):]))
    watcher.stop()
    reader.join()
    out = "".join(chunks)
    proc.wait()
    entry = json.loads(out.strip().splitlines()[-1])["results"][0]
    if entry.get("error"):
        raise SystemExit(f"{model.name}: {entry['error']}")
    return entry["memory_mb"], dict(watcher.readings, peak=watcher.sampled_peak)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--secs", type=float, default=2.0, help="steady-state seconds per model")
    p.add_argument("--units", type=int, default=2048, help="hidden units of the MLP (4096 x units weights)")
    args = p.parse_args()
    failed = []
    with tempfile.TemporaryDirectory(prefix="edgesep-bench-memory-") as tmp:
        models = make_models(Path(tmp), args.units)
        print(f"{'model':14} {'figure':9} {'runner MB':>10} {'outside MB':>11} {'ratio':>7}")
        for model in models:
            ours, outside = measure(model, args.secs)
            for key in ("baseline", "loaded", "peak"):
                ratio = ours[key] / outside[key] if outside.get(key) else float("nan")
                ok = abs(ratio - 1.0) <= TOLERANCE
                failed += [] if ok else [f"{model.name} {key}"]
                print(f"{model.name:14} {key:9} {ours[key]:10.1f} {outside.get(key, float('nan')):11.1f} "
                      f"{ratio:7.3f}{'' if ok else '  MISSES 10 %'}")
            print(f"{model.name:14} {'model':9} {ours['model']:10.1f} "
                  f"{outside['loaded'] - outside['baseline']:11.1f}   (loaded - baseline)")
    print("goal: every ratio within 10 %: " + ("met" if not failed else "missed by " + ", ".join(failed)))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
