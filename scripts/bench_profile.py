"""Benchmark: does ``bench --profile`` account for the measured whole? Per-op sum / measured p50, per model.

Models: the built-in network (split and fused, trained and cached, exported by ``edgesep export --int8``:
float32 and int8 TFLite, float32 and int8 ONNX) and keras.applications MobileNetV2 (weights=None, 96x96,
alpha 1.0, randomized BatchNorm statistics; float32 and full-integer int8 TFLite with random calibration
images, float32 ONNX through tf2onnx). Each is measured by ``edgesep bench --profile --json`` on the device
(default local) in its own bench, and the script prints, per model, the profile's method, the per-op sum,
the measured whole, their ratio against the goal (within +-20 %), the ratio against the whole model timed
again in the profile session (between its ops or its profiled runs: the same load on both sides), against the
median of the whole's runs no other process preempted ("unpre.", with the share preempted, "pre."), the ONNX
ratio before onnxruntime's profiler's own cost per node is subtracted ("raw"), and the profile's own cost. ``--keep DIR`` keeps (and reuses) the exported models there.

On a loaded machine a long whole-model run is preempted (its wall time grows with the load) while a 0.1 ms op
fits in one time slice; so the script prints, with the load average, "best" (TFLite: each op's fastest run
against the whole's fastest run in the profile session, each with a CPU to itself: the check that survives a
busy machine and the emulated Pi, whose whole runs are all preempted) and "CPU/wall" (with ``--threads 1``:
the whole's CPU time per run against its wall time in the profile session: how much of it waited). For ONNX,
"+exec" is the ratio of ops + onnxruntime's executor between them (the '(between ops)' row, not an op) to the
timed p50, and "+ex ses" the same against the whole timed between the profiled runs.

    python scripts/bench_profile.py [--models builtin,mobilenet_v2] [--device local] [--threads 1] [--keep DIR]
        [--ssh-config FILE --remote-python PATH]   # an ssh:// device
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
GOAL = 0.20


def export_builtin(out: Path) -> list[Path]:
    paths = []
    for form in ("split", "fused"):
        folder = out / f"builtin-{form}"
        if not (folder / "export.json").is_file():
            subprocess.run([sys.executable, "-m", "edgesep", "export", "--form", form, "--int8", "--out",
                            str(folder)], check=True, capture_output=True, text=True)
        paths += [folder / n for n in ("model.tflite", "model_int8.tflite", "model.onnx", "model_int8.onnx")]
    return paths


def export_mobilenet_v2(out: Path, size: int = 96) -> list[Path]:
    folder = out / f"mobilenet_v2_{size}"
    names = ("model.tflite", "model_int8.tflite", "model.onnx")
    if all((folder / n).is_file() for n in names):
        return [folder / n for n in names]
    import keras
    from bench_export import randomize_bn
    import numpy as np
    import tensorflow as tf
    import tf2onnx

    keras.utils.set_random_seed(0)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(size, size, 3), classes=1000)
    rng = randomize_bn(model)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "model.tflite").write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
    conv = tf.lite.TFLiteConverter.from_keras_model(model)
    conv.optimizations = [tf.lite.Optimize.DEFAULT]
    conv.representative_dataset = lambda: ([rng.uniform(-1, 1, (1, size, size, 3)).astype(np.float32)]
                                           for _ in range(16))
    conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    conv.inference_input_type = conv.inference_output_type = tf.int8
    (folder / "model_int8.tflite").write_bytes(conv.convert())
    spec = (tf.TensorSpec((1, size, size, 3), tf.float32, name="image"),)
    fn = tf.function(lambda x: model(x), input_signature=spec)
    tf2onnx.convert.from_function(fn, input_signature=spec, opset=13, output_path=str(folder / "model.onnx"))
    return [folder / n for n in ("model.tflite", "model_int8.tflite", "model.onnx")]


def profile(path: Path, device: str, threads: str, device_args: tuple[str, ...] = ()) -> dict:
    args = [sys.executable, "-m", "edgesep", "bench", str(path), "--device", device, *device_args, "--profile", "--json"]
    if threads:
        args += ["--threads", threads]
    proc = subprocess.run(args, capture_output=True, text=True)
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"exit {proc.returncode}"}
    return json.loads(proc.stdout)["results"][0]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="builtin,mobilenet_v2")
    parser.add_argument("--device", default="local")
    parser.add_argument("--threads", default="1")
    parser.add_argument("--keep", metavar="DIR", help="export the models into DIR (reused when already there)")
    parser.add_argument("--ssh-config", help="passed to edgesep bench (an ssh:// device)")
    parser.add_argument("--remote-python", help="passed to edgesep bench (an ssh:// device)")
    args = parser.parse_args(argv)
    makers = {"builtin": export_builtin, "mobilenet_v2": export_mobilenet_v2}
    print(f"device {args.device}, threads {args.threads or 'default'}; goal: per-op sum within +-{GOAL:.0%} of the "
          "measured whole (p50)")
    print(f"load average {' '.join(f'{v:.1f}' for v in os.getloadavg())} on {os.cpu_count()} cores")
    print(f"{'model':34} {'method':27} {'sum ms':>9} {'whole ms':>9} {'ratio':>6}  goal  {'session':>7}  "
          f"{'unpre.':>6}  {'pre.':>4}  {'best':>5}  {'CPU/wall':>8}  {'+exec':>5}  {'+ex ses':>7}  {'raw':>5}  {'cost s':>7}  peak GMAC/s")
    with tempfile.TemporaryDirectory(prefix="edgesep-bench-profile-") as tmp:
        where = Path(args.keep) if args.keep else Path(tmp)
        for name in args.models.split(","):
            for path in makers[name](where):
                device_args = tuple(a for k in ("ssh_config", "remote_python") if getattr(args, k)
                                    for a in (f"--{k.replace('_', '-')}", getattr(args, k)))
                r = profile(path, args.device, args.threads, device_args)
                label = f"{path.parent.name}/{path.name}"
                p = r.get("profile") or {}
                if r.get("error") or not p or p.get("error"):
                    print(f"{label:34} failed: {r.get('error') or p.get('error')}")
                    continue
                ok = "yes" if p["ratio"] and abs(p["ratio"] - 1) <= GOAL else "NO"
                session = f"{p['session_ratio']:.2f}" if p.get("session_ratio") else "-"
                best = f"{p['best_ratio']:.2f}" if p.get("best_ratio") else "-"
                cpu = (f"{p['cpu_whole_ms'] / p['session_whole_ms']:.2f}" if p.get("cpu_whole_ms")
                       and p.get("session_whole_ms") else "-")
                executor = p.get("executor") or {}
                ex, ex_ses = (f"{executor[k]:.2f}" if executor.get(k) else "-" for k in ("ratio", "session_ratio"))
                raw = f"{p['raw_ratio']:.2f}" if p.get("raw_ratio") else "-"
                clean = f"{p['clean_ratio']:.2f}" if p.get("clean_ratio") else "-"
                pre = f"{100 * p['preempted']:.0f}%" if p.get("preempted") is not None else "-"
                print(f"{label:34} {p['method']:27} {p['sum_ms']:9.4f} {p['whole_ms']:9.4f} {p['ratio']:6.2f}  "
                      f"{ok:4}  {session:>7}  {clean:>6}  {pre:>4}  {best:>5}  {cpu:>8}  {ex:>5}  {ex_ses:>7}  {raw:>5}  {p['cost_s']:7.2f}  "
                      f"{p.get('peak_gmacs') or '-'}")
                sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
