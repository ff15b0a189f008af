"""TFLite's native ``benchmark_model`` tool: its command line from a ``BenchConfig`` and its log parsed.

The log formats follow ``tensorflow/lite/tools/benchmark/benchmark_model.cc``,
``benchmark_tflite_model.cc``, ``profiling_listener.cc``, ``profile_summary_formatter.cc`` and the
``Stat``/``StatWithPercentiles``/``StatsCalculator`` printers (``stats_calculator.{h,cc}``):

* each timed phase: ``Running benchmark for at least N iterations ...`` then
  ``count=N first=F curr=C min=m max=M avg=A std=S`` (``count=N curr=C`` or ``...(all same)`` when
  every run took the same time; newer tools add `` p5=.. median=.. p95=..``). Values are integer
  microseconds except ``avg`` (a double printed with 6 significant digits, so ``2.95034e+06``);
* ``Inference timings in us: Init: I, First inference: F, Warmup (avg): W, Inference (avg): A``;
* memory: ``Memory footprint delta from the start of the tool (MB): init=X overall=Y``,
  ``Overall peak memory footprint (MB) via periodic monitoring: P``, ``- VmRSS : N MB``;
* delegate coverage: ``Explicitly applied D delegate, and the model graph will be completely/partially
  executed by the delegate[ w/ K delegate kernels]``, ``Though D delegate is explicitly applied, ...``,
  ``Replacing K [out of N] node(s) with delegate (D) node, yielding P partitions...`` and
  ``D delegate: K nodes delegated out of N nodes[ with P partitions]``;
* with ``--enable_op_profiling``: ``Operator-wise Profiling Info for Regular Benchmark Runs:`` then the
  ``Run Order`` / ``Top by Computation Time`` tables (tab-separated, right-aligned) and
  ``Summary by node type``.

Lines may carry ``INFO: ``/``WARN: ``/``ERROR: `` or logcat prefixes (``I/tflite  ( 123): ``,
``03-10 17:01:31.105  2271  2308 I tflite  : ``); every pattern is searched anywhere in a line. The tool
prints no per-run times, so a parsed report never has samples (``samples_ms`` stays None and a note
says why).
"""
from __future__ import annotations

import dataclasses
import re
from typing import Any, Optional

NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?|[-+]?(?:nan|inf)"

NO_SAMPLES_NOTE = ("benchmark_model prints summary statistics only (count/first/curr/min/max/avg/std and "
                   "p5/median/p95 when built with them), no per-run times: samples_ms is None and no "
                   "confidence interval is computed")

# edgesep's delegate name -> benchmark_model flags that select it (the others are switched off)
DELEGATE_FLAGS: dict[str, tuple[str, ...]] = {
    "xnnpack": ("--use_xnnpack=true",),
    "none": ("--use_xnnpack=false",),
    "gpu": ("--use_gpu=true", "--use_xnnpack=false"),
    "nnapi": ("--use_nnapi=true", "--use_xnnpack=false"),
}


def _num(text: Optional[str]) -> Optional[float]:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


@dataclasses.dataclass(frozen=True)
class RunStats:
    """One ``count=...`` line of benchmark_model, in microseconds as printed."""

    count: int
    first_us: Optional[float] = None
    curr_us: Optional[float] = None
    min_us: Optional[float] = None
    max_us: Optional[float] = None
    avg_us: Optional[float] = None
    std_us: Optional[float] = None
    p5_us: Optional[float] = None
    median_us: Optional[float] = None
    p95_us: Optional[float] = None
    all_same: bool = False

    def latency_ms(self) -> dict[str, Any]:
        """The figures in milliseconds under the bench JSON's names (p90/p99/ci95 are not printed: None)."""
        ms = lambda v: None if v is None else v / 1000.0  # noqa: E731
        return {"n": self.count, "mean": ms(self.avg_us), "std": ms(self.std_us), "min": ms(self.min_us),
                "max": ms(self.max_us), "p5": ms(self.p5_us), "p50": ms(self.median_us), "p90": None,
                "p95": ms(self.p95_us), "p99": None, "ci95_p50": None, "outliers": None,
                "outlier_threshold": None, "first": ms(self.first_us)}


_STATS = re.compile(r"count=(\d+)((?:\s+\w+=(?:" + NUM + r"))*)(\(all same\))?((?:\s+\w+=(?:" + NUM + r"))*)")
_KV = re.compile(r"(\w+)=(" + NUM + r")")


def parse_stats_line(line: str) -> Optional[RunStats]:
    """A ``RunStats`` from a line holding ``count=...``; None when the line has none."""
    m = _STATS.search(line)
    if not m:
        return None
    kv = {k: float(v) for k, v in _KV.findall((m.group(2) or "") + " " + (m.group(4) or ""))}
    count = int(m.group(1))
    all_same = count > 0 and "first" not in kv and "curr" in kv  # every run took the same time
    if all_same:
        for key in ("first", "min", "max", "avg"):
            kv.setdefault(key, kv["curr"])
        kv.setdefault("std", 0.0)
    return RunStats(count=count, first_us=kv.get("first"), curr_us=kv.get("curr"), min_us=kv.get("min"),
                    max_us=kv.get("max"), avg_us=kv.get("avg"), std_us=kv.get("std"), p5_us=kv.get("p5"),
                    median_us=kv.get("median"), p95_us=kv.get("p95"), all_same=all_same)


@dataclasses.dataclass(frozen=True)
class DelegateCoverage:
    """How much of the graph one delegate took, from whichever line the tool or runtime printed."""

    delegate: str
    delegated_nodes: Optional[int] = None
    total_nodes: Optional[int] = None
    partitions: Optional[int] = None
    delegate_kernels: Optional[int] = None
    fully_delegated: Optional[bool] = None
    line: str = ""


@dataclasses.dataclass(frozen=True)
class OpProfileRow:
    """One row of a ``Run Order`` / ``Top by Computation Time`` table (times in ms)."""

    node_type: str
    first_ms: Optional[float]
    avg_ms: Optional[float]
    percent: Optional[float]
    cdf_percent: Optional[float]
    mem_kb: Optional[float]
    times_called: Optional[int]
    name: str
    start_ms: Optional[float] = None


@dataclasses.dataclass(frozen=True)
class OpTypeRow:
    """One row of ``Summary by node type``."""

    node_type: str
    count: int
    avg_ms: float
    avg_percent: float
    cdf_percent: float
    mem_kb: float
    times_called: int


@dataclasses.dataclass
class BenchmarkModelReport:
    """Everything edgesep reads from one benchmark_model log."""

    params: dict[str, str] = dataclasses.field(default_factory=dict)
    model_size_mb: Optional[float] = None
    init_ms: Optional[float] = None
    first_ms: Optional[float] = None
    warmup: Optional[RunStats] = None
    inference: Optional[RunStats] = None
    warmup_avg_ms: Optional[float] = None
    inference_avg_ms: Optional[float] = None
    memory_mb: dict[str, float] = dataclasses.field(default_factory=dict)
    delegates: list[DelegateCoverage] = dataclasses.field(default_factory=list)
    op_profile: list[OpProfileRow] = dataclasses.field(default_factory=list)
    op_profile_top: list[OpProfileRow] = dataclasses.field(default_factory=list)
    op_types: list[OpTypeRow] = dataclasses.field(default_factory=list)
    init_profile: list[OpProfileRow] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    samples_ms: None = None
    notes: list[str] = dataclasses.field(default_factory=lambda: [NO_SAMPLES_NOTE])

    @property
    def complete(self) -> bool:
        """Whether steady-state statistics were found."""
        return self.inference is not None and self.inference.count > 0

    @property
    def fully_delegated(self) -> Optional[bool]:
        """True/False when a delegate line says so; None when no delegate was reported."""
        verdicts = [d.fully_delegated for d in self.delegates if d.fully_delegated is not None]
        return all(verdicts) if verdicts else None

    def latency_ms(self) -> Optional[dict[str, Any]]:
        return self.inference.latency_ms() if self.inference else None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["complete"] = self.complete
        d["fully_delegated"] = self.fully_delegated
        return d


_PREFIX = re.compile(r"^(?:\S+\s+\S+\s+\d+\s+\d+\s+(?P<tt>[VDIWEF])\s+[^:]*:\s|(?P<brief>[VDIWEF])/[^:(]*\(\s*\d+\):\s|"
                     r"(?P<word>INFO|WARN|WARNING|ERROR|VERBOSE|DEBUG):\s)")
_RUNNING = re.compile(r"Running benchmark for at least (\d+) iterations")
_TIMINGS = re.compile(r"Inference timings in us: Init: (" + NUM + r"), First inference: (" + NUM +
                      r"), Warmup \(avg\): (" + NUM + r"), Inference \(avg\): (" + NUM + r")")
_INIT_SESSION = re.compile(r"Initialized session in (" + NUM + r")\s*ms")
_MODEL_SIZE = re.compile(r"The input model file size \(MB\): (" + NUM + r")")
_MEM_DELTA = re.compile(r"Memory footprint delta from the start of the tool \(MB\): init=(" + NUM +
                        r") overall=(" + NUM + r")")
_MEM_PEAK = re.compile(r"Overall peak memory footprint \(MB\) via periodic monitoring: (" + NUM + r")")
_MEM_RSS = re.compile(r"[-+] (VmRSS|RssAnnon|RssFile \+ RssShmem)\s*: (" + NUM + r") MB")
_PARAM = re.compile(r"^([A-Z][^:\[\]]*?): \[(.*)\]\s*$")
_APPLIED = re.compile(r"Explicitly applied (.+?) delegate, and the model graph will be (completely|partially) "
                      r"executed by the delegate(?: w/ (\d+) delegate kernels)?")
_NOT_APPLIED = re.compile(r"Though (.+?) delegate is explicitly applied, the model graph will not be executed")
_REPLACING = re.compile(r"Replacing (\d+)(?: out of (\d+))? node\(s\) with delegate \(([^)]*)\) node, "
                        r"yielding (\d+) partitions")
_DELEGATED_OUT_OF = re.compile(r"(?:^|\s)([\w\[\] .-]*?)\s*[Dd]elegate: (\d+) nodes delegated out of (\d+) nodes"
                               r"(?: with (\d+) partitions)?")
_SECTION = re.compile(r"={10,} (.+?) ={10,}")


def _strip_prefix(line: str) -> tuple[str, str]:
    """(level letter or "", line without its log prefix)."""
    line = line.rstrip("\r\n")
    m = _PREFIX.match(line)
    if not m:
        return "", line
    level = m.group("tt") or m.group("brief") or (m.group("word") or "")[:1]
    return level, line[m.end():]


def parse_benchmark_output(text: str) -> BenchmarkModelReport:
    """Parse a benchmark_model log (stdout and stderr together) into a ``BenchmarkModelReport``.

    Never raises on odd input: what is missing stays None; ``complete`` says whether steady-state
    statistics were found, and ``errors`` holds the tool's ``ERROR:`` lines.
    """
    report = BenchmarkModelReport()
    stripped = [_strip_prefix(raw) for raw in text.splitlines()]
    lines = [body for _, body in stripped]
    phase_stats: list[RunStats] = []
    expect_stats = False
    i = 0
    while i < len(lines):
        level, line = stripped[i]
        if "Profiling Info for" in line:
            i = _parse_profile(lines, i, report)
            continue
        if _RUNNING.search(line):
            expect_stats = True
        elif expect_stats and "count=" in line:
            stats = parse_stats_line(line)
            if stats:
                phase_stats.append(stats)
                expect_stats = False
        elif level in ("E", "F"):
            report.errors.append(line.strip())
        _parse_simple(line, report)
        i += 1
    if len(phase_stats) >= 2:
        report.warmup, report.inference = phase_stats[0], phase_stats[1]
    elif len(phase_stats) == 1:
        report.warmup = phase_stats[0]
    if report.first_ms is None and report.warmup and report.warmup.first_us is not None:
        report.first_ms = report.warmup.first_us / 1000.0
    return report


def _parse_simple(line: str, report: BenchmarkModelReport) -> None:
    m = _TIMINGS.search(line)
    if m:
        init_us, first_us, warm_us, inf_us = (float(g) for g in m.groups())
        report.init_ms, report.first_ms = init_us / 1000.0, first_us / 1000.0
        report.warmup_avg_ms, report.inference_avg_ms = warm_us / 1000.0, inf_us / 1000.0
        return
    if report.init_ms is None and (m := _INIT_SESSION.search(line)):
        report.init_ms = float(m.group(1))
    elif m := _MODEL_SIZE.search(line):
        report.model_size_mb = float(m.group(1))
    elif m := _MEM_DELTA.search(line):
        report.memory_mb["init"], report.memory_mb["overall"] = float(m.group(1)), float(m.group(2))
    elif m := _MEM_PEAK.search(line):
        report.memory_mb["peak"] = float(m.group(1))
    elif m := _MEM_RSS.search(line):
        report.memory_mb[{"VmRSS": "vm_rss", "RssAnnon": "rss_anon"}.get(m.group(1), "rss_file_shmem")] = \
            float(m.group(2))
    elif m := _APPLIED.search(line):
        report.delegates.append(DelegateCoverage(m.group(1), delegate_kernels=_int(m.group(3)),
                                                 fully_delegated=m.group(2) == "completely", line=line.strip()))
    elif m := _NOT_APPLIED.search(line):
        report.delegates.append(DelegateCoverage(m.group(1), delegated_nodes=0, fully_delegated=False,
                                                 line=line.strip()))
    elif m := _REPLACING.search(line):
        done, total = int(m.group(1)), _int(m.group(2))
        parts = int(m.group(4))
        full = None if total is None else (done == total and parts == 1)
        report.delegates.append(DelegateCoverage(m.group(3), done, total, parts, fully_delegated=full,
                                                 line=line.strip()))
    elif m := _DELEGATED_OUT_OF.search(line):
        done, total, parts = int(m.group(2)), int(m.group(3)), _int(m.group(4))
        full = done == total and (parts in (None, 1))
        report.delegates.append(DelegateCoverage(m.group(1).strip() or "unknown", done, total, parts,
                                                 fully_delegated=full, line=line.strip()))
    elif m := _PARAM.match(line.strip()):
        report.params[m.group(1)] = m.group(2)


def _int(text: Optional[str]) -> Optional[int]:
    return None if text is None else int(text)


def _cells(line: str) -> list[str]:
    """Cells of a profiler table line: tab-separated as printed, or 2+ spaces where tabs were lost."""
    body = line.strip("\r\n")
    parts = body.split("\t") if "\t" in body else re.split(r"\s{2,}", body)
    return [p.strip() for p in parts if p.strip()]


def _parse_profile(lines: list[str], start: int, report: BenchmarkModelReport) -> int:
    """Parse one ``Profiling Info for ...`` block; returns the index of the first line after it."""
    is_init = "Initialization" in lines[start]
    i = start + 1
    section, header = None, None
    while i < len(lines):
        line = lines[i]
        if "Profiling Info for" in line or _RUNNING.search(line) or _TIMINGS.search(line):
            break
        sec = _SECTION.search(line)
        if sec:
            section, header = sec.group(1), None
        elif section and line.strip().startswith("["):
            header = [c.strip("[]").lower() for c in _cells(line)]
        elif section and header and line.strip() and not line.startswith(("Timings", "Memory (bytes)")):
            cells = _cells(line)
            if len(cells) >= len(header) - (0 if "name" in header else 0):
                _add_row(section, header, cells, is_init, report)
        if line.startswith("Timings (microseconds)") or re.match(r"^\d+ nodes observed", line):
            section = None
        i += 1
    return i


def _add_row(section: str, header: list[str], cells: list[str], is_init: bool,
             report: BenchmarkModelReport) -> None:
    if section == "Summary by node type":
        if is_init or len(cells) < 7:
            return
        v = [_num(c.rstrip("%")) for c in cells[1:7]]
        if None in v:
            return
        report.op_types.append(OpTypeRow(cells[0], int(v[0]), v[1], v[2], v[3], v[4], int(v[5])))
        return
    if len(cells) < len(header):
        return
    cols = dict(zip(header, cells[:len(header) - 1] + ["\t".join(cells[len(header) - 1:])]))
    row = OpProfileRow(node_type=cols.get("node type", ""), first_ms=_num(cols.get("first")),
                       avg_ms=_num(cols.get("avg ms")), percent=_num((cols.get("%") or "").rstrip("%")),
                       cdf_percent=_num((cols.get("cdf%") or "").rstrip("%")), mem_kb=_num(cols.get("mem kb")),
                       times_called=_int_or_none(cols.get("times called")), name=cols.get("name", ""),
                       start_ms=_num(cols.get("start")))
    if is_init:
        if section == "Run Order":
            report.init_profile.append(row)
    elif section == "Run Order":
        report.op_profile.append(row)
    elif section == "Top by Computation Time":
        report.op_profile_top.append(row)


def _int_or_none(text: Optional[str]) -> Optional[int]:
    v = _num(text)
    return None if v is None else int(v)


def benchmark_args(graph: str, config: Any, op_profiling: bool = False) -> list[str]:
    """benchmark_model flags for a model on the device and a ``BenchConfig``.

    Raises:
        ValueError: the config asks for a delegate benchmark_model cannot load through flags (edgetpu).
    """
    args = [f"--graph={graph}", f"--num_runs={config.runs}", f"--warmup_runs={config.warmup}",
            f"--warmup_min_secs={config.warmup_secs:g}", f"--min_secs={config.min_secs:g}",
            f"--max_secs={config.max_secs:g}"]
    if config.threads is not None:
        args.append(f"--num_threads={config.threads}")
    delegate = config.delegate
    if delegate in DELEGATE_FLAGS:
        args.extend(DELEGATE_FLAGS[delegate])
    elif "/" in delegate or delegate.endswith(".so"):
        args.extend(("--use_xnnpack=false", f"--external_delegate_path={delegate}"))
        opts = ";".join(f"{k}:{v}" for k, v in dict(config.delegate_options).items())
        if opts:
            args.append(f"--external_delegate_options={opts}")
    else:
        raise ValueError(f"benchmark_model cannot use the {delegate!r} delegate; use one of "
                         f"{', '.join(DELEGATE_FLAGS)} or a delegate library path")
    if op_profiling:
        args.append("--enable_op_profiling=true")
    return args
