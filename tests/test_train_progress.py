"""Training shows what Keras users expect: epoch, step, running accuracy and an ETA, after every step."""
import dataclasses

import pytest


@pytest.mark.slow
def test_train_reports_every_step_with_accuracy_and_eta(digits):
    from edgesep.data import Dataset
    from edgesep.models import ModelConfig
    from edgesep.train import TrainConfig, train_builtin

    small = Dataset("digits-small", digits.x_train[:96], digits.y_train[:96], digits.x_test[:32],
                    digits.y_test[:32], digits.class_names)
    seen = []
    train_builtin(ModelConfig(form="split", input_shape=(32, 32, 3), blocks=((8, 2),)),
                  TrainConfig(epochs=2, batch_size=32), dataset=small, use_cache=False, on_progress=seen.append)
    assert len(seen) == 2 * 3  # 96 images / batch 32 = 3 steps, 2 epochs
    assert [(p.epoch, p.step) for p in seen] == [(1, 1), (1, 2), (1, 3), (2, 1), (2, 2), (2, 3)]
    assert all(p.epochs == 2 and p.steps == 3 for p in seen)
    assert all(0.0 <= p.accuracy <= 1.0 and p.loss > 0 for p in seen)
    etas = [p.eta_s for p in seen]
    assert etas[-1] == 0 and all(e >= 0 for e in etas) and etas[0] > 0
    line = seen[2].describe()
    assert line.startswith("epoch 1/2  step 3/3  accuracy ") and "ETA" in line
    assert dataclasses.asdict(seen[0])["epoch"] == 1
