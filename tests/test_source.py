"""ModelSource: every rule between model, built-in network, data, preprocessing, resizing and input size in its
constructor; --preprocess parsed there once; DataOptions for bench and compare."""
import numpy as np
import pytest

from edgesep.errors import DataError, UsageError


@pytest.mark.parametrize("options, error, message", [
    ({"model": "m.keras", "form": "fused"}, UsageError, "--form builds the built-in network"),
    ({"preprocess": "caffe"}, UsageError, "the built-in network is trained on images in [0, 1]"),
    ({"input_size": (8, 8)}, UsageError, "--input-size fixes the input of a --model"),
    ({"resize": True}, UsageError, "--resize says how --data becomes model input; add --data"),
    ({"model": "m.keras", "preprocess": "raw"}, UsageError, "--preprocess says how --data"),
    ({"model": "m.keras", "preprocess": "imagenet", "data": "digits"}, UsageError, "unknown --preprocess 'imagenet'"),
    ({"data": "/nonexistent/imgs"}, DataError, "data not found: /nonexistent/imgs"),
])
def test_every_source_rule_is_the_constructors(options, error, message):
    from edgesep.source import ModelSource

    with pytest.raises(error, match=message.replace("[", r"\[").replace("]", r"\]")) as e:
        ModelSource.from_options(**options)
    assert "\n" not in str(e.value)


def test_preprocess_is_parsed_once_into_a_value(tmp_path):
    from edgesep.data import PRESETS, DataOptions, Preprocess
    from edgesep.source import ModelSource

    source = ModelSource.from_options(model="m.keras", data="digits", preprocess="scale=0.5,offset=-1")
    assert isinstance(source.preprocess, Preprocess) and source.inputs.preprocess is source.preprocess
    assert source.has_data and not ModelSource(model="m.keras").has_data and ModelSource().has_data
    assert ModelSource().network.form == "split" and ModelSource.from_options(form="fused").network.form == "fused"
    np.savez(tmp_path / "d.npz", x=np.zeros((4, 8, 8, 3), np.float32), y=np.arange(4) % 2)
    with pytest.raises(UsageError, match="--preprocess is for images"):
        DataOptions(str(tmp_path / "d.npz"), "raw")
    assert DataOptions(str(tmp_path / "d.npz"), resize=True).is_npz
    recorded = PRESETS["symmetric"].to_dict(), source.preprocess.to_dict()
    assert [Preprocess.from_dict(d).spec() for d in recorded] == ["symmetric", "scale=0.5,offset=-1"]
