"""edgesep on-device runner: measures .tflite/.onnx models and prints one JSON document.

This ONE file is copied to the device and run there with the device's Python (3.9+). It imports only the
standard library, numpy (1.x or 2) and one interpreter package chosen at run time: ``ai_edge_litert``, else
``tflite_runtime``, else ``tensorflow.lite`` for .tflite files, and ``onnxruntime`` for .onnx files.

Command line::

    python3 runner.py [options] MODEL [MODEL ...]

    --threads N            interpreter threads (default: the runtime's own default)
    --runs N               minimum steady-state runs per model (default 50)
    --warmup N             minimum warm-up runs per model (default 1)
    --warmup-secs S        minimum warm-up time per model, seconds (default 0.5)
    --min-secs S           minimum steady-state time per model, seconds (default 1)
    --max-secs S           maximum steady-state time per model, seconds (default 150)
    --delegate D           xnnpack (default) | none | edgetpu | gpu | nnapi | PATH to a delegate library
    --delegate-option K=V  option for the delegate (repeatable), e.g. device=usb:0 for edgetpu
    --data FILE.npz        accuracy set: ``y`` (N,) int labels and ``x`` (N,H,W,C) float32 in [0, 1]; extra
                           arrays named ``x_HxWxC`` (e.g. ``x_32x32x3``) are used by models with that input,
                           ``x@SHA`` by the model file whose SHA-256 starts with those 16 hex digits
    --seed N               seed of the random latency input (default 0)
    --out FILE             write the JSON document to FILE instead of stdout
    --progress             progress lines on stderr (see below)
    --json-errors          on a fatal error also print {"error": "...", "fatal": true} on stdout
    --describe             only load the models and print their inputs/outputs (no timing)
    --watchdog S           end the process (SIGALRM) when S seconds pass without a progress event: the device-side
                           backstop of the host's own watchdog, for a runner whose host went away
    --profile              after the timed runs, per-node times of each .onnx model from onnxruntime's own
                           profiler (a second session, never mixed into ``samples_ms``; see ``profile_onnx``),
                           and each .tflite model's whole timed again, runs told preempted or not (``time_whole``)

The options are one ``RunConfig`` (``RunConfig.to_argv()`` writes them, ``parse_args`` reads them back); the host's
``edgesep.devices.BenchConfig`` is that same class, so the configuration exists once. The protocol constants
(``PROGRESS_PREFIX``, ``ERROR_PREFIX``, the ``EXIT_*`` codes, ``DELEGATE_NAMES``, ``MODEL_SUFFIXES``) are defined
here and imported by the host side; this file imports nothing of edgesep.

Measurement (per model, all models loaded in one process): load + allocate (``init_ms``), first inference
(``first_ms``), warm-up until every model ran ``--warmup`` times and the warm-up phase lasted
``--warmup-secs`` of wall time (``warmup_runs``, ``warmup_total_ms``, and the first 100 samples in
``warmup_ms``), then steady state until both ``--runs`` and ``--min-secs`` are reached or ``--max-secs`` is
spent (``samples_ms``, every sample, ms rounded to the nanosecond); these seconds count each model's own
inference time, as TFLite's benchmark_model does. Warm-up and steady state are interleaved round by round (A B A B ...) so drift and heat hit every model alike. Each sample times ``invoke()`` (TFLite)
or ``run()`` (ONNX Runtime) alone, with inputs set once beforehand from seeded random numbers (floats uniform
in [0, 1), integers over their full range). With ``--data`` every sample is then run once per model (inputs
quantized with the input tensor's scale/zero point for int8/uint8 models), giving top-1 ``accuracy`` and
``predictions``. A model that fails to load or run gets an ``error`` entry; the others go on.

Delegates: ``xnnpack`` is TFLite's default CPU path; ``none`` disables it through the op-resolver type
``BUILTIN_WITHOUT_DEFAULT_DELEGATES``; ``edgetpu`` loads ``libedgetpu.so.1`` through ``load_delegate``; a
path loads that external delegate library. ``fully_delegated`` is decided from what the Python API shows
after ``allocate_tensors()``: delegate kernels appear as extra nodes named ``DELEGATE`` (or containing
``Delegate``); the graph counts as fully delegated when there is exactly one such node, it produces every
graph output, and none of its inputs is produced by an op of the model (so no op runs outside it, except ops
whose results nobody uses). For .onnx models the delegate picks the execution provider: ``xnnpack`` uses
``XnnpackExecutionProvider`` when the installed onnxruntime has it and ``CPUExecutionProvider`` otherwise,
``none`` always ``CPUExecutionProvider``; the result's ``delegate`` names the provider that ran.

Output (stdout, or ``--out``)::

    {"runner_version": 1,
     "runtimes": {"tflite": "ai_edge_litert 2.3.0", "onnx": null},
     "config": {"threads": null, "runs": 50, ...},
     "host": {"cpu": "...", "cores": 4, "machine": "aarch64", "emulated": false, "emulator": null,
              "os": "Linux 6.1", "python": "3.11.2",
              "numpy": "1.26.4", "governor": "ondemand", "temp_c_before": 45.2, "temp_c": 51.0,
              "temps_before": {"cpu-thermal": 45.2}, "temps_after": {...},
              "loadavg_before": [0.1, 0.2, 0.3], "loadavg_after": [...], "cpu_s": 3.1, "wall_s": 3.4},
     "overhead": {"timer_us": 0.1, "loop_us": 1.5},
     "results": [{"model": "PATH", "format": "tflite", "runtime": "ai_edge_litert 2.3.0", "threads": null,
                  "delegate": "xnnpack", "fully_delegated": true, "delegate_nodes": 1, "ops": ["CONV_2D", ...],
                  "inputs": [{"name": "...", "shape": [1, 32, 32, 3], "dtype": "int8",
                              "scale": 0.0039, "zero_point": -128}],
                  "outputs": [...],
                  "init_ms": 1.2, "first_ms": 0.5, "warmup_ms": [...], "warmup_runs": 12,
                  "warmup_total_ms": 6.1, "samples_ms": [...],
                  "accuracy": null, "predictions": null,
                  "memory_mb": {"baseline": 55.1, "loaded": 61.3, "peak": 62.0, "model": 6.2,
                                "peak_startup": 63.5, "source": "/proc/self/status", "peak_scope": "steady",
                                "models_in_process": 1, "reason": null},
                  "error": null}]}

``memory_mb`` (per model, MB of resident memory): ``baseline`` just before the model is loaded (the Python
process with numpy and the runtime imported, plus any model loaded before it), ``loaded`` once its interpreter
is built and its tensors allocated, ``model`` = loaded - baseline (what this model costs), ``peak`` the highest
resident memory during the timed steady-state runs (``VmHWM``, reset through /proc/self/clear_refs just before
them; ``peak_scope`` is ``steady`` then, ``process`` when the reset is not allowed and the peak counts from the
process start), ``peak_startup`` the peak before the timed runs (load, first run, warm-up), ``source``
(``/proc/self/status``, or ``ru_maxrss`` where there is no /proc: then only the peaks are known) and ``reason``
when a figure is null. All models of one runner process share it: ``models_in_process`` > 1 means ``peak`` is
the whole process's (every model interleaved), not one model's; measure one model per process for its own
peak.

``temp_c`` is the hottest thermal zone after the runs (null without /sys/class/thermal). ``overhead.timer_us``
is the cost of timing an empty call, ``overhead.loop_us`` the mean wall time per steady-state run spent outside
the timed calls (the harness's own loop). With ``--describe`` the results hold only model, format, runtime,
inputs, outputs and error.

Progress (``--progress``), one line each on stderr, at most ~10 per second per model and at each phase end::

    @edgesep-progress {"index": 0, "model": "PATH", "phase": "steady", "done": 12, "total": 50}

``phase`` is ``load``, ``first``, ``warmup``, ``steady`` or ``accuracy``; ``total`` may grow while ``--min-secs``
keeps a model running.

Exit codes: 0 the document was written (per-model failures are ``error`` entries); 2 bad arguments; 3 a
needed package is missing (the one stderr line says what to pip install); 4 any other fatal error (e.g. the
data file is unreadable). Fatal errors print one line ``edgesep-runner: error: ...`` on stderr.
"""
from __future__ import annotations

import argparse
import dataclasses
import glob
import json
import math
import numbers
import os
import platform
import sys
import threading
import time
from typing import Optional, Tuple

_STARTED = time.monotonic()  # the runner's start, for host.wall_s

RUNNER_VERSION = 1
PROGRESS_PREFIX = "@edgesep-progress "
ERROR_PREFIX = "edgesep-runner: error: "
EXIT_USAGE = 2
EXIT_MISSING_PACKAGE = 3
EXIT_FATAL = 4
PROGRESS_INTERVAL_S = 0.1
WARMUP_SAMPLES_KEPT = 100
DELEGATE_NAMES = ("xnnpack", "none", "edgetpu", "gpu", "nnapi")
MODEL_SUFFIXES = (".tflite", ".onnx")
TFLITE_IDENTIFIER = b"TFL3"
EDGETPU_LIBRARY = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
EDGETPU_HINT = ("install libedgetpu1-std from Coral's apt repository (coral-edgetpu-stable) and a tflite_runtime "
                "built for that libedgetpu (Coral's runtime needs a matching tflite_runtime version)")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """How to measure: THE bench configuration (the host's ``BenchConfig`` is this class, shipped as argv).

    Defaults follow TFLite's benchmark_model (50 runs, >= 1 s, <= 150 s, 0.5 s warm-up).

    Attributes:
        threads: interpreter threads; None lets the runtime choose.
        runs: minimum steady-state runs per model.
        warmup: minimum warm-up runs per model.
        warmup_secs: minimum warm-up time per model, seconds.
        min_secs: minimum steady-state time per model, seconds.
        max_secs: maximum steady-state time per model, seconds (stops early even if ``runs`` is not reached).
        delegate: ``xnnpack`` (default), ``none``, ``edgetpu``, ``gpu``, ``nnapi`` or a delegate library path.
        delegate_options: key/value options for the delegate (e.g. ``{"device": "usb:0"}`` for edgetpu); kept
            as a sorted tuple of pairs.
        data: an accuracy .npz (on the host: a local path; in the runner: the device-side path), or None.
        seed: seed of the random input used for latency runs.
        profile: after the timed runs, profile each .onnx model per node (``profile`` in its result entry);
            .tflite models are profiled by the host as single-op models (``edgesep.devices.profile``).
        label_output: with several outputs, the one ``data``'s labels belong to (by name); without it, the one
            output that is a vector of class scores, else no accuracy and an ``accuracy_note`` saying why.

    Raises:
        ValueError: a value out of range or not finite, or an unknown delegate (the message says which).
    """

    threads: Optional[int] = None
    runs: int = 50
    warmup: int = 1
    warmup_secs: float = 0.5
    min_secs: float = 1.0
    max_secs: float = 150.0
    delegate: str = "xnnpack"
    delegate_options: Tuple[Tuple[str, str], ...] = ()
    data: Optional[str] = None
    seed: int = 0
    profile: bool = False
    label_output: Optional[str] = None

    def __post_init__(self):
        options = self.delegate_options
        pairs = options.items() if isinstance(options, dict) else options
        object.__setattr__(self, "delegate_options", tuple(sorted((str(k), str(v)) for k, v in pairs)))
        problem = self.problem()
        if problem:
            raise ValueError(problem)

    def problem(self):
        """The first reason this configuration cannot run, or None."""
        if self.threads is not None and (not _is_int(self.threads) or self.threads < 1):
            return "threads must be >= 1, got %r" % (self.threads,)
        if not _is_int(self.runs) or self.runs < 1:
            return "runs must be >= 1, got %r" % (self.runs,)
        if not _is_int(self.seed):
            return "seed must be an integer, got %r" % (self.seed,)
        numbers = (self.warmup_secs, self.min_secs, self.max_secs)
        if not all(_is_number(v) and math.isfinite(v) for v in numbers):
            return "warm-up, min and max seconds must be finite numbers, got %r, %r, %r" % numbers
        if not _is_int(self.warmup) or self.warmup < 0 or self.warmup_secs < 0:
            return "warm-up count and seconds must be >= 0"
        if self.min_secs < 0 or self.max_secs <= 0 or self.min_secs > self.max_secs:
            return "need 0 <= min_secs <= max_secs and max_secs > 0, got %r, %r" % (self.min_secs, self.max_secs)
        if not is_delegate(self.delegate):
            return ("unknown delegate %r; use one of %s or a path to a delegate library"
                    % (self.delegate, ", ".join(DELEGATE_NAMES)))
        return None

    def to_dict(self):
        """Plain JSON-ready values (``delegate_options`` as a dict)."""
        d = dict((f.name, getattr(self, f.name)) for f in dataclasses.fields(self))
        d["delegate_options"] = dict(self.delegate_options)
        return d

    @classmethod
    def from_dict(cls, d):
        """The configuration of a ``to_dict`` document (unknown keys are an error)."""
        d = dict(d)
        d["delegate_options"] = tuple(dict(d.get("delegate_options") or {}).items())
        return cls(**d)

    def to_argv(self):
        """The runner's command-line options for this configuration (no models, no --progress)."""
        args = ["--runs", str(self.runs), "--warmup", str(self.warmup), "--warmup-secs", repr(float(self.warmup_secs)),
                "--min-secs", repr(float(self.min_secs)), "--max-secs", repr(float(self.max_secs)),
                "--delegate", self.delegate, "--seed", str(self.seed)]
        if self.threads is not None:
            args += ["--threads", str(self.threads)]
        for key, value in self.delegate_options:
            args += ["--delegate-option", "%s=%s" % (key, value)]
        if self.data is not None:
            args += ["--data", self.data]
        if self.profile:
            args.append("--profile")
        if self.label_output is not None:
            args += ["--label-output", self.label_output]
        return args


def _is_int(value):
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def _is_number(value):
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def is_delegate(name):
    """Whether ``name`` is a known delegate name or looks like a delegate library path."""
    return name in DELEGATE_NAMES or "/" in name or name.endswith(".so")


class FatalError(Exception):
    """Stops the whole run; ``exit_code`` says why."""

    def __init__(self, message, exit_code=EXIT_FATAL):
        super().__init__(message)
        self.exit_code = exit_code


class ModelError(Exception):
    """One model failed; the others go on."""


def _one_line(text):
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    return " ".join(lines)[:500] if lines else "failed"


def _import_numpy():
    try:
        import numpy
    except ImportError:
        raise FatalError("numpy is not installed for %s (Python %s): pip install numpy"
                         % (sys.executable, platform.python_version()), EXIT_MISSING_PACKAGE)
    return numpy


np = None  # set by main() / the public helpers through _numpy()


def _numpy():
    global np
    if np is None:
        np = _import_numpy()
    return np


# ---------------------------------------------------------------- runtimes

def _dist_version(module, dist):
    version = getattr(module, "__version__", None)
    if version:
        return str(version)
    try:
        from importlib import metadata
        return metadata.version(dist)
    except Exception:  # noqa: BLE001 - a version we cannot read is reported as unknown
        return "unknown"


class TfliteBackend:
    """The TFLite interpreter API of one package (ai_edge_litert, tflite_runtime or tensorflow)."""

    def __init__(self, name, version, interpreter_cls, resolver_type, load_delegate):
        self.name = name
        self.version = version
        self.interpreter_cls = interpreter_cls
        self.resolver_type = resolver_type
        self.load_delegate = load_delegate

    @property
    def label(self):
        return "%s %s" % (self.name, self.version)


def _litert_like(package, dist):
    def load():
        top = __import__(package)
        interp = __import__(package + ".interpreter", fromlist=["Interpreter"])
        return TfliteBackend(package, _dist_version(top, dist), interp.Interpreter,
                             getattr(interp, "OpResolverType", None), interp.load_delegate)
    return load


def _tensorflow():
    import tensorflow as tf  # only when neither ai_edge_litert nor tflite_runtime is installed
    return TfliteBackend("tensorflow", tf.__version__, tf.lite.Interpreter,
                         getattr(tf.lite.experimental, "OpResolverType", None), tf.lite.experimental.load_delegate)


TFLITE_BACKENDS = (("ai_edge_litert", _litert_like("ai_edge_litert", "ai-edge-litert")),
                   ("tflite_runtime", _litert_like("tflite_runtime", "tflite-runtime")),
                   ("tensorflow", _tensorflow))


def tflite_install_hint():
    """What to pip install for a TFLite interpreter on this machine."""
    if platform.machine().lower().startswith(("armv6", "armv7")):  # 32-bit ARM: no ai-edge-litert wheels
        return 'pip install "numpy<2" tflite-runtime'
    return 'pip install ai-edge-litert  (or: pip install "numpy<2" tflite-runtime)'


def find_tflite(allowed=None):
    """The first importable TFLite backend, in the order of ``TFLITE_BACKENDS``.

    Raises:
        FatalError: none is installed; the message says what to pip install.
    """
    for name, load in TFLITE_BACKENDS:
        if allowed is not None and name not in allowed:
            continue
        try:
            return load()
        except ImportError:
            continue
    raise FatalError("no TFLite interpreter for %s (Python %s, %s): %s"
                     % (sys.executable, platform.python_version(), platform.machine(), tflite_install_hint()),
                     EXIT_MISSING_PACKAGE)


class OnnxBackend:
    def __init__(self, module):
        self.ort = module
        self.name = "onnxruntime"
        self.version = _dist_version(module, "onnxruntime")

    @property
    def label(self):
        return "%s %s" % (self.name, self.version)


def find_onnx():
    """ONNX Runtime, or a FatalError saying what to pip install."""
    try:
        import onnxruntime
    except ImportError:
        raise FatalError("no ONNX Runtime for %s (Python %s): pip install onnxruntime"
                         % (sys.executable, platform.python_version()), EXIT_MISSING_PACKAGE)
    return OnnxBackend(onnxruntime)


# ---------------------------------------------------------------- models

def _fill(dtype, shape, rng):
    """Seeded random input: floats uniform in [0, 1), 8/16-bit integers over their full range, wider ones in [0, 100)."""
    numpy = _numpy()
    dtype = numpy.dtype(dtype)
    if dtype.kind == "f":
        return rng.random(shape).astype(dtype)
    if dtype.kind in "iu" and dtype.itemsize <= 2:
        info = numpy.iinfo(dtype)
        return rng.integers(int(info.min), int(info.max), size=shape, endpoint=True).astype(dtype)
    if dtype.kind in "iu":  # int32/int64 inputs are often indices: keep them small
        return rng.integers(0, 100, size=shape).astype(dtype)
    if dtype.kind == "b":
        return rng.integers(0, 1, size=shape, endpoint=True).astype(dtype)
    return numpy.zeros(shape, dtype=dtype)


def _tensor_info(name, shape, dtype, scale=0.0, zero_point=0):
    return {"name": str(name), "shape": [int(v) for v in shape], "dtype": str(_numpy().dtype(dtype)),
            "scale": float(scale), "zero_point": int(zero_point)}


def _delegate_spec(delegate, options):
    """(library, options) to load for a delegate name or path, or (None, None) for the built-in CPU paths."""
    if delegate in ("xnnpack", "none"):
        return None, None
    if delegate == "edgetpu":
        library = EDGETPU_LIBRARY.get(platform.system())
        if library is None:
            raise ModelError("no Edge TPU library is known for %s" % platform.system())
        return library, options
    if delegate in ("gpu", "nnapi"):
        raise ModelError("the %s delegate is not available through the Python interpreter; pass the path of a "
                         "delegate library instead" % delegate)
    return delegate, options


class TfliteModel:
    """A .tflite model in a TFLite interpreter with the requested delegate."""

    format = "tflite"

    def __init__(self, path, backend, threads, delegate, delegate_options):
        self.backend = backend
        self.runtime = backend.label
        self.delegate = delegate
        kwargs = {"model_path": path}
        if threads is not None:
            kwargs["num_threads"] = threads
        if delegate == "none":
            if backend.resolver_type is None:
                raise ModelError("%s cannot disable the default delegates (no OpResolverType)" % backend.label)
            kwargs["experimental_op_resolver_type"] = backend.resolver_type.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        library, options = _delegate_spec(delegate, delegate_options)
        if library is not None:
            kwargs["experimental_delegates"] = [self._load_delegate(library, options)]
        try:
            self.interp = backend.interpreter_cls(**kwargs)
            self.interp.allocate_tensors()
        except (ValueError, RuntimeError) as e:
            raise ModelError("cannot load %s as a TFLite model: %s" % (os.path.basename(path), _one_line(e)))
        self.inputs = self.interp.get_input_details()
        self.outputs = self.interp.get_output_details()

    def _load_delegate(self, library, options):
        try:
            return self.backend.load_delegate(library, options or None)
        except (ValueError, RuntimeError, OSError, AttributeError) as e:
            hint = "; " + EDGETPU_HINT if self.delegate == "edgetpu" else ""
            raise ModelError("cannot load delegate library %s: %s%s" % (library, _one_line(e), hint))

    def input_info(self):
        return [_tensor_info(d["name"], d["shape"], d["dtype"], *d["quantization"]) for d in self.inputs]

    def output_info(self):
        return [_tensor_info(d["name"], d["shape"], d["dtype"], *d["quantization"]) for d in self.outputs]

    def set_inputs(self, arrays):
        for detail, array in zip(self.inputs, arrays):
            self.interp.set_tensor(detail["index"], array)

    def invoke(self):
        self.interp.invoke()

    def output0(self):
        """The selected output (the first unless ``select_output`` chose another)."""
        return self.interp.get_tensor(self.outputs[getattr(self, "_pick", 0)]["index"])

    def select_output(self, index):
        self._pick = index

    def delegation(self):
        """(ops, delegate_nodes, fully_delegated) as far as the Python API shows (see the module docstring)."""
        try:
            nodes = self.interp._get_ops_details()  # noqa: SLF001 - the only window on the execution graph
        except Exception:  # noqa: BLE001 - older runtimes lack it
            return None, None, None
        is_kernel = [n["op_name"] == "DELEGATE" or "delegate" in n["op_name"].lower() for n in nodes]
        kernels = [n for n, k in zip(nodes, is_kernel) if k]
        ops = [n["op_name"] for n, k in zip(nodes, is_kernel) if not k]
        if len(kernels) != 1:
            return ops, len(kernels), False
        produced = set()
        for n, k in zip(nodes, is_kernel):
            if not k:
                produced.update(int(t) for t in n["outputs"])
        kernel_in = set(int(t) for t in kernels[0]["inputs"])
        kernel_out = set(int(t) for t in kernels[0]["outputs"])
        graph_out = set(int(d["index"]) for d in self.outputs)
        full = graph_out <= kernel_out and not (kernel_in & produced)
        return ops, 1, full


_ONNX_DTYPES = {"tensor(float)": "float32", "tensor(float16)": "float16", "tensor(double)": "float64",
                "tensor(int8)": "int8", "tensor(uint8)": "uint8", "tensor(int16)": "int16",
                "tensor(int32)": "int32", "tensor(int64)": "int64", "tensor(bool)": "bool"}


class OnnxModel:
    """An .onnx model in an ONNX Runtime session."""

    format = "onnx"

    def __init__(self, path, backend, threads, delegate, delegate_options):
        ort = backend.ort
        self.runtime = backend.label
        if delegate not in ("xnnpack", "none"):
            raise ModelError("delegate %r applies to .tflite models; .onnx models take xnnpack or none" % delegate)
        available = ort.get_available_providers()
        provider = "CPUExecutionProvider"
        if delegate == "xnnpack" and "XnnpackExecutionProvider" in available:
            provider = "XnnpackExecutionProvider"
        self.path, self.ort, self.threads, self.provider = path, ort, threads, provider
        try:
            self.session = ort.InferenceSession(path, sess_options=self.session_options(), providers=[provider])
        except Exception as e:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelError("cannot load %s as an ONNX model: %s" % (os.path.basename(path), _one_line(e)))
        self.delegate = self.session.get_providers()[0]
        self._inputs = self.session.get_inputs()
        self._outputs = self.session.get_outputs()
        self._feed = {}
        self._out0 = None

    def session_options(self, profile_prefix=None):
        """The session options of this model (threads as asked); with a prefix, onnxruntime's profiler on."""
        options = self.ort.SessionOptions()
        options.log_severity_level = 3
        if self.threads is not None:
            options.intra_op_num_threads = self.threads
            options.inter_op_num_threads = 1
        if profile_prefix:
            options.enable_profiling = True
            options.profile_file_prefix = profile_prefix
        return options

    @staticmethod
    def _shape(arg):
        return [d if isinstance(d, int) and d > 0 else 1 for d in (arg.shape or [])]

    def input_info(self):
        return [_tensor_info(a.name, self._shape(a), _ONNX_DTYPES.get(a.type, "float32")) for a in self._inputs]

    def output_info(self):
        return [_tensor_info(a.name, self._shape(a), _ONNX_DTYPES.get(a.type, "float32")) for a in self._outputs]

    def set_inputs(self, arrays):
        self._feed = dict((a.name, v) for a, v in zip(self._inputs, arrays))

    def invoke(self):
        self._out0 = self.session.run([self._outputs[getattr(self, "_pick", 0)].name], self._feed)[0]

    def output0(self):
        """The selected output (the first unless ``select_output`` chose another)."""
        return self._out0

    def select_output(self, index):
        self._pick = index

    def delegation(self):
        return None, None, None


def _suffix(path):
    return os.path.splitext(path)[1].lower()


MODEL_FORMATS = {".tflite": ("tflite", TfliteModel), ".onnx": ("onnx", OnnxModel)}


def load_backends(paths, allowed_tflite=None):
    """The backends the given model files need: {"tflite": TfliteBackend|None, "onnx": OnnxBackend|None}."""
    suffixes = set(_suffix(p) for p in paths)
    return {"tflite": find_tflite(allowed_tflite) if ".tflite" in suffixes else None,
            "onnx": find_onnx() if ".onnx" in suffixes else None}


def open_model(path, backends, threads=None, delegate="xnnpack", delegate_options=None):
    """Load one model file.

    Raises:
        ModelError: the file is missing, of an unknown kind, or cannot be loaded.
    """
    kind = MODEL_FORMATS.get(_suffix(path))
    if kind is None:
        raise ModelError("unsupported model file %s: use .tflite or .onnx" % os.path.basename(path))
    if not os.path.isfile(path):
        raise ModelError("model file not found: %s" % path)
    fmt, cls = kind
    return cls(path, backends[fmt], threads, delegate, delegate_options or {})


def describe(paths, allowed_tflite=None):
    """Inputs and outputs of each model (or its error), without timing anything."""
    backends = load_backends(paths, allowed_tflite)
    out = []
    for path in paths:
        entry = {"model": path, "format": MODEL_FORMATS.get(_suffix(path), ("unknown",))[0], "runtime": None,
                 "inputs": None, "outputs": None, "error": None}
        try:
            model = open_model(path, backends, delegate="none" if _suffix(path) == ".tflite" else "xnnpack")
            entry.update(runtime=model.runtime, inputs=model.input_info(), outputs=model.output_info())
        except ModelError as e:
            entry["error"] = str(e)
        out.append(entry)
    return out


# ---------------------------------------------------------------- host facts

def _read(path):
    try:
        with open(path) as f:
            return f.read().strip()
    except (OSError, UnicodeDecodeError):
        return None


def _cpu_name():
    info = _read("/proc/cpuinfo") or ""
    for key in ("model name", "Hardware", "Model", "cpu model", "Processor"):
        for line in info.splitlines():
            if line.split(":")[0].strip() == key and ":" in line:
                return line.split(":", 1)[1].strip()
    tree = _read("/proc/device-tree/model")
    if tree:
        return tree.rstrip("\x00")
    return platform.processor() or platform.machine()


def _governors():
    found = sorted(set(filter(None, (_read(p) for p in
                                     glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")))))
    return ",".join(found) if found else None


def _temperatures():
    temps = {}
    for zone in sorted(glob.glob("/sys/class/thermal/thermal_zone*")):
        raw = _read(os.path.join(zone, "temp"))
        try:
            value = float(raw) / 1000.0
        except (TypeError, ValueError):
            continue
        name = _read(os.path.join(zone, "type")) or os.path.basename(zone)
        temps[name if name not in temps else os.path.basename(zone)] = round(value, 1)
    return temps


def _loadavg():
    try:
        return [round(v, 2) for v in os.getloadavg()]
    except (OSError, AttributeError):
        return None


def _emulator():
    """The user-mode emulator running this process (e.g. ``qemu-aarch64-static``), or None on real hardware.

    qemu-user answers /proc/self/exe and /proc/self/maps with the emulated program's view, but not the
    per-thread paths: /proc/thread-self/exe (and /proc/self/task/TID/exe) is the kernel's own record of the
    executable, which is the emulator whenever binfmt_misc or a user started the program through one. The
    QEMU_* variables qemu-user reads are a weaker hint, used when /proc gives no answer.
    """
    tid = getattr(threading, "get_native_id", lambda: None)()
    links = ["/proc/thread-self/exe"] + (["/proc/self/task/%d/exe" % tid] if tid else [])
    for link in links:
        try:
            name = os.path.basename(os.readlink(link))
        except (OSError, ValueError):
            continue
        if name.startswith("qemu-") or "binfmt" in name:
            return name
    hints = sorted(k for k in os.environ if k in ("QEMU_CPU", "QEMU_LD_PREFIX", "QEMU_GUEST_BASE"))
    return "qemu (%s set)" % hints[0] if hints else None


def host_facts_before():
    """Facts about the device taken before measuring (``emulated``: see ``_emulator``)."""
    temps = _temperatures()
    uname = platform.uname()
    emulator = _emulator()
    return {"cpu": _cpu_name(), "cores": os.cpu_count(), "machine": uname.machine,
            "emulated": emulator is not None, "emulator": emulator,
            "os": "%s %s" % (uname.system, uname.release), "python": platform.python_version(),
            "numpy": _numpy().__version__, "governor": _governors(),
            "temp_c_before": max(temps.values()) if temps else None, "temps_before": temps,
            "loadavg_before": _loadavg()}


def host_facts_after(host):
    """``host`` completed with the facts taken after measuring."""
    temps = _temperatures()
    host = dict(host)
    host.update(temp_c=max(temps.values()) if temps else None, temps_after=temps, loadavg_after=_loadavg())
    cpu = os.times()  # this process's CPU time vs its wall time: well under 1 thread's worth = it waited
    host.update(cpu_s=round(cpu.user + cpu.system, 3), wall_s=round(time.monotonic() - _STARTED, 3))
    return host


# ---------------------------------------------------------------- memory

PROC_STATUS = "/proc/self/status"
PROC_CLEAR_REFS = "/proc/self/clear_refs"
CLEAR_PEAK_RSS = "5"  # proc(5): writing 5 to clear_refs resets VmHWM to the current RSS (Linux >= 4.0)


def _status_kb(key):
    """A ``kB`` field of /proc/self/status (``VmRSS``, ``VmHWM``), or None."""
    text = _read(PROC_STATUS)
    for line in (text or "").splitlines():
        if line.startswith(key + ":"):
            parts = line.split()
            if len(parts) >= 2 and parts[1].isdigit():
                return int(parts[1])
    return None


def _mb(kb):
    return None if kb is None else round(kb / 1024.0, 3)


class MemoryProbe:
    """Resident memory of this process in MB: ``VmRSS``/``VmHWM`` from /proc/self/status where there is one,
    else only the process peak from ``getrusage`` (``ru_maxrss``), else nothing (with the reason)."""

    def __init__(self):
        self.proc = _status_kb("VmRSS") is not None
        self.peak_scope = "process"
        self.reason = None
        if not self.proc:
            self.reason = ("no /proc/self/status on %s: current resident memory is unknown, only the process "
                           "peak (ru_maxrss)" % platform.system())
            if self._ru_maxrss_kb() is None:
                self.reason = "no /proc/self/status and no getrusage on %s: memory is unknown" % platform.system()

    @property
    def source(self):
        return PROC_STATUS if self.proc else ("ru_maxrss" if self._ru_maxrss_kb() is not None else None)

    def rss(self):
        """Current resident memory (MB), or None."""
        return _mb(_status_kb("VmRSS")) if self.proc else None

    def peak(self):
        """Peak resident memory (MB) since the process started or since ``reset_peak``, or None."""
        if self.proc:
            return _mb(_status_kb("VmHWM"))
        return _mb(self._ru_maxrss_kb())

    def reset_peak(self):
        """Start a new peak (for the timed runs); ``peak_scope`` says whether that worked."""
        self.peak_scope = "process"
        if not self.proc:
            return
        try:
            with open(PROC_CLEAR_REFS, "w") as f:
                f.write(CLEAR_PEAK_RSS)
        except OSError:
            return
        self.peak_scope = "steady"

    @staticmethod
    def _ru_maxrss_kb():
        try:
            import resource
        except ImportError:  # Windows
            return None
        value = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return value / 1024.0 if platform.system() == "Darwin" else float(value)  # bytes on macOS, kB elsewhere


def memory_entry(baseline, loaded, peak, probe, models_in_process):
    """The ``memory_mb`` record of one model (see the module docstring)."""
    model = None if baseline is None or loaded is None else round(loaded - baseline, 3)
    return {"baseline": baseline, "loaded": loaded, "peak": peak, "model": model, "source": probe.source,
            "peak_scope": probe.peak_scope, "models_in_process": models_in_process, "reason": probe.reason}


# ---------------------------------------------------------------- measuring

def arm_watchdog(seconds):
    """Device-side backstop for a runner nobody hears any more: SIGALRM (default action: terminate the process,
    even inside native code) unless re-armed within ``seconds``; None or 0 disarms. No-op without SIGALRM."""
    import signal

    if hasattr(signal, "alarm"):
        signal.alarm(int(math.ceil(seconds)) if seconds else 0)


class Progress:
    """Throttled progress lines on stderr (or nothing); every call re-arms the ``--watchdog``, if any."""

    def __init__(self, enabled, paths, watchdog=None):
        self.enabled = enabled
        self.paths = paths
        self.last = {}
        self.watchdog = watchdog

    def __call__(self, index, phase, done, total, force=False):
        if self.watchdog:
            arm_watchdog(self.watchdog)
        if not self.enabled:
            return
        now = time.perf_counter()
        if not force and now - self.last.get(index, 0.0) < PROGRESS_INTERVAL_S:
            return
        self.last[index] = now
        line = json.dumps({"index": index, "model": self.paths[index], "phase": phase, "done": done,
                           "total": total})
        sys.stderr.write(PROGRESS_PREFIX + line + "\n")
        sys.stderr.flush()


class Slot:
    """One model's measurement state and result entry."""

    def __init__(self, index, path):
        self.index = index
        self.path = path
        self.model = None
        self.busy = 0.0
        self.times = []
        self.entry = {"model": path, "format": MODEL_FORMATS.get(_suffix(path), ("unknown",))[0],
                      "runtime": None, "threads": None, "delegate": None, "fully_delegated": None,
                      "delegate_nodes": None, "ops": None, "inputs": None, "outputs": None, "init_ms": None,
                      "first_ms": None, "warmup_ms": [], "warmup_runs": 0, "warmup_total_ms": 0.0,
                      "samples_ms": [], "accuracy": None,
                      "predictions": None, "memory_mb": None, "error": None}
        self.rss = (None, None)  # MB before loading and once the interpreter is built and its tensors allocated

    def fail(self, error):
        self.entry["error"] = _one_line(error)
        self.model = None


def _timed(fn):
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def _load_all(slots, backends, cfg, rng, progress, memory):
    for slot in slots:
        progress(slot.index, "load", 0, 1, force=True)
        try:
            baseline = memory.rss()
            t0 = time.perf_counter()
            model = open_model(slot.path, backends, cfg.threads, cfg.delegate, dict(cfg.delegate_options))
            slot.entry["init_ms"] = round((time.perf_counter() - t0) * 1e3, 6)
            slot.rss = (baseline, memory.rss())
            ops, nodes, full = model.delegation()
            slot.entry.update(runtime=model.runtime, threads=cfg.threads, delegate=model.delegate, ops=ops,
                              delegate_nodes=nodes, fully_delegated=full, inputs=model.input_info(),
                              outputs=model.output_info())
            model.set_inputs([_fill(d["dtype"], d["shape"], rng) for d in model.input_info()])
            slot.model = model
        except ModelError as e:
            slot.fail(e)
        except Exception as e:  # noqa: BLE001 - a runtime's own error type; keep the other models
            slot.fail("cannot load %s: %s: %s" % (os.path.basename(slot.path), type(e).__name__, e))
        progress(slot.index, "load", 1, 1, force=True)


def _invoke(slot):
    """Seconds for one inference of ``slot``; None (and the slot failed) when it raised."""
    try:
        return _timed(slot.model.invoke)
    except Exception as e:  # noqa: BLE001 - one model's failure must not stop the others
        slot.fail("inference failed: %s: %s" % (type(e).__name__, e))
        return None


def _first(slots, progress):
    for slot in slots:
        if slot.model is None:
            continue
        progress(slot.index, "first", 0, 1, force=True)
        dt = _invoke(slot)
        if dt is not None:
            slot.entry["first_ms"] = round(dt * 1e3, 6)
        progress(slot.index, "first", 1, 1, force=True)


def _rounds(slots, phase, done_fn, total_fn, progress):
    """Round-robin inferences (A B A B ...) until ``done_fn(slot, runs, wall)`` holds for every live slot.

    Each slot's raw samples (seconds) land in ``slot.times``; ``wall`` is the seconds since the phase began.
    The loop is kept lean: the timed call is ``invoke`` alone, bookkeeping is an append and two sums.
    Returns (wall seconds, timed seconds, runs) over the whole phase, for the loop overhead.
    """
    clock = time.perf_counter
    live = [s for s in slots if s.model is not None]
    for s in live:
        s.busy, s.times = 0.0, []
    wall0, timed, runs = clock(), 0.0, 0
    while live:
        for slot in tuple(live):
            invoke, times = slot.model.invoke, slot.times
            try:
                t0 = clock()
                invoke()
                dt = clock() - t0
            except Exception as e:  # noqa: BLE001 - one model's failure must not stop the others
                slot.fail("inference failed: %s: %s" % (type(e).__name__, e))
                live.remove(slot)
                continue
            times.append(dt)
            slot.busy += dt
            timed += dt
            runs += 1
            n = len(times)
            if done_fn(slot, n, clock() - wall0):
                progress(slot.index, phase, n, n, force=True)
                live.remove(slot)
            elif not runs & 15:
                progress(slot.index, phase, n, max(total_fn(slot, n), n + 1))
    return clock() - wall0, timed, runs


def _warmup(slots, cfg, progress):
    """Warm-up until every model ran ``warmup`` times and the phase lasted ``warmup_secs`` (wall time)."""
    _rounds(slots, "warmup", lambda s, n, wall: n >= cfg.warmup and wall >= cfg.warmup_secs,
            lambda s, n: cfg.warmup, progress)
    for slot in slots:
        if slot.model is not None:
            slot.entry.update(warmup_ms=[round(t * 1e3, 6) for t in slot.times[:WARMUP_SAMPLES_KEPT]],
                              warmup_runs=len(slot.times), warmup_total_ms=round(sum(slot.times) * 1e3, 6))


def _steady(slots, cfg, progress):
    """Steady state until ``runs`` and ``min_secs`` (own inference time) are reached, or ``max_secs`` spent."""
    result = _rounds(slots, "steady",
                     lambda s, n, wall: (n >= cfg.runs and s.busy >= cfg.min_secs) or s.busy >= cfg.max_secs,
                     lambda s, n: cfg.runs, progress)
    for slot in slots:
        slot.entry["samples_ms"] = [round(t * 1e3, 6) for t in slot.times]
    return result


def _timer_overhead_us(n=2000):
    def noop():
        return None
    best = min(_timed(noop) for _ in range(n))
    return best * 1e6


# ---------------------------------------------------------------- accuracy

def load_data(path):
    """The arrays of an accuracy .npz (``y`` and ``x`` and/or ``x_HxWxC``).

    Raises:
        FatalError: the file is unreadable or lacks ``y`` or any ``x`` array.
    """
    numpy = _numpy()
    try:
        with numpy.load(path, allow_pickle=False) as f:
            arrays = dict((k, f[k]) for k in f.files)
    except Exception as e:  # noqa: BLE001 - zipfile/ValueError/OSError all mean "not a usable .npz"
        raise FatalError("cannot read data file %s: %s" % (path, _one_line(e)))
    xs = [k for k in arrays if k == "x" or k.startswith("x_")]
    if "y" not in arrays or not xs:
        raise FatalError("data file %s needs arrays 'x' (N,H,W,C) and 'y' (N,); it has %s"
                         % (path, ", ".join(sorted(arrays)) or "none"))
    return arrays


def _pick_x(arrays, shape, path=None):
    """The model's own ``x@SHA`` (its file's SHA-256, 16 hex digits) if the file has one, else ``x_HxWxC``, else ``x``."""
    key = "x_" + "x".join(str(v) for v in shape[1:])
    x = arrays.get("x@" + _sha16(path)) if path and any(k.startswith("x@") for k in arrays) else None
    x = arrays.get(key, arrays.get("x")) if x is None else x
    if x is None or tuple(x.shape[1:]) != tuple(shape[1:]):
        have = ", ".join("%s %s" % (k, tuple(v.shape)) for k, v in sorted(arrays.items()) if k != "y")
        raise ModelError("data does not fit the model input %s (have %s)" % (list(shape), have))
    if len(x) != len(arrays["y"]):
        raise ModelError("data has %d inputs but %d labels" % (len(x), len(arrays["y"])))
    return x


def _sha16(path):
    import hashlib

    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()[:16]


def quantize_input(x, info):
    """``x`` (float in model units) converted to the input tensor's dtype, quantizing int8/uint8 inputs."""
    numpy = _numpy()
    dtype = numpy.dtype(info["dtype"])
    if dtype.kind == "f":
        return x.astype(dtype)
    if info["scale"] > 0:
        q = numpy.round(x.astype(numpy.float64) / info["scale"] + info["zero_point"])
        limits = numpy.iinfo(dtype)
        return numpy.clip(q, limits.min, limits.max).astype(dtype)
    return x.astype(dtype)


def label_output_index(outputs, name=None):
    """(index of the output labels belong to, or None; a note when None): the named one, the only one, or the
    one output that is a vector of class scores ([1, C], C >= 2); a detector's outputs are not."""
    names = [o.get("name") for o in outputs]
    if name is not None:
        if name not in names:
            raise ModelError("--label-output %r is not an output of this model; its outputs: %s"
                             % (name, ", ".join(map(str, names))))
        return names.index(name), None
    if len(outputs) == 1:
        return 0, None
    scores = [i for i, o in enumerate(outputs) if len(o.get("shape") or []) == 2 and (o["shape"][-1] or 0) >= 2]
    if len(scores) == 1:
        return scores[0], None
    why = "none of them is" if not scores else "%d of them are" % len(scores)
    return None, ("no accuracy: this model has %d outputs (%s) and %s a vector of class scores; name the labelled "
                  "one with --label-output NAME" % (len(outputs), ", ".join(map(str, names)), why))


def _accuracy(slot, arrays, progress, label_output=None):
    numpy = _numpy()
    model = slot.model
    info = slot.entry["inputs"]
    if len(info) != 1:
        raise ModelError("accuracy needs a model with one input; this one has %d" % len(info))
    index, note = label_output_index(slot.entry["outputs"], label_output)
    if index is None:
        slot.entry["accuracy_note"] = note
        return
    model.select_output(index)
    shape = info[0]["shape"]
    x = quantize_input(_pick_x(arrays, shape, slot.path), info[0])
    y = _labels(arrays["y"], slot.entry["outputs"][index:index + 1])
    batch = max(int(shape[0]), 1)
    preds = []
    for start in range(0, len(x), batch):
        chunk = x[start:start + batch]
        if len(chunk) < batch:
            chunk = numpy.concatenate([chunk, numpy.repeat(chunk[-1:], batch - len(chunk), axis=0)])
        model.set_inputs([chunk.reshape(shape)])
        model.invoke()
        out = numpy.asarray(model.output0()).reshape(batch, -1)
        preds.extend(int(v) for v in out.argmax(axis=1)[:min(batch, len(x) - start)])
        progress(slot.index, "accuracy", len(preds), len(x), force=len(preds) == len(x))
    slot.entry["predictions"] = preds
    slot.entry["accuracy"] = float(numpy.mean(numpy.asarray(preds) == y)) if len(y) else None


def _labels(y, outputs):
    """The labels as int64, checked against the classes of the first output (its last dimension).

    Raises:
        ModelError: labels that are not whole numbers, negative, or not below the number of classes.
    """
    numpy = _numpy()
    y = numpy.asarray(y).reshape(-1)
    if y.dtype.kind not in "iub" and not (y.dtype.kind == "f" and numpy.all(numpy.isfinite(y))
                                           and numpy.all(y == numpy.round(y))):
        raise ModelError("labels must be whole class numbers; 'y' holds %s values" % y.dtype)
    classes = int(outputs[0]["shape"][-1]) if outputs and outputs[0]["shape"] else 0
    if len(y) and classes > 1 and (y.min() < 0 or y.max() >= classes):
        raise ModelError("labels must lie in [0, %d) for this model's %d classes; 'y' holds %s to %s"
                         % (classes, classes, y.min(), y.max()))
    return y.astype(numpy.int64)


def _accuracy_all(slots, arrays, progress, label_output=None):
    for slot in slots:
        if slot.model is None:
            continue
        try:
            _accuracy(slot, arrays, progress, label_output)
        except ModelError as e:
            slot.fail(e)
        except Exception as e:  # noqa: BLE001 - keep the other models
            slot.fail("accuracy run failed: %s: %s" % (type(e).__name__, e))


# ---------------------------------------------------------------- profile

PROFILE_WARMUP_RUNS = 2
PROFILE_MAX_RUNS = 100
PROFILE_MIN_RUNS = 10
KERNEL_SUFFIX = "_kernel_time"


def _trace_shapes(items):
    """``[{"float": [1, 3, 16, 16]}, ...]`` of an onnxruntime trace as ``[[1, 3, 16, 16], ...]``."""
    shapes = []
    for item in items or []:
        values = list(item.values()) if isinstance(item, dict) else []
        shapes.append([int(v) for v in values[0]] if values and isinstance(values[0], list) else None)
    return shapes


def parse_onnx_trace(events, skip_runs):
    """Per-node microseconds per run of an onnxruntime profile trace, after its first ``skip_runs`` runs: the
    interquartile mean over the runs of each node's time in a run (``_trimmed_mean``: robust to runs the
    machine interrupted, and unlike a median not stuck to the whole microseconds the trace counts in).

    Returns ``{"runs": N, "run_us": median model_run, "run_mean_us": its interquartile mean, "between_us": the
    interquartile mean over runs of a run's model_run less its nodes' times (per run: a wait for a CPU inside a
    node stays the node's), "gap_us": the same of the time between one node's end and the next one's start,
    "between_min_us": the least of those, "nodes": [{"name", "type", "provider", "us", "min_us": its fastest run,
    "input_shapes", "output_shapes"}, ...]}`` with nodes in the
    order they first ran.
    """
    import bisect

    runs = sorted((e for e in events if e.get("cat") == "Session" and e.get("name") == "model_run"),
                  key=lambda e: e["ts"])[skip_runs:]
    if not runs:
        return {"runs": 0, "run_us": None, "run_mean_us": None, "between_us": None, "gap_us": None, "nodes": []}
    starts = [r["ts"] for r in runs]
    spans = [[] for _ in runs]
    nodes = {}
    for e in events:
        name = str(e.get("name", ""))
        if e.get("cat") != "Node" or not name.endswith(KERNEL_SUFFIX) or e.get("ts", -1) < starts[0]:
            continue
        args = e.get("args") or {}
        node = nodes.setdefault(name[:-len(KERNEL_SUFFIX)], {
            "name": name[:-len(KERNEL_SUFFIX)], "type": args.get("op_name"), "provider": args.get("provider"),
            "us": [0.0] * len(runs), "input_shapes": _trace_shapes(args.get("input_type_shape")),
            "output_shapes": _trace_shapes(args.get("output_type_shape"))})
        run = bisect.bisect_right(starts, e["ts"]) - 1
        node["us"][run] += float(e.get("dur", 0))
        spans[run].append((float(e["ts"]), float(e["ts"]) + float(e.get("dur", 0))))
    for node in nodes.values():
        node["min_us"] = min(node["us"])
        node["us"] = round(_trimmed_mean(node["us"]), 3)
    durations = [float(r["dur"]) for r in runs]
    between = [d - sum(b - a for a, b in s) for d, s in zip(durations, spans)]
    return {"runs": len(runs), "run_us": round(_median(durations), 3),
            "run_mean_us": round(_trimmed_mean(durations), 3), "between_us": round(_trimmed_mean(between), 3),
            "between_min_us": round(min(between), 3),
            "gap_us": round(_trimmed_mean([_gaps(sorted(s)) for s in spans]), 3), "nodes": list(nodes.values())}


def _gaps(spans):
    """Microseconds between one node's end and the next one's start, summed over a run's (start, end) spans."""
    return sum(max(b[0] - a[1], 0.0) for a, b in zip(spans, spans[1:]))


def _median(values):
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else (ordered[mid - 1] + ordered[mid]) / 2.0


def _trimmed_mean(values):
    """The interquartile mean: without the lowest and highest quarter (at least one each side from 3 values on),
    so a node that a preemption hit in up to a quarter of the runs keeps its own time."""
    ordered = sorted(values)
    cut = max(1, len(ordered) // 4) if len(ordered) >= 3 else 0
    kept = ordered[cut:len(ordered) - cut]
    return sum(kept) / len(kept)


# a chain of trivial nodes, to measure what onnxruntime's profiler adds inside each node's own time
CALIBRATION_NODES = 40
CALIBRATION_WIDTH = 8


def _pb_varint(value):
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _pb(field, payload):
    """A protobuf field: an int as a varint, bytes or str length-delimited."""
    if isinstance(payload, int):
        return _pb_varint(field << 3) + _pb_varint(payload)
    payload = payload.encode() if isinstance(payload, str) else payload
    return _pb_varint(field << 3 | 2) + _pb_varint(len(payload)) + payload


def onnx_chain(nodes, inputs=1, width=CALIBRATION_WIDTH):
    """An ONNX model (IR 7, opset 13) of ``nodes`` trivial nodes in a chain on a [1, width] float tensor ``x``
    (Neg; with ``inputs`` > 1, Sum of the previous tensor that many times), written as protobuf bytes here (a
    device may have onnxruntime without the ``onnx`` package)."""
    shape = _pb(2, _pb(1, _pb(1, 1)) + _pb(1, _pb(1, width)))  # Tensor.shape: dims 1 x width
    value_type = _pb(2, _pb(1, _pb(1, 1) + shape))  # ValueInfo.type.tensor_type: FLOAT
    names = ["x"] + ["t%d" % i for i in range(1, nodes)] + ["y"]
    graph = b"".join(_pb(1, _pb(1, names[i]) * inputs + _pb(2, names[i + 1]) + _pb(3, "n%d" % i)
                         + _pb(4, "Neg" if inputs == 1 else "Sum")) for i in range(nodes))
    graph += _pb(2, "edgesep_calibration") + _pb(11, _pb(1, "x") + value_type) + _pb(12, _pb(1, "y") + value_type)
    return _pb(1, 7) + _pb(7, graph) + _pb(8, _pb(2, 13))


def profile_onnx(model, cfg):
    """Per-node times of an .onnx model from onnxruntime's profiler, in a second session (same provider and
    threads, same inputs) apart from the timed runs: a few warm-up runs, then ``runs`` (10..100) or until
    ``max_secs``, each profiled run followed by one run of the unprofiled session (``whole``: the whole under
    the same machine state, see ``time_whole``). Returns ``parse_onnx_trace``'s record plus ``whole``,
    ``calibration`` (``profiler_node_cost``) and ``cost_ms`` (the profile's own wall time)."""
    import shutil
    import tempfile

    t0 = time.perf_counter()
    folder = tempfile.mkdtemp(prefix="edgesep-ort-profile-")
    try:
        session = model.ort.InferenceSession(model.path, providers=[model.provider],
                                             sess_options=model.session_options(os.path.join(folder, "trace")))
        timed = _alternate([lambda: session.run(None, model._feed), model.invoke], cfg)  # noqa: SLF001
        with open(session.end_profiling()) as f:
            events = json.load(f)
        record = parse_onnx_trace(events, PROFILE_WARMUP_RUNS)
        record["whole"] = _whole_record(*timed[1], one_thread=cfg.threads == 1)
        record["calibration"] = _calibration(model, cfg, folder)
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    record.update(method="onnxruntime profiler", cost_ms=round((time.perf_counter() - t0) * 1e3, 3))
    return record


# profiler_node_cost's record per (provider, threads): it depends on the device, runtime and session options, not
# on the model, so the ONNX models of one runner process share one measurement
_CALIBRATIONS = {}


def _calibration(model, cfg, folder):
    key = (model.provider, model.threads)
    if key not in _CALIBRATIONS:
        try:
            _CALIBRATIONS[key] = profiler_node_cost(model, cfg, folder)
        except Exception as e:  # noqa: BLE001 - the raw times stand, said to be uncorrected
            _CALIBRATIONS[key] = {"error": "%s: %s" % (type(e).__name__, _one_line(e))}
    return _CALIBRATIONS[key]


def time_whole(model, cfg):
    """The whole model timed again after the timed runs (``--profile`` on a .tflite model), each run told
    preempted or not: the whole a per-op profile (medians of short runs, which a busy machine seldom
    preempts) is checked against. ``_whole_record``'s dict."""
    t0 = time.perf_counter()
    record = _whole_record(*_alternate([model.invoke], cfg)[0], one_thread=cfg.threads == 1)
    record["cost_ms"] = round((time.perf_counter() - t0) * 1e3, 3)  # part of the profile's own cost
    return record


def _whole_record(times, clean, cpu, one_thread=False):
    """``{"us": median, "min_us": the fastest run, "clean_us": median of the runs no other process preempted
    (None below 3 such runs or where preemptions cannot be counted), "preempted": share of the runs preempted,
    "runs", "cpu_us": median CPU time of this thread per run (only with one thread, when the runtime computes
    in the calling thread: the work without the waits for a CPU; under qemu-user the host thread's, translation
    included)}``."""
    counted = clean is not None
    clean = clean or []
    return {"us": round(_median(times) * 1e6, 3), "runs": len(times), "min_us": round(min(times) * 1e6, 3),
            "cpu_us": round(_median(cpu) * 1e6, 3) if one_thread and cpu else None,
            "clean_us": round(_median(clean) * 1e6, 3) if len(clean) >= 3 else None,
            "preempted": round(1 - len(clean) / float(len(times)), 4) if counted and times else None}


def _preemption_counter():
    """A function giving this process's involuntary context switches so far (the kernel took a CPU from one
    of its threads), or None where ``resource`` is missing."""
    try:
        import resource
    except ImportError:
        return None
    return lambda: resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw


def _alternate(calls, cfg):
    """Run ``calls`` in turn: warm-up rounds, then ``runs`` (10..100) or until ``max_secs``. Returns per call
    (seconds per run, seconds of the runs not preempted or None where that cannot be told, this thread's CPU
    seconds per run), after the warm-up."""
    want = max(PROFILE_MIN_RUNS, min(cfg.runs, PROFILE_MAX_RUNS))
    count = _preemption_counter()
    times = [([], [] if count else None, []) for _ in calls]
    done, started = 0, time.perf_counter()
    while done < PROFILE_WARMUP_RUNS + want and (done < PROFILE_WARMUP_RUNS + PROFILE_MIN_RUNS
                                                 or time.perf_counter() - started < cfg.max_secs):
        for call, (kept, clean, cpu) in zip(calls, times):
            before = count() if count else 0
            c0, t0 = time.thread_time(), time.perf_counter()
            call()
            dt = time.perf_counter() - t0
            if done >= PROFILE_WARMUP_RUNS:
                kept.append(dt)
                cpu.append(time.thread_time() - c0)
                if count and count() == before:
                    clean.append(dt)
        done += 1
    return times


def profiler_node_cost(model, cfg, folder):
    """What onnxruntime's profiler adds inside each node's traced time, measured on this device, runtime and
    session options: chains of ``CALIBRATION_NODES`` trivial nodes of 1 and of 9 inputs (the profiler writes
    each input's shape: a QLinearConv has 9), each profiled (a node's traced time) and unprofiled (the cost of
    one more node: the chain against a single node, run in turn). Returns ``{"nodes", "chains": [{"inputs",
    "profiled_us", "unprofiled_us", "cost_us", "gap_us"}, ...], "cost_us", "cost_us_per_input", "gap_us",
    "gap_us_per_input"}``: a node of k inputs costs ``cost_us + (k - 1) * cost_us_per_input`` inside its traced
    time, and ``gap_us + (k - 1) * gap_us_per_input`` after it (the gap to the next profiled node: the profiler
    writing its record; the executor's own work a trivial node pays is in ``unprofiled_us`` already)."""
    chains = [_chain_cost(model, cfg, folder, inputs) for inputs in (1, 9)]
    return {"nodes": CALIBRATION_NODES, "chains": chains, "cost_us": chains[0]["cost_us"],
            "cost_us_per_input": round((chains[1]["cost_us"] - chains[0]["cost_us"]) / 8.0, 4),
            "gap_us": chains[0]["gap_us"], "gap_us_per_input": round((chains[1]["gap_us"] - chains[0]["gap_us"]) / 8.0, 4)}


def _chain_cost(model, cfg, folder, inputs):
    """One calibration chain's profiled and unprofiled microseconds per node (see ``profiler_node_cost``)."""
    numpy = _numpy()
    chain, single = onnx_chain(CALIBRATION_NODES, inputs), onnx_chain(1, inputs)

    def session(data, prefix=None):
        return model.ort.InferenceSession(data, providers=[model.provider], sess_options=model.session_options(prefix))

    profiled = session(chain, os.path.join(folder, "calibration%d" % inputs))
    long_chain, short_chain = session(chain), session(single)
    feed = {"x": numpy.zeros((1, CALIBRATION_WIDTH), numpy.float32)}
    _alternate([lambda: profiled.run(None, feed)], cfg)
    (long_s, _, _), (short_s, _, _) = _alternate([lambda: long_chain.run(None, feed),
                                                  lambda: short_chain.run(None, feed)], cfg)
    with open(profiled.end_profiling()) as f:
        trace = parse_onnx_trace(json.load(f), PROFILE_WARMUP_RUNS)
    nodes = trace["nodes"]
    if len(nodes) != CALIBRATION_NODES:
        raise RuntimeError("the calibration chain ran as %d nodes, not %d" % (len(nodes), CALIBRATION_NODES))
    traced = sum(n["us"] for n in nodes) / len(nodes)
    unprofiled = (_median(long_s) - _median(short_s)) * 1e6 / (CALIBRATION_NODES - 1)
    return {"inputs": inputs, "profiled_us": round(traced, 3), "unprofiled_us": round(unprofiled, 3),
            "cost_us": round(traced - unprofiled, 3), "gap_us": round(trace["gap_us"] / (CALIBRATION_NODES - 1), 3)}


def _profile_all(slots, cfg, progress):
    """``--profile``: each .onnx model profiled per node (``profile_onnx``), each .tflite model's whole timed
    again (``time_whole``; its ops are timed by the host as single-op models): ``profile`` in its entry."""
    for slot in slots:
        if slot.model is None:
            continue
        progress(slot.index, "profile", 0, 1, force=True)
        onnx = slot.entry["format"] == "onnx"
        try:
            slot.entry["profile"] = profile_onnx(slot.model, cfg) if onnx else {"whole": time_whole(slot.model, cfg)}
        except Exception as e:  # noqa: BLE001 - a failed profile loses only the profile
            slot.entry["profile"] = {"error": "%s failed: %s: %s" % ("onnxruntime profiling" if onnx else
                                                                    "timing the whole again", type(e).__name__,
                                                                    _one_line(e))}
        progress(slot.index, "profile", 1, 1, force=True)


# ---------------------------------------------------------------- main

def measure(paths, cfg, progress=None):
    """Measure every model with ``cfg`` (a ``RunConfig``; see the module docstring); returns the JSON document."""
    numpy = _numpy()
    backends = load_backends(paths)
    arrays = load_data(cfg.data) if cfg.data else None
    progress = progress or Progress(False, paths)
    host = host_facts_before()
    rng = numpy.random.default_rng(cfg.seed)
    slots = [Slot(i, p) for i, p in enumerate(paths)]
    memory = MemoryProbe()
    _load_all(slots, backends, cfg, rng, progress, memory)
    _first(slots, progress)
    _warmup(slots, cfg, progress)
    startup_peak = memory.peak()
    memory.reset_peak()
    wall, timed, runs = _steady(slots, cfg, progress)
    peak = memory.peak()
    for slot in slots:
        slot.entry["memory_mb"] = dict(memory_entry(*slot.rss, peak, memory, len(paths)), peak_startup=startup_peak)
    if arrays is not None:
        _accuracy_all(slots, arrays, progress, cfg.label_output)
    if cfg.profile:
        _profile_all(slots, cfg, progress)
    for slot in slots:
        if slot.entry["error"] is not None:
            slot.entry["samples_ms"] = slot.entry["samples_ms"] or None
    return {"runner_version": RUNNER_VERSION,
            "runtimes": dict((k, b.label if b else None) for k, b in backends.items()),
            "config": cfg.to_dict(), "host": host_facts_after(host),
            "overhead": {"timer_us": _timer_overhead_us(),
                         "loop_us": ((wall - timed) / runs * 1e6) if runs else None},
            "results": [s.entry for s in slots]}


def _number(kind, low=None, above=None):
    """An argparse type: a finite ``kind`` number, >= ``low`` / > ``above`` when given."""
    def parse(text):
        value = kind(text)
        if not math.isfinite(value):
            raise argparse.ArgumentTypeError("must be a finite number")
        if low is not None and value < low:
            raise argparse.ArgumentTypeError("must be >= %s" % low)
        if above is not None and value <= above:
            raise argparse.ArgumentTypeError("must be > %s" % above)
        return value
    return parse


def _key_value(text):
    if "=" not in text:
        raise argparse.ArgumentTypeError("expected KEY=VALUE")
    return tuple(text.split("=", 1))


def build_parser():
    """The runner's argument parser (see the module docstring); defaults are ``RunConfig``'s."""
    d = RunConfig()
    p = argparse.ArgumentParser(prog="runner.py", description="edgesep on-device runner")
    p.add_argument("models", nargs="+", metavar="MODEL")
    p.add_argument("--threads", type=_number(int, low=1), default=d.threads)
    p.add_argument("--runs", type=_number(int, low=1), default=d.runs)
    p.add_argument("--warmup", type=_number(int, low=0), default=d.warmup)
    p.add_argument("--warmup-secs", type=_number(float, low=0), default=d.warmup_secs)
    p.add_argument("--min-secs", type=_number(float, low=0), default=d.min_secs)
    p.add_argument("--max-secs", type=_number(float, above=0), default=d.max_secs)
    p.add_argument("--delegate", default=d.delegate)
    p.add_argument("--delegate-option", type=_key_value, action="append", default=[])
    p.add_argument("--data", default=d.data)
    p.add_argument("--seed", type=int, default=d.seed)
    p.add_argument("--out", default=None)
    p.add_argument("--progress", action="store_true")
    p.add_argument("--json-errors", action="store_true")
    p.add_argument("--describe", action="store_true")
    p.add_argument("--watchdog", type=_number(float, above=0), default=None)
    p.add_argument("--profile", action="store_true")
    p.add_argument("--label-output", default=None)
    return p


def parse_args(argv=None):
    """(RunConfig, argparse namespace) of a runner command line; bad arguments exit 2 with argparse's message."""
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        cfg = RunConfig(threads=args.threads, runs=args.runs, warmup=args.warmup, warmup_secs=args.warmup_secs,
                        min_secs=args.min_secs, max_secs=args.max_secs, delegate=args.delegate,
                        delegate_options=tuple(args.delegate_option), data=args.data, seed=args.seed,
                        profile=args.profile, label_output=args.label_output)
    except ValueError as e:
        parser.error(str(e))
    return cfg, args


def _write(document, out, stream):
    text = json.dumps(document, allow_nan=False, default=str)
    if out:
        tmp = "%s.tmp-%d" % (out, os.getpid())
        with open(tmp, "w") as f:
            f.write(text + "\n")
        os.replace(tmp, out)
    else:
        stream.write(text + "\n")
        stream.flush()


def main(argv=None):
    """Run the runner; returns the exit code (see the module docstring)."""
    cfg, args = parse_args(argv)
    # Native libraries may print to stdout: keep the real stdout for the JSON and send the rest to stderr.
    sys.stdout.flush()
    json_stream = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)
    try:
        if args.describe:
            document = {"runner_version": RUNNER_VERSION, "results": describe(args.models)}
        else:
            arm_watchdog(args.watchdog)
            document = measure(args.models, cfg, Progress(args.progress, args.models, args.watchdog))
            arm_watchdog(None)
        _write(document, args.out, json_stream)
        return 0
    except FatalError as e:
        sys.stderr.write(ERROR_PREFIX + _one_line(e) + "\n")
        if args.json_errors:
            json_stream.write(json.dumps({"error": _one_line(e), "fatal": True, "exit_code": e.exit_code}) + "\n")
        return e.exit_code
    finally:
        json_stream.flush()


if __name__ == "__main__":
    sys.exit(main())
