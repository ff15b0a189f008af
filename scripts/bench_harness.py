"""Benchmark: edgesep's local bench against ai-edge-litert's own `litert-benchmark`, same models, same threads.

For the built-in network (split and fused forms, float32 and int8, random weights: latency does not depend on
them) it prints, per model:
- the p50 of `edgesep bench --device local` (runner.py, TFLite Interpreter + XNNPACK) and the median of
  `litert-benchmark` (LiteRT CompiledModel API, CPU/XNNPACK), both with the same thread count, alternated
  round by round; the ratio edgesep / litert-benchmark (goal: within +-10 %);
- the harness's own overhead per steady-state run (runner.py's Python loop outside the timed call, and the
  cost of the timer itself) next to the invoke time.

    python scripts/bench_harness.py [--threads 1] [--runs 300] [--rounds 3] [--size 128]
"""
from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")


def make_models(folder: Path, size: int) -> list[Path]:
    """float32 and int8 .tflite files of both block forms (TensorFlow is used here, never by edgesep.devices)."""
    import numpy as np
    import tensorflow as tf

    from edgesep.models import build_model

    paths = []
    rng = np.random.default_rng(0)
    for form in ("split", "fused"):
        model = build_model(form, input_shape=(size, size, 3))
        path = folder / f"{form}_float32.tflite"
        path.write_bytes(tf.lite.TFLiteConverter.from_keras_model(model).convert())
        paths.append(path)
        conv = tf.lite.TFLiteConverter.from_keras_model(model)
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = lambda: ([rng.random((1, size, size, 3), dtype=np.float32)] for _ in range(16))
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
        path = folder / f"{form}_int8.tflite"
        path.write_bytes(conv.convert())
        paths.append(path)
    return paths


def edgesep_round(models: list[Path], threads: int, runs: int) -> dict[Path, dict]:
    """One interleaved session of edgesep's local device: {model: {"p50": ms, "loop_us": ..., "timer_us": ...}}."""
    from edgesep.devices import BenchConfig, parse_target

    config = BenchConfig(threads=threads, runs=runs, warmup=20, warmup_secs=0.5, min_secs=0.0, max_secs=60.0)
    with parse_target("local") as device:
        device.prepare(models)
        results = device.run(config)
    out = {}
    for path, r in zip(models, results):
        if r.error:
            raise SystemExit(f"edgesep failed on {path.name}: {r.error}")
        overhead = r.extra.get("overhead") or {}
        out[path] = {"p50": r.latency_ms["p50"], "ci": r.latency_ms["ci95_p50"], "loop_us": overhead.get("loop_us"),
                     "timer_us": overhead.get("timer_us"), "delegated": r.fully_delegated}
    return out


def litert_round(model: Path, threads: int, runs: int, tool: str) -> float:
    """The median (ms) reported by `litert-benchmark` (its --result_json, rounded there to 0.01 ms)."""
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "result.json"
        proc = subprocess.run([tool, "--model", str(model), "--num_runs", str(runs), "--warmup_runs", "20",
                               "--num_threads", str(threads), "--result_json", str(result)],
                              capture_output=True, text=True, timeout=600)
        if proc.returncode != 0 or not result.is_file():
            raise SystemExit(f"litert-benchmark failed on {model.name}: {proc.stderr.strip()[-500:]}")
        return float(json.loads(result.read_text())["latency"]["median_ms"])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--size", type=int, default=128, help="input height/width of the built-in network")
    args = parser.parse_args()
    tool = shutil.which("litert-benchmark")
    if tool is None:
        print("litert-benchmark not found (it ships with ai-edge-litert): pip install ai-edge-litert", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        models = make_models(Path(tmp), args.size)
        ours: dict[Path, list[dict]] = {m: [] for m in models}
        theirs: dict[Path, list[float]] = {m: [] for m in models}
        for _ in range(args.rounds):  # alternate the tools so drift and heat hit both alike
            for model, stats in edgesep_round(models, args.threads, args.runs).items():
                ours[model].append(stats)
            for model in models:
                theirs[model].append(litert_round(model, args.threads, args.runs, tool))
    print(f"threads={args.threads} runs={args.runs} rounds={args.rounds} input={args.size}x{args.size}x3 "
          f"cpu={os.cpu_count()} cores")
    print(f"{'model':<22}{'edgesep p50 ms':>16}{'litert p50 ms':>15}{'ratio':>8}{'within 10%':>12}"
          f"{'loop us/run':>13}{'timer us':>10}{'overhead %':>12}")
    ratios = []
    for model in models:
        p50 = statistics.median(s["p50"] for s in ours[model])
        ref = statistics.median(theirs[model])
        loop = statistics.median(s["loop_us"] for s in ours[model])
        timer = statistics.median(s["timer_us"] for s in ours[model])
        ratio = p50 / ref
        ratios.append(ratio)
        print(f"{model.name:<22}{p50:>16.3f}{ref:>15.2f}{ratio:>8.3f}{'yes' if abs(ratio - 1) <= 0.10 else 'NO':>12}"
              f"{loop:>13.2f}{timer:>10.3f}{100 * loop / 1000 / p50:>11.3f}%")
    print(f"geometric-mean ratio edgesep/litert-benchmark: {statistics.geometric_mean(ratios):.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
