"""The accuracy guard of export --equalize, driven into its fallbacks on purpose, without labels.

The guard chooses on unlabelled selection images (top-1 agreement with the float model, then output SQNR).
Here they are noise images on which the plain per-tensor int8 model agrees with the float model, so the
unequalized model scores 100 % agreement by construction and the equalized one (whose rounding falls elsewhere)
loses some of these near-ties: the guard must then leave links out or revert, and never return a model that
agrees less or has a lower output SQNR. Labels are withheld (y_test=None) or wrong on purpose: the choice
cannot depend on them.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgesep.converters.guard import MIN_SELECTION, guarded_equalize, selection_split


@pytest.fixture(scope="module")
def setup(trained_split, digits, tmp_path_factory):
    from edgesep.converters.fold import fold_batchnorm
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import predict_keras, predict_tflite

    model = trained_split[0]
    folded = fold_batchnorm(model)
    calib = digits.calibration(100, 0)
    noise = np.random.default_rng(0).random((300, *model.input_shape[1:]), dtype=np.float32)
    path = export_tflite(folded, tmp_path_factory.mktemp("guard") / "plain.tflite", precision="int8",
                         representative_data=calib, per_channel=False, fold=False)
    float_top1 = predict_keras(model, noise).argmax(1)
    agree = predict_tflite(path, noise).argmax(1) == float_top1
    return model, folded, calib, noise[agree], float_top1[agree]


def run(setup, max_trials, **test):
    model, folded, calib, selection, _ = setup
    return guarded_equalize(model, folded, calib, selection, relu6="clip", per_channel=False, io_dtype="int8",
                            max_trials=max_trials, **test)


@pytest.mark.slow
def test_guard_never_ships_less_than_the_unequalized_model(setup, tmp_path):
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import agreement, predict_keras, predict_tflite

    model, folded, calib, selection, float_top1 = setup
    chosen, doc = run(setup, max_trials=3)  # no labels at all
    guard = doc["guard"]
    assert guard["agreement"]["without_equalize"] == 1.0
    assert guard["agreement"]["every_link"] < 1.0, "noise near-ties should move under equalization"
    assert guard["outcome"] != "kept every link" and 1 <= len(guard["trials"]) <= 3
    assert guard["agreement"]["chosen"] == 1.0  # never below the unequalized model
    assert guard["output_sqnr_db"]["chosen"] >= guard["output_sqnr_db"]["without_equalize"]
    assert guard["accuracy"] is None and guard["data"]["samples"] is None  # no labels: nothing reported
    assert guard["selection_samples"] == len(selection) and guard["calibration_samples"] == len(calib)
    assert "agreement" in guard["criterion"] and "held out" in guard["criterion"]
    assert guard["chosen_on"]["samples"] == len(selection) and guard["score"] == guard["agreement"]["chosen"]
    if guard["outcome"] == "reverted":
        assert chosen is folded and guard["links_kept"] == 0
    else:
        last_round = [t for t in guard["trials"] if len(t["excluded"]) == len(guard["excluded"])]
        passing = [t for t in last_round if t["agreement"] == 1.0
                   and t["output_sqnr_db"] >= guard["output_sqnr_db"]["without_equalize"]]
        assert guard["excluded"] in [t["excluded"] for t in passing]
        assert guard["output_sqnr_db"]["chosen"] == max(t["output_sqnr_db"] for t in passing)  # fidelity decides
        assert {s["producer"] for s in doc["skipped"] if s["reason"] == "excluded"} == set(guard["excluded"])
        path = export_tflite(chosen, tmp_path / "chosen.tflite", precision="int8", representative_data=calib,
                             per_channel=False, fold=False)
        fresh = agreement(predict_tflite(path, selection), predict_keras(model, selection))
        assert fresh == (1.0, guard["output_sqnr_db"]["chosen"])  # the verdict holds for a fresh conversion
    # whatever it kept is the same function in float
    want = predict_keras(model, selection)
    assert np.max(np.abs(predict_keras(chosen, selection) - want)) <= 1e-4 * np.max(np.abs(want))


@pytest.mark.slow
def test_guard_without_trials_reverts(setup):
    model, folded, *_ = setup
    chosen, doc = run(setup, max_trials=0)
    guard = doc["guard"]
    assert guard["outcome"] == "reverted" and chosen is folded and guard["trials"] == []
    assert guard["agreement"]["chosen"] == guard["agreement"]["without_equalize"] == 1.0
    assert len(doc["pairs"]) == guard["links"] == 8  # the section still says what equalization would have done


@pytest.mark.slow
def test_guard_leaves_out_a_link_that_restores_the_agreement(setup, digits, tmp_path):
    """Images where equalizing every link flips the int8 prediction and leaving out one link flips it back;
    the test split's labels are scrambled: the choice must not notice, the reported accuracy must."""
    from edgesep.converters.equalize import equalize_with_report
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import predict_keras, predict_tflite, top1

    model, folded, calib, noise, float_top1 = setup

    def int8_predictions(keras_model, name, x=noise):
        path = export_tflite(keras_model, tmp_path / f"{name}.tflite", precision="int8", representative_data=calib,
                             per_channel=False, fold=False)
        return predict_tflite(path, x).argmax(1)

    every, report = equalize_with_report(model, calibration_data=calib)
    flipped = int8_predictions(every, "every") != float_top1
    for pair in report.pairs:
        without = int8_predictions(equalize_with_report(model, calibration_data=calib, exclude=[pair.producer])[0],
                                   pair.producer)
        restored = flipped & (without == float_top1)
        if restored.any():
            break
    else:
        pytest.fail("no single link restores any flipped noise image")
    keep = restored | ((without == float_top1) & ~flipped)  # fixed by leaving the link out, or never flipped
    x_test, wrong = digits.x_test[:200], (digits.y_test[:200] + 1) % 10
    chosen, doc = guarded_equalize(model, folded, calib, noise[keep], x_test, wrong, relu6="clip",
                                   per_channel=False, io_dtype="int8", max_trials=len(report.pairs))
    guard = doc["guard"]
    assert guard["agreement"]["without_equalize"] == 1.0 and guard["agreement"]["every_link"] < 1.0
    assert guard["outcome"] == f"left out 1 of {len(report.pairs)} links" and guard["agreement"]["chosen"] == 1.0
    passing = [t for t in guard["trials"] if t["agreement"] == 1.0
               and t["output_sqnr_db"] >= guard["output_sqnr_db"]["without_equalize"]]
    assert guard["output_sqnr_db"]["chosen"] == max(t["output_sqnr_db"] for t in passing)
    assert len(doc["pairs"]) == guard["links_kept"] == len(report.pairs) - 1
    assert {s["producer"] for s in doc["skipped"] if s["reason"] == "excluded"} == set(guard["excluded"])
    # the reported accuracy is of the shipped int8 model on the (scrambled) test labels, measured after choosing
    assert guard["accuracy"] == top1(np.eye(10)[int8_predictions(chosen, "chosen", x_test)], wrong) < 0.2
    assert guard["data"]["samples"] == 200 and guard["selection_samples"] == int(keep.sum())
    assert doc["float_accuracy"]["after"] == top1(predict_keras(chosen, x_test), wrong)


def test_selection_is_held_out_from_calibration(digits):
    calib, selection, how = selection_split(digits.x_train, 200, 0)
    assert np.array_equal(calib, digits.calibration(200, 0))  # the export calibrates as without --equalize
    assert len(selection) == 200 and "held out" in how
    rows = {row.tobytes() for row in calib}
    assert not any(row.tobytes() in rows for row in selection)
    small = digits.x_train[:200 + MIN_SELECTION - 1]  # too few left beside the draw: the draw is split
    calib, selection, how = selection_split(small, 200, 0)
    assert (len(calib), len(selection)) == (150, 49 + 50) and "split" in how
    assert not any(row.tobytes() in {r.tobytes() for r in calib} for row in selection)
