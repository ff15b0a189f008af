"""edgesep: SeparableConv2D vs MobileNet's split block, from Keras to a measured edge deployment.

The public API is re-exported here lazily, so ``import edgesep`` never imports TensorFlow.
"""
from __future__ import annotations

import importlib

__version__ = "0.1.0"

_API = {
    "separable_block": "edgesep.blocks",
    "register_block": "edgesep.blocks",
    "list_blocks": "edgesep.blocks",
    "build_block": "edgesep.blocks",
    "build_model": "edgesep.models",
    "ModelConfig": "edgesep.models",
    "load_dataset": "edgesep.data",
    "Dataset": "edgesep.data",
    "DataError": "edgesep.data",
    "train_builtin": "edgesep.train",
    "fold_batchnorm": "edgesep.converters.fold",
    "fold_batchnorm_with_report": "edgesep.converters.fold",
    "fold_with_report": "edgesep.converters.fold",  # the earlier name of fold_batchnorm_with_report
    "FoldReport": "edgesep.converters.fold",
    "equalize": "edgesep.converters.equalize",
    "equalize_with_report": "edgesep.converters.equalize",
    "EqualizeReport": "edgesep.converters.equalize",
    "quant_error_report": "edgesep.converters.quant_error",
    "export_tflite": "edgesep.converters.tflite",
    "export_onnx": "edgesep.converters.onnx",
    "export": "edgesep.converters.export",
    "ExportConfig": "edgesep.converters.export",
    "ExportResult": "edgesep.converters.records",
    "ArtifactRecord": "edgesep.converters.records",
    "OutputCheck": "edgesep.converters.records",
    "load_export": "edgesep.converters.records",
    "ConversionError": "edgesep.converters",
    "verify_artifact": "edgesep.converters.verify",
    "inspect_model": "edgesep.converters.inspect",
    "ModelInfo": "edgesep.converters.inspect",
    "parse_target": "edgesep.devices",
    "BenchConfig": "edgesep.devices.base",
    "BenchResult": "edgesep.devices.base",
    "Device": "edgesep.devices.base",
    "DeviceError": "edgesep.devices.base",
    # the types the functions above take and return
    "TrainConfig": "edgesep.train",
    "TrainProgress": "edgesep.train",
    "Preprocess": "edgesep.data",
    "parse_preprocess": "edgesep.data",
    "Verification": "edgesep.converters.verify",
    "ModelSource": "edgesep.source",
    "DataOptions": "edgesep.data",
    "export_source": "edgesep.converters.export",
    # fused vs split, and the session-level statistics behind every verdict
    "CompareConfig": "edgesep.compare",
    "run_builtin": "edgesep.compare",
    "run_models": "edgesep.compare",
    "judge_sessions": "edgesep.compare",
    # the one error base
    "EdgesepError": "edgesep.errors",
    "UsageError": "edgesep.errors",
    "OutputError": "edgesep.errors",
    "EdgeTpuError": "edgesep.errors",
}

__all__ = ["__version__", *_API]


def __getattr__(name: str):
    module = _API.get(name)
    if module is None:
        raise AttributeError(f"module 'edgesep' has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)


def __dir__():
    return sorted(__all__)
