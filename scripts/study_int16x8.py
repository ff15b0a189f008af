"""int8 vs 16x8 per form: full-integer int8 (per-channel weights) against TFLite's 16-bit activations / 8-bit
weights mode, on the quantization study's built-in settings.

For each setting and seed: top-1 accuracy on the test split and the output SQNR of each quantized model
against the float TFLite model of the same network, on the same test images (outputs are softmax
probabilities; the study's logit SQNR needs the int8 per-layer reader, which reads int8 tensors only).
Trained networks come from the study's cache (``edgesep.train``), so a rerun converts only.

    python scripts/study_int16x8.py --seeds 0 1 2 --markdown docs/int16x8_table.md
"""
from __future__ import annotations

import argparse
import math
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from study_quantization import CALIB_SAMPLES, SETTINGS  # noqa: E402  (the same networks and calibration)

PRECISIONS = ("int8", "int16x8")


def _sqnr_db(reference, output) -> float:
    noise = float(((output - reference) ** 2).sum())
    return math.inf if noise == 0 else 10 * math.log10(float((reference ** 2).sum()) / noise)


def run_one(setting, seed: int, ds) -> dict[str, Any]:
    """One trained network (cached), its float TFLite and both quantized models."""
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import predict_tflite, top1
    from edgesep.train import train_builtin

    model_cfg, train_cfg = setting.configs(seed)
    model, _ = train_builtin(model_cfg, train_cfg, dataset=ds)
    calib = ds.calibration(CALIB_SAMPLES, seed=0)
    row: dict[str, Any] = {"setting": setting.name, "seed": seed}
    with tempfile.TemporaryDirectory(prefix="edgesep-16x8-") as tmp:
        reference = predict_tflite(export_tflite(model, Path(tmp) / "float32.tflite"), ds.x_test)
        row["float32"] = {"accuracy": top1(reference, ds.y_test)}
        for precision in PRECISIONS:
            path = export_tflite(model, Path(tmp) / f"{precision}.tflite", precision=precision,
                                 representative_data=calib, io_dtype="float32" if precision == "int8" else "int8")
            out = predict_tflite(path, ds.x_test)
            row[precision] = {"accuracy": top1(out, ds.y_test), "output_sqnr_db": _sqnr_db(reference, out)}
    return row


def markdown(rows: list[dict[str, Any]]) -> str:
    """One line per setting and precision: mean top-1 and output SQNR over the seeds, with [min..max]."""
    lines = ["| setting | precision | top-1 % | output SQNR dB (vs float TFLite) |", "|---|---|---|---|"]
    for setting in dict.fromkeys(r["setting"] for r in rows):
        runs = [r for r in rows if r["setting"] == setting]
        for precision in ("float32", *PRECISIONS):
            acc = [100 * r[precision]["accuracy"] for r in runs]
            sqnr = [r[precision].get("output_sqnr_db") for r in runs]
            acc_text = f"{sum(acc) / len(acc):.2f} [{min(acc):.2f}..{max(acc):.2f}]"
            sqnr_text = "-" if None in sqnr else f"{sum(sqnr) / len(sqnr):.1f} [{min(sqnr):.1f}..{max(sqnr):.1f}]"
            lines.append(f"| {setting if precision == 'float32' else ''} | {precision} | {acc_text} | {sqnr_text} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", nargs="+", type=int, default=[0])
    parser.add_argument("--settings", nargs="+", default=[s.name for s in SETTINGS if s.group == "builtin"],
                        help="setting names of the quantization study (default: the builtin group)")
    parser.add_argument("--json", type=Path, help="write every run's numbers here")
    parser.add_argument("--markdown", type=Path, help="write the table here (it is printed either way)")
    args = parser.parse_args(argv)
    from edgesep.data import load_dataset
    from edgesep.io import write_json, write_text

    chosen = [s for s in SETTINGS if s.name in args.settings]
    if len(chosen) != len(args.settings):
        parser.error(f"unknown setting; known: {', '.join(s.name for s in SETTINGS)}")
    ds = load_dataset("digits", (32, 32, 3))
    rows = [run_one(setting, seed, ds) for setting in chosen for seed in args.seeds]
    table = markdown(rows)
    print(table)
    if args.json:
        write_json(args.json, rows)
    if args.markdown:
        write_text(args.markdown, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
