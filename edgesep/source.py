"""What edgesep exports: a :class:`ModelSource` -- a Keras file, or the built-in network and how it is
trained -- with its data, the data's preprocessing, resizing and the input size. Every rule between those
options is checked in its constructor, before any slow import; ``--preprocess`` is parsed there once into a
``Preprocess`` value that travels on. ``load()`` reads the Keras file, or trains the built-in network (through
``edgesep.train``, the one place it is trained), and the data.

Sits above ``converters/`` (it uses ``converters.graph.load_model`` and the model-read preprocessing of
``converters.input_domain``); the export front door takes a ModelSource without importing this module.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional, Union

from edgesep.data import PRESETS, DataOptions, Preprocess, parse_preprocess
from edgesep.errors import UsageError
from edgesep.models import ModelConfig
from edgesep.train import TrainConfig

Say = Callable[[str], None]


@dataclasses.dataclass(frozen=True)
class LoadedSource:
    """A loaded source: the Keras model, its data (None: no ``--data`` for a Keras file) and export.json's
    ``source`` section."""

    model: Any
    dataset: Any
    doc: dict[str, Any]


@dataclasses.dataclass(frozen=True)
class ModelSource:
    """A Keras model file, or the built-in network; its data and how the data become model input.

    Attributes:
        model: a Keras model file (.keras/.h5/.hdf5); None: the built-in network.
        network: the built-in network's config (default ``ModelConfig()``; ``num_classes`` follows the data).
        train: how the built-in network is trained (default ``TrainConfig()``).
        data: ``digits``, an image folder or a ``.npz`` (default for the built-in network: ``digits``).
        preprocess: how images become the model's input (a ``Preprocess``; a string is parsed here, once).
        resize: fit a ``.npz`` of another size to the model's input.
        input_size: ``(H, W)`` to export a Keras model that takes any size at.
        trust_model: load the Keras file outside Keras' safe mode (its Lambda layers' code runs).
        custom_objects: a ``.py`` file imported before loading the Keras file (its custom layers resolve).

    Raises:
        UsageError: options that do not go together (one line, exit 2). DataError: ``data`` names nothing.
    """

    model: Optional[str] = None
    network: Optional[ModelConfig] = None
    train: Optional[TrainConfig] = None
    data: Optional[str] = None
    preprocess: Optional[Preprocess] = None
    resize: bool = False
    input_size: Optional[tuple[int, int]] = None
    trust_model: bool = False
    custom_objects: Optional[str] = None
    label_output: Optional[str] = None
    inputs: DataOptions = dataclasses.field(init=False, repr=False, compare=False)

    def __post_init__(self):
        object.__setattr__(self, "preprocess", parse_preprocess(self.preprocess))
        if self.model is not None and (self.network is not None or self.train is not None):
            raise UsageError("the built-in network's options (--form, training) cannot be combined with --model")
        if self.label_output is not None and (self.model is None or self.data is None):
            raise UsageError("--label-output names the output of a --model the labels of --data belong to; "
                             "add --model and --data")
        if self.model is not None:
            from edgesep.converters.custom_objects import LoadOptions

            LoadOptions(self.trust_model, self.custom_objects)  # a missing or non-.py file: one line now
        else:
            if self.trust_model or self.custom_objects:
                raise UsageError("--trust-model and --custom-objects are for a --model file; add --model")
            if self.preprocess is not None and self.preprocess != PRESETS["unit"]:
                raise UsageError("--preprocess is for --model: the built-in network is trained on images in "
                                 "[0, 1] (--preprocess unit)")
            if self.input_size is not None:
                raise UsageError("--input-size fixes the input of a --model that takes any size; add --model")
            object.__setattr__(self, "network", self.network or ModelConfig())
            object.__setattr__(self, "train", self.train or TrainConfig())
        object.__setattr__(self, "inputs", DataOptions(self.data, self.preprocess, self.resize))

    @classmethod
    def from_options(cls, *, model: Optional[str] = None, form: Optional[str] = None, data: Optional[str] = None,
                     preprocess: Union[str, Preprocess, None] = None, resize: bool = False,
                     input_size: Optional[tuple[int, int]] = None, trust_model: bool = False,
                     custom_objects: Optional[str] = None, label_output: Optional[str] = None) -> "ModelSource":
        """The source of ``edgesep export``'s options."""
        if model and form:
            raise UsageError("--form builds the built-in network; it cannot be combined with --model")
        network = None if model else ModelConfig(form=form or "split")
        return cls(model=model, network=network, data=data, preprocess=preprocess, resize=resize,
                   input_size=input_size, trust_model=trust_model, custom_objects=custom_objects,
                   label_output=label_output)

    @property
    def has_data(self) -> bool:
        """Is there data to calibrate on (the built-in network always has its digits)?"""
        return self.model is None or self.data is not None

    def load(self, progress: Optional[Say] = None, note: Optional[Say] = None) -> LoadedSource:
        """Load the Keras file (and ``data`` at its input, labels checked against its outputs), or train the
        built-in network on ``data`` (default digits; cached). Images of a Keras model without ``preprocess``
        go through what the model tells (``note`` says so), else a UsageError asks for ``--preprocess``."""
        say = progress or (lambda stage: None)
        if self.model is not None:
            return self._load_file(say, note or (lambda text: None))
        return self._train_builtin(say)

    def _load_file(self, say: Say, note: Say) -> LoadedSource:
        from edgesep.converters.graph import load_model

        say("load model")
        model = load_model(self.model, input_size=self.input_size, trust_model=self.trust_model,
                           custom_objects=self.custom_objects)
        dataset = None
        if self.data is not None:
            say("load data")
            dataset = self._file_data(model, note)
        doc = {"model": str(self.model), **({"input_size": list(self.input_size)} if self.input_size else {})}
        return LoadedSource(model, dataset, doc)

    def _file_data(self, model, note: Say):
        """The data at the Keras model's input: images through the given or the model-read preprocessing."""
        from edgesep.converters.input_domain import suggest_preprocess
        from edgesep.data import PREPROCESS_HELP

        recipe, source = self.preprocess, "given (--preprocess)"
        if recipe is None and not self.inputs.is_npz:
            recipe, reason = suggest_preprocess(model)
            if recipe is None:
                raise UsageError(f"--data {self.data} holds images: say how they become {model.name}'s input with "
                                 f"--preprocess {PREPROCESS_HELP} ({reason})")
            source = f"read from the model: {reason}"
            note(f"{reason}; using --preprocess {recipe.name} ({recipe.families}); give --preprocess to override")
        from edgesep.converters.outputs import plan_outputs

        dataset = self.inputs.load(model.input_shape[1:], plan_outputs(model, self.label_output).classes,
                                   preprocess=recipe)
        if self.label_output is not None:
            dataset = dataclasses.replace(dataset, label_output=self.label_output)
        return dataset if self.inputs.is_npz else dataclasses.replace(dataset, preprocess_source=source)

    def _train_builtin(self, say: Say) -> LoadedSource:
        from edgesep.converters._quiet import import_tensorflow
        from edgesep.train import train_builtin

        say("load data")
        dataset = self.inputs.load(self.network.input_shape)
        if dataset.preprocess is not None:
            dataset = dataclasses.replace(dataset, preprocess_source="the built-in network takes images in [0, 1]")
        say("train built-in model")
        import_tensorflow()  # TensorFlow's start-up logs silenced before Keras loads it
        network = dataclasses.replace(self.network, num_classes=max(dataset.num_classes, 2))
        model, info = train_builtin(network, self.train, dataset=dataset,
                                    on_progress=lambda p: say(f"train built-in model: {p.describe()}"))
        return LoadedSource(model, dataset, {"builtin": network.form, "cached": info["cached"],
                                             "train_test_accuracy": info["test_accuracy"]})
