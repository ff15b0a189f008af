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
