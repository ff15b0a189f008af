"""Datasets: digits, ImageFolder, .npz, calibration sampling and every bad input."""
import numpy as np
import pytest
from PIL import Image

from edgesep.data import DataError, load_dataset


def test_digits_is_real_split_and_resized():
    ds = load_dataset("digits", (32, 32, 3))
    assert ds.x_train.shape == (1257, 32, 32, 3) and ds.x_test.shape == (540, 32, 32, 3)
    assert ds.x_train.dtype == np.float32 and 0.0 <= ds.x_train.min() and ds.x_train.max() <= 1.0
    assert ds.num_classes == 10
    # stratified: every class appears in test in proportion (digits has ~180 per class)
    counts = np.bincount(ds.y_test, minlength=10)
    assert counts.min() >= 50 and counts.max() <= 58
    # the three channels are copies of the grey image
    np.testing.assert_array_equal(ds.x_test[..., 0], ds.x_test[..., 2])
    again = load_dataset("digits", (32, 32, 3))
    np.testing.assert_array_equal(ds.y_test, again.y_test)


def test_calibration_draws_distinct_training_images():
    ds = load_dataset("digits", (16, 16, 1))
    calib = ds.calibration(100, seed=1)
    assert calib.shape == (100, 16, 16, 1)
    assert len({c.tobytes() for c in calib}) >= 95  # digits has a few duplicate images
    np.testing.assert_array_equal(calib, ds.calibration(100, seed=1))
    assert not np.array_equal(calib, ds.calibration(100, seed=2))
    assert len(ds.calibration(10_000)) == len(ds.x_train)
    with pytest.raises(DataError):
        ds.calibration(0)


def _write_folder(root, sizes=((20, 20),), per_class=6, classes=("cat", "dog")):
    rng = np.random.default_rng(0)
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            w, h = sizes[i % len(sizes)]
            pixels = (rng.random((h, w, 3)) * 100 + 120 * c).astype(np.uint8)
            Image.fromarray(pixels).save(root / name / f"{i}.png")
    return root


def test_image_folder(tmp_path):
    ds = load_dataset(str(_write_folder(tmp_path / "imgs")), (8, 8, 3))
    assert ds.class_names == ("cat", "dog")
    assert len(ds.x_train) + len(ds.x_test) == 12 and ds.x_train.shape[1:] == (8, 8, 3)
    # class 1 images are brighter by construction: the labels follow the folders
    x = np.concatenate([ds.x_train, ds.x_test])
    y = np.concatenate([ds.y_train, ds.y_test])
    assert x[y == 1].mean() > x[y == 0].mean() + 0.3


def test_npz_with_uint8_pixels(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "d.npz"
    np.savez(path, x=rng.integers(0, 256, (40, 10, 10), dtype=np.uint8), y=np.arange(40) % 4)
    ds = load_dataset(str(path), (10, 10, 3))
    assert ds.num_classes == 4 and ds.x_test.max() <= 1.0 and ds.x_test.shape[1:] == (10, 10, 3)


@pytest.mark.parametrize("make,match", [
    (lambda p: p / "missing", "not found"),
    (lambda p: (p / "empty").mkdir() or p / "empty", "no class sub-folders"),
    (lambda p: (p / "noimg" / "a").mkdir(parents=True) or p / "noimg", "no readable images"),
    (lambda p: _write_folder(p / "mixed", sizes=((20, 20), (30, 20))), "mixed sizes"),
    (lambda p: (p / "x.txt").write_text("hi") and p / "x.txt", "unsupported data"),
    (lambda p: (p / "bad.npz").write_bytes(b"not a zip") and p / "bad.npz", "cannot read"),
])
def test_bad_data_is_one_line_error(tmp_path, make, match):
    with pytest.raises(DataError, match=match) as e:
        load_dataset(str(make(tmp_path)), (8, 8, 3))
    assert "\n" not in str(e.value)


def test_unreadable_image_and_npz_problems(tmp_path):
    root = _write_folder(tmp_path / "imgs")
    (root / "cat" / "broken.png").write_bytes(b"\x89PNG garbage")
    with pytest.raises(DataError, match="cannot read image .*broken.png"):
        load_dataset(str(root), (8, 8, 3))
    np.savez(tmp_path / "nokeys.npz", images=np.zeros((4, 8, 8)))
    with pytest.raises(DataError, match="'x' and 'y'"):
        load_dataset(str(tmp_path / "nokeys.npz"), (8, 8, 3))
    np.savez(tmp_path / "floaty.npz", x=np.zeros((4, 8, 8)), y=np.zeros(4))
    with pytest.raises(DataError, match="integers"):
        load_dataset(str(tmp_path / "floaty.npz"), (8, 8, 3))


def test_labels_out_of_range(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 8, 8)), y=np.arange(20) % 12)
    with pytest.raises(DataError, match="out of range for a 10-class model"):
        load_dataset(str(tmp_path / "d.npz"), (8, 8, 3), num_classes=10)
