"""Benchmark: wall time of ``edgesep compare --device local`` for the default config, broken down by stage.

1. ``edgesep compare --device local`` runs in a subprocess with an empty training cache (cold: both forms are
   trained), and its stage times come from report.json (data, train, export, bench local, plots; the rest of
   the wall time is start-up: Python, TensorFlow import).
2. Reference, in this process: the same work through the library directly (load digits, ``train_builtin``
   both forms without cache, ``export`` both, one local bench session of all artifacts with the same
   BenchConfig), so ``compare / reference`` is what the orchestration costs on top (threads, report writes,
   sessions split by runtime, bootstrap ratios, plots).

3. What the sessions cost: the same report folder again with ``--resume --sessions 1`` (exports reused, the
   device measured again in one session, with its A/A control): bench stage seconds of both.

Goal: compare under 180 s on 2 cores. Prints the breakdown, both totals, the ratios and the verdicts.

    python scripts/bench_compare.py [--out DIR] [--no-reference]
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

GOAL_S = 180.0


def run_compare(out: Path, cache: Path, *extra: str) -> tuple[float, dict]:
    """Wall seconds of the CLI run and its report document."""
    env = {**os.environ, "EDGESEP_CACHE": str(cache)}
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "edgesep", "compare", "--device", "local", "--out", str(out),
                           *extra], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if proc.returncode != 0:
        sys.exit(f"edgesep compare failed ({proc.returncode}): {proc.stderr.strip()[-2000:]}")
    return wall, json.loads((out / "report.json").read_text())


def run_reference(folder: Path) -> dict[str, float]:
    """Seconds per stage of the same work through the library, cold (no training cache)."""
    times: dict[str, float] = {}
    t = time.perf_counter()
    from edgesep.converters._quiet import import_tensorflow

    import_tensorflow()
    from edgesep.converters.export import ExportConfig, export
    from edgesep.data import load_dataset
    from edgesep.devices import BenchConfig, parse_target
    from edgesep.models import ModelConfig
    from edgesep.train import train_builtin

    times["import"] = time.perf_counter() - t
    t = time.perf_counter()
    ds = load_dataset("digits", (32, 32, 3))
    data = folder / "test.npz"
    ds.save_npz(data)
    times["data"] = time.perf_counter() - t
    models = {}
    t = time.perf_counter()
    for form in ("fused", "split"):
        models[form], _ = train_builtin(ModelConfig(form=form), dataset=ds, use_cache=False)
    times["train"] = time.perf_counter() - t
    t = time.perf_counter()
    files = []
    for form, model in models.items():
        doc = export(model, folder / form, ExportConfig(precisions=("float32", "int8")), ds)
        files += [folder / form / a["path"] for a in doc["artifacts"]]
    times["export"] = time.perf_counter() - t
    t = time.perf_counter()
    with parse_target("local") as device:
        device.prepare(files, data)
        device.run(BenchConfig(data=str(data)))
    times["bench local"] = time.perf_counter() - t
    return times


def sessions_cost(out: Path, cache: Path, doc: dict) -> None:
    """What the default sessions cost: the same artifacts measured again in one session (exports reused)."""
    _, one = run_compare(out, cache, "--resume", "--sessions", "1")
    many_s, one_s = doc["stages"]["bench local"]["seconds"], one["stages"]["bench local"]["seconds"]
    print(f"bench local: {doc.get('sessions')} sessions + A/A control {many_s:.1f} s, one session "
          f"{one_s:.1f} s (x{many_s / one_s:.1f}, +{many_s - one_s:.1f} s)")
    for target, section in one["devices"].items():
        for c in section["comparisons"]:
            print(f"  one session, {target}, {c['label']}: {c['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="report folder to keep (default: a temp dir)")
    parser.add_argument("--no-reference", action="store_true", help="skip the in-process reference run")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="edgesep-bench-compare-") as tmp:
        tmp = Path(tmp)
        out = args.out or tmp / "report"
        wall, doc = run_compare(out, tmp / "cache-compare")
        stages = {k: v.get("seconds", 0.0) for k, v in doc["stages"].items()}
        stages["start-up and rest"] = wall - sum(stages.values())
        print(f"edgesep compare --device local (default config, cold training cache), {os.cpu_count()} cores")
        print(f"{'stage':<20} {'seconds':>8} {'share':>7}")
        for name, seconds in stages.items():
            print(f"{name:<20} {seconds:8.1f} {seconds / wall:7.1%}")
        print(f"{'total':<20} {wall:8.1f}   goal {GOAL_S:.0f} s: {wall / GOAL_S:.2f} of the goal "
              f"({'met' if wall < GOAL_S else 'NOT met'})")
        for target, section in doc["devices"].items():
            for c in section["comparisons"]:
                print(f"  {target}, {c['label']}: {c['verdict']}")
        print(f"  int8 accuracy: {doc['accuracy']['verdict']}")
        sessions_cost(out, tmp / "cache-compare", doc)
        if args.no_reference:
            return
        ref_folder = tmp / "reference"
        ref_folder.mkdir()
        t = time.perf_counter()
        ref = run_reference(ref_folder)
        ref_wall = time.perf_counter() - t
        print("\nreference: the same work through the library in this process")
        for name, seconds in ref.items():
            print(f"{name:<20} {seconds:8.1f}")
        print(f"{'total':<20} {ref_wall:8.1f}")
        print(f"compare / reference: {wall / ref_wall:.2f} (train {stages['train'] / ref['train']:.2f}, "
              f"export {stages['export'] / ref['export']:.2f}, bench {stages['bench local'] / ref['bench local']:.2f})")


if __name__ == "__main__":
    main()
