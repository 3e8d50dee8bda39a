"""Training: Keras-style RMSprop and decay, in-memory batches, early stopping, repeatability."""

import inspect
from pathlib import Path

import pytest
import torch

from imbadv.core.errors import TrainingError
from imbadv.data.tensors import TensorBatches
from imbadv.models.vgg import VGG
from imbadv.pipeline.job import Job
from imbadv.schedules import KerasDecayParams
from imbadv.schedules.factors import keras_decay
from imbadv.training import Recipe, TrainSettings
from imbadv.training.loop import Classifier, fit


def test_keras_decay_schedule():
    settings = TrainSettings()
    recipe = Recipe.paper(lr=1e-4, decay=1e-5)
    optimizer = Classifier(VGG(width=0.125), settings, recipe=recipe).configure_optimizers()
    opt, sched = optimizer["optimizer"], optimizer["lr_scheduler"]["scheduler"]
    assert optimizer["lr_scheduler"]["interval"] == "step"
    group = opt.param_groups[0]
    assert group["alpha"] == 0.9 and group["eps"] == 1e-7  # Keras' rho and epsilon
    for _ in range(1000):
        opt.step()
        sched.step()
    assert group["lr"] == pytest.approx(1e-4 / (1 + 1e-5 * 1000))
    assert keras_decay(KerasDecayParams(decay=1e-5), 10, 100)(100_000) == pytest.approx(0.5)


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


def train_once(settings, lr=1e-3, **kwargs):
    model = VGG(num_classes=2, width=0.125)
    model.reset_parameters(torch.Generator().manual_seed(0))
    recipe = kwargs.pop("recipe", Recipe.paper(lr=lr))
    record = fit(
        model,
        toy_data(),
        toy_data(32, seed=1),
        settings,
        torch.device("cpu"),
        seed=0,
        recipe=recipe,
        **kwargs,
    )
    return model, record


def test_training_is_repeatable_and_learns():
    settings = TrainSettings(batch_size=32, max_epochs=3, patience=2)
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
    settings = TrainSettings(batch_size=32, max_epochs=40, patience=1)
    _, record = train_once(settings)
    assert record["epochs"] < 40
    assert record["best_val_loss"] == min(h["val/loss"] for h in record["history"])


def test_divergence_is_a_clear_error():
    with pytest.raises(TrainingError, match="diverged"):
        train_once(TrainSettings(batch_size=32, max_epochs=3), lr=1e6)


# --- long-tail options: sampler, selection rules, the test set kept out ---


def test_class_balanced_sampler_is_seeded_and_balances_classes():
    y = torch.tensor([0] * 90 + [1] * 10)
    x = torch.zeros(100, 1, 1, 1, dtype=torch.uint8)
    draws = [TensorBatches(x, y, 50, True, seed=s, sampler="class_balanced") for s in (1, 1, 2)]
    labels = [torch.cat([b[1] for b in d]) for d in draws]
    assert len(labels[0]) == 100 and torch.equal(labels[0], labels[1])
    assert not torch.equal(labels[0], labels[2])
    many = torch.cat([torch.cat([b[1] for b in draws[0]]) for _ in range(20)])
    assert abs(many.float().mean().item() - 0.5) < 0.05  # tail class drawn as often as the head


def test_selection_rules_pick_their_epoch_from_validation_only():
    last = TrainSettings(batch_size=32, max_epochs=3, patience=0, selection="last")
    _, record = train_once(last)
    assert record["epochs"] == 3 and record["best_epoch"] == 2  # patience ignored: no stopping
    assert record["selection_rule"] == "last"
    robust = TrainSettings(
        batch_size=32, max_epochs=3, selection="robust_val_acc", robust_val_steps=2
    )
    _, record = train_once(robust)
    curve = [h["val/robust_acc"] for h in record["history"]]
    assert len(curve) == 3 and record["best_epoch"] == curve.index(max(curve))
    assert record["selection_rule"] == "robust_val_acc"


def test_no_test_set_index_can_reach_model_selection(tmp_path, monkeypatch):
    """Everything training and selection see is the validation/training split of x_train."""
    from hydra import compose, initialize_config_dir

    import imbadv.pipeline.obtain as experiment
    from imbadv.config.settings import from_config
    from imbadv.data.load import load_dataset
    from imbadv.store import Store

    root = Path(__file__).resolve().parents[2] / "conf"
    overrides = [
        "experiment=smoke",
        "dataset.train_per_class=60",
        "dataset.test_per_class=10",
        "counts.majority=60",
        "imbalance=exp",
        "trainer.selection=robust_val_acc",
        f"paths.store_dir={tmp_path}",
    ]
    with initialize_config_dir(str(root), version_base="1.3"):
        s = from_config(compose("config", overrides=overrides))
    data = load_dataset(s.dataset, tmp_path)
    seen = {}

    class Stop(Exception):
        pass

    def spy(model, train, val, *args, **kwargs):
        seen["train"], seen["val"] = train, val
        raise Stop

    monkeypatch.setattr(experiment, "fit", spy)
    with pytest.raises(Stop):
        experiment.obtain_model(
            Job(data, s, 0, torch.device("cpu"), Store(tmp_path)), s.imbalance, 0
        )
    from imbadv.imbalance.split import class_counts, select

    split = select(
        data.y_train,
        class_counts(data.train_counts(), s.imbalance, 0),
        s.val_fraction,
        s.seed,
    )
    assert torch.equal(seen["val"][0], torch.from_numpy(data.x_train[split.val]))
    assert torch.equal(seen["train"][0], torch.from_numpy(data.x_train[split.train]))
    assert not set(split.val) & set(split.train)
    test_rows = {row.tobytes() for row in data.x_test}
    for xs in (seen["val"][0], seen["train"][0]):
        assert not any(row.numpy().tobytes() in test_rows for row in xs)
    # fit's only data arguments are the two training-split tensors; it has no test-set parameter
    assert "test" not in " ".join(inspect.signature(fit).parameters)
