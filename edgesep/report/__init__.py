"""Rendering for people: export and bench results as rich tables, JSON, CSV and Markdown; the compare report as
Markdown, rich tables and PNG plots. Renders documents; decides nothing (verdicts come with the document).

Modules: ``text`` (number and size formatting), ``tables`` (export, bench, Edge TPU tables), ``comparison``
(the compare report's sections, Markdown and rich tables), ``plots`` (the compare report's PNG plots).
Imports nothing of edgesep but ``edgesep.io``.
"""
from __future__ import annotations

from edgesep.report.comparison import (compare_markdown, compare_sections, compare_summary, compare_tables,
                                      compare_verdicts, resume_summary)
from edgesep.report.plots import PLOT_DPI, PLOT_SIZES, compare_plots
from edgesep.report.tables import bench_markdown, bench_rows, bench_table, edgetpu_table, export_table
from edgesep.report.text import format_ms

__all__ = ["PLOT_DPI", "PLOT_SIZES", "bench_markdown", "bench_rows", "bench_table", "compare_markdown",
           "compare_plots", "compare_sections", "compare_summary", "compare_tables", "compare_verdicts", "edgetpu_table",
           "export_table", "format_ms", "resume_summary"]
