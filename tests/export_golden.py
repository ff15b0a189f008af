"""The golden view of an export.json: its key skeleton and its deterministic values, on a tiny seeded model.

Two exports of the same model with the same data differ in nothing but what depends on timing (and what
hashes it); the refactor of the export front door must keep everything else. ``view(doc)`` keeps the
skeleton (every key path with the JSON type of its value, see ``tests/golden.py``) and the values that follow
from the inputs; ``check(reference, doc)`` asserts a document still matches a stored reference (fields may
only grow). ``tiny_export(out)`` makes the document from a fixed seed, so the reference stays small:

    python tests/export_golden.py > tests/data/export_golden.json   # store a reference of the current code
"""
from __future__ import annotations

import json
import math
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

import golden  # noqa: E402

ARTIFACT_KEYS = ("path", "format", "precision", "ops", "delegate", "accuracy", "max_abs_error_vs_keras",
                 "top1_agreement_vs_keras", "output_sqnr_db_vs_keras")
TOP_KEYS = ("model", "dataset", "keras_accuracy", "export_config", "fold", "warnings", "source")
FLOAT_DIGITS = 4  # significant digits kept of measured floats (the same numbers, printed alike)


def _round(value: Any) -> Any:
    if isinstance(value, float):
        return float(f"{value:.{FLOAT_DIGITS}g}") if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _round(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_round(v) for v in value]
    return value


def values(doc: dict[str, Any]) -> dict[str, Any]:
    """The deterministic values of an export.json."""
    out: dict[str, Any] = {k: doc.get(k) for k in TOP_KEYS}
    out["artifacts"] = {a["path"]: {k: a.get(k) for k in ARTIFACT_KEYS} for a in doc["artifacts"]}  # by file
    check = doc.get("int8_check") or {}
    out["int8_check"] = {k: v for k, v in check.items()}
    qe = doc.get("quant_error") or {}
    out["quant_error_layers"] = [r.get("layer") for r in qe.get("layers") or []]
    return _round(json.loads(json.dumps(out)))


def view(doc: dict[str, Any]) -> dict[str, Any]:
    return {"skeleton": golden.skeleton(doc), "values": values(doc)}


# What "the same" means for a measured float (another CPU, BLAS, TensorFlow or onnxruntime build rounds the
# float reference differently in its last bits, so measured errors and SQNRs move a little; nothing else may):
ERROR_FLOOR = 1e-5  # a "*error*" value: any two values below this are rounding noise, hence equal
SQNR_CEILING = 100.0  # a "*sqnr*" value in dB: any two values above this are float-exact, hence equal
RELATIVE = 1e-3  # every other float (and errors/SQNRs outside the two bands): equal within this relative tolerance


def same_number(key: str, reference: float, current: float) -> bool:
    """Whether a measured float ``current`` is the same as ``reference`` under the tolerances above."""
    if "error" in key and abs(reference) < ERROR_FLOOR and abs(current) < ERROR_FLOOR:
        return True
    if "sqnr" in key and reference > SQNR_CEILING and current > SQNR_CEILING:
        return True
    return math.isclose(reference, current, rel_tol=RELATIVE, abs_tol=1e-12)


def changed_values(reference: Any, current: Any, path: str = "$") -> list[str]:
    """Where ``current`` differs from the deterministic values ``reference`` (a dict may gain keys); floats
    compare by ``same_number``, everything else (ints, strings, booleans, key sets) exactly."""
    if isinstance(reference, dict) and isinstance(current, dict):
        return [p for k, v in reference.items()
                for p in ([f"{path}.{k}: missing"] if k not in current else changed_values(v, current[k], f"{path}.{k}"))]
    if isinstance(reference, list) and isinstance(current, list) and len(reference) == len(current):
        return [p for i, (a, b) in enumerate(zip(reference, current)) for p in changed_values(a, b, f"{path}[{i}]")]
    if isinstance(reference, float) and isinstance(current, float):
        key = path.rsplit(".", 1)[-1].lower()
        return [] if same_number(key, reference, current) else [f"{path}: {reference!r} became {current!r}"]
    return [] if reference == current else [f"{path}: {reference!r} became {current!r}"]


def check(reference: dict[str, Any], doc: dict[str, Any]) -> None:
    """Assert ``doc`` keeps the reference's deterministic values and every key path of its skeleton."""
    now = view(doc)
    changed = changed_values(reference["values"], now["values"])
    assert not changed, changed
    lost = golden.missing_paths(reference["skeleton"], now["skeleton"])
    assert not lost, lost


def tiny_export(out: Path) -> dict[str, Any]:
    """export.json of a seeded 16x16 split-form network with randomized BatchNorm statistics: float32, fp16,
    int8 and ONNX, on seeded data in [-1, 1]."""
    import keras
    import numpy as np

    from edgesep.converters.export import ExportConfig, export
    from edgesep.data import Dataset
    from edgesep.models import build_model

    keras.utils.set_random_seed(0)
    model = build_model("split", input_shape=(16, 16, 3), blocks=((8, 1), (16, 2)), num_classes=4)
    rng = np.random.default_rng(0)
    for layer in model.layers:
        if isinstance(layer, keras.layers.BatchNormalization):
            c = layer.get_weights()[0].shape
            layer.set_weights([rng.uniform(0.5, 1.5, c), rng.normal(0, 0.2, c), rng.normal(0, 0.5, c),
                               rng.uniform(0.5, 2.0, c)])
    x = rng.uniform(-1, 1, (120, 16, 16, 3)).astype(np.float32)
    y = np.argmax(np.asarray(model(x, training=False)), axis=-1)  # labels the float model mostly gets right
    data = Dataset("tiny", x[:80], y[:80], x[80:], y[80:], ("0", "1", "2", "3"), kind="npz")
    config = ExportConfig(precisions=("float32", "float16", "int8"), onnx=True, calib_samples=50)
    return export(model, out, config, data).to_dict()


if __name__ == "__main__":
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        print(json.dumps(view(tiny_export(Path(tmp))), indent=1, sort_keys=True))
