"""Golden check of export.json: the export front door's refactor keeps every key and deterministic value."""
import json
from pathlib import Path

import pytest

import export_golden

REFERENCE = json.loads((Path(__file__).parent / "data" / "export_golden.json").read_text())


@pytest.mark.slow
def test_export_json_matches_the_pre_refactor_reference(tmp_path):
    doc = export_golden.tiny_export(tmp_path)
    export_golden.check(REFERENCE, doc)
    assert json.loads((tmp_path / "export.json").read_text()) == json.loads(json.dumps(doc))


def test_the_golden_check_can_fail():
    doc = json.loads(json.dumps(REFERENCE["values"]))
    bad = {**doc, "artifacts": {**doc["artifacts"], "model.tflite": {**doc["artifacts"]["model.tflite"],
                                                                    "ops": {"CONV_2D": 99}}}}
    with pytest.raises(AssertionError, match="ops"):
        assert not export_golden.changed_values(REFERENCE["values"], bad), export_golden.changed_values(
            REFERENCE["values"], bad)
    grown = {**doc, "export_config": {**doc["export_config"], "new_option": 1},
             "artifacts": {**doc["artifacts"], "model_new.onnx": {"path": "model_new.onnx"}}}
    assert export_golden.changed_values(REFERENCE["values"], grown) == []  # fields may only grow


def test_rounding_noise_is_the_same_and_a_real_change_is_not():
    """The tolerances written in export_golden: what another CPU's rounding moves is equal, a real change is not."""
    ref = {"max_abs_error_vs_keras": 1.192e-07, "output_sqnr_db_vs_keras": 139.1, "accuracy": 0.9815,
           "int8": {"output_sqnr_db": 47.17, "max_abs_error_vs_keras": 0.001549}, "ops": {"CONV_2D": 3}}
    noise = {"max_abs_error_vs_keras": 8.941e-08, "output_sqnr_db_vs_keras": 139.4, "accuracy": 0.9815,
             "int8": {"output_sqnr_db": 47.18, "max_abs_error_vs_keras": 0.0015495}, "ops": {"CONV_2D": 3}}
    assert export_golden.changed_values(ref, noise) == []
    for path, changed in (("max_abs_error_vs_keras", 2e-5), ("output_sqnr_db_vs_keras", 60.0), ("accuracy", 0.9796)):
        assert export_golden.changed_values(ref, {**noise, path: changed}) == [
            f"$.{path}: {ref[path]!r} became {changed!r}"]
    assert export_golden.changed_values(ref, {**noise, "int8": {**noise["int8"], "output_sqnr_db": 46.9}})
    assert export_golden.changed_values(ref, {**noise, "ops": {"CONV_2D": 4}})
