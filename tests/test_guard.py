"""The accuracy guard of export --equalize, driven into its fallbacks on purpose.

Labels are the plain per-tensor int8 model's own predictions on noise images, so the unequalized model scores
100 % by construction and the equalized one (whose rounding falls elsewhere) loses some of these near-ties:
the guard must then leave links out or revert, and never return a model that scores lower.
"""
from __future__ import annotations

import numpy as np
import pytest

from edgesep.converters.guard import guarded_equalize

pytestmark = pytest.mark.slow  # every test converts the trained network to int8 TFLite several times


@pytest.fixture(scope="module")
def setup(trained_split, digits, tmp_path_factory):
    from edgesep.converters.fold import fold_batchnorm
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import predict_tflite

    model = trained_split[0]
    folded = fold_batchnorm(model)
    calib = digits.calibration(100, 0)
    noise = np.random.default_rng(0).random((300, *model.input_shape[1:]), dtype=np.float32)
    path = export_tflite(folded, tmp_path_factory.mktemp("guard") / "plain.tflite", precision="int8",
                         representative_data=calib, per_channel=False, fold=False)
    labels = predict_tflite(path, noise).argmax(1)
    return model, folded, calib, noise, labels


def run(setup, max_trials):
    model, folded, calib, noise, labels = setup
    return guarded_equalize(model, folded, calib, noise, labels, relu6="clip", per_channel=False, io_dtype="int8",
                            max_trials=max_trials)


def test_guard_never_ships_less_than_the_unequalized_model(setup, tmp_path):
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import predict_keras, predict_tflite, top1

    model, folded, calib, noise, labels = setup
    chosen, doc = run(setup, max_trials=3)
    guard = doc["guard"]
    assert guard["accuracy_without_equalize"] == 1.0
    assert guard["accuracy_every_link"] < 1.0, "noise near-ties should move under equalization"
    assert guard["outcome"] != "kept every link" and 1 <= len(guard["trials"]) <= 3
    assert guard["accuracy"] == 1.0  # never below the unequalized model
    if guard["outcome"] == "reverted":
        assert chosen is folded and guard["links_kept"] == 0
    else:
        last_round = [t for t in guard["trials"] if len(t["excluded"]) == len(guard["excluded"])]
        passing = [t for t in last_round if t["accuracy"] == 1.0]
        assert guard["excluded"] in [t["excluded"] for t in passing]
        assert guard["output_sqnr_db"]["chosen"] == max(t["output_sqnr_db"] for t in passing)  # fidelity decides
        assert {s["producer"] for s in doc["skipped"] if s["reason"] == "excluded"} == set(guard["excluded"])
        path = export_tflite(chosen, tmp_path / "chosen.tflite", precision="int8", representative_data=calib,
                             per_channel=False, fold=False)
        assert top1(predict_tflite(path, noise), labels) == 1.0  # the verdict holds for a fresh conversion
        assert doc["float_accuracy"]["after"] == top1(predict_keras(chosen, noise), labels)  # of the shipped net
    # whatever it kept is the same function in float
    want = predict_keras(model, noise)
    assert np.max(np.abs(predict_keras(chosen, noise) - want)) <= 1e-4 * np.max(np.abs(want))


def test_guard_without_trials_reverts(setup):
    model, folded, *_ = setup
    chosen, doc = run(setup, max_trials=0)
    guard = doc["guard"]
    assert guard["outcome"] == "reverted" and chosen is folded and guard["trials"] == []
    assert guard["accuracy"] == guard["accuracy_without_equalize"] == 1.0
    assert len(doc["pairs"]) == guard["links"] == 8  # the section still says what equalization would have done


def test_guard_leaves_out_a_link_that_restores_the_accuracy(setup, tmp_path):
    """Images where equalizing every link flips the int8 prediction and leaving out one link flips it back."""
    from edgesep.converters.equalize import equalize_with_report
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import predict_tflite

    model, folded, calib, noise, labels = setup

    def int8_predictions(keras_model, name):
        path = export_tflite(keras_model, tmp_path / f"{name}.tflite", precision="int8", representative_data=calib,
                             per_channel=False, fold=False)
        return predict_tflite(path, noise).argmax(1)

    every, report = equalize_with_report(model, calibration_data=calib)
    flipped = int8_predictions(every, "every") != labels
    for pair in report.pairs:
        without = int8_predictions(equalize_with_report(model, calibration_data=calib, exclude=[pair.producer])[0],
                                   pair.producer)
        restored = flipped & (without == labels)
        if restored.any():
            break
    else:
        pytest.fail("no single link restores any flipped noise image")
    keep = restored | ((without == labels) & ~flipped)  # fixed by leaving the link out, or never flipped
    x, y = noise[keep], labels[keep]
    chosen, doc = guarded_equalize(model, folded, calib, x, y, relu6="clip", per_channel=False, io_dtype="int8",
                                   max_trials=len(report.pairs))
    guard = doc["guard"]
    assert guard["accuracy_without_equalize"] == 1.0 and guard["accuracy_every_link"] < 1.0
    assert guard["outcome"] == f"left out 1 of {len(report.pairs)} links" and guard["accuracy"] == 1.0
    assert pair.producer in [t["excluded"][0] for t in guard["trials"] if t["accuracy"] == 1.0]
    passing = [t for t in guard["trials"] if t["accuracy"] == 1.0]
    assert guard["output_sqnr_db"]["chosen"] == max(t["output_sqnr_db"] for t in passing)
    assert len(doc["pairs"]) == guard["links_kept"] == len(report.pairs) - 1
    assert ({s["producer"] for s in doc["skipped"] if s["reason"] == "excluded"} == set(guard["excluded"]))
    from edgesep.converters.verify import predict_keras, top1

    path = export_tflite(chosen, tmp_path / "chosen.tflite", precision="int8", representative_data=calib,
                         per_channel=False, fold=False)
    assert top1(predict_tflite(path, x), y) == 1.0
    assert doc["float_accuracy"]["after"] == top1(predict_keras(chosen, x), y)


def test_guard_chooses_on_unlabelled_images_and_reports_accuracy_on_others(setup, tmp_path):
    from edgesep.converters.tflite import export_tflite
    from edgesep.converters.verify import predict_keras, predict_tflite, top1

    model, folded, calib, noise, labels = setup
    pick, test = slice(0, 150), slice(150, None)
    chosen, doc = guarded_equalize(model, folded, calib, noise[test], labels[test], relu6="clip", per_channel=False,
                                   io_dtype="int8", max_trials=2, choose_on=noise[pick], choose_on_what="noise")
    guard = doc["guard"]
    assert guard["chosen_on"]["images"] == "noise" and guard["chosen_on"]["samples"] == 150
    assert "agreement" in guard["chosen_on"]["score"]
    assert guard["score"] >= guard["score_without_equalize"]  # never below the unequalized model where it chose
    path = export_tflite(chosen, tmp_path / "chosen.tflite", precision="int8", representative_data=calib,
                         per_channel=False, fold=False)
    float_top1 = predict_keras(model, noise[pick]).argmax(1)
    assert top1(predict_tflite(path, noise[pick]), float_top1) == guard["score"]  # agreement, no labels used
    assert top1(predict_tflite(path, noise[test]), labels[test]) == guard["accuracy"]  # reported elsewhere


def test_held_out_images_are_the_training_images_calibration_does_not_draw(digits):
    from edgesep.converters.guard import MIN_HOLD_OUT, held_out

    calib = digits.calibration(100, 3)
    images, what = held_out(digits.x_train, 100, 3, n=50)
    assert what == "training images held out from calibration" and len(images) == 50
    flat = {row.tobytes() for row in calib}
    assert not any(row.tobytes() in flat for row in images)
    few, what = held_out(digits.x_train[:100 + MIN_HOLD_OUT - 1], 100, 3)
    assert "calibration images" in what and len(few) == 100
