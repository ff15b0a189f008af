"""Short training of the built-in network on the built-in data, cached by config hash."""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
import time
from typing import Any, Callable, Optional

from edgesep.data import Dataset, load_dataset
from edgesep.errors import DataError
from edgesep.models import ModelConfig, build_from_config


@dataclasses.dataclass(frozen=True)
class TrainConfig:
    """How the built-in model is trained; part of the cache key."""

    epochs: int = 8
    batch_size: int = 32
    learning_rate: float = 3e-3
    seed: int = 0
    data: str = "digits"

    def __post_init__(self):
        if self.epochs < 1 or self.batch_size < 1 or not self.learning_rate > 0:
            raise ValueError("epochs and batch_size must be >= 1 and learning_rate > 0")


@dataclasses.dataclass(frozen=True)
class TrainProgress:
    """Where a training run is, as Keras users expect to see it: epoch, step, running accuracy and ETA."""

    epoch: int
    epochs: int
    step: int
    steps: int
    accuracy: Optional[float]
    loss: Optional[float]
    eta_s: Optional[float]

    def describe(self) -> str:
        """One short line, e.g. ``epoch 3/8  step 12/40  accuracy 0.912  ETA 14 s``."""
        parts = [f"epoch {self.epoch}/{self.epochs}", f"step {self.step}/{self.steps}"]
        if self.accuracy is not None:
            parts.append(f"accuracy {self.accuracy:.3f}")
        if self.eta_s is not None:
            parts.append(f"ETA {self.eta_s:.0f} s")
        return "  ".join(parts)


ProgressFn = Callable[[TrainProgress], None]


def _progress_callback(keras: Any, epochs: int, steps: int, on_progress: ProgressFn) -> Any:
    """A Keras callback that reports a ``TrainProgress`` after every batch."""

    class _Report(keras.callbacks.Callback):
        def on_train_begin(self, logs=None):
            self.start, self.epoch = time.monotonic(), 0

        def on_epoch_begin(self, epoch, logs=None):
            self.epoch = epoch

        def on_train_batch_end(self, batch, logs=None):
            logs = logs or {}
            done = self.epoch * steps + batch + 1
            elapsed = time.monotonic() - self.start
            eta = elapsed / done * (epochs * steps - done) if done else None
            acc, loss = logs.get("accuracy"), logs.get("loss")
            on_progress(TrainProgress(self.epoch + 1, epochs, batch + 1, steps,
                                      None if acc is None else float(acc), None if loss is None else float(loss),
                                      eta))

    return _Report()


def cache_dir() -> Path:
    """``$EDGESEP_CACHE``, else ``$XDG_CACHE_HOME/edgesep``, else ``~/.cache/edgesep``."""
    if os.environ.get("EDGESEP_CACHE"):
        return Path(os.environ["EDGESEP_CACHE"])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "edgesep"


def cache_key(model_cfg: ModelConfig, train_cfg: TrainConfig, dataset: Dataset) -> str:
    """A short hash of everything that determines the trained weights, the training images included."""
    import keras

    from edgesep import __version__

    blob = json.dumps({"model": model_cfg.to_dict(), "train": dataclasses.asdict(train_cfg),
                       "edgesep": __version__, "keras": keras.__version__}, sort_keys=True)
    digest = hashlib.sha256(blob.encode())
    digest.update(dataset.x_train.tobytes())
    digest.update(dataset.y_train.tobytes())
    return digest.hexdigest()[:16]


def train_builtin(model_cfg: Optional[ModelConfig] = None, train_cfg: Optional[TrainConfig] = None, *,
                  dataset: Optional[Dataset] = None, use_cache: bool = True, verbose: int = 0,
                  on_progress: Optional[ProgressFn] = None):
    """The built-in network trained on ``dataset`` (default: ``train_cfg.data``), cached by config and data.

    ``on_progress`` (when given) receives a ``TrainProgress`` after every training step.

    Returns:
        ``(model, info)``: a ``keras.Model`` and a dict with ``cache_path``, ``cached``, ``test_accuracy``.
    """
    import keras

    model_cfg = model_cfg or ModelConfig()
    train_cfg = train_cfg or TrainConfig()
    ds = dataset or load_dataset(train_cfg.data, model_cfg.input_shape, num_classes=model_cfg.num_classes)
    if not ds.labelled:
        raise DataError(f"{ds.name} holds no labels ('y'): the built-in network trains on labelled data")
    path = cache_dir() / f"{model_cfg.form}-{cache_key(model_cfg, train_cfg, ds)}.keras"
    meta_path = path.with_suffix(".json")
    if use_cache and path.exists() and meta_path.exists():
        try:
            model = keras.models.load_model(path, compile=False)
            return model, {**json.loads(meta_path.read_text()), "cache_path": str(path), "cached": True}
        except Exception:  # a damaged cache entry is retrained, not trusted
            pass
    model, meta = _fit(model_cfg, train_cfg, ds, verbose, on_progress)
    if use_cache:
        _save_atomic(model, meta, path, meta_path)
    return model, {**meta, "cache_path": str(path) if use_cache else None, "cached": False}


def _fit(model_cfg: ModelConfig, train_cfg: TrainConfig, ds: Dataset, verbose: int,
         on_progress: Optional[ProgressFn] = None) -> tuple[Any, dict]:
    import keras

    keras.utils.set_random_seed(train_cfg.seed)
    model = build_from_config(model_cfg)
    per_epoch = -(-len(ds.x_train) // train_cfg.batch_size)
    steps = train_cfg.epochs * per_epoch
    schedule = keras.optimizers.schedules.CosineDecay(train_cfg.learning_rate, steps)
    model.compile(optimizer=keras.optimizers.Adam(schedule), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(ds.x_train, ds.y_train, epochs=train_cfg.epochs, batch_size=train_cfg.batch_size,
              shuffle=True, verbose=verbose,
              callbacks=[_progress_callback(keras, train_cfg.epochs, per_epoch, on_progress)] if on_progress else None)
    recalibrate_batchnorm(model, ds.x_train)
    _, acc = model.evaluate(ds.x_test, ds.y_test, verbose=0)
    return model, {"test_accuracy": float(acc), "model_config": model_cfg.to_dict(),
                   "train_config": dataclasses.asdict(train_cfg)}


def recalibrate_batchnorm(model, x) -> int:
    """Set every BatchNormalization's moving statistics to the exact mean/variance of its input over ``x``.

    Short training leaves exponential moving averages behind the weights; folding BN from them would
    bake that lag into the convolutions. One training-mode pass over all of ``x`` as a single batch with
    momentum 0 gives each BN the statistics of its input as computed with the earlier BNs' new statistics,
    which is exactly what inference will see. Returns the number of BN layers updated.
    """
    import keras

    bns = [layer for layer in model.layers if isinstance(layer, keras.layers.BatchNormalization)]
    momenta = [bn.momentum for bn in bns]
    try:
        for bn in bns:
            bn.momentum = 0.0
        model(x, training=True)
    finally:
        for bn, momentum in zip(bns, momenta):
            bn.momentum = momentum
    return len(bns)


def _save_atomic(model, meta: dict, path: Path, meta_path: Path) -> None:
    from edgesep.io import write_text, write_with

    write_with(path, model.save)
    write_text(meta_path, json.dumps(meta, indent=1))
