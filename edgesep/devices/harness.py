"""Host side of ``runner.py``: its command line, its progress lines and JSON, and crash isolation.

``RunnerDevice`` is the base of every device that runs ``runner.py`` (local, ssh, adb): a subclass says how
files reach the device (``_stage``) and how to start a process there (``_runner_argv``); this class builds the
runner's arguments, streams its progress, turns its JSON into ``BenchResult``s and, when the runner process
dies with several models, measures each model in a process of its own so one bad model loses only itself.
"""
from __future__ import annotations

import collections
import dataclasses
import json
import queue
import re
import signal
import subprocess
import threading
import time
from pathlib import Path
from typing import Any, Callable, Optional, Sequence

from edgesep.devices import runner
from edgesep.devices.base import BenchConfig, BenchResult, DeviceError, ProgressFn
from edgesep.devices.runner import ERROR_PREFIX as RUNNER_ERROR_PREFIX
from edgesep.devices.runner import MODEL_SUFFIXES, PROGRESS_PREFIX, TFLITE_IDENTIFIER
from edgesep.stats import summarize

RUNNER_PATH = Path(runner.__file__)
STDERR_TAIL_LINES = 30
READER_JOIN_S = 10.0
WATCHDOG_GRACE_S = 120.0  # on top of warm-up + max-secs: model loading, imports, one slow inference
DEVICE_WATCHDOG_EXTRA_S = 30.0  # the runner's own backstop fires this much later than the host's watchdog
RUNNER_EXIT_FATAL = (runner.EXIT_USAGE, runner.EXIT_MISSING_PACKAGE, runner.EXIT_FATAL)
_HEADLINE = re.compile(r"Fatal Python error|^[\w.]*(Error|Exception)\b|error:")


def check_model_file(path: Path) -> None:
    """Raise ``DeviceError`` (one line) unless ``path`` looks like a .tflite or .onnx model.

    Checks existence, suffix, non-empty content and, for .tflite, the ``TFL3`` flatbuffer identifier; the
    runtime on the device judges the rest (a truncated file fails there, as a per-model error).
    """
    path = Path(path)
    if not path.exists():
        raise DeviceError(f"model file not found: {path}")
    if path.is_dir():
        inside = sorted(str(p) for p in path.iterdir() if p.suffix.lower() in MODEL_SUFFIXES and p.is_file())
        raise DeviceError(f"{path} is a folder, not a model file" + (
            f": give the models in it ({' '.join(inside[:4])}{' ...' if len(inside) > 4 else ''})" if inside else ""))
    if not path.is_file():
        raise DeviceError(f"model file {path} is not a regular file (a pipe or device would block)")
    if path.suffix.lower() in (".keras", ".h5", ".hdf5"):
        raise DeviceError(f"{path} is a Keras model; export it first: edgesep export --model {path} "
                          "(then measure the .tflite/.onnx it writes)")
    if path.suffix.lower() not in MODEL_SUFFIXES:
        raise DeviceError(f"unsupported model file {path}: use .tflite or .onnx")
    with open(path, "rb") as f:
        head = f.read(8)
    if not head:
        raise DeviceError(f"model file is empty: {path}")
    if path.suffix.lower() == ".tflite" and head[4:8] != TFLITE_IDENTIFIER:
        raise DeviceError(f"not a TFLite model (no TFL3 identifier): {path}")


def check_inputs(models: Sequence[Path], data: Optional[Path]) -> None:
    """Raise ``DeviceError`` before any device work when a model or the data file is unusable."""
    if not models:
        raise DeviceError("no model given")
    for path in models:
        check_model_file(Path(path))
    if data is not None and not Path(data).is_file():
        raise DeviceError(f"data file not found: {data}")


def runner_args(config: BenchConfig, models: Sequence[str], data: Optional[str] = None,
                watchdog_s: Optional[float] = None) -> list[str]:
    """The ``runner.py`` arguments for ``config`` and device-side paths (progress and JSON errors on; with
    ``watchdog_s`` the runner ends itself after that long without a progress event)."""
    device_config = dataclasses.replace(config, data=data)
    watchdog = ["--watchdog", repr(float(watchdog_s))] if watchdog_s else []
    return [*device_config.to_argv(), "--progress", "--json-errors", *watchdog, "--", *models]


def silence_limit(config: BenchConfig, grace_s: float = WATCHDOG_GRACE_S) -> float:
    """Seconds without a sign of life after which a runner counts as hung: warm-up + max-secs + grace."""
    return config.warmup_secs + config.max_secs + grace_s


@dataclasses.dataclass
class RunnerOutput:
    """What one runner process left: exit code, its JSON document (if any) and the last stderr lines."""

    returncode: int
    document: Optional[dict[str, Any]]
    stderr_tail: list[str]
    hung_after: Optional[float] = None  # seconds of silence after which the watchdog killed it

    def fatal_message(self) -> Optional[str]:
        """The runner's own one-line fatal error, if it reported one."""
        if self.document and self.document.get("fatal"):
            return str(self.document.get("error"))
        for line in reversed(self.stderr_tail):
            if line.startswith(RUNNER_ERROR_PREFIX):
                return line[len(RUNNER_ERROR_PREFIX):]
        return None

    def tail_text(self, lines: int = 3, limit: int = 400) -> str:
        """The last few stderr lines as one line, led by the last error headline (e.g. ``Fatal Python error``)."""
        useful = [ln.strip() for ln in self.stderr_tail if ln.strip() and not ln.startswith("INFO: ")]
        kept = useful[-lines:]
        headlines = [ln for ln in useful if _HEADLINE.search(ln)]
        if headlines and headlines[-1] not in kept:
            kept = [headlines[-1], "...", *kept[-(lines - 1):]] if lines > 1 else [headlines[-1]]
        text = " | ".join(kept) or "no output on stderr"
        return text if len(text) <= limit else text[:limit] + "..."


def describe_exit(returncode: int) -> str:
    """``exit 1``, ``killed by SIGSEGV`` or ``exit 139 (SIGSEGV)`` for a process's return code."""
    if returncode < 0:
        return f"killed by {_signal_name(-returncode)}"
    if returncode > 128 and _signal_name(returncode - 128, None):
        return f"exit {returncode} ({_signal_name(returncode - 128)})"
    return f"exit {returncode}"


def _signal_name(number: int, default: Optional[str] = "signal") -> Optional[str]:
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"{default} {number}" if default else None


def _parse_document(raw: bytes) -> Optional[dict[str, Any]]:
    """The runner's JSON document: the last stdout line that parses as a JSON object."""
    for line in reversed(raw.decode("utf-8", "replace").splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                doc = json.loads(line)
            except ValueError:
                continue
            if isinstance(doc, dict):
                return doc
    return None


def stream_runner(argv: Sequence[str], on_progress: Callable[[dict[str, Any]], None],
                  silence_s: Optional[float] = None) -> RunnerOutput:
    """Run ``argv`` (a runner process, maybe through ssh/adb), feeding its progress lines to ``on_progress``.

    With ``silence_s``, a process that writes no stderr line (progress or other) for that long is killed, and
    the output says so (``hung_after``): the watchdog for a runner that stopped answering.
    """
    try:
        proc = subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
    except OSError as e:
        raise DeviceError(f"cannot start {argv[0]}: {e.strerror or e}") from None
    chunks: list[bytes] = []
    lines: queue.Queue = queue.Queue()
    readers = [threading.Thread(target=lambda: chunks.append(proc.stdout.read()), daemon=True),
               threading.Thread(target=_pump, args=(proc.stderr, lines), daemon=True)]
    for reader in readers:
        reader.start()
    tail: collections.deque[str] = collections.deque(maxlen=STDERR_TAIL_LINES)
    try:
        hung = _follow(lines, tail, on_progress, silence_s)
        if hung:
            proc.kill()
        proc.wait()
    except BaseException:
        proc.kill()
        proc.wait()
        raise
    finally:
        for reader in readers:
            reader.join(timeout=READER_JOIN_S)
        proc.stdout.close()
        proc.stderr.close()
    return RunnerOutput(proc.returncode, _parse_document(b"".join(chunks)), list(tail),
                        hung_after=silence_s if hung else None)


def _pump(stream: Any, lines: queue.Queue) -> None:
    """Every line of ``stream`` into ``lines``, then None at its end."""
    try:
        for raw in stream:
            lines.put(raw)
    except (OSError, ValueError):  # closed under us after a kill
        pass
    lines.put(None)


def _follow(lines: queue.Queue, tail: collections.deque, on_progress: Callable[[dict[str, Any]], None],
            silence_s: Optional[float]) -> bool:
    """Handle stderr lines until their end; True when ``silence_s`` passed without any (the runner hangs)."""
    last = time.monotonic()
    while True:
        try:
            raw = lines.get(timeout=1.0)
        except queue.Empty:
            if silence_s is not None and time.monotonic() - last > silence_s:
                return True
            continue
        if raw is None:
            return False
        last = time.monotonic()
        line = raw.decode("utf-8", "replace").rstrip("\r\n")
        if line.startswith(PROGRESS_PREFIX):
            try:
                on_progress(json.loads(line[len(PROGRESS_PREFIX):]))
                continue
            except ValueError:
                pass
        tail.append(line)


class RunnerDevice:
    """A device that measures with ``runner.py``; see the module docstring for what subclasses provide."""

    target: str = "?"
    watchdog_grace_s: float = WATCHDOG_GRACE_S

    def __init__(self) -> None:
        self._models: list[Path] = []
        self._device_models: list[str] = []
        self._device_data: Optional[str] = None

    # ---- what subclasses provide
    def _stage(self, models: Sequence[Path], data: Optional[Path]) -> tuple[list[str], Optional[str]]:
        """Make the models, data and runner available on the device; returns their device-side paths."""
        raise NotImplementedError

    def _runner_argv(self, args: Sequence[str]) -> list[str]:
        """The host command that runs ``runner.py`` with ``args`` on the device."""
        raise NotImplementedError

    def _transport_error(self, output: RunnerOutput) -> Optional[str]:
        """A one-line message when the connection (not the runner) failed, else None."""
        return None

    def cleanup(self) -> None:
        """Remove what ``prepare`` left on the device (nothing by default)."""

    # ---- the Device protocol
    def prepare(self, models: Sequence[Path], data: Optional[Path] = None) -> None:
        """Check the model files, then copy models, runner and data to the device (each once)."""
        check_inputs(models, data)
        self._models = [Path(m) for m in models]
        self._device_models, self._device_data = self._stage(self._models, Path(data) if data else None)

    def run(self, config: BenchConfig, progress: Optional[ProgressFn] = None) -> list[BenchResult]:
        """Measure every prepared model in one runner process, interleaved; isolate them if it crashes."""
        if not self._models:
            raise DeviceError("nothing to run: call prepare() with the models first")
        indices = list(range(len(self._models)))
        output = self._run_indices(indices, config, progress)
        if output.document is not None and "results" in output.document:
            return self._results(output.document, indices, config)
        self._raise_if_fatal(output)
        if len(indices) == 1:
            return [self._crash_result(0, output)]
        results = []
        for i in indices:  # the process died: one process per model, so one bad model loses only itself
            single = self._run_indices([i], config, progress)
            if single.document is not None and "results" in single.document:
                result = self._results(single.document, [i], config)[0]
                result.extra["isolated"] = True
                results.append(result)
            else:
                self._raise_if_fatal(single)
                results.append(self._crash_result(i, single))
        return results

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.cleanup()

    # ---- helpers
    def _run_indices(self, indices: list[int], config: BenchConfig, progress: Optional[ProgressFn]) -> RunnerOutput:
        names = [str(self._models[i]) for i in indices]
        silence = silence_limit(config, self.watchdog_grace_s)
        args = runner_args(config, [self._device_models[i] for i in indices], self._device_data,
                           watchdog_s=silence + DEVICE_WATCHDOG_EXTRA_S)

        def on_progress(event: dict[str, Any]) -> None:
            if progress is None or not isinstance(event.get("index"), int) or event["index"] >= len(names):
                return
            done, total = int(event.get("done", 0)), int(event.get("total", 1))
            phase = event.get("phase")
            if phase in ("load", "first", "warmup"):
                done, total = 0, config.runs
            progress(names[event["index"]], done, total)

        output = stream_runner(self._runner_argv(args), on_progress, silence_s=silence)
        if output.hung_after is not None:
            raise DeviceError(f"{self.target}: the runner stopped answering: nothing from it for {silence:g} s "
                              f"(warm-up {config.warmup_secs:g} s + max-secs {config.max_secs:g} s + grace "
                              f"{self.watchdog_grace_s:g} s), so it was killed")
        return output

    def _raise_if_fatal(self, output: RunnerOutput) -> None:
        message = self._transport_error(output)
        if message:
            raise DeviceError(message)
        fatal = output.fatal_message()
        if fatal and output.returncode in RUNNER_EXIT_FATAL:
            raise DeviceError(f"{self.target}: {fatal}")

    def _crash_result(self, index: int, output: RunnerOutput) -> BenchResult:
        error = f"runner crashed on {self.target} ({describe_exit(output.returncode)}): {output.tail_text()}"
        return BenchResult(model=str(self._models[index]), device=self.target, error=error)

    def _results(self, document: dict[str, Any], indices: list[int], config: BenchConfig) -> list[BenchResult]:
        entries = document["results"]
        if len(entries) != len(indices):
            raise DeviceError(f"{self.target}: the runner returned {len(entries)} results for {len(indices)} models")
        return [self._result(entry, document, self._models[i], self._device_models[i], config)
                for entry, i in zip(entries, indices)]

    def _result(self, entry: dict[str, Any], document: dict[str, Any], model: Path, device_path: str,
                config: BenchConfig) -> BenchResult:
        samples = entry.get("samples_ms") or None
        error = entry.get("error")
        if error:
            error = str(error).replace(device_path, str(model))
        extra = {k: entry.get(k) for k in ("format", "delegate_nodes", "ops", "inputs", "outputs", "warmup_runs",
                                           "warmup_total_ms")}
        if entry.get("accuracy_note"):
            extra["accuracy_note"] = entry["accuracy_note"]  # several outputs, none known to hold class scores
        if entry.get("profile"):
            extra["profile"] = entry["profile"]  # the runner's onnxruntime profile, made a record by devices.profile
        extra.update(overhead=document.get("overhead"), runner_version=document.get("runner_version"))
        return BenchResult(
            model=str(model), device=self.target, runtime=entry.get("runtime"), threads=entry.get("threads"),
            delegate=entry.get("delegate"), fully_delegated=entry.get("fully_delegated"),
            init_ms=entry.get("init_ms"), first_ms=entry.get("first_ms"), warmup_ms=entry.get("warmup_ms") or [],
            latency_ms=summarize(samples, seed=config.seed).to_dict() if samples else None, samples_ms=samples,
            accuracy=entry.get("accuracy"), predictions=entry.get("predictions"),
            host=dict(document.get("host") or {}), extra=extra, error=error, memory_mb=entry.get("memory_mb"))
