"""Export and bench results as rich tables and Markdown; Edge TPU facts as a table."""
from __future__ import annotations

from typing import Any, Optional

from edgesep.report.text import distinct_labels, format_ms, ops_text, size_text


def export_table(result: Any) -> "ExportTable":
    """A rich renderable of an export (an ``edgesep.converters.records.ExportResult``, read by attribute): the
    runtime each artifact is for, size, ops, max error, top-1 agreement and SQNR vs Keras, accuracy; the caption
    says what the data were (used as given, preprocessing, resizing), the int8 input check and any warnings.

    It fits the console it is printed on: where the op list has room, it is a column; on a narrow terminal
    (80 columns) it goes below the table, one line per distinct op set, wrapped between ops, never inside one.
    """
    return ExportTable(result)


class ExportTable:
    """The export table, laid out at render time for the console's width (see :func:`export_table`)."""

    COLUMNS = ("artifact", "for", "precision", "size", "max err", "agree", "SQNR dB", "accuracy")

    def __init__(self, result: Any):
        self.result = result

    def __rich_console__(self, console, options):
        from rich.measure import Measurement

        ops = [ops_text(dict(a.ops)) for a in self.result.artifacts]
        longest_op = max((len(tok) for text in ops for tok in text.split()), default=0)
        narrow = self._table(with_ops=False)
        need = Measurement.get(console, options, narrow).maximum + longest_op + 2
        if not any(ops) or need > options.max_width:
            yield narrow
            yield from self._runtime_lines()
            yield from self._ops_lines(ops)
        else:
            yield self._table(with_ops=True, ops_width=longest_op)

    def _table(self, with_ops: bool, ops_width: int = 0):
        from rich import box
        from rich.table import Table

        result = self.result
        title = f"{result.model.name} ({result.model.form or 'custom'})"
        if result.keras_accuracy is not None:
            title += f" - Keras accuracy {result.keras_accuracy:.4f}"
        table = Table(title=title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                      title_justify="left", caption_justify="left")
        columns = list(self.COLUMNS)
        if with_ops:
            columns.insert(4, "ops")
        else:  # narrow: the runtimes go below the table (``_runtime_lines``)
            columns.remove("for")
        for column in columns:
            if column == "ops":
                table.add_column(column, overflow="fold", ratio=1, min_width=ops_width)
            else:
                table.add_column(column, no_wrap=True, justify="left" if column in ("artifact", "for", "precision")
                                 else "right")
        for art in result.artifacts:
            for row in _artifact_rows(art, with_ops):
                table.add_row(*row)
        table.caption = "\n".join(_export_caption(result)) or None
        return table

    def _runtime_lines(self):
        """Narrow layout: one line saying which runtime each artifact is for."""
        from rich.text import Text

        groups: dict[str, list[str]] = {}
        for art in self.result.artifacts:
            if art.runtime:
                groups.setdefault(art.runtime, []).append(art.path)
        if groups:
            yield Text.assemble(("for: ", "bold"), "; ".join(f"{r}: {', '.join(p)}" for r, p in groups.items()))

    def _ops_lines(self, ops: list[str]):
        """One paragraph per distinct op set, naming the artifacts that have it."""
        from rich.text import Text

        groups: dict[str, list[str]] = {}
        for art, text in zip(self.result.artifacts, ops):
            if text:
                groups.setdefault(text, []).append(art.path)
        for text, paths in groups.items():
            yield Text.assemble((f"ops of {', '.join(paths)}: ", "bold"), text)


def _artifact_rows(art: Any, with_ops: bool) -> list[list[str]]:
    """One artifact's rows: one for its only output, or one per output (named) where there are several."""
    several = len(art.checks) > 1
    rows = []
    for i, check in enumerate(art.checks if several else [art.check()]):
        first = i == 0
        name = f"{art.path} {check.output}" if several and first else (f"  {check.output}" if several else art.path)
        cells = [name, (art.runtime or "-") if first else "", art.precision if first else "",
                 size_text(art.bytes) if first else "", *_figures(check)]
        if with_ops:
            cells.insert(4, ops_text(dict(art.ops)) if first else "")
        else:
            del cells[1]
        rows.append(cells)
    return rows


def _figures(check: Any) -> list[str]:
    """max err, agree, SQNR dB and accuracy cells of one output's check (None: not verified)."""
    err, acc = (check.max_abs_error_vs_keras, check.accuracy) if check else (None, None)
    agree, sqnr = (check.top1_agreement_vs_keras, check.output_sqnr_db_vs_keras) if check else (None, None)
    return ["-" if err is None else f"{err:.1e}", "-" if agree is None else f"{agree:.3f}",
            "-" if sqnr is None else f"{sqnr:.1f}", "-" if acc is None else f"{acc:.4f}"]


def _export_caption(result: Any) -> list[str]:
    """The lines under the export table: input data, int8 input check, equalize guard, warnings."""
    int8 = _int8_line(result.int8_check, result.artifact("tflite:int8"))
    caption = [line for line in (_input_line(result.dataset), int8) if line]
    guard = (result.equalize or {}).get("guard")
    if guard:
        caption.append(f"equalize guard: {guard['outcome']} ({guard['links_kept']}/{guard['links']} links "
                       f"equalized); {_guard_figures(guard)}")
    return caption + [f"warning: {w}" for w in result.warnings]


def _guard_figures(guard: dict[str, Any]) -> str:
    """The guard's int8 accuracy with and without equalization, or (no labels) its top-1 agreement."""
    if guard.get("accuracy") is not None:
        return (f"int8 accuracy {guard['accuracy']:.4f}, without equalization "
                f"{guard['accuracy_without_equalize']:.4f}, every link equalized {guard['accuracy_every_link']:.4f}")
    agree = guard.get("agreement") or {}
    if agree.get("chosen") is None:
        return "no labels"
    return (f"int8 top-1 agreement with float {agree['chosen']:.4f}, without equalization "
            f"{agree['without_equalize']:.4f}, every link equalized {agree['every_link']:.4f} (no labels)")


def _input_line(dataset: Any) -> str:
    """What the verification/calibration data were, from the export's dataset summary."""
    info = dataset.input
    if not info:
        return ""
    name = dataset.name or "data"
    if info.get("kind") == "npz":
        line = f"data: {name}, tensors used as given"
    else:
        recipe = (info.get("preprocess") or {}).get("spec", "unit")
        line = f"data: {name} ({info.get('kind')}), --preprocess {recipe}"
    if info.get("resized_from"):
        line += f", resized from {'x'.join(str(v) for v in info['resized_from'])}"
    rng = info.get("range")
    if rng and None not in rng:
        line += f"; values in [{rng[0]:.4g}, {rng[1]:.4g}]"
    return line


def _int8_line(check: Optional[dict[str, Any]], art: Any = None) -> str:
    """The int8 check of export.json in one line: agreement, SQNR, input range, saturation."""
    if not check or check.get("int8_range") is None:
        return ""
    lo, hi = check["int8_range"]
    agree, sqnr = check.get("top1_agreement"), check.get("output_sqnr_db")
    agree_text = "-" if agree is None else f"{100 * agree:.1f} %"
    sqnr_text = "-" if sqnr is None else f"{sqnr:.1f} dB"
    figures = f"top-1 agreement with Keras {agree_text}, output SQNR {sqnr_text}"
    if art is not None and len(art.checks) > 1:  # several outputs: each one's SQNR (and agreement: class scores)
        figures = "; ".join(f"{c.output}: SQNR " + ("-" if c.output_sqnr_db_vs_keras is None else
                                                    f"{c.output_sqnr_db_vs_keras:.1f} dB")
                            + ("" if c.top1_agreement_vs_keras is None else
                               f", agreement {100 * c.top1_agreement_vs_keras:.1f} %") for c in art.checks)
    return (f"int8 on {check.get('held_out_samples')} held-out inputs: {figures}; input range [{lo:.4g}, {hi:.4g}], "
            f"{100 * check.get('saturated_values', 0):.2f} % of values saturate")


EMULATED_MARK = "†"  # a dagger: "*" already marks shared-process memory
EMULATED_NOTE = (EMULATED_MARK + " measured under emulation ({emulator}): the latency says nothing about the real "
                 "hardware; accuracy and predictions do")


def emulated_note(results: list[dict[str, Any]]) -> Optional[str]:
    """The footnote for latency cells marked with a dagger (results whose ``host.emulated`` is true), or None."""
    found = sorted({str((r.get("host") or {}).get("emulator") or "qemu") for r in results
                    if (r.get("host") or {}).get("emulated")})
    return EMULATED_NOTE.format(emulator=", ".join(found)) if found else None


def _flag_emulated(row: dict[str, str], r: dict[str, Any]) -> dict[str, str]:
    if not (r.get("host") or {}).get("emulated"):
        return row
    return {k: (v + EMULATED_MARK if k in ("p50", "p90", "p99", "init", "first") and v != "-" else v)
            for k, v in row.items()}


def bench_rows(results: list[dict[str, Any]]) -> list[dict[str, str]]:
    """One dict of formatted cells per bench result (``BenchResult.to_dict()`` records), for any table format.

    Keys: model, device, p50 (with its 95 % interval), p90, p99, init, first, runs, accuracy, memory (peak MB
    with the model's own increment), runtime, delegate, error.
    Latency cells of an emulated device (``host.emulated``) end in a dagger (see ``emulated_note``).
    """
    rows = []
    labels = distinct_labels([str(r.get("model", "?")) for r in results])
    for r, label in zip(results, labels):
        lat = r.get("latency_ms") or {}
        ci = lat.get("ci95_p50")
        p50 = format_ms(lat.get("p50"))
        if ci:
            p50 += f" [{format_ms(ci[0])}, {format_ms(ci[1])}]"
        delegate = r.get("delegate") or "-"
        if r.get("fully_delegated") is False and delegate not in ("none", "-"):
            delegate += " (partial)"
        acc = r.get("accuracy")
        rows.append({"model": r.get("label") or label, "device": str(r.get("device") or "-"),
                     "p50": p50 if lat else "-", "p90": format_ms(lat.get("p90")), "p99": format_ms(lat.get("p99")),
                     "init": format_ms(r.get("init_ms")), "first": format_ms(r.get("first_ms")),
                     "runs": str(lat.get("n", len(r.get("samples_ms") or []))) if lat else "-",
                     "accuracy": "-" if acc is None else f"{acc:.4f}", "runtime": r.get("runtime") or "-",
                     "delegate": delegate, "memory": format_memory(r.get("memory_mb")), "error": r.get("error") or ""})
        rows[-1] = _flag_emulated(rows[-1], r)
    return rows


def format_memory(mem: Optional[dict[str, Any]]) -> str:
    """``peak (+model)`` in MB from a result's ``memory_mb``; ``*`` when several models shared the process."""
    if not mem or (mem.get("peak") is None and mem.get("model") is None):
        return "-"
    peak = "-" if mem.get("peak") is None else f"{mem['peak']:.1f}"
    model = "" if mem.get("model") is None else f" (+{mem['model']:.1f})"
    return peak + model + ("*" if (mem.get("models_in_process") or 1) > 1 else "")


_BENCH_COLUMNS = (("model", "model", "left"), ("device", "device", "left"), ("p50", "p50 ms [95% CI]", "right"),
                  ("p90", "p90 ms", "right"), ("p99", "p99 ms", "right"), ("init", "init ms", "right"),
                  ("first", "first ms", "right"), ("runs", "runs", "right"), ("accuracy", "accuracy", "right"),
                  ("memory", "peak MB (+model)", "right"), ("runtime", "runtime", "left"),
                  ("delegate", "delegate", "left"))
SHARED_MEMORY_NOTE = "* several models shared one process: its peak is the process's, not one model's"


def _bench_columns(results: list[dict[str, Any]]) -> list[tuple[str, str, str]]:
    devices = {r.get("device") for r in results}
    with_acc = any(r.get("accuracy") is not None for r in results)
    with_mem = any(format_memory(r.get("memory_mb")) != "-" for r in results)
    return [c for c in _BENCH_COLUMNS if (c[0] != "device" or len(devices) > 1) and (c[0] != "accuracy" or with_acc)
            and (c[0] != "memory" or with_mem)]


def bench_table(results: list[dict[str, Any]], title: Optional[str] = None) -> "BenchTable":
    """A rich renderable of bench results: p50 with its interval, p90, p99, init, first, memory, runtime, delegate.

    A failed model gets a row saying ``failed`` (its error is in the result and on the CLI's stderr). On a
    console too narrow for every column the least important ones (p99, first, init, runs, p90, runtime) are
    left out, and the caption says which (``--json`` has every figure). ``caption`` may be set before printing.
    """
    devices = sorted({str(r.get("device")) for r in results})
    return BenchTable(results, title or f"latency on {', '.join(devices)}")


class BenchTable:
    """The bench table, fitted to the console's width at render time (see :func:`bench_table`)."""

    DROP_ORDER = ("p99", "first", "init", "runs", "p90", "runtime", "device")

    def __init__(self, results: list[dict[str, Any]], title: str):
        self.results, self.title = results, title
        self.caption: Optional[str] = None

    def __rich_console__(self, console, options):
        from rich.measure import Measurement

        columns, dropped = _bench_columns(self.results), []
        table = self._table(columns, dropped)
        unbounded = options.update_width(10_000)  # a table's own measure is clamped to the console's width
        for key in self.DROP_ORDER:
            if Measurement.get(console, unbounded, table).maximum <= options.max_width:
                break
            if any(c[0] == key for c in columns):
                columns = [c for c in columns if c[0] != key]
                dropped.append(key)
                table = self._table(columns, dropped)
        yield table

    def _table(self, columns: list[tuple[str, str, str]], dropped: list[str]):
        from rich import box
        from rich.table import Table
        from rich.text import Text

        table = Table(title=self.title, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, collapse_padding=True,
                      title_justify="left", caption_justify="left")
        for key, header, justify in columns:
            table.add_column(header, justify=justify, no_wrap=key != "model", overflow="fold")
        rows = bench_rows(self.results)
        for row in rows:
            if row["error"]:
                row = dict(row, p50=Text("failed", style="red"))  # not markup: tables print with markup off
            table.add_row(*(row[key] for key, _, _ in columns))
        shared = any(row["memory"].endswith("*") for row in rows)
        notes = [self.caption, SHARED_MEMORY_NOTE if shared else None, emulated_note(self.results),
                 f"not shown at this width: {', '.join(dropped)} (--json has every figure)" if dropped else None]
        table.caption = "\n".join(filter(None, notes)) or None
        return table


def bench_markdown(results: list[dict[str, Any]]) -> str:
    """The bench table as GitHub Markdown (errors in the p50 column)."""
    columns = _bench_columns(results)
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |",
             "|" + "|".join("---:" if j == "right" else "---" for _, _, j in columns) + "|"]
    for row in bench_rows(results):
        if row["error"]:
            row = dict(row, p50="error: " + row["error"].replace("|", "\\|"))
        lines.append("| " + " | ".join(row[k] for k, _, _ in columns) + " |")
    note = emulated_note(results)
    return "\n".join(lines + ([f"\n{note}"] if note else [])) + "\n"


def edgetpu_table(facts: dict[str, Any]):
    """A rich Table of a model's Edge TPU facts (``converters.edgetpu.inspect_edgetpu``): compiler report or problems."""
    from rich.table import Table

    table = Table(title="Edge TPU", show_header=False)
    table.add_column("what")
    table.add_column("value", overflow="fold")
    report = facts.get("report") or {}
    if not facts.get("compiled"):
        problems = facts.get("problems") or []
        table.add_row("compiled", "no")
        table.add_row("compilable", "yes" if not problems else "no: " + "; ".join(problems))
        return table
    table.add_row("compiled", "yes")
    for key, label in (("on_chip_bytes", "on-chip memory"), ("off_chip_bytes", "off-chip memory")):
        if report.get(key) is not None:
            table.add_row(label, size_text(report[key]))
    for key, label in (("subgraphs", "Edge TPU subgraphs"), ("total_ops", "operations"),
                       ("ops_on_edgetpu", "mapped to Edge TPU"), ("ops_on_cpu", "run on the CPU")):
        if report.get(key) is not None:
            table.add_row(label, str(report[key]))
    for op in report.get("operators") or []:
        table.add_row(f"{op['operator']} x{op['count']}", op["status"])
    if not report:
        table.add_row("compiler report", "no log beside the model")
    return table


def devices_table(found: list[dict[str, Any]]):
    """The attached Android devices (``edgesep devices``): serial, state, model, ABI, Android version."""
    from rich.table import Table

    table = Table(title="adb devices")
    for column in ("serial", "state", "model", "ABI", "Android"):
        table.add_column(column)
    for d in found:
        table.add_row(d["serial"], d["state"], d.get("model") or "-", d.get("abi") or "-", d.get("android") or "-")
    return table
