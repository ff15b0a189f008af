"""Rendering of the int8 accuracy tools: the ``--keep-float`` recipe of an export and the sensitivity ranking
of ``edgesep inspect --sensitivity``. Takes their JSON-ready dicts; imports nothing of the converters."""
from __future__ import annotations

from typing import Any, Optional


def _db(value: Optional[float]) -> str:
    return "exact" if value is None else f"{value:.1f}"


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def keep_float_table(recipe: dict[str, Any]) -> Any:
    """The mixed-precision recipe: which ops stay float, their MAC share, the target and plain int8's figures."""
    from rich.table import Table

    auto = recipe.get("target_metric") is not None
    precision = recipe.get("precision", "float")
    title = f"int8 with ops kept {precision}" + (" (--keep-float auto)" if auto else "")
    table = Table(title=title, show_header=False)
    table.add_column(style="bold")
    table.add_column(overflow="fold")
    table.add_row("kept at", "int16 activations, int8 weights (ai-edge-quantizer)" if precision == "int16"
                  else "float32")
    if precision == "int16":
        table.add_row("int16 ops", ", ".join(recipe.get("int16_ops", ())) or "none (plain int8)")
    if precision == "float" or recipe["float_ops"]:
        table.add_row("float ops", ", ".join(recipe["float_ops"]) or "none (plain int8)")
    table.add_row(f"MAC share kept {precision}", _pct(recipe["mac_share"]))
    plain = recipe["plain_int8"]
    table.add_row("plain int8 (test split)", f"SQNR {_db(plain['sqnr_db'])} dB, agreement {_pct(plain['top1_agreement'])}")
    if auto:
        unit = " dB" if recipe["target_metric"] == "sqnr_db" else ""
        verdict = "met" if recipe["met"] else "NOT met: plain int8 kept"
        table.add_row("target", f"{recipe['target_metric']} >= {recipe['target']:g}{unit}: {verdict}")
        chosen_on = recipe["chosen_on"]
        selection = recipe["selection"]
        table.add_row("chosen on", f"{chosen_on['samples']} {chosen_on['images']}")
        for key in ("plain_int8", "chosen"):
            table.add_row(f"  {key.replace('_', ' ')}",
                          f"SQNR {_db(selection[key]['sqnr_db'])} dB, agreement {_pct(selection[key]['top1_agreement'])}")
    if recipe.get("onnx_float_nodes") is not None:
        table.add_row("ONNX nodes kept float", str(recipe["onnx_float_nodes"])
                      + (" (onnxruntime: no int16 kernels, so float)" if recipe.get("onnx_precision") else ""))
    return table


def sensitivity_table(report: dict[str, Any]) -> Any:
    """The sensitivity ranking: each op kept float, the output SQNR/agreement it gives and its MAC share."""
    from rich.table import Table

    plain = report["plain_int8"]
    mode = "quick: the debugger's worst-rated ops" if report["quick"] else "every op"
    table = Table(title=f"int8 sensitivity ({report['measured']} of {report['ops']} ops measured, {mode}; "
                        f"plain int8: SQNR {_db(plain['sqnr_db'])} dB, agreement {_pct(plain['top1_agreement'])} "
                        f"on {report['samples']} {report['images']})")
    for column in ("rank", "op kept float", "also float", "MACs", "layer SQNR dB", "SQNR dB", "gain dB",
                   "agreement"):
        table.add_column(column, justify="left" if "op" in column or column == "also float" else "right",
                         overflow="fold")
    for i, row in enumerate(report["ranking"], 1):
        others = [name for name in row["float_ops"] if name != row["op"]]
        gain = row["sqnr_gain_db"]
        table.add_row(str(i), row["op"], ", ".join(others), _pct(row["mac_share"]),
                      "-" if row["layer_sqnr_db"] is None else f"{row['layer_sqnr_db']:.1f}",
                      _db(row["sqnr_db"]), "-" if gain is None else f"{gain:+.1f}", _pct(row["top1_agreement"]))
    return table


def ptq_line(report: dict[str, Any]) -> str:
    """One line on what ``--ptq`` did (export.json ``ptq``)."""
    text = (f"ptq: {' + '.join(report['methods'])} on {report['samples']} calibration images "
            f"({report['weights']} weights, {report['seconds']:.0f} s)")
    guard = report.get("guard")
    if guard:
        scores = ", ".join(f"{name} {_db(value)}" for name, value in guard["sqnr_db"].items())
        kept = "none of them (the model as it was)" if guard["chosen"] == "none" else guard["chosen"]
        text += (f"; int8 SQNR dB on {guard['selection_samples']} held-out training images: {scores}; "
                 f"kept {kept}")
    return text
