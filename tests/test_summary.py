"""compare's terminal summary (issue 22): one line per variant and verdict, under 80 columns, no padding; and
tables that print styles, never markup text."""
from __future__ import annotations

from edgesep.report import compare_summary

KINDS = ("TFLite float32", "TFLite int8", "ONNX float32", "ONNX int8")


def _doc(targets):
    variants = [{"id": f"{f}/{k}", "name": f"{f} {k}", "bytes": 11700, "accuracy": 0.9852} for f in ("fused", "split")
                for k in KINDS]
    result = {"latency_ms": {"p50": 0.0123, "ci95_p50": [0.0121, 0.0125]}, "accuracy": 0.98}
    comparisons = [{"label": k, "verdict": "no significant difference (fused/split = 0.98, 95% CI 0.93–1.03)"}
                   for k in KINDS]
    devices = {t: {"status": "done", "results": {v["id"]: result for v in variants}, "comparisons": comparisons,
                   "checks": [{"message": "load average up to 6.5 on 2 cores before a session"}]} for t in targets}
    return {"kind": "builtin", "variants": variants, "devices": devices,
            "accuracy": {"verdict": "no difference beyond the seed-to-seed spread"}}


def test_one_device_one_line_per_variant_and_verdict():
    lines = compare_summary(_doc(["local"]))
    assert lines[0].split() == ["variant", "size", "top-1", "local", "p50", "ms", "[95%", "CI]"]
    assert lines[1].split() == ["fused", "TFLite", "float32", "11.4", "KiB", "98.52%", "0.0123", "[0.0121,", "0.0125]"]
    assert len(lines) == 1 + 8 + 1 + 4 + 1 and lines[-1] == "  int8 accuracy: no difference beyond the seed-to-seed " \
                                                         "spread"
    assert all(len(ln) <= 80 and ln == ln.rstrip() for ln in lines[:9])
    assert not any("load average" in ln for ln in lines)  # warnings are the caller's, said once


def test_several_devices_with_long_names_fit_80_columns():
    targets = ["local", "ssh://pi@raspberrypi.local:2222", "adb:R58M123ABC"]
    lines = compare_summary(_doc(targets))
    assert all(len(ln) <= 80 for ln in lines[:12]), "\n".join(lines)
    assert lines[0].endswith("top-1  device 1  device 2  device 3")
    assert [f"device {i}: {t}" for i, t in enumerate(targets, start=1)] == lines[10:13]
    assert "latency: p50 ms per device" in lines


def test_a_stage_progress_never_goes_backwards():
    from edgesep.report.live import StageProgress

    progress = StageProgress()
    with progress:
        progress.start("bench local", 1)
        shown = []
        for done, total in ((3, 10), (9, 10), (1, 10), (0.5, 1), (2, 3)):  # a new session starts over at 1/10
            progress.update("bench local", done, total)
            task = progress.bar.tasks[0]
            shown.append(task.completed / task.total)
    assert shown == sorted(shown) and shown[-1] == 0.9


def test_tables_show_styles_not_markup(capsys):
    """Tables print with markup off (a layer or model may be named "[x]"): a style must be a styled Text, never
    markup text that then shows as ``[bold red]conv[/]`` (the worst layers of inspect --quant-error, a failed
    model in the bench table)."""
    from edgesep.cli.app import echo_rich
    from edgesep.report.inspect import quant_error_table
    from edgesep.report.tables import bench_table

    layer = {"layer": "conv[1]", "op": "CONV_2D", "sqnr_db": 12.0, "rmse_per_scale": 1.0, "max_abs_error": 0.1}
    doc = {"samples": 5, "output": {"top1_agreement": 1.0}, "notes": [], "worst": ["conv[1]"], "layers": [layer]}
    failed = {"model": "m.tflite", "device": "local", "error": "boom", "latency_ms": None, "samples_ms": []}
    echo_rich(quant_error_table(doc), bench_table([failed]))
    out = capsys.readouterr().out
    assert "conv[1]" in out and "failed" in out
    assert "[bold red]" not in out and "[/" not in out and "[red]" not in out, out
