"""The quantization study: float vs int8 per-channel, per-tensor, per-tensor + CLE, per-tensor + CLE + bias absorption.

For every setting (network form x activation x training recipe) and seed it trains the network (or loads it
from edgesep's training cache), exports int8 TFLite variants and measures on the digits test split:

* top-1 accuracy of the float Keras model and of every int8 model (TFLite interpreter);
* logit SQNR: SQNR of the int8 model's classifier output (pre-softmax) against the float TFLite model of
  the original network, from ``edgesep.converters.quant_error``;
* the widest per-channel range ratio of the folded depthwise kernels, before and after CLE, and the
  lowest depthwise weight SQNR of each int8 model;
* the float accuracy of every equalized network (CLE keeps ReLU6 exact with per-channel clips, the
  ``equalize`` default; the ``ReLU6 -> ReLU`` variant uses ``relu6="replace"``, which changes the network);
* how many channels bias absorption moved (from the calibration images' per-channel minimum);
* what ``edgesep export --int8 --per-tensor --equalize`` ships: CLE + BA behind the accuracy guard
  (``edgesep.converters.guard``), which leaves links out where equalizing them lowers the int8 model's
  agreement with the float model or its output SQNR on training images held out from calibration, against
  plain per-tensor, and how many links it kept.

Usage::

    python scripts/study_quantization.py                      # every setting, seeds 0 1 2
    python scripts/study_quantization.py --settings builtin --seeds 0
    python scripts/study_quantization.py --json study.json --markdown table.md

Prints one line per run, then the Markdown table (means over seeds, min..max in brackets) and the time.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402

# CLE keeps ReLU6 exact with per-channel clips (relu6="clip", the default); the last variant swaps ReLU6 for ReLU
VARIANTS = ("int8 per-channel", "int8 per-tensor", "per-tensor + CLE", "per-tensor + CLE + BA",
            "per-tensor + CLE + BA, guarded", "per-tensor + CLE, ReLU6 -> ReLU")
GUARDED = "per-tensor + CLE + BA, guarded"  # what `edgesep export --int8 --per-tensor --equalize` does
CALIB_SAMPLES = 200
SQNR_SAMPLES = 200  # test images for the per-layer report (accuracy uses the whole test split)


@dataclasses.dataclass(frozen=True)
class Setting:
    """One network + training recipe of the study."""

    name: str
    group: str
    form: str
    activation: str
    width: float = 1.0
    epochs: int = 8
    learning_rate: float = 3e-3

    def configs(self, seed: int):
        from edgesep.models import ModelConfig
        from edgesep.train import TrainConfig

        return (ModelConfig(form=self.form, activation=self.activation, width=self.width),
                TrainConfig(epochs=self.epochs, learning_rate=self.learning_rate, seed=seed))


def _settings() -> list[Setting]:
    rows = []
    for form in ("split", "fused"):
        for act in ("relu6", "relu"):
            rows.append(Setting(f"builtin {form} {act}", "builtin", form, act))
    for form in ("split", "fused"):  # a hot recipe: Adam at lr 0.1 kills and saturates channels
        rows.append(Setting(f"hot {form} relu6", "hot", form, "relu6", learning_rate=0.1))
    return rows


SETTINGS = _settings()
GROUPS = sorted({s.group for s in SETTINGS})


# --- one run ---

def _variant_model(variant: str, model, calib, ds) -> tuple[Any, dict]:
    """The float model the variant quantizes (equalized for CLE variants) and facts about the equalization."""
    from edgesep.converters.equalize import equalize_with_report

    if "CLE" not in variant:
        return model, {}
    if variant == GUARDED:
        from edgesep.converters.fold import fold_batchnorm
        from edgesep.converters.guard import guarded_equalize, selection_split

        # as export does: the guard chooses on training images held out from the calibration draw (``calib`` is
        # ds.calibration(CALIB_SAMPLES, 0), which selection_split draws too)
        _, selection, _ = selection_split(ds.x_train, len(calib), 0)
        eq, doc = guarded_equalize(model, fold_batchnorm(model), calib, selection, ds.x_test, ds.y_test,
                                   relu6="clip", per_channel=False, io_dtype="int8")
        guard = doc["guard"]
        return eq, {"dw_range_ratio_after": max(r["after"] for r in doc["depthwise_range_ratio"])
                    if guard["links_kept"] else None, "links": guard["links_kept"],
                    "ba_channels": sum(b["channels"] for b in doc["bias_absorbed"]) if guard["links_kept"] else 0,
                    "guard": guard["outcome"]}
    eq, report = equalize_with_report(model, relu6="replace" if "ReLU6 -> ReLU" in variant else "clip",
                                      absorb_bias=variant.endswith("BA"), calibration_data=calib)
    ratios = report.depthwise_range_ratio
    facts = {"dw_range_ratio_after": max(a for _, _, a in ratios) if ratios else None,
             "cle_iterations": report.iterations, "links": len(report.pairs)}
    if variant.endswith("BA"):
        facts["ba_channels"] = sum(b.channels for b in report.bias_absorbed)
    return eq, facts


def _same_weights(a, b) -> bool:
    wa, wb = a.get_weights(), b.get_weights()
    return len(wa) == len(wb) and all(x.shape == y.shape and np.array_equal(x, y) for x, y in zip(wa, wb))


def _int8_facts(variant: str, model, calib, ds, reference: Path, work: Path) -> dict[str, Any]:
    """Accuracy and SQNR of one int8 variant of ``model``; SQNR against ``reference``, the float TFLite of it."""
    from edgesep.converters.quant_error import quant_error_report
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import predict_tflite, top1

    stem = "".join(c if c.isalnum() else "_" for c in variant)
    path = export_tflite(model, work / f"{stem}.tflite", precision="int8", representative_data=calib,
                         per_channel=(variant == "int8 per-channel"))
    facts: dict[str, Any] = {"accuracy": top1(predict_tflite(path, ds.x_test), ds.y_test)}
    qe = quant_error_report(reference, path, ds.x_test, max_samples=SQNR_SAMPLES)
    logits = [r for r in qe["layers"] if r["op"] == "FULLY_CONNECTED"][-1]
    facts["logit_sqnr_db"] = logits["sqnr_db"]
    dw = [r["weight_sqnr_db"] for r in qe["depthwise"] if r.get("weight_sqnr_db") is not None]
    facts["dw_weight_sqnr_db_min"] = min(dw) if dw else None
    facts["worst_layer"] = qe["worst"][0] if qe["worst"] else None
    return facts


def run_one(setting: Setting, seed: int, ds) -> dict[str, Any]:
    """Train (or load) one network and measure every variant."""
    from edgesep.converters.fold import fold_batchnorm
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import predict_keras, top1
    from edgesep.train import train_builtin

    model_cfg, train_cfg = setting.configs(seed)
    start = time.perf_counter()
    model, info = train_builtin(model_cfg, train_cfg, dataset=ds)
    trained = time.perf_counter() - start
    calib = ds.calibration(CALIB_SAMPLES, seed=0)
    result = {"setting": setting.name, "seed": seed, "cached": info["cached"], "train_s": round(trained, 1),
              "float_accuracy": top1(predict_keras(model, ds.x_test), ds.y_test),
              "dw_range_ratio": _dw_ratio(fold_batchnorm(model)), "variants": {}}
    with tempfile.TemporaryDirectory(prefix="edgesep-study-") as tmp:
        work = Path(tmp)
        reference = export_tflite(model, work / "float32.tflite")
        equalized: list[tuple[Any, dict]] = []  # (equalized float model, its facts), to spot identical ones
        for variant in VARIANTS:
            if "ReLU6" in variant and setting.activation != "relu6":
                continue  # without ReLU6 it is plain CLE
            eq, facts = _variant_model(variant, model, calib, ds)
            twin = next((f for m, f in equalized if _same_weights(m, eq)), None) if eq is not model else None
            if twin is not None:  # e.g. bias absorption that absorbed nothing: the very same network
                facts = {**twin, **facts, "same_as": twin["variant"]}
            elif eq is not model:
                facts["float_accuracy"] = top1(predict_keras(eq, ds.x_test), ds.y_test)
                own = export_tflite(eq, work / f"float32_{len(equalized)}.tflite")
                facts.update(_int8_facts(variant, eq, calib, ds, own, work))
                equalized.append((eq, {**facts, "variant": variant}))
            else:
                facts.update(_int8_facts(variant, model, calib, ds, reference, work))
            result["variants"][variant] = facts
    result["run_s"] = round(time.perf_counter() - start, 1)
    return result


def _dw_ratio(folded) -> float:
    from edgesep.converters.equalize.scaling import depthwise_out_view  # the kernel view CLE itself uses

    ratios = []
    for layer in folded.layers:
        kind = type(layer).__name__
        if kind in ("DepthwiseConv2D", "SeparableConv2D"):
            kernel = (layer.kernel if kind == "DepthwiseConv2D" else layer.depthwise_kernel).numpy()
            r = np.max(np.abs(depthwise_out_view(kernel)), axis=0)
            r = r[r > 0]
            ratios.append(float(r.max() / r.min()))
    return max(ratios)


# --- the table ---

def _stat(values: list[float], fmt: Callable[[float], str]) -> str:
    values = [v for v in values if v is not None]
    if not values:
        return "-"
    if len(values) == 1:
        return fmt(values[0])
    return f"{fmt(float(np.mean(values)))} [{fmt(min(values))}..{fmt(max(values))}]"


def _pct(v: float) -> str:
    return f"{100 * v:.1f}"


def _db(v: float) -> str:
    return f"{v:.1f}"


def markdown(results: list[dict[str, Any]]) -> str:
    """One row per setting and variant, means over seeds with [min..max]."""
    lines = ["| setting | variant | top-1 % | logit SQNR dB | max dw range ratio | min dw weight SQNR dB | "
             "float top-1 % of the quantized net | bias-absorbed channels | equalized links |",
             "|---|---|---|---|---|---|---|---|---|"]
    for setting in dict.fromkeys(r["setting"] for r in results):
        runs = [r for r in results if r["setting"] == setting]
        seeds = ",".join(str(r["seed"]) for r in runs)
        lines.append(f"| **{setting}** (seeds {seeds}) | float | {_stat([r['float_accuracy'] for r in runs], _pct)} | "
                     f"- | {_stat([r['dw_range_ratio'] for r in runs], _ratio)} | - | - | - | - |")
        for variant in VARIANTS:
            v = [r["variants"][variant] for r in runs if variant in r["variants"]]
            if not v:
                continue
            after = [x.get("dw_range_ratio_after") for x in v]
            lines.append(
                f"| | {variant} | {_stat([x['accuracy'] for x in v], _pct)} | "
                f"{_stat([x['logit_sqnr_db'] for x in v], _db)} | {_stat(after, _ratio)} | "
                f"{_stat([x['dw_weight_sqnr_db_min'] for x in v], _db)} | "
                f"{_stat([x.get('float_accuracy') for x in v], _pct)} | "
                f"{_stat([x.get('ba_channels') for x in v], lambda c: f'{c:.0f}')} | "
                f"{_stat([x.get('links') for x in v], lambda c: f'{c:.1f}'.removesuffix('.0'))} |")
    return "\n".join(lines)


def _ratio(v: float) -> str:
    return f"{v:.0f}" if v >= 10 else f"{v:.1f}"


def _origin(r: dict[str, Any]) -> str:
    return "cached" if r["cached"] else f"trained in {r['train_s']} s"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", choices=GROUPS, default=GROUPS, help="setting groups to run")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--json", type=Path, help="write every run's numbers here")
    parser.add_argument("--markdown", type=Path, help="write the table here")
    args = parser.parse_args(argv)

    import logging

    from edgesep.data import load_dataset
    from edgesep.models import ModelConfig

    logging.getLogger("tensorflow").setLevel(logging.ERROR)  # predict() retracing chatter

    start = time.perf_counter()
    ds = load_dataset("digits", ModelConfig().input_shape)
    results = []
    for setting in (s for s in SETTINGS if s.group in args.settings):
        for seed in args.seeds:
            r = run_one(setting, seed, ds)
            results.append(r)
            v = r["variants"]
            print(f"{setting.name:22s} seed {seed}: float {_pct(r['float_accuracy'])} | "
                  + " | ".join(f"{k} {_pct(x['accuracy'])} ({_db(x['logit_sqnr_db'])} dB)" for k, x in v.items())
                  + f" | dw ratio {r['dw_range_ratio']:.0f} | {_origin(r)}, {r['run_s']}s", flush=True)
    table = markdown(results)
    elapsed = time.perf_counter() - start
    print()
    print(table)
    command = "python scripts/study_quantization.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"\n{command.strip()}: {elapsed:.0f} s on {os.cpu_count()} cores")
    if args.json:
        args.json.write_text(json.dumps({"results": results, "elapsed_s": elapsed}, indent=1))
    if args.markdown:
        args.markdown.write_text(table + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
