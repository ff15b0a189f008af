"""Datasets: the built-in one (scikit-learn's digits), ImageFolder directories and .npz files.

Every dataset comes out as float32 NHWC images in [0, 1] at the model's input size, with int labels.
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Optional, Sequence

import numpy as np

BUILTIN = "digits"
TEST_FRACTION = 0.3
SPLIT_SEED = 0
MAX_CLASSES = 100_000  # a label above this is a broken labels array, not a class (ImageNet-21k has 21,843)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")


from edgesep.errors import DataError  # noqa: E402  (re-exported: edgesep.data.DataError)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Labelled images split into train and test parts."""

    name: str
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    class_names: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def calibration(self, n: int = 200, seed: int = 0) -> np.ndarray:
        """``n`` training images drawn without replacement (all of them when there are fewer)."""
        if n < 1:
            raise DataError(f"calibration needs at least 1 sample, got {n}")
        idx = np.random.default_rng(seed).permutation(len(self.x_train))[:n]
        return self.x_train[np.sort(idx)]

    def save_npz(self, path: Path, split: str = "test") -> None:
        """Write ``x`` and ``y`` of one split to ``path`` atomically."""
        x, y = (self.x_test, self.y_test) if split == "test" else (self.x_train, self.y_train)
        path = Path(path)
        tmp = path.with_name(f".{path.name}.tmp")
        with open(tmp, "wb") as f:
            np.savez(f, x=x, y=y)
        tmp.replace(path)


def load_dataset(spec: str = BUILTIN, input_shape: Sequence[int] = (32, 32, 3), *,
                 num_classes: Optional[int] = None) -> Dataset:
    """Load ``digits``, an ImageFolder directory or an ``.npz`` with ``x`` and ``y``, resized to ``input_shape``.

    Args:
        spec: ``digits``, a directory with one sub-folder of images per class, or a ``.npz`` file.
        input_shape: (height, width, channels) the images are brought to.
        num_classes: when given, labels must lie in ``[0, num_classes)``.

    Raises:
        DataError: unreadable, empty or inconsistent data.
    """
    shape = _check_shape(input_shape)
    if spec == BUILTIN:
        ds = _load_digits(shape)
    else:
        path = Path(spec)
        if not path.exists():
            raise DataError(f"data not found: {spec} (use 'digits', an image folder or a .npz file)")
        if path.is_dir():
            ds = _load_image_folder(path, shape)
        elif path.suffix == ".npz":
            ds = _load_npz(path, shape)
        else:
            raise DataError(f"unsupported data {spec}: use 'digits', an image folder or a .npz file with x and y")
    if num_classes is not None:
        _check_labels(ds, num_classes)
    for part in (ds.x_train, ds.x_test):
        if part.size and not np.isfinite(part).all():
            raise DataError(f"{ds.name}: images hold NaN or infinite values")
    return ds


def _check_shape(input_shape: Sequence[int]) -> tuple[int, int, int]:
    shape = tuple(int(v) for v in input_shape)
    if len(shape) != 3 or shape[2] not in (1, 3) or min(shape) < 1:
        raise DataError(f"model input must be (height, width, 1 or 3 channels), got {shape}")
    return shape  # type: ignore[return-value]


def _check_labels(ds: Dataset, num_classes: int) -> None:
    labels = np.concatenate([ds.y_train, ds.y_test])
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataError(f"labels out of range for a {num_classes}-class model: "
                        f"found {int(labels.min())}..{int(labels.max())} in {ds.name}")


def _split(name: str, x: np.ndarray, y: np.ndarray, class_names: Sequence[str]) -> Dataset:
    """A fixed stratified split (``TEST_FRACTION`` to test, seed ``SPLIT_SEED``)."""
    from sklearn.model_selection import train_test_split

    counts = np.bincount(y)
    stratify = y if len(y) >= 2 * len(counts) and counts[counts > 0].min() >= 2 else None
    try:
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                              stratify=stratify)
    except ValueError as e:
        raise DataError(f"cannot split {name} into train and test: {e}") from None
    return Dataset(name, xtr, ytr.astype(np.int64), xte, yte.astype(np.int64), tuple(class_names))


def _resize(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """NHWC (or NHW) float images in [0, 1] -> ``shape`` with bilinear resizing and channel fitting."""
    from PIL import Image

    h, w, c = shape
    if images.ndim == 3:
        images = images[..., None]
    if images.shape[1:3] != (h, w):
        out = np.empty((len(images), h, w, images.shape[3]), np.float32)
        for i, img in enumerate(images):
            for ch in range(img.shape[2]):
                pil = Image.fromarray(img[..., ch].astype(np.float32), mode="F")
                out[i, ..., ch] = np.asarray(pil.resize((w, h), Image.BILINEAR))
        images = out
    if images.shape[3] != c:
        images = images.mean(axis=3, keepdims=True) if c == 1 else np.repeat(images[..., :1], c, axis=3)
    return np.clip(images, 0.0, 1.0).astype(np.float32)


def _load_digits(shape: tuple[int, int, int]) -> Dataset:
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = _resize(digits.images.astype(np.float32) / 16.0, shape)
    return _split(BUILTIN, x, digits.target.astype(np.int64), [str(i) for i in range(10)])


def _load_npz(path: Path, shape: tuple[int, int, int]) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f or "y" not in f:
                raise DataError(f"{path} must contain arrays 'x' and 'y' (found: {', '.join(f.files) or 'none'})")
            x, y = np.asarray(f["x"]), np.asarray(f["y"])
    except DataError:
        raise
    except Exception as e:  # zipfile/pickle/format errors of a corrupt file
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if x.ndim not in (3, 4) or len(x) == 0 or len(x) != len(y) or y.ndim != 1:
        raise DataError(f"{path}: need x of shape (N, H, W[, C]) and y of shape (N,), got {x.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: labels y must be integers, got {y.dtype}")
    if y.min() < 0 or y.max() >= MAX_CLASSES:
        raise DataError(f"{path}: labels y must lie in 0..{MAX_CLASSES - 1}, found {int(y.min())}..{int(y.max())}")
    x = x.astype(np.float32)
    if x.max(initial=0.0) > 1.0:  # 0..255 pixels
        x = x / 255.0
    names = [str(i) for i in range(int(y.max()) + 1)]
    return _split(path.name, _resize(x, shape), y.astype(np.int64), names)


def _load_image_folder(root: Path, shape: tuple[int, int, int]) -> Dataset:
    from PIL import Image, UnidentifiedImageError

    classes = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(f"{root} has no class sub-folders (ImageFolder layout: {root}/<class>/<image>)")
    images, labels, sizes = [], [], set()
    mode = "L" if shape[2] == 1 else "RGB"
    for label, cls in enumerate(classes):
        for f in sorted((root / cls).iterdir()):
            if f.suffix.lower() not in IMAGE_SUFFIXES:
                continue
            try:
                with Image.open(f) as img:
                    sizes.add(img.size)
                    img = img.convert(mode).resize((shape[1], shape[0]), Image.BILINEAR)
                    images.append(np.asarray(img, np.float32).reshape(shape) / 255.0)
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"cannot read image {f}: {e}") from None
            labels.append(label)
    if not images:
        raise DataError(f"{root} contains no readable images ({', '.join(IMAGE_SUFFIXES)})")
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4])
        raise DataError(f"{root}: images have mixed sizes ({listed}); resize them to one size first")
    return _split(root.name, np.stack(images), np.asarray(labels, np.int64), classes)
