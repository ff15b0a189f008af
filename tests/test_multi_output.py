"""Models with several outputs, first-class (slow: real conversions).

Three real shapes: a BlazeFace-like detector (boxes + scores from two scales, with reshapes and
concatenations), an MTCNN-like face model (box regression, landmarks and a softmax score, with PReLU) and a
two-head classifier. Each exports to TFLite (float32, int8) and ONNX (float32, int8) with one check per output,
by the model's own output names and in its order, in every artifact; the names are chosen so that their sorted
order differs from the model's (TFLite orders a dict's outputs by name: edgesep maps them by name). Each
output's int8 SQNR is within 1 dB of the raw TFLite converter's given the same calibration tensors.
"""
from __future__ import annotations

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytestmark = pytest.mark.slow

SIZE = 32


def _detector():
    import keras
    from keras import layers

    inp = keras.Input((SIZE, SIZE, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, strides=2, padding="same")(inp)))
    x = layers.ReLU()(layers.DepthwiseConv2D(3, padding="same")(x))
    x8 = layers.ReLU()(layers.Conv2D(24, 1, strides=2)(x))  # 8x8
    x4 = layers.ReLU()(layers.Conv2D(32, 3, strides=2, padding="same")(x8))  # 4x4
    boxes = [layers.Reshape((-1, 16))(layers.Conv2D(a * 16, 1)(f)) for f, a in ((x8, 2), (x4, 6))]
    scores = [layers.Reshape((-1, 1))(layers.Conv2D(a, 1)(f)) for f, a in ((x8, 2), (x4, 6))]
    regressors = layers.Concatenate(axis=1, name="regressors")(boxes)  # [1, 224, 16]
    classificators = layers.Concatenate(axis=1, name="classificators")(scores)  # [1, 224, 1]
    return keras.Model(inp, [regressors, classificators], name="blazeface_like")


def _face():
    import keras
    from keras import layers

    inp = keras.Input((SIZE, SIZE, 3))
    x = inp
    for filters in (16, 24, 32):
        x = layers.PReLU(shared_axes=[1, 2])(layers.BatchNormalization()(layers.Conv2D(filters, 3, padding="same")(x)))
        x = layers.MaxPooling2D()(x)
    x = layers.PReLU()(layers.Dense(64)(layers.Flatten()(x)))
    prob = layers.Dense(2, activation="softmax", name="prob1")(x)
    return keras.Model(inp, [prob, layers.Dense(4, name="conv6_2")(x), layers.Dense(10, name="conv6_3")(x)],
                       name="onet_like")


def _two_heads():
    import keras
    from keras import layers

    inp = keras.Input((SIZE, SIZE, 3))
    x = layers.ReLU()(layers.BatchNormalization()(layers.Conv2D(16, 3, strides=2, padding="same")(inp)))
    x = layers.GlobalAveragePooling2D()(layers.ReLU()(layers.Conv2D(32, 3, strides=2, padding="same")(x)))
    return keras.Model(inp, [layers.Dense(5, activation="softmax", name="species")(x),
                             layers.Dense(3, activation="softmax", name="age")(x)], name="two_heads")


MODELS = {"detector": _detector, "face": _face, "two_heads": _two_heads}


def _randomize(model) -> None:
    from keras_bn import randomize_bn

    randomize_bn(model)


def _raw_int8(model, calib) -> bytes:
    import tensorflow as tf

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = lambda: ([x[None]] for x in calib)
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = converter.inference_output_type = tf.int8
    return converter.convert()


def _sqnr(got, want) -> float:
    want = want.astype(np.float64)
    return float(10 * np.log10(np.sum(want ** 2) / np.sum((got - want) ** 2)))


@pytest.fixture(scope="module", params=list(MODELS))
def exported(request, tmp_path_factory):
    """(name, model, dataset, ExportResult, out folder) of one multi-output model, exported once."""
    import keras

    from edgesep.converters.export import ExportConfig, export
    from edgesep.data import Dataset

    keras.utils.set_random_seed(0)
    model = MODELS[request.param]()
    _randomize(model)
    x = np.random.default_rng(1).uniform(-1, 1, (100, SIZE, SIZE, 3)).astype(np.float32)
    labels = np.arange(100) % 5 if request.param == "two_heads" else None
    data = Dataset(request.param, x[:70], None if labels is None else labels[:70], x[70:],
                   None if labels is None else labels[70:], tuple("01234") if labels is not None else (), kind="npz")
    out = tmp_path_factory.mktemp(request.param)
    result = export(model, out, ExportConfig(precisions=("float32", "int8"), calib_samples=60), data)
    return request.param, model, data, result, out


def test_every_artifact_checks_every_output_by_name_in_the_models_order(exported):
    import onnxruntime as ort

    from edgesep.converters.graph import output_names

    name, model, _, result, out = exported
    names = output_names(model)
    assert names != sorted(names), "the test needs names whose sorted order differs from the model's"
    assert [a.key for a in result.artifacts] == ["tflite:float32", "tflite:int8", "onnx:float32", "onnx:int8"]
    for art in result.artifacts:
        assert [c.output for c in art.checks] == names, art.path
        assert art.to_dict()["max_abs_error_vs_keras"] is None  # no single figure for several outputs
    for key in ("tflite:float32", "onnx:float32"):
        assert all(c.max_abs_error_vs_keras < 1e-4 for c in result.artifact(key).checks), (name, key)
    session = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    assert [o.name for o in session.get_outputs()] == names
    assert [o["output"] for o in result.int8_check["outputs"]] == names


def test_agreement_and_accuracy_only_where_an_output_is_class_scores(exported):
    name, _, _, result, _ = exported
    checks = {c.output: c for c in result.artifact("tflite:float32").checks}
    if name == "detector":
        assert all(c.top1_agreement_vs_keras is None and c.accuracy is None for c in checks.values())
    elif name == "face":
        assert checks["prob1"].top1_agreement_vs_keras == 1.0
        assert checks["conv6_2"].top1_agreement_vs_keras is None and checks["conv6_3"].top1_agreement_vs_keras is None
    else:  # two softmax heads and labels: which head they belong to is not known: no accuracy, a note
        assert result.keras_accuracy is None and all(c.accuracy is None for c in checks.values())
        assert any("no accuracy" in w and "--label-output" in w for w in result.warnings)


def test_each_outputs_int8_sqnr_is_within_1_db_of_the_raw_converter(exported, tmp_path):
    from edgesep.converters.outputs import keras_outputs
    from edgesep.converters.verify import predict_tflite_all

    name, model, data, result, out = exported
    calib = data.calibration(60, 0)
    (tmp_path / "raw.tflite").write_bytes(_raw_int8(model, calib))
    names = [c.output for c in result.artifact("tflite:int8").checks]
    reference = keras_outputs(model, data.x_test)
    raw_outputs = predict_tflite_all(tmp_path / "raw.tflite", data.x_test)  # it names them output_0, output_1...
    raw = [next(r for r in raw_outputs if r.shape == want.shape) for want in reference]  # shapes differ here
    ours = predict_tflite_all(out / "model_int8.tflite", data.x_test, names)
    for i, output in enumerate(names):
        mine, theirs = _sqnr(ours[i], reference[i]), _sqnr(raw[i], reference[i])
        print(f"{name} {output}: edgesep {mine:.2f} dB, raw converter {theirs:.2f} dB")
        assert mine >= theirs - 1.0, (name, output, mine, theirs)
        assert result.artifact("tflite:int8").check(output).output_sqnr_db_vs_keras == pytest.approx(mine, abs=1e-6)


def test_the_table_has_one_row_per_output(exported):
    from rich.console import Console

    from edgesep.report import export_table

    name, _, _, result, _ = exported
    console = Console(width=200, record=True)
    console.print(export_table(result))
    text = console.export_text()
    names = [c.output for c in result.artifact("tflite:int8").checks]
    assert f"model_int8.tflite {names[0]}" in text
    assert all(text.count(f"  {n} ") >= 4 for n in names[1:])  # under each of the four artifacts
    assert all(f"{n}: SQNR" in text for n in names)  # the int8 line, per output


def test_bench_data_measures_accuracy_only_on_a_class_score_output(exported, tmp_path, capfd):
    import json

    from edgesep.cli import main

    name, model, data, _, out = exported
    rng = np.random.default_rng(2)
    np.savez(tmp_path / "data.npz", x=rng.uniform(-1, 1, (30, SIZE, SIZE, 3)).astype(np.float32),
             y=rng.integers(0, 2, 30))
    args = ["bench", str(out / "model.tflite"), str(out / "model.onnx"), "--device", "local", "--runs", "2",
            "--min-secs", "0", "--warmup", "0", "--warmup-secs", "0", "--data", str(tmp_path / "data.npz"), "--json"]
    capfd.readouterr()
    extra = {"two_heads": ["--label-output", "age"], "face": ["--label-output", "prob1"]}.get(name, [])
    assert main(args + extra) == 0
    results = json.loads(capfd.readouterr().out)["results"]
    assert len(results) == 2
    for result in results:
        if name == "detector":  # boxes and anchors' scores: no accuracy (never 0.0) and a note saying why
            assert result["accuracy"] is None and "--label-output" in result["extra"]["accuracy_note"]
        else:  # the named output (on a device a [1, 4] box regression looks like class scores too)
            assert result["accuracy"] is not None and 0.0 <= result["accuracy"] <= 1.0, result
    if name != "detector":
        assert main(args) == 0  # several [1, C] outputs and no --label-output: no accuracy, a note
        assert all(r["accuracy"] is None for r in json.loads(capfd.readouterr().out)["results"])
    if name == "two_heads":
        assert main(args + ["--label-output", "nope"]) == 2
        assert "'nope' is not an output" in capfd.readouterr().err


def test_label_output_names_the_labelled_head(tmp_path):
    import keras

    from edgesep.converters.export import ExportConfig, export
    from edgesep.errors import UsageError
    from edgesep.source import ModelSource

    keras.utils.set_random_seed(0)
    model = _two_heads()
    model.save(tmp_path / "two.keras")
    x = np.random.default_rng(1).uniform(-1, 1, (40, SIZE, SIZE, 3)).astype(np.float32)
    age = np.argmax(np.asarray(model(x, training=False)[1]), axis=-1)  # the labels the "age" head gets right
    np.savez(tmp_path / "data.npz", x=x, y=age)
    with pytest.raises(UsageError, match="'nope' is not an output"):
        ModelSource(model=str(tmp_path / "two.keras"), data=str(tmp_path / "data.npz"), label_output="nope").load()
    loaded = ModelSource(model=str(tmp_path / "two.keras"), data=str(tmp_path / "data.npz"), label_output="age").load()
    assert loaded.dataset.label_output == "age"
    result = export(loaded.model, tmp_path / "out", ExportConfig(onnx=False), loaded.dataset)
    checks = {c.output: c for c in result.artifact("tflite:float32").checks}
    assert result.keras_accuracy == 1.0 and checks["age"].accuracy == 1.0 and checks["species"].accuracy is None
    assert not any("no accuracy" in w for w in result.warnings)


def test_compare_measures_a_several_output_models_artifacts(exported, tmp_path):
    """compare takes a several-output model's artifacts as they are: measured in paired sessions and compared,
    no device result fails, and no accuracy is made up (no --data)."""
    import json

    from edgesep.cli import main

    _, _, _, _, out = exported
    report = tmp_path / "report"
    assert main(["compare", str(out / "model.tflite"), str(out / "model_int8.tflite"), "--device", "local",
                 "--runs", "5", "--warmup-secs", "0", "--min-secs", "0.1", "--max-secs", "1", "--threads", "1",
                 "--sessions", "2", "--out", str(report)]) == 0
    doc = json.loads((report / "report.json").read_text())
    section = doc["devices"]["local"]
    assert section["error"] is None and len(section["results"]) == 2
    assert all(r.get("error") is None and r.get("accuracy") is None for r in section["results"].values())
    (c,) = section["comparisons"]
    assert c["paired"] and c["lo"] <= c["ratio"] <= c["hi"] and c["verdict"]


@pytest.mark.ray
def test_sweep_measures_a_several_output_models_artifacts(exported, tmp_path):
    """sweep takes a several-output model's artifacts (on Ray's embedded local default): every job ends ok."""
    import sqlite3
    import subprocess
    import sys

    name, _, _, _, out = exported
    if name != "detector":
        pytest.skip("sweep is exercised on the detector (boxes + scores), the shape that used to break bench")
    plan = tmp_path / "plan.toml"
    plan.write_text("".join(f"[[models]]\npath = {str(out / f)!r}\n" for f in ("model.tflite", "model_int8.tflite"))
                    + "[[devices]]\ntarget = 'local'\n[bench]\nruns = 5\nwarmup = 1\nwarmup_secs = 0.0\n"
                    "min_secs = 0.0\nmax_secs = 1.0\nthreads = 1\n")
    proc = subprocess.run([sys.executable, "-m", "edgesep", "sweep", str(plan), "--out", str(tmp_path / "sweep")],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    db = sqlite3.connect(tmp_path / "sweep" / "sweep.db")
    try:
        rows = db.execute("SELECT status FROM jobs").fetchall()
    finally:
        db.close()
    assert sorted(r[0] for r in rows) == ["ok", "ok"]


@pytest.fixture(scope="module")
def two_heads_data():
    """The two-head classifier (outputs species, age: sorted otherwise) with its BN randomized, and data."""
    import keras

    from edgesep.data import Dataset

    keras.utils.set_random_seed(0)
    model = _two_heads()
    _randomize(model)
    x = np.random.default_rng(1).uniform(-1, 1, (100, SIZE, SIZE, 3)).astype(np.float32)
    return model, Dataset("two_heads", x[:70], None, x[70:], None, (), kind="npz")


@pytest.mark.parametrize("keep_float, precision", [(("auto",), "float"), (("species",), "int16")])
def test_keep_float_on_two_heads_scores_every_output(two_heads_data, tmp_path, keep_float, precision):
    """--keep-float (auto, or named at int16) on a model with two outputs: the mixed model's outputs keep the
    model's names (before: 'cannot tell the TFLite model's outputs apart', and auto died in a traceback), and
    the recipe's plain int8 score is the worse output's."""
    from edgesep.converters.export import ExportConfig, export

    model, data = two_heads_data
    config = ExportConfig(precisions=("int8",), onnx=False, io_dtype="float32", calib_samples=60, keep_float=keep_float,
                          keep_precision=precision, target_sqnr_db=99.0 if keep_float == ("auto",) else None)
    result = export(model, tmp_path, config, data)
    checks = result.artifact("tflite:int8").checks
    assert [c.output for c in checks] == ["species", "age"]
    recipe = result.keep_float
    plain = recipe["plain_int8"]["sqnr_db"]
    worst = min(o["output_sqnr_db_vs_keras"] for o in result.int8_check["outputs"])
    assert abs(plain - worst) < 1.0, (plain, result.int8_check["outputs"])
    if keep_float == ("auto",):
        assert recipe["met"] is False and recipe["float_ops"] == [] and recipe["steps"]
    else:
        assert recipe["int16_ops"] == ["species"] or "species" in recipe["float_ops"]


def test_sensitivity_on_two_heads(two_heads_data):
    from edgesep.converters.sensitivity import model_sensitivity

    model, data = two_heads_data
    report = model_sensitivity(model, data, samples=20, quick=True, calib_samples=40)
    names = [row.name for row in report.rows]
    assert "species" in names and "age" in names
    assert all(row.score.sqnr_db is not None and row.score.sqnr_db > 10 for row in report.rows)
