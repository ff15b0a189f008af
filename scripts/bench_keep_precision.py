"""Benchmark: which is faster on the device, ops kept float or kept at int16 activations (``--keep-precision``)?

On keras.applications MobileNetV2 (alpha 0.35, 96x96, weights=None, randomized BatchNorm statistics; the case
of ``bench_export.py`` and ``bench_keep_float.py``), the same ops (``--keep-float``, default
``block_16_project``: it and its reader ``Conv_1``, about 15 % of the MACs) are kept three ways: float
(``--keep-precision float``), int16 activations with int8 weights (``--keep-precision int16``), and not at all
(plain int8, float32 I/O like the others). All three are measured together with ``edgesep bench`` (paired,
interleaved sessions, the models' order alternating, an A/A control: a copy of the first, the float one),
on the local CPU and, when it is up, on the emulated arm64 Pi (``scripts/emulated_pi.py``) with each of its
interpreters (ai-edge-litert, tflite-runtime). Prints each device's control and verdicts: every ratio is
against the float-kept model (> 1: slower than it).

    python scripts/bench_keep_precision.py [--keep-float NAMES] [--sessions 3] [--threads 1] [--no-pi]

Emulated results are qemu-user on the host's CPU: flagged as emulated, a check that the int16 kernels run
on an arm64 runtime, not a Raspberry Pi's speed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_export import model_and_data  # noqa: E402

VARIANTS = (("float", "float"), ("int16", "int16"), ("plain", None))  # (file stem, --keep-precision or plain)


def export_variants(names: str, folder: Path) -> dict[str, dict]:
    """Export the three models of the same network; each variant's model_int8.tflite and export.json figures."""
    from edgesep.converters.export import ExportConfig, export

    model, ds = model_and_data("mobilenet_v2")
    found = {}
    for stem, precision in VARIANTS:
        config = ExportConfig.from_options(int8=True, io_dtype="float32", no_onnx=True,
                                           keep_float=names if precision else None, keep_precision=precision)
        doc = export(model, folder / stem, config, ds).to_dict()
        int8 = next(a for a in doc["artifacts"] if a["path"] == "model_int8.tflite")
        copy = folder / f"{stem}.tflite"
        copy.write_bytes((folder / stem / "model_int8.tflite").read_bytes())
        found[stem] = {"path": copy, "sqnr_db": int8["output_sqnr_db_vs_keras"],
                       "agreement": int8["top1_agreement_vs_keras"], "recipe": doc.get("keep_float") or {}}
    return found


def bench(paths: list[Path], extra: list[str], sessions: int, threads: int) -> dict:
    """``edgesep bench PATHS... --json`` as a user runs it; its JSON document."""
    argv = [sys.executable, "-c", "import sys; from edgesep.cli import main; sys.exit(main())", "bench",
            *map(str, paths), "--sessions", str(sessions), "--threads", str(threads), "--json", *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=3600)
    try:  # a model that fails leaves the others' results (and its own error) in the document, exit 1
        return json.loads(proc.stdout)
    except ValueError:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}


def pi_targets() -> list[tuple[str, list[str]]]:
    """(label, bench options) of each interpreter of the emulated Pi, if it is up."""
    status = subprocess.run([sys.executable, str(Path(__file__).parent / "emulated_pi.py"), "status", "--json"],
                            capture_output=True, text=True)
    try:
        doc = json.loads(status.stdout)
    except ValueError:
        return []
    if doc.get("state") != "up":
        return []
    return [(f"emulated Pi ({name})", ["--device", doc["target"], "--ssh-config", doc["ssh_config"],
                                      "--remote-python", python]) for name, python in doc["pythons"].items()]


def report(label: str, doc: dict) -> None:
    if "error" in doc:
        print(f"{label}: bench failed: {doc['error']}")
        return
    results = {Path(r["model"]).stem: r for r in doc["results"]}
    host = next((r.get("host") or {} for r in doc["results"]), {})
    flag = " [EMULATED: qemu-user, not a Pi's speed]" if host.get("emulated") else ""
    runtime = next((r.get("runtime") for r in doc["results"]), "?")
    print(f"{label}{flag}: {runtime}, {doc.get('sessions')} sessions")
    for stem, r in results.items():
        error = f" ERROR {r['error']}" if r.get("error") else ""
        p50 = (r.get("latency_ms") or {}).get("p50")
        print(f"  {stem:6s} p50 {p50 if p50 is None else round(p50, 3)} ms{error}")
    control = doc.get("control")
    if control:
        print(f"  A/A control (float vs its copy): ratio {control['ratio']:.3f} "
              f"[{control['lo']:.3f}..{control['hi']:.3f}], floor {control['floor']}")
    for c in doc.get("comparisons", []):
        ratio = "-" if c.get("ratio") is None else f"{c['ratio']:.3f} [{c['lo']:.3f}..{c['hi']:.3f}]"
        print(f"  {c.get('label', '?')}: ratio {ratio}: {c['verdict']}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep-float", default="block_16_project", help="the ops both variants keep")
    parser.add_argument("--sessions", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--no-pi", action="store_true", help="only the local CPU")
    args = parser.parse_args()
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; mobilenet_v2 0.35 96x96, "
          f"--keep-float {args.keep_float}")
    with tempfile.TemporaryDirectory(prefix="edgesep-keep-precision-") as tmp:
        found = export_variants(args.keep_float, Path(tmp))
        for stem, v in found.items():
            recipe = v["recipe"]
            kept = ", ".join(recipe.get("int16_ops") or recipe.get("float_ops") or []) or "-"
            print(f"  {stem:6s} test SQNR {v['sqnr_db']:.1f} dB, agreement {v['agreement']:.3f}; kept: {kept}"
                  + (f" ({100 * recipe['mac_share']:.1f} % of MACs)" if recipe else ""))
        paths = [found[stem]["path"] for stem, _ in VARIANTS]
        targets = [("local CPU", ["--device", "local"])] + ([] if args.no_pi else pi_targets())
        for label, extra in targets:
            report(label, bench(paths, extra, args.sessions, args.threads))


if __name__ == "__main__":
    main()
