"""TFLite's ``benchmark_model`` as the runner of an adb device: its flags from a ``BenchConfig``, one tool
process per model (so each model's memory is its own), its log (``edgesep.devices.benchmark_model``) turned
into a ``BenchResult``, memory lines included.

The device it drives is duck-typed (``BenchmarkModelHost``): ``edgesep.devices.adb.AdbDevice`` provides it.
"""
from __future__ import annotations

import re
import shlex
import tempfile
from pathlib import Path
from typing import Any, Optional, Protocol, Sequence

from edgesep.devices import benchmark_model as bm
from edgesep.devices.base import BenchConfig, BenchResult, ProgressFn
from edgesep.devices.remote import EXIT_NOT_EXECUTABLE, EXIT_NOT_FOUND

# What a shell or a binfmt_misc handler says of a binary built for another machine: the kernel's ENOEXEC
# (exit 126), or qemu-user registered for that architecture refusing it (its own exit code, e.g. 255).
FOREIGN_BINARY = re.compile(r"Exec format error|Invalid ELF image|cannot execute binary file|wrong ELF class")
from edgesep.errors import last_line

NO_PEAK = ("benchmark_model printed no periodic peak-memory line (an older tool, or "
           "--memory_footprint_check_interval_ms=0)")


class BenchmarkModelHost(Protocol):
    """What ``BenchmarkModelSession`` needs from the device it runs on."""

    target: str
    remote_dir: Optional[str]
    facts: dict[str, Any]
    op_profiling: bool

    def push(self, local: Path, remote: str, timeout: float = 300.0) -> None: ...
    def pull(self, remote: str, local: Path, timeout: float = 300.0) -> None: ...
    def shell(self, command: str, what: str, timeout: Optional[float] = None) -> str: ...
    def sh(self, script: str, timeout: float = 120.0) -> tuple[int, str, str]: ...
    def taskset_prefix(self) -> str: ...


def memory_from_report(memory: dict[str, float]) -> dict[str, Any]:
    """benchmark_model's memory lines as the bench JSON's ``memory_mb`` record.

    The tool reports its peak resident memory (``ru_maxrss``-based footprint) as deltas from its start:
    ``init`` (loading the model and building the interpreter) and ``overall`` (the whole run), plus the
    absolute peak from periodic monitoring. So ``model`` = init, ``peak`` = the monitored peak, ``baseline`` =
    peak - overall (the footprint at the tool's start) and ``loaded`` = baseline + init. The tool's monitor
    covers its whole run (``peak_scope`` ``process``); one model per tool process.
    """
    init, overall, peak = memory.get("init"), memory.get("overall"), memory.get("peak")
    baseline = None if peak is None or overall is None else round(peak - overall, 3)
    loaded = None if baseline is None or init is None else round(baseline + init, 3)
    reason = None
    if init is None and overall is None and peak is None:
        reason = "benchmark_model printed no memory lines"
    elif peak is None:
        reason = NO_PEAK
    return {"baseline": baseline, "loaded": loaded, "peak": peak, "model": init, "source": "benchmark_model",
            "peak_scope": "process", "models_in_process": 1, "reason": reason,
            "end_rss": memory.get("vm_rss")}


class BenchmarkModelSession:
    """benchmark_model on one adb device: the models (and binary) pushed into its private folder, run one by one."""

    def __init__(self, device: BenchmarkModelHost) -> None:
        self.device = device
        self.binary: Optional[str] = None
        self.models: list[tuple[Path, str]] = []

    def stage(self, models: Sequence[Path], local_binary: Optional[Path]) -> None:
        """Push the models (unique device names) and ``local_binary`` (else the device's own tool is used)."""
        dev = self.device
        names: set[str] = set()
        for i, m in enumerate(models):
            name = m.name if m.name not in names else f"{i}_{m.name}"
            names.add(name)
            remote = f"{dev.remote_dir}/{name}"
            dev.push(m, remote)
            self.models.append((m, remote))
        if local_binary:
            self.binary = f"{dev.remote_dir}/benchmark_model"
            dev.push(local_binary, self.binary)
            dev.shell(f"chmod 755 {self.binary}", "making benchmark_model executable")
        else:
            self.binary = dev.facts["benchmark_model_on_device"]

    def run(self, config: BenchConfig, progress: Optional[ProgressFn]) -> list[BenchResult]:
        """One result per staged model, in order."""
        results = []
        for i, (local, remote) in enumerate(self.models):
            if progress:
                progress(str(local), 0, config.runs)
            results.append(self.bench_one(local, remote, config, i))
            if progress:
                count = (results[-1].latency_ms or {}).get("n") or 0
                progress(str(local), count, max(count, 1))
        return results

    def bench_one(self, local: Path, remote: str, config: BenchConfig, index: int) -> BenchResult:
        """Run the tool on one model and map its log; failures become the result's ``error``."""
        dev = self.device
        base = BenchResult(model=str(local), device=dev.target, runtime="TFLite benchmark_model",
                           threads=config.threads, delegate=config.delegate)
        if local.suffix.lower() != ".tflite":
            base.error = f"benchmark_model runs .tflite models only, not {local.suffix}; use the python runner"
            return base
        try:
            args = bm.benchmark_args(remote, config, op_profiling=dev.op_profiling)
        except ValueError as e:
            base.error = str(e)
            return base
        rc, text, err = self._run_tool(args, index, config)
        report = bm.parse_benchmark_output(text)
        base.init_ms, base.first_ms = report.init_ms, report.first_ms
        base.latency_ms = report.latency_ms()
        base.fully_delegated = report.fully_delegated
        base.memory_mb = memory_from_report(report.memory_mb)
        base.extra.update({"runner": "benchmark_model", "benchmark_model": report.to_dict(),
                           "command": " ".join([self.binary] + args), "notes": list(report.notes)})
        if rc != 0 or not report.complete:
            base.error = self._failure(rc, report, text, err)
        return base

    def _run_tool(self, args: list[str], index: int, config: BenchConfig) -> tuple[int, str, str]:
        """(exit code, the tool's log, adb's stderr) of one tool run; the log goes to a file and is pulled."""
        dev = self.device
        log_remote = f"{dev.remote_dir}/benchmark_{index}.log"
        script = (f"cd {dev.remote_dir} && {dev.taskset_prefix()}{shlex.quote(self.binary)} "
                  f"{' '.join(shlex.quote(a) for a in args)} > {log_remote} 2>&1")
        rc, _, err = dev.sh(script, timeout=config.max_secs * 2 + config.warmup_secs + 300)
        with tempfile.TemporaryDirectory(prefix="edgesep-adb-") as tmp:
            dev.pull(log_remote, Path(tmp) / "benchmark.log")
            text = (Path(tmp) / "benchmark.log").read_text(errors="replace")
        return rc, text, err

    def _failure(self, rc: int, report: bm.BenchmarkModelReport, text: str, err: str) -> str:
        why = report.errors[-1] if report.errors else (last_line(text, default="") or last_line(err, default=""))
        if rc in (EXIT_NOT_FOUND, EXIT_NOT_EXECUTABLE) or FOREIGN_BINARY.search(why):
            why = f"{self.binary} cannot run on this device ({why}); is it built for {self.device.facts.get('abi')}?"
        return f"benchmark_model failed (exit {rc}): {why}" if why else f"benchmark_model failed (exit {rc})"
