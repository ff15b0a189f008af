"""Benchmark: ``export --int8 --keep-float auto`` against a plain ``export --int8``, in one process.

On keras.applications MobileNetV2 (alpha 0.35, 96x96, weights=None, randomized BatchNorm statistics, smooth
random images in its input domain; the same case as ``bench_export.py``), both exports write float32 + int8
TFLite and both ONNX files with float32 I/O. The keep-float one adds one calibration through TFLite's
QuantizationDebugger, the per-layer statistics, one selective quantization and run per candidate op, and
auto's greedy steps (with the default target, above plain int8's SQNR, it has to search). Prints the wall-time ratio (goal: <= 10) and what auto kept. The two exports alternate
order between repeats, so slow drift on a shared machine hits both alike.

    python scripts/bench_keep_float.py [--target-sqnr 45] [--repeats 1]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_export import _warm_up, model_and_data  # noqa: E402


def timed_export(model, ds, folder: Path, keep_float: str | None, target: float) -> tuple[float, dict]:
    """Seconds for edgesep's export (int8, float32 I/O, with or without --keep-float) and its export.json."""
    from edgesep.converters.export import ExportConfig, export

    config = ExportConfig.from_options(int8=True, io_dtype="float32", keep_float=keep_float,
                                       target_sqnr=target if keep_float == "auto" else None)
    start = time.perf_counter()
    doc = export(model, folder, config, ds).to_dict()
    return time.perf_counter() - start, doc


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--target-sqnr", type=float, default=45.0,
                        help="auto's target; the default is above what plain int8 reaches on this case (about "
                             "38 dB), so auto searches (at 30 dB plain int8 already meets it and auto stops at once)")
    parser.add_argument("--repeats", type=int, default=1)
    args = parser.parse_args()
    from edgesep.converters._quiet import import_tensorflow

    import_tensorflow()
    _warm_up()
    model, ds = model_and_data("mobilenet_v2")
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; goal: keep-float auto / plain <= 10")
    times: dict[str, list[float]] = {"plain": [], "auto": []}
    docs = {}
    for repeat in range(args.repeats):
        runs = [("plain", None), ("auto", "auto")]
        for label, keep in (runs if repeat % 2 == 0 else runs[::-1]):
            with tempfile.TemporaryDirectory() as tmp:
                seconds, docs[label] = timed_export(model, ds, Path(tmp) / "out", keep, args.target_sqnr)
            times[label].append(seconds)
    plain, auto = min(times["plain"]), min(times["auto"])
    recipe = docs["auto"]["keep_float"]
    int8 = {label: next(a for a in doc["artifacts"] if a["path"] == "model_int8.tflite") for label, doc in docs.items()}
    print(f"mobilenet_v2 0.35 96x96: plain int8 export {plain:.1f} s, --keep-float auto {auto:.1f} s, "
          f"ratio {auto / plain:.2f}")
    print(f"  auto: target {recipe['target_metric']} >= {recipe['target']:g} "
          f"{'met' if recipe['met'] else 'not met'}, kept {recipe['kept'] or 'nothing'} "
          f"({100 * recipe['mac_share']:.1f}% of MACs float), {len(recipe['steps'])} steps")
    for label in ("plain", "auto"):
        print(f"  {label}: test SQNR {int8[label]['output_sqnr_db_vs_keras']:.1f} dB, agreement "
              f"{int8[label]['top1_agreement_vs_keras']:.3f}")


if __name__ == "__main__":
    main()
