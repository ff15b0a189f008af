"""The Edge TPU compiler on the host: ``edgetpu_compiler``, its report, and which models it takes.

This module decides whether a model still needs compiling (a compiled model holds the
``edgetpu-custom-op`` custom op), checks that an int8 model is what the compiler accepts, runs the
compiler and parses what it prints (and the ``*_edgetpu.log`` it writes):

```
Edge TPU Compiler version 16.0.384591198
Model compiled successfully in 3173 ms.
Input model: yolov5s-int8-224.tflite
Input size: 7.37MiB
Output model: yolov5s-int8-224_edgetpu.tflite
Output size: 8.34MiB
On-chip memory used for caching model parameters: 6.08MiB
On-chip memory remaining for caching model parameters: 0.00B
Off-chip memory used for streaming uncached model parameters: 1.70MiB
Number of Edge TPU subgraphs: 2
Total number of operations: 294
Operation log: yolov5s-int8-224_edgetpu.log
Number of operations that will run on Edge TPU: 289      (both lines absent when everything maps)
Number of operations that will run on CPU: 5

Operator                       Count      Status
CONCATENATION                  17         Mapped to Edge TPU
TRANSPOSE                      1          Operation is otherwise supported, but not mapped due to ...
```

Never imports TensorFlow: model files are read with ``edgesep.converters.flatbuffer``. The runtime side
(``libedgetpu``, delegate options) lives in ``edgesep.devices.coral``; converters never import devices.
"""
from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
from pathlib import Path
from typing import Any, Optional, Sequence

from edgesep.converters.flatbuffer import FLOAT_TYPES, TfliteFile, read_tflite
from edgesep.errors import ConversionError, EdgeTpuError, last_line
from edgesep.io import move

EDGETPU_CUSTOM_OP = "edgetpu-custom-op"
COMPILER = "edgetpu_compiler"
COMPILER_TIMEOUT_S = 180
APT_REPO = ("Coral's apt repository (echo 'deb https://packages.cloud.google.com/apt coral-edgetpu-stable main' "
            "| sudo tee /etc/apt/sources.list.d/coral-edgetpu.list, then add its key and sudo apt-get update)")
COMPILER_MISSING = (f"{COMPILER} not found on this host: install the Debian package edgetpu-compiler from "
                    f"{APT_REPO}; the compiler runs on x86-64 Linux only")


# ------------------------------------------------------------------------------------------------
# the compiler's report

@dataclasses.dataclass(frozen=True)
class OperatorStatus:
    """One row of the compiler's ``Operator Count Status`` table."""

    operator: str
    count: int
    status: str

    @property
    def mapped(self) -> bool:
        return self.status.startswith("Mapped to Edge TPU")


@dataclasses.dataclass
class EdgeTpuReport:
    """What ``edgetpu_compiler`` said about one model (sizes in bytes)."""

    compiler_version: Optional[str] = None
    compiled: bool = False
    compile_ms: Optional[float] = None
    input_model: Optional[str] = None
    output_model: Optional[str] = None
    input_bytes: Optional[int] = None
    output_bytes: Optional[int] = None
    on_chip_bytes: Optional[int] = None
    on_chip_remaining_bytes: Optional[int] = None
    off_chip_bytes: Optional[int] = None
    subgraphs: Optional[int] = None
    total_ops: Optional[int] = None
    ops_on_edgetpu: Optional[int] = None
    ops_on_cpu: Optional[int] = None
    operators: list[OperatorStatus] = dataclasses.field(default_factory=list)
    errors: list[str] = dataclasses.field(default_factory=list)
    log_path: Optional[str] = None

    @property
    def fully_mapped(self) -> Optional[bool]:
        """True when every operation runs on the Edge TPU; None when the report does not say."""
        if self.ops_on_cpu is not None:
            return self.ops_on_cpu == 0
        if self.operators:
            return all(op.mapped for op in self.operators)
        return None

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["operators"] = [dict(dataclasses.asdict(op), mapped=op.mapped) for op in self.operators]
        d["fully_mapped"] = self.fully_mapped
        return d


_SIZE_UNITS = {"B": 1, "KIB": 1024, "MIB": 1024 ** 2, "GIB": 1024 ** 3, "KB": 1000, "MB": 1000 ** 2, "GB": 1000 ** 3}
_SIZE = r"([\d.]+)\s*([KMG]?i?B)"


def parse_size(text: str) -> Optional[int]:
    """Bytes from the compiler's sizes (``7.04MiB``, ``1.25 KiB``, ``0.00B``); None when unreadable."""
    m = re.fullmatch(r"\s*" + _SIZE + r"\s*", text)
    if not m:
        return None
    return int(round(float(m.group(1)) * _SIZE_UNITS[m.group(2).upper()]))


_FIELDS: tuple[tuple[str, "re.Pattern[str]", str], ...] = tuple((name, re.compile(rx), kind) for name, rx, kind in (
    ("compiler_version", r"^Edge TPU Compiler version (\S+)", "str"),
    ("compile_ms", r"^Model compiled successfully in (\d+) ms", "float"),
    ("input_model", r"^Input(?: model)?:\s*(\S.*?)(?:\s+\(" + _SIZE + r"\))?\s*$", "str"),
    ("output_model", r"^Output(?: model)?:\s*(\S.*?)(?:\s+\(" + _SIZE + r"\))?\s*$", "str"),
    ("input_bytes", r"^Input size:\s*(.+)$", "size"),
    ("output_bytes", r"^Output size:\s*(.+)$", "size"),
    ("on_chip_bytes", r"^On-chip memory used for caching(?: model parameters)?:\s*(.+)$", "size"),
    ("on_chip_remaining_bytes", r"^On-chip memory remaining(?: for caching model parameters)?:\s*(.+)$", "size"),
    ("off_chip_bytes", r"^Off-chip memory used(?: for streaming uncached model parameters| \(streaming\))?:\s*(.+)$",
     "size"),
    ("subgraphs", r"^Number of Edge TPU subgraphs:\s*(\d+)", "int"),
    ("total_ops", r"^Total number of operations:\s*(\d+)", "int"),
    ("ops_on_edgetpu", r"^Number of operations that will run on Edge TPU:\s*(\d+)", "int"),
    ("ops_on_cpu", r"^Number of operations that will run on CPU:\s*(\d+)", "int"),
    ("log_path", r"^Operation log:\s*(\S+)", "str"),
))
_CONVERT = {"str": str, "float": float, "int": int, "size": parse_size}
_OP_ROW = re.compile(r"^([A-Z][A-Z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")
_ERROR = re.compile(r"^(?:ERROR:|Error:|Invalid model|Internal compiler error|Compilation failed|"
                    r"Model not quantized|.*is not supported)")


def parse_compiler_output(text: str) -> EdgeTpuReport:
    """Parse what ``edgetpu_compiler`` printed (or its ``*_edgetpu.log``) into an ``EdgeTpuReport``.

    When the two "Number of operations that will run on ..." lines are absent (everything mapped),
    ``ops_on_edgetpu`` is the total and ``ops_on_cpu`` is 0, provided the model compiled.
    """
    report = EdgeTpuReport()
    in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        if re.match(r"^Operator\s+Count\s+Status$", line):
            in_table = True
            continue
        if in_table and (m := _OP_ROW.match(line)):
            report.operators.append(OperatorStatus(m.group(1), int(m.group(2)), m.group(3)))
            continue
        for name, rx, kind in _FIELDS:
            m = rx.match(line)
            if m:
                if getattr(report, name) is None:
                    setattr(report, name, _CONVERT[kind](m.group(1)))
                break
        else:
            if _ERROR.match(line):
                report.errors.append(line)
    report.compiled = report.compile_ms is not None or "Compilation succeeded" in text or (
        report.output_model is not None and not report.errors)
    if report.compiled and report.total_ops is not None and report.ops_on_cpu is None:
        report.ops_on_edgetpu, report.ops_on_cpu = report.total_ops, 0
    return report


def read_compiler_log(compiled_model: Path) -> Optional[EdgeTpuReport]:
    """The report from the ``*_edgetpu.log`` beside a compiled model, or None when there is none."""
    log = Path(compiled_model).with_suffix(".log")
    if not log.is_file():
        return None
    report = parse_compiler_output(log.read_text(errors="replace"))
    report.compiled = True
    report.log_path = str(log)
    return report


# ------------------------------------------------------------------------------------------------
# which models the compiler takes

def _read(tflite_path: Path) -> TfliteFile:
    try:
        return read_tflite(Path(tflite_path))
    except ConversionError as e:
        raise EdgeTpuError(str(e)) from None


def is_edgetpu_compiled(tflite_path: Path) -> bool:
    """Whether the model holds the ``edgetpu-custom-op`` (i.e. went through ``edgetpu_compiler``)."""
    return EDGETPU_CUSTOM_OP in _read(tflite_path).custom_ops


def edgetpu_problems(tflite_path: Path) -> list[str]:
    """What keeps ``edgetpu_compiler`` from taking this model; empty when it is acceptable.

    Checks: full integer (no float tensors), uint8/int8 inputs and outputs, batch 1, static shapes, not
    already compiled.
    """
    model = _read(tflite_path)
    tensors, io = model.tensors, model.io
    if EDGETPU_CUSTOM_OP in model.custom_ops:
        return ["the model is already compiled for the Edge TPU"]
    problems: list[str] = []
    if not tensors:
        return ["the model has no subgraph"]
    main, (inputs, outputs) = tensors[0], io[0]
    for role, idxs in (("input", inputs), ("output", outputs)):
        for i in idxs:
            t = main[i]
            if t.type not in ("INT8", "UINT8"):
                problems.append(f"{role} '{t.name}' is {t.type}; the Edge TPU needs int8 or uint8 {role}s")
            if t.shape and t.shape[0] != 1:
                problems.append(f"{role} '{t.name}' has batch {t.shape[0]}; the Edge TPU needs batch 1")
            if t.signature and any(d < 0 for d in t.signature):
                problems.append(f"{role} '{t.name}' has a dynamic shape {list(t.signature)}; "
                                "the Edge TPU needs static shapes")
    io_set = set(inputs) | set(outputs)
    floats = [t.name for i, t in enumerate(main) if t.type in FLOAT_TYPES and i not in io_set]
    if floats:
        shown = ", ".join(f"'{n}'" for n in floats[:3]) + (f" and {len(floats) - 3} more" if len(floats) > 3 else "")
        problems.append(f"not fully integer: {len(floats)} float tensor(s) ({shown}); "
                        "export with full-integer int8 quantization")
    if len(tensors) > 1:
        problems.append(f"{len(tensors)} subgraphs; the Edge TPU compiler takes single-subgraph models")
    return problems


# ------------------------------------------------------------------------------------------------
# running the compiler

def find_compiler() -> Optional[str]:
    """Path of ``edgetpu_compiler`` on this host, or None."""
    return shutil.which(COMPILER)


def compile_edgetpu(tflite_path: Path, out_dir: Path, compiler: Optional[str] = None,
                    timeout_s: int = COMPILER_TIMEOUT_S) -> tuple[Path, EdgeTpuReport]:
    """Compile a full-integer model with ``edgetpu_compiler``; returns (compiled model path, report).

    The compiled ``<stem>_edgetpu.tflite`` and ``<stem>_edgetpu.log`` appear in ``out_dir`` only once
    complete (the compiler writes into a temporary folder there first).

    Raises:
        EdgeTpuError: the compiler is missing, the model is not acceptable, or compilation failed.
    """
    tflite_path, out_dir = Path(tflite_path), Path(out_dir)
    exe = compiler or find_compiler()
    if not exe:
        raise EdgeTpuError(COMPILER_MISSING)
    problems = edgetpu_problems(tflite_path)
    if problems:
        raise EdgeTpuError(f"{tflite_path.name} is not compilable for the Edge TPU: " + "; ".join(problems))
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".edgetpu-") as tmp:
        try:
            proc = subprocess.run([exe, "--show_operations", "--out_dir", tmp, "--timeout_sec", str(timeout_s),
                                   str(tflite_path)], capture_output=True, text=True, timeout=timeout_s + 30)
        except subprocess.TimeoutExpired:
            raise EdgeTpuError(f"{COMPILER} did not finish {tflite_path.name} within {timeout_s} s") from None
        except OSError as e:
            raise EdgeTpuError(f"cannot run {exe}: {e.strerror}") from None
        report = parse_compiler_output(proc.stdout + "\n" + proc.stderr)
        produced = Path(tmp) / f"{tflite_path.stem}_edgetpu.tflite"
        if proc.returncode != 0 or not produced.is_file():
            why = ("; ".join(report.errors) or last_line(proc.stderr or proc.stdout, default="")
                   or f"exit {proc.returncode}")
            raise EdgeTpuError(f"{COMPILER} failed on {tflite_path.name}: {why}")
        final = out_dir / produced.name
        move(produced, final)
        log = produced.with_suffix(".log")
        if log.is_file():
            move(log, final.with_suffix(".log"))
            report.log_path = str(final.with_suffix(".log"))
            if not report.operators:
                report.operators = parse_compiler_output(final.with_suffix(".log").read_text()).operators
        report.output_model = str(final)
        report.compiled = True
    return final, report


def prepare_model(tflite_path: Path, work_dir: Path) -> tuple[Path, Optional[EdgeTpuReport]]:
    """The model to give the Edge TPU delegate: as is when already compiled, else compiled into ``work_dir``.

    Returns (path, report); the report comes from the compiler run or the ``.log`` beside a compiled model.
    """
    tflite_path = Path(tflite_path)
    if is_edgetpu_compiled(tflite_path):
        return tflite_path, read_compiler_log(tflite_path)
    return compile_edgetpu(tflite_path, work_dir)


def prepare_models(models: Sequence[Path], work_dir: Path) -> tuple[list[Path], list[Optional[EdgeTpuReport]]]:
    """The models to bench with ``--delegate edgetpu``: compiled .tflite as they are, the others compiled into
    ``work_dir`` first (.onnx files pass through untouched); with each, its compiler report or None.

    Raises:
        EdgeTpuError: a model needs compiling and the compiler is missing, refuses it, or fails.
    """
    paths: list[Path] = []
    reports: list[Optional[EdgeTpuReport]] = []
    for model in models:
        model = Path(model)
        if model.suffix.lower() != ".tflite":
            paths.append(model)
            reports.append(None)
            continue
        path, report = prepare_model(model, Path(work_dir))
        paths.append(path)
        reports.append(report)
    return paths, reports


def inspect_edgetpu(tflite_path: Path) -> dict[str, Any]:
    """Edge TPU facts of a .tflite for ``edgesep inspect``: compiled or not, the compiler report or the problems."""
    tflite_path = Path(tflite_path)
    if is_edgetpu_compiled(tflite_path):
        report = read_compiler_log(tflite_path)
        return {"compiled": True, "report": report.to_dict() if report else None}
    return {"compiled": False, "problems": edgetpu_problems(tflite_path)}
