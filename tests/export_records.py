"""A small, complete export record for tests that place an export.json beside a model by hand."""
from __future__ import annotations

from typing import Any


def minimal_export(**fields: Any) -> dict[str, Any]:
    """export.json of a one-artifact float export; ``fields`` replace ExportResult fields (e.g. ``equalize``)."""
    from edgesep.converters.export_config import ExportConfig
    from edgesep.converters.records import ArtifactRecord, DatasetSummary, ExportResult, ModelSummary

    art = ArtifactRecord("tflite:float32", "model.tflite", "tflite", "float32", "TFLite", 1, "0" * 64, {})
    base = dict(edgesep_version="0", model=ModelSummary("m", None, (1, 16, 16, 3), 0, 0),
                dataset=DatasetSummary("digits", 1, None, {}), artifacts=(art,), keras_accuracy=None,
                config=ExportConfig(), fold={})
    return ExportResult(**{**base, **fields}).to_dict()
