"""Rendering of what ``edgesep inspect`` finds: the model file's summary, I/O and op tables, and the per-layer
quantization error table. Takes the JSON-ready dicts (``ModelInfo.to_dict()``, ``quant_error_report``), so
it imports nothing of the converters."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Optional


def info_tables(info: dict[str, Any]) -> list[Any]:
    """Rich tables of an inspection (``ModelInfo.to_dict()``): a summary, the inputs/outputs, and the ops by
    type (most frequent first)."""
    from rich.table import Table

    summary = Table(title=f"{Path(info['path']).name} ({info['format']})", show_header=False)
    summary.add_column(style="bold")
    summary.add_column()
    for key, value in _summary_rows(info):
        summary.add_row(key, value)

    io = Table(title="inputs / outputs")
    for column in ("", "name", "shape", "dtype", "quantization"):
        io.add_column(column, overflow="fold")
    for kind, entries in (("input", info["inputs"]), ("output", info["outputs"])):
        for e in entries:
            io.add_row(kind, e["name"], _shape_text(e["shape"]), e["dtype"], _quant_text(e))

    ops = Table(title=f"ops ({sum(info['ops'].values())})")
    ops.add_column("op")
    ops.add_column("count", justify="right")
    for name, count in sorted(info["ops"].items(), key=lambda kv: (-kv[1], kv[0])):
        ops.add_row(name, str(count))
    return [summary, io, ops]


def _summary_rows(info: dict[str, Any]) -> list[tuple[str, str]]:
    rows = [("path", info["path"]), ("size", _human(info["bytes"], "B", 1024)), ("sha256", info["sha256"][:16] + "…"),
            ("params", f"{info['params']:,}"), ("MACs", f"{info['macs']:,} ({_human(info['macs'], '', 1000)})"
                                                  + (" - partial, see note" if info.get("macs_partial") else ""))]
    q = info["quantization"]
    if q is not None:
        dtypes = ", ".join(f"{n} {d}" for d, n in q["dtypes"].items()) or "none"
        rows.append(("weights", f"{q['per_channel']} per-channel, {q['per_tensor']} per-tensor, {q['float']} float"
                                f" tensors ({dtypes})"))
        rows.append(("activations", ", ".join(f"{n} {d}" for d, n in q["activation_dtypes"].items()) or "-"))
    rows += [("note", note) for note in info["notes"]]
    return rows


def _human(value: int, unit: str, base: int) -> str:
    """``10.9 KiB``-style text: one decimal with a K/M/G prefix (Ki/Mi/Gi for ``base`` 1024), or the plain
    integer below ``base``."""
    if value < base:
        return f"{value} {unit}".rstrip()
    scaled, prefix = float(value), ""
    for prefix in ("K", "M", "G"):
        scaled /= base
        if scaled < base:
            break
    return f"{scaled:.1f} {prefix}{'i' if base == 1024 else ''}{unit}"


def _shape_text(shape: list[Optional[int]]) -> str:
    return "[" + ", ".join("?" if d is None else str(d) for d in shape) + "]"


def _quant_text(entry: dict[str, Any]) -> str:
    if "scale" in entry:
        return f"scale {entry['scale']:.6g}, zero point {entry['zero_point']}"
    if "per_channel" in entry:
        pc = entry["per_channel"]
        return (f"per-channel ×{pc['count']} (axis {pc['quantized_dimension']}), "
                f"scale {pc['scale_min']:.3g}…{pc['scale_max']:.3g}")
    return "-"


def quant_error_table(doc: dict[str, Any]):
    """A rich Table of a ``quant_error_report`` document (worst layers marked)."""
    from rich.table import Table
    from rich.text import Text

    table = Table(title=f"Quantization error ({doc['samples']} images, output top-1 agreement "
                        f"{_pct(doc['output']['top1_agreement'])})")
    for column in ("layer", "op", "SQNR dB", "RMSE/scale", "max |err|", "weight SQNR dB", "dw range ratio"):
        table.add_column(column, justify="left" if column in ("layer", "op") else "right")
    table.caption = "\n".join(doc["notes"])
    worst = set(doc["worst"])
    for r in doc["layers"]:
        # styled Text, not markup: tables are printed with markup off (a layer may be named "[x]")
        table.add_row(Text(r["layer"], style="bold red" if r["layer"] in worst else ""), r["op"],
                      _num(r["sqnr_db"], 1), _num(r["rmse_per_scale"], 2), _num(r["max_abs_error"], 4),
                      _num(r.get("weight_sqnr_db"), 1), _num(r.get("range_ratio"), 1))
    return table


def _num(value: Optional[float], digits: int) -> str:
    return "-" if value is None else f"{value:.{digits}f}"


def _pct(value: Optional[float]) -> str:
    return "-" if value is None else f"{100 * value:.1f} %"
