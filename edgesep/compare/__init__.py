"""``edgesep compare``: the fused-vs-split experiment, from training to a report with verdicts.

Built-in experiment (``run_builtin``): the built-in network is built in both forms from one config, trained on
the same data with the same seed(s) and steps, exported (TFLite float32 and int8, ONNX; BN folded, every
artifact verified against Keras), then every artifact of seed 0 is measured on every device. Given model files
(``run_models``): those files are measured and compared with the first one.

The package, bottom to top:

- ``config``: ``CompareConfig`` (the built-in network and its training), block presets, artifact kinds.
- ``records``: the frozen records between stages (``Variant``, ``ComparisonSpec``, ``Measurement``,
  ``DeviceSection``, ``LatencyComparison``, ``AccuracySummary``, ``Report``); ``Report.to_dict()`` is
  report.json.
- ``store``: the report on disk (report.json and report.md rewritten atomically after each change), stage
  timing, finished device sessions under ``bench/`` for ``--resume``.
- ``pipeline``: plan, train and export the built-in network; the variants of both kinds of run.
- ``analysis``: latency ratios over sessions (two-level bootstrap) with the A/A noise floor, the stability
  checks, the accuracy spread over seeds, the verdicts. ``judge_sessions`` is the same judgement for raw
  per-session samples (``bench`` with several models, fleet sweeps).
- ``sessions``: device sessions, one worker thread per device; a failing device gets its own section.
- ``run``: the two front doors.

Rendering (tables, Markdown, plots) is ``edgesep.report``'s job.
"""
from __future__ import annotations

from edgesep.compare.analysis import (accuracy_summary, accuracy_verdict, judge_sessions, latency_comparisons,
                                      latency_verdict, significant, spread, stability_checks)
from edgesep.compare.config import BLOCK_PRESETS, FORMS, KINDS, CompareConfig, parse_blocks
from edgesep.compare.pipeline import builtin_comparisons, builtin_variants, model_comparisons, model_variants
from edgesep.compare.records import (AccuracySummary, ComparisonSpec, DeviceSection, LatencyComparison,
                                     Measurement, Report, SessionEntry, Variant)
from edgesep.compare.run import run_builtin, run_models
from edgesep.compare.sessions import BenchPlan, DeviceBench, bench_devices, sessions
from edgesep.compare.store import Progress, ReportStore, SessionStore, device_slug, session_key

__all__ = ["AccuracySummary", "BLOCK_PRESETS", "BenchPlan", "CompareConfig", "ComparisonSpec", "DeviceBench",
           "DeviceSection", "FORMS", "KINDS", "LatencyComparison", "Measurement", "Progress", "Report",
           "ReportStore", "SessionEntry", "SessionStore", "Variant", "accuracy_summary", "accuracy_verdict",
           "bench_devices", "builtin_comparisons", "builtin_variants", "device_slug", "judge_sessions",
           "latency_comparisons", "latency_verdict", "model_comparisons", "model_variants", "parse_blocks",
           "run_builtin", "run_models", "session_key", "sessions", "significant", "spread", "stability_checks"]
