"""Datasets: the built-in one (scikit-learn's digits), ImageFolder directories and .npz files.

A ``.npz`` holds the model's input tensors: ``x`` is used as given (no scaling, no clipping) and is resized
or has its channels fitted only when asked (``resize=True``). Images (a folder, or the built-in digits) become
tensors through a stated :class:`Preprocess`, with presets named after the Keras application families, so
that calibration and verification see the values the model was trained on. Every dataset comes out as
float32 NHWC tensors at the model's input size, with int labels (a ``.npz`` may have none: it calibrates and
verifies without accuracy), and says how it was made (``input_doc``).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any, Optional, Sequence, Union

import numpy as np

from edgesep.errors import DataError, UsageError
from edgesep.preprocess import PREPROCESS_HELP, PRESETS, Preprocess, parse_preprocess  # re-exported here

BUILTIN = "digits"
TEST_FRACTION = 0.3
SPLIT_SEED = 0
MAX_CLASSES = 100_000  # a label above this is a broken labels array, not a class (ImageNet-21k has 21,843)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm", ".pgm")

__all__ = ["BUILTIN", "DataError", "DataOptions", "Dataset", "PRESETS", "PREPROCESS_HELP", "Preprocess", "load_dataset",
           "parse_preprocess"]


def _check_data_kind(path: Path) -> None:
    """DataError unless ``path`` is a folder or a ``.npz`` file: what ``--data`` takes besides ``digits``."""
    if not path.exists():
        raise DataError(f"data not found: {path} (use 'digits', an image folder or a .npz file)")
    if path.is_dir() or (path.suffix == ".npz" and path.is_file()):
        return
    if path.suffix.lower() in IMAGE_SUFFIXES:
        raise DataError(f"--data {path} is one image: give the folder of images (one sub-folder per class), "
                        "or a .npz file with x and y")
    raise DataError(f"unsupported data {path}: use 'digits', an image folder or a .npz file with x and y")


@dataclasses.dataclass(frozen=True)
class DataOptions:
    """``--data``, ``--preprocess`` and ``--resize``: parsed once (``preprocess`` becomes a :class:`Preprocess`
    here) and checked together, before any slow import.

    Raises:
        UsageError: ``--preprocess``/``--resize`` without ``--data``, ``--preprocess`` with a ``.npz``, a bad
            ``--preprocess``. DataError: ``--data`` names nothing, or neither a folder nor a ``.npz`` file.
    """

    data: Optional[str] = None
    preprocess: Optional[Preprocess] = None
    resize: bool = False

    def __post_init__(self):
        object.__setattr__(self, "preprocess", parse_preprocess(self.preprocess))
        given = [flag for flag, value in (("--preprocess", self.preprocess), ("--resize", self.resize)) if value]
        if given and self.data is None:
            raise UsageError(f"{' and '.join(given)} say{'s' if len(given) == 1 else ''} how --data becomes "
                             "model input; add --data")
        if self.data is not None and self.data != BUILTIN:
            _check_data_kind(Path(self.data))
        if self.preprocess is not None and self.is_npz:
            raise UsageError(f"--preprocess is for images; {Path(self.data).name} holds the model's input tensors, "
                             "used as given (scale them before saving, or pass an image folder)")

    @property
    def is_npz(self) -> bool:
        """Is ``data`` a .npz of input tensors (used as given)?"""
        return self.data is not None and Path(self.data).suffix == ".npz" and Path(self.data).is_file()

    def load(self, input_shape: Sequence[int], num_classes: Optional[int] = None,
             preprocess: Optional[Preprocess] = None) -> "Dataset":
        """The data at ``input_shape`` (``preprocess`` overrides the given one, e.g. read from the model)."""
        return load_dataset(self.data or BUILTIN, input_shape, num_classes=num_classes,
                            preprocess=preprocess or self.preprocess, resize=self.resize)


@dataclasses.dataclass(frozen=True)
class Dataset:
    """Labelled model-input tensors split into train and test parts, and how they were made.

    Attributes:
        kind: ``builtin`` (digits), ``images`` (an ImageFolder) or ``npz``.
        preprocess: how images became tensors (None for a ``.npz``: its ``x`` is the tensor).
        resized_from: the (height, width, channels) the data had before being brought to the model's input.
        preprocess_source: why this preprocessing (given, the built-in default, read from the model).
    """

    name: str
    x_train: np.ndarray
    y_train: Optional[np.ndarray]
    x_test: np.ndarray
    y_test: Optional[np.ndarray]
    class_names: tuple[str, ...]
    kind: str = "builtin"
    preprocess: Optional[Preprocess] = None
    resized_from: Optional[tuple[int, ...]] = None
    preprocess_source: str = ""
    label_output: Optional[str] = None  # a model with several outputs: the output the labels belong to

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def labelled(self) -> bool:
        """Does it hold labels? (A ``.npz`` with only ``x`` calibrates and verifies, without accuracy.)"""
        return self.y_test is not None

    def calibration(self, n: int = 200, seed: int = 0) -> np.ndarray:
        """``n`` training images drawn without replacement (all of them when there are fewer)."""
        if n < 1:
            raise DataError(f"calibration needs at least 1 sample, got {n}")
        idx = np.random.default_rng(seed).permutation(len(self.x_train))[:n]
        return self.x_train[np.sort(idx)]

    def input_doc(self) -> dict[str, Any]:
        """How the tensors were made, for export.json: kind, preprocessing, resizing, value range."""
        lo = min(float(self.x_train.min(initial=np.inf)), float(self.x_test.min(initial=np.inf)))
        hi = max(float(self.x_train.max(initial=-np.inf)), float(self.x_test.max(initial=-np.inf)))
        return {"kind": self.kind, "as_given": self.kind == "npz" and self.resized_from is None,
                "preprocess": None if self.preprocess is None else self.preprocess.to_dict(),
                "preprocess_source": self.preprocess_source or None,
                "resized_from": None if self.resized_from is None else list(self.resized_from),
                "range": [lo, hi]}

    def describe(self) -> str:
        """One line for tables: what the tensors are and what was done to them."""
        if self.kind == "npz":
            text = f"{self.name}: tensors used as given"
        else:
            text = f"{self.name}: images, --preprocess {self.preprocess.spec() if self.preprocess else 'unit'}"
        if self.resized_from is not None:
            text += f", resized from {'x'.join(map(str, self.resized_from))}"
        return text

    def save_npz(self, path: Path, split: str = "test") -> None:
        """Write ``x`` and ``y`` of one split to ``path`` atomically."""
        import io

        from edgesep.io import write_bytes

        x, y = (self.x_test, self.y_test) if split == "test" else (self.x_train, self.y_train)
        buffer = io.BytesIO()
        np.savez(buffer, x=x, **({} if y is None else {"y": y}))
        write_bytes(path, buffer.getvalue())


def load_dataset(spec: str = BUILTIN, input_shape: Sequence[int] = (32, 32, 3), *,
                 num_classes: Optional[int] = None, preprocess: Union[str, Preprocess, None] = None,
                 resize: bool = False) -> Dataset:
    """Load ``digits``, an ImageFolder directory or an ``.npz`` with ``x`` and ``y`` for a model input.

    Args:
        spec: ``digits``, a directory with one sub-folder of images per class, or a ``.npz`` file.
        input_shape: (height, width, channels) of the model's input.
        num_classes: when given, labels must lie in ``[0, num_classes)``.
        preprocess: for images (a folder or digits): a preset name, ``scale=S,offset=O[,bgr]`` or a
            :class:`Preprocess`; None means ``unit`` (pixels / 255). Not allowed with a ``.npz``.
        resize: for a ``.npz`` whose ``x`` is not ``input_shape``: resize bilinearly and fit the channels
            (without it such a file is refused). Images are always brought to the input size (recorded).

    Raises:
        DataError: unreadable, empty or inconsistent data. UsageError: a bad ``preprocess``.
    """
    shape = _check_shape(input_shape)
    recipe = parse_preprocess(preprocess)
    if spec == BUILTIN:
        ds = _load_digits(shape, recipe)
    else:
        path = Path(spec)
        if not path.exists():
            raise DataError(f"data not found: {spec} (use 'digits', an image folder or a .npz file)")
        if path.is_dir():
            ds = _load_image_folder(path, shape, recipe or PRESETS["unit"])
        elif path.suffix == ".npz":
            if recipe is not None:
                raise UsageError(f"--preprocess is for images; {path.name} holds the model's input tensors, "
                                 "used as given (scale them before saving, or pass an image folder)")
            ds = _load_npz(path, shape, resize)
        else:
            raise DataError(f"unsupported data {spec}: use 'digits', an image folder or a .npz file with x and y")
    if num_classes is not None and ds.labelled:
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


def _split(name: str, x: np.ndarray, y: Optional[np.ndarray], class_names: Sequence[str], **how: Any) -> Dataset:
    """A fixed stratified split (``TEST_FRACTION`` to test, seed ``SPLIT_SEED``); without labels, a plain one."""
    from sklearn.model_selection import train_test_split

    if y is None:
        try:
            xtr, xte = train_test_split(x, test_size=TEST_FRACTION, random_state=SPLIT_SEED)
        except ValueError as e:
            raise DataError(f"cannot split {name} into train and test: {e}") from None
        return Dataset(name, xtr, None, xte, None, (), **how)
    counts = np.bincount(y)
    stratify = y if len(y) >= 2 * len(counts) and counts[counts > 0].min() >= 2 else None
    try:
        xtr, xte, ytr, yte = train_test_split(x, y, test_size=TEST_FRACTION, random_state=SPLIT_SEED,
                                              stratify=stratify)
    except ValueError as e:
        raise DataError(f"cannot split {name} into train and test: {e}") from None
    return Dataset(name, xtr, ytr.astype(np.int64), xte, yte.astype(np.int64), tuple(class_names), **how)


def _resize(images: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    """NHWC (or NHW) float images -> ``shape``: bilinear resizing and channel fitting; values not clipped."""
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
    return images.astype(np.float32)


def _load_digits(shape: tuple[int, int, int], recipe: Optional[Preprocess]) -> Dataset:
    """Digits (8x8 grey, 17 levels) brought to ``shape`` in [0, 1]; another preprocessing maps 1.0 to pixel 255."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = np.clip(_resize(digits.images.astype(np.float32) / 16.0, shape), 0.0, 1.0)
    if recipe is not None and recipe != PRESETS["unit"]:
        x = recipe.apply(x * np.float32(255.0))
    return _split(BUILTIN, x, digits.target.astype(np.int64), [str(i) for i in range(10)],
                  kind="builtin", preprocess=recipe or PRESETS["unit"])


def _load_npz(path: Path, shape: tuple[int, int, int], resize: bool) -> Dataset:
    try:
        with np.load(path, allow_pickle=False) as f:
            if "x" not in f:
                raise DataError(f"{path} must contain an array 'x' (and labels 'y' for accuracy; found: "
                                f"{', '.join(f.files) or 'none'})")
            x, y = np.asarray(f["x"]), (np.asarray(f["y"]) if "y" in f else None)
    except DataError:
        raise
    except Exception as e:  # zipfile/pickle/format errors of a corrupt file
        raise DataError(f"cannot read {path}: {type(e).__name__}: {e}") from None
    if x.ndim not in (3, 4) or len(x) == 0:
        raise DataError(f"{path}: need x of shape (N, H, W[, C]), got {x.shape}")
    if y is not None:
        _check_npz_labels(path, x, y)
    if not (np.issubdtype(x.dtype, np.integer) or np.issubdtype(x.dtype, np.floating)):
        raise DataError(f"{path}: x must hold numbers, got {x.dtype}")
    x = x.astype(np.float32)
    if not np.isfinite(x).all():
        raise DataError(f"{path}: x holds NaN or infinite values")
    if x.ndim == 3 and shape[2] == 1:
        x = x[..., None]  # (N, H, W) is the single-channel tensor; adding its axis changes no value
    given = tuple(int(v) for v in x.shape[1:])
    resized_from = None
    if given != shape:
        if not resize:
            raise DataError(f"{path.name}: x is {'x'.join(map(str, given))} per sample but the model takes "
                            f"{'x'.join(map(str, shape))}; a .npz is used as given: save it at that size, or pass "
                            "--resize to resize bilinearly and fit the channels")
        x, resized_from = _resize(x, shape), given
    if y is None:
        return _split(path.name, x, None, (), kind="npz", resized_from=resized_from)
    names = [str(i) for i in range(int(y.max()) + 1)]
    return _split(path.name, x, y.astype(np.int64), names, kind="npz", resized_from=resized_from)


def _check_npz_labels(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    if len(x) != len(y) or y.ndim != 1:
        raise DataError(f"{path}: need x of shape (N, H, W[, C]) and y of shape (N,), got {x.shape} and {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise DataError(f"{path}: labels y must be integers, got {y.dtype}")
    if y.min() < 0 or y.max() >= MAX_CLASSES:
        raise DataError(f"{path}: labels y must lie in 0..{MAX_CLASSES - 1}, found {int(y.min())}..{int(y.max())}")


def _load_image_folder(root: Path, shape: tuple[int, int, int], recipe: Preprocess) -> Dataset:
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
                    img = img.convert(mode)
                    if img.size != (shape[1], shape[0]):
                        img = img.resize((shape[1], shape[0]), Image.BILINEAR)
                    images.append(np.asarray(img, np.uint8).reshape(shape))
            except (UnidentifiedImageError, OSError) as e:
                raise DataError(f"cannot read image {f}: {e}") from None
            labels.append(label)
    if not images:
        raise DataError(f"{root} contains no readable images ({', '.join(IMAGE_SUFFIXES)})")
    if len(sizes) > 1:
        listed = ", ".join(f"{w}x{h}" for w, h in sorted(sizes)[:4])
        raise DataError(f"{root}: images have mixed sizes ({listed}); resize them to one size first")
    (w, h), = sizes
    resized_from = None if (h, w) == shape[:2] else (h, w, shape[2])
    return _split(root.name, recipe.apply(np.stack(images)), np.asarray(labels, np.int64), classes,
                  kind="images", preprocess=recipe, resized_from=resized_from)
