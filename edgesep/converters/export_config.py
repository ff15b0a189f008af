"""What ``edgesep export`` produces: :class:`ExportConfig`, the one owner of every export option rule.

The valid values of the options (precisions, int8 I/O types, ReLU6 modes) are spelled here once; the CLI,
the TFLite writer and equalization read them from here. Imports nothing heavy (the CLI imports it at start).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Optional

from edgesep.errors import UsageError

PRECISIONS = ("float32", "float16", "int8", "int16x8")
QUANTIZED = ("int8", "int16x8")  # calibrated precisions
IO_DTYPES = ("int8", "uint8", "float32")
RELU6_MODES = ("clip", "replace", "keep")
OPSETS = range(9, 22)
KEEP_PRECISIONS = ("float", "int16")  # how --keep-float keeps its ops: float32, or int16 activations (int8 weights)
PTQ_METHODS = ("bias-correction", "adaround")  # in their order of application (edgesep.converters.ptq)


def tflite_key(precision: str) -> str:
    """The writer key of a TFLite precision (``float16`` -> ``tflite:fp16``)."""
    return "tflite:" + ("fp16" if precision == "float16" else precision)


@dataclasses.dataclass(frozen=True)
class ExportConfig:
    """What ``export`` produces. Invalid values and options that cannot go together raise ``UsageError``.

    Attributes:
        precisions: TFLite precisions to write (``float32``, ``float16``, ``int8``, ``int16x8``: 16-bit
            activations with 8-bit weights).
        onnx: also write ``model.onnx`` (and, with int8, ``model_int8.onnx``: static QDQ quantization).
        per_channel: int8 weights per output channel (False: per tensor; needs a quantized precision).
        io_dtype: int8 model input/output type (``int8``, ``uint8``, ``float32``).
        calib_samples: training images used to calibrate int8.
        equalize: cross-layer equalization + bias absorption before quantizing (needs a quantized precision).
        relu6: how equalization treats ReLU6 between two convolutions: ``clip`` (exact, per-channel caps),
            ``replace`` (ReLU instead: no extra op, a slightly different function) or ``keep`` (skip).
        equalize_guard: with ``equalize``, leave out links (or all of them) where the equalized int8 model is
            less accurate on the evaluation data than the int8 model without equalization
            (``edgesep.converters.guard``).
        opset: ONNX opset.
        seed: seed for drawing calibration images.
        edgetpu: also compile the int8 model with ``edgetpu_compiler`` (needs int8 with integer I/O).
        keep_float: ops (Keras layer names) the int8 models keep in float, or ``("auto",)``: the fewest that
            meet the target (``edgesep.converters.keep_float``). Needs int8 with float32 I/O.
        target_sqnr_db, target_agreement: auto's target, output SQNR in dB (default 30) or top-1 agreement.
        keep_precision: how the kept ops run: ``float`` (float32 between DEQUANTIZE/QUANTIZE) or ``int16``
            (16-bit activations, 8-bit weights, by ai-edge-quantizer's per-op recipes; ``edgesep.converters.keep_int16``).
        writers: more registered writers to run (``edgesep.converters.writers`` keys), after the ones the
            other options ask for: a new kind of artifact is one ``register_writer`` call, asked for by key.
        ptq: post-training methods after folding (and CLE) for the int8 models: ``bias-correction``,
            ``adaround`` (``edgesep.converters.ptq``).
    """

    precisions: tuple[str, ...] = ("float32",)
    onnx: bool = True
    per_channel: bool = True
    io_dtype: str = "int8"
    calib_samples: int = 200
    equalize: bool = False
    relu6: str = "clip"
    equalize_guard: bool = True
    opset: int = 17
    seed: int = 0
    edgetpu: bool = False
    keep_float: tuple[str, ...] = ()
    target_sqnr_db: Optional[float] = None
    target_agreement: Optional[float] = None
    keep_precision: str = "float"
    ptq: tuple[str, ...] = ()
    writers: tuple[str, ...] = ()

    def __post_init__(self):
        object.__setattr__(self, "precisions", tuple(dict.fromkeys(self.precisions)))
        object.__setattr__(self, "writers", tuple(dict.fromkeys(self.writers)))
        bad = [p for p in self.precisions if p not in PRECISIONS]
        if bad:
            raise UsageError(f"unknown precision {bad[0]!r}; valid: {', '.join(PRECISIONS)}")
        if not self.precisions and not self.onnx:
            raise UsageError("nothing to export: no TFLite precision and no ONNX")
        for name, value, valid in (("io_dtype", self.io_dtype, IO_DTYPES), ("relu6 mode", self.relu6, RELU6_MODES)):
            if value not in valid:
                raise UsageError(f"unknown {name} {value!r}; valid: {', '.join(valid)}")
        if self.calib_samples < 1:
            raise UsageError(f"calib_samples must be >= 1, got {self.calib_samples}")
        if self.opset not in OPSETS:
            raise UsageError(f"unsupported ONNX opset {self.opset}; use {OPSETS.start}..{OPSETS.stop - 1}")
        if not self.quantized and (not self.per_channel or self.equalize):
            raise UsageError("--per-tensor and --equalize shape the int8 model; add --int8 (or --int16x8)")
        if self.edgetpu and "int8" not in self.precisions:
            raise UsageError("--edgetpu compiles the int8 model; add --int8")
        if self.edgetpu and self.io_dtype == "float32":
            raise UsageError("--edgetpu needs integer input/output: use --io-dtype int8 or uint8")
        self._check_keep_float()
        self._check_ptq()

    def _check_ptq(self) -> None:
        object.__setattr__(self, "ptq", tuple(m for m in PTQ_METHODS if m in self.ptq) + tuple(
            m for m in self.ptq if m not in PTQ_METHODS))
        bad = [m for m in self.ptq if m not in PTQ_METHODS]
        if bad:
            raise UsageError(f"unknown --ptq method {bad[0]!r}; valid: {', '.join(PTQ_METHODS)}")
        if self.ptq and not self.quantized:
            raise UsageError("--ptq shapes the int8 model; add --int8 (or --int16x8)")

    def _check_keep_float(self) -> None:
        object.__setattr__(self, "keep_float", tuple(self.keep_float))
        auto = self.keep_float == ("auto",)
        if (self.target_sqnr_db is not None or self.target_agreement is not None) and not auto:
            raise UsageError("--target-sqnr/--target-agreement are the goal of --keep-float auto; add it")
        if self.keep_precision not in KEEP_PRECISIONS:
            raise UsageError(f"unknown --keep-precision {self.keep_precision!r}; valid: {', '.join(KEEP_PRECISIONS)}")
        if self.keep_precision != "float" and not self.keep_float:
            raise UsageError(f"--keep-precision {self.keep_precision} says how --keep-float keeps its ops; "
                             "add --int8 --keep-float NAME[,NAME...]|auto")
        if not self.keep_float:
            return
        if "int8" not in self.precisions:
            raise UsageError("--keep-float shapes the int8 model; add --int8")
        if self.io_dtype != "float32" or self.edgetpu:
            raise UsageError("--keep-float writes a model with float32 input/output (ops run in float inside): "
                             "use --io-dtype float32, without --edgetpu")
        if self.target_sqnr_db is not None and self.target_agreement is not None:
            raise UsageError("give one target: --target-sqnr or --target-agreement")
        if self.target_agreement is not None and not 0 < self.target_agreement <= 1:
            raise UsageError(f"--target-agreement is a fraction in (0, 1], got {self.target_agreement}")
        if auto and self.target_agreement is None and self.target_sqnr_db is None:
            object.__setattr__(self, "target_sqnr_db", 30.0)

    @classmethod
    def from_options(cls, *, int8: bool = False, fp16: bool = False, per_tensor: bool = False, equalize: bool = False,
                     relu6: Optional[str] = None, no_guard: bool = False, io_dtype: Optional[str] = None,
                     no_onnx: bool = False, calib_samples: int = 200, edgetpu: bool = False,
                     int16x8: bool = False, keep_float: Optional[str] = None,
                     target_sqnr: Optional[float] = None, target_agreement: Optional[float] = None,
                     keep_precision: Optional[str] = None, ptq: Optional[str] = None,
                     writers: tuple[str, ...] = ()) -> "ExportConfig":
        """The config of ``edgesep export``'s options; every rule between them is checked here (UsageError)."""
        if relu6 and not equalize:
            raise UsageError("--relu6 says how --equalize treats ReLU6; add --equalize")
        if no_guard and not equalize:
            raise UsageError("--no-guard switches off the accuracy guard of --equalize; add --equalize")
        names = _names(keep_float)
        io_dtype = io_dtype or ("float32" if names else "int8")
        precisions = (("float32",) + (("float16",) if fp16 else ()) + (("int8",) if int8 else ())
                      + (("int16x8",) if int16x8 else ()))
        return cls(precisions=precisions, onnx=not no_onnx, per_channel=not per_tensor, io_dtype=io_dtype,
                   calib_samples=calib_samples, equalize=equalize, relu6=relu6 or "clip",
                   equalize_guard=not no_guard, edgetpu=edgetpu, keep_float=names, target_sqnr_db=target_sqnr,
                   target_agreement=target_agreement, keep_precision=keep_precision or "float", ptq=tuple(m.strip() for m in (ptq or "").split(",") if m.strip()),
                   writers=tuple(writers))

    @property
    def quantized(self) -> tuple[str, ...]:
        """The calibrated precisions asked for (``int8``, ``int16x8``)."""
        return tuple(p for p in self.precisions if p in QUANTIZED)

    def check_data(self, has_data: bool) -> None:
        """The one rule between the config and the data: int8/int16x8 need images to calibrate (UsageError).
        The built-in network always has its digits; a Keras model needs ``--data`` (``dataset=`` in Python)."""
        if self.quantized and not has_data:
            raise UsageError(f"--{self.quantized[0]} with --model needs --data to calibrate (a folder of images "
                             "or a .npz)")

    def artifact_keys(self) -> tuple[str, ...]:
        """The writers this config asks for, in the order they run (``edgesep.converters.writers``)."""
        keys = [tflite_key(p) for p in self.precisions]
        keys += ["onnx:float32"] if self.onnx else []
        keys += ["onnx:int8"] if self.onnx and "int8" in self.precisions else []
        keys += ["edgetpu"] if self.edgetpu else []
        return tuple(dict.fromkeys(keys + list(self.writers)))

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["precisions"] = list(self.precisions)
        d["keep_float"] = list(self.keep_float)
        d["ptq"] = list(self.ptq)
        for name, default in (("writers", ()), ("keep_precision", "float")):
            if getattr(self, name) == default:  # only when asked: export keys (compare --resume) of every other
                d.pop(name)                     # config stay as they were
        if self.writers:
            d["writers"] = list(self.writers)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "ExportConfig":
        return cls(**{**d, "precisions": tuple(d.get("precisions", ("float32",))),
                      "keep_float": tuple(d.get("keep_float", ())), "ptq": tuple(d.get("ptq", ())),
                      "writers": tuple(d.get("writers", ()))})


def _names(value: Optional[str]) -> tuple[str, ...]:
    """``--keep-float``'s value as names (``("auto",)`` for auto)."""
    if value is None:
        return ()
    names = tuple(n.strip() for n in value.split(","))
    if not all(names):
        raise UsageError(f"--keep-float {value!r}: an empty op name; give NAME[,NAME...] or auto")
    if "auto" in names and len(names) > 1:
        raise UsageError("--keep-float auto chooses the ops itself; give auto alone, or op names")
    return tuple(dict.fromkeys(names))  # a name given twice is kept once
