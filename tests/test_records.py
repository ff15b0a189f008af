"""export.json as typed records: to_dict is export.json, from_dict the one reader, checks per model output."""
import json

import pytest

from export_records import minimal_export


def _record(**fields):
    from edgesep.converters.records import ArtifactRecord

    base = dict(key="tflite:int8", path="model_int8.tflite", format="tflite", precision="int8", runtime="TFLite",
                bytes=10, sha256="ab" * 32, ops={"CONV_2D": 2})
    return ArtifactRecord(**{**base, **fields})


def test_one_output_keeps_the_top_level_keys_and_round_trips():
    from edgesep.converters.records import ArtifactRecord, OutputCheck

    art = _record(checks=(OutputCheck("dense", 0.01, 0.9, 0.98, 31.5),), details={"float_ops": []})
    d = art.to_dict()
    assert list(d)[:9] == ["path", "format", "precision", "bytes", "sha256", "ops", "max_abs_error_vs_keras",
                           "accuracy", "runtime"]  # export.json's order of the keys it always had
    assert (d["max_abs_error_vs_keras"], d["accuracy"], d["top1_agreement_vs_keras"],
            d["output_sqnr_db_vs_keras"]) == (0.01, 0.9, 0.98, 31.5)
    assert d["checks"] == [{"output": "dense", "max_abs_error_vs_keras": 0.01, "accuracy": 0.9,
                            "top1_agreement_vs_keras": 0.98, "output_sqnr_db_vs_keras": 31.5}]
    assert d["float_ops"] == [] and d["key"] == "tflite:int8"
    again = ArtifactRecord.from_dict(json.loads(json.dumps(d)))
    assert again == art and again.accuracy == 0.9 and again.check("dense") is again.check()


def test_several_outputs_are_checked_by_name_and_no_top_level_figure_pretends_to_cover_them():
    from edgesep.converters.records import ArtifactRecord, OutputCheck

    checks = (OutputCheck("boxes", 0.2, None, 0.5, 12.0), OutputCheck("classes", 0.01, 0.8, 0.99, 40.0))
    d = _record(checks=checks).to_dict()
    assert d["accuracy"] is None and d["max_abs_error_vs_keras"] is None and d["top1_agreement_vs_keras"] is None
    assert [c["output"] for c in d["checks"]] == ["boxes", "classes"]
    art = ArtifactRecord.from_dict(d)
    assert art.check() is None and art.check("classes").accuracy == 0.8 and art.checks == checks


def test_unverified_and_older_artifacts_read_back():
    from edgesep.converters.records import ArtifactRecord

    edgetpu = _record(key="edgetpu", path="model_int8_edgetpu.tflite", delegate="edgetpu").to_dict()
    assert "top1_agreement_vs_keras" not in edgetpu and "checks" not in edgetpu and edgetpu["accuracy"] is None
    assert ArtifactRecord.from_dict(edgetpu).checks == ()
    older = {k: v for k, v in _record().to_dict().items() if k != "key"}  # before "key" and "checks" existed
    older.update(max_abs_error_vs_keras=0.5, accuracy=0.7, top1_agreement_vs_keras=0.9, output_sqnr_db_vs_keras=None)
    art = ArtifactRecord.from_dict(older)
    assert art.key == "tflite:int8" and art.check().output is None and art.accuracy == 0.7
    assert ArtifactRecord.from_dict(edgetpu).key == "edgetpu"


def test_export_result_round_trips_and_keeps_caller_sections(tmp_path):
    from edgesep.converters.records import ExportResult, load_export, read_export

    doc = minimal_export(source={"builtin": "split"}, extra={"compare": {"key": "k"}},
                         equalize={"guard": {"outcome": "reverted"}})
    assert "warnings" not in doc  # a float export that found nothing to warn about says nothing
    result = ExportResult.from_dict(doc)
    assert result.to_dict() == doc and result.extra == {"compare": {"key": "k"}} and not result.equalized
    assert result.find("tflite", "float32").path == "model.tflite" and result.artifact("onnx:float32") is None
    (tmp_path / "export.json").write_text(json.dumps(doc))
    assert load_export(tmp_path) == result


def test_a_broken_export_json_is_one_data_error(tmp_path):
    from edgesep.converters.records import load_export, read_export
    from edgesep.errors import DataError

    assert read_export(tmp_path) is None
    (tmp_path / "export.json").write_text(json.dumps({"artifacts": [{"path": 3}]}))
    with pytest.raises(DataError, match="not an edgesep export.json"):
        load_export(tmp_path)
    assert read_export(tmp_path) is None
