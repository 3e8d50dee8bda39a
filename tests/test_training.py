"""Training: Keras-style RMSprop and decay, in-memory batches, early stopping, repeatability."""

import pytest
import torch

from imbadv.errors import TrainingError
from imbadv.models.vgg import VGG
from imbadv.training import TrainSettings
from imbadv.training.loop import Classifier, TensorBatches, fit, keras_decay


def test_keras_decay_schedule():
    settings = TrainSettings(lr=1e-4, decay=1e-5)
    optimizer = Classifier(VGG(width=0.125), settings).configure_optimizers()
    opt, sched = optimizer["optimizer"], optimizer["lr_scheduler"]["scheduler"]
    assert optimizer["lr_scheduler"]["interval"] == "step"
    group = opt.param_groups[0]
    assert group["alpha"] == 0.9 and group["eps"] == 1e-7  # Keras' rho and epsilon
    for _ in range(1000):
        opt.step()
        sched.step()
    assert group["lr"] == pytest.approx(1e-4 / (1 + 1e-5 * 1000))
    assert keras_decay(1e-5)(100_000) == pytest.approx(0.5)


def test_batches_cover_every_sample_once_and_reshuffle():
    x, y = torch.arange(10, dtype=torch.uint8).view(10, 1, 1, 1), torch.arange(10)
    batches = TensorBatches(x, y, batch_size=4, shuffle=True, seed=0)
    assert len(batches) == 3
    first = torch.cat([b[1] for b in batches])
    second = torch.cat([b[1] for b in batches])
    assert sorted(first.tolist()) == list(range(10)) and not torch.equal(first, second)
    again = TensorBatches(x, y, batch_size=4, shuffle=True, seed=0)
    assert torch.equal(torch.cat([b[1] for b in again]), first)


def toy_data(n=96, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (torch.rand(n, 3, 32, 32, generator=gen) * 100 + y.view(-1, 1, 1, 1) * 120).to(torch.uint8)
    return x, y


def train_once(settings):
    model = VGG(num_classes=2, width=0.125)
    model.reset_parameters(torch.Generator().manual_seed(0))
    record = fit(model, toy_data(), toy_data(32, seed=1), settings, torch.device("cpu"), seed=0)
    return model, record


def test_training_is_repeatable_and_learns():
    settings = TrainSettings(lr=1e-3, batch_size=32, max_epochs=3, patience=2)
    a, record = train_once(settings)
    b, _ = train_once(settings)
    assert all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    assert record["history"][-1]["val/acc"] > 0.9
    assert all(h["train/loss"] > 0 for h in record["history"])  # one training loss per epoch
    assert 0 <= record["best_epoch"] < 3 and not a.training


def test_early_stopping_stops_before_the_cap():
    settings = TrainSettings(lr=1e-3, batch_size=32, max_epochs=40, patience=1)
    _, record = train_once(settings)
    assert record["epochs"] < 40
    assert record["best_val_loss"] == min(h["val/loss"] for h in record["history"])


def test_divergence_is_a_clear_error():
    with pytest.raises(TrainingError, match="diverged"):
        train_once(TrainSettings(lr=1e6, batch_size=32, max_epochs=3))
