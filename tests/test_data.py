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
    assert ds.kind == "images" and ds.preprocess.name == "unit" and ds.resized_from == (20, 20, 3)
    assert 0.0 <= x.min() and x.max() <= 1.0


def _rows(x):
    """The samples of ``x`` as a sorted list of bytes (a split reorders them)."""
    return sorted(np.ascontiguousarray(r, dtype=np.float32).tobytes() for r in x)


def test_npz_is_used_as_given(tmp_path):
    """No division by 255, no clipping: x in [-1, 1] or 0..255 pixels reach the dataset unchanged."""
    rng = np.random.default_rng(0)
    for name, x in (("sym.npz", rng.uniform(-1, 1, (40, 10, 10, 3)).astype(np.float32)),
                    ("pix.npz", rng.integers(0, 256, (40, 10, 10, 3), dtype=np.uint8)),
                    ("wide.npz", rng.normal(0, 3, (40, 10, 10, 3)).astype(np.float32))):
        np.savez(tmp_path / name, x=x, y=np.arange(40) % 4)
        ds = load_dataset(str(tmp_path / name), (10, 10, 3))
        assert ds.num_classes == 4 and ds.kind == "npz" and ds.preprocess is None and ds.resized_from is None
        assert _rows(np.concatenate([ds.x_train, ds.x_test])) == _rows(x)
        doc = ds.input_doc()
        assert doc["as_given"] is True and doc["range"] == [float(x.min()), float(x.max())]
        assert "used as given" in ds.describe()


def test_npz_shape_changes_only_when_asked(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.uniform(-1, 1, (40, 12, 12)).astype(np.float32)
    np.savez(tmp_path / "d.npz", x=x, y=np.arange(40) % 4)
    with pytest.raises(DataError, match=r"x is 12x12 per sample but the model takes 10x10x3.*--resize"):
        load_dataset(str(tmp_path / "d.npz"), (10, 10, 3))
    ds = load_dataset(str(tmp_path / "d.npz"), (10, 10, 3), resize=True)
    assert ds.x_train.shape[1:] == (10, 10, 3) and ds.resized_from == (12, 12)
    assert ds.x_train.min() < -0.5 and ds.input_doc()["as_given"] is False  # resized, never clipped
    assert "resized from 12x12" in ds.describe()
    # (N, H, W) for a one-channel model is the same tensor: no --resize needed
    assert load_dataset(str(tmp_path / "d.npz"), (12, 12, 1)).resized_from is None


def test_preprocess_is_for_images_only(tmp_path):
    from edgesep.errors import UsageError

    np.savez(tmp_path / "d.npz", x=np.zeros((20, 8, 8, 3)), y=np.arange(20) % 2)
    with pytest.raises(UsageError, match="--preprocess is for images; d.npz holds the model's input tensors"):
        load_dataset(str(tmp_path / "d.npz"), (8, 8, 3), preprocess="symmetric")


def test_parse_preprocess_forms():
    from edgesep.data import PRESETS, parse_preprocess
    from edgesep.errors import UsageError

    assert parse_preprocess("caffe") is PRESETS["caffe"] and parse_preprocess(None) is None
    custom = parse_preprocess("scale=0.5, offset=-3,bgr")
    assert custom.name == "custom" and custom.bgr
    pixels = np.arange(6, dtype=np.float32).reshape(1, 1, 2, 3)
    np.testing.assert_allclose(custom.apply(pixels), pixels[..., ::-1] * 0.5 - 3)
    assert parse_preprocess(custom.spec()).linear() == custom.linear()
    assert PRESETS["symmetric"].linear(1) == ([1 / 127.5], [-1.0])
    for bad in ("mobilenet", "scale=a", "offset=1", "scale=0", "scale=1,scale=2", "scale=1,rgb"):
        with pytest.raises(UsageError, match="preprocess"):
            parse_preprocess(bad)


def test_digits_take_the_stated_preprocessing():
    unit = load_dataset("digits", (8, 8, 1))
    sym = load_dataset("digits", (8, 8, 1), preprocess="symmetric")
    assert unit.preprocess.name == "unit" and sym.preprocess.name == "symmetric"
    np.testing.assert_allclose(sym.x_test, unit.x_test * 2 - 1, atol=1e-6)
    assert sym.x_test.min() == -1.0


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
    with pytest.raises(DataError, match="must contain an array 'x'"):
        load_dataset(str(tmp_path / "nokeys.npz"), (8, 8, 3))
    np.savez(tmp_path / "floaty.npz", x=np.zeros((4, 8, 8)), y=np.zeros(4))
    with pytest.raises(DataError, match="integers"):
        load_dataset(str(tmp_path / "floaty.npz"), (8, 8, 3))


def test_labels_out_of_range(tmp_path):
    np.savez(tmp_path / "d.npz", x=np.zeros((20, 8, 8, 3)), y=np.arange(20) % 12)
    with pytest.raises(DataError, match="out of range for a 10-class model"):
        load_dataset(str(tmp_path / "d.npz"), (8, 8, 3), num_classes=10)
