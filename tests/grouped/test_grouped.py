"""Grouped training: K members trained as one vmapped computation equal each trained alone."""

import pytest
import torch
from lightning.pytorch.callbacks import EarlyStopping
from tolerance import sgd_bound
from torch import nn

from imbadv.adversarial import AdversarialSettings
from imbadv.grouped.train import (
    GroupedClassifier,
    Member,
    MemberRun,
    Patience,
    Zipped,
    fit_group,
    freeze,
    ungroupable,
)
from imbadv.models.vgg import VGG
from imbadv.optimizers import OPTIMIZERS
from imbadv.training import Recipe, TrainSettings, paper_spec
from imbadv.training.loop import fit, train_batches

CPU = torch.device("cpu")
# SGD, not the paper's RMSprop: grouped and alone differ only by vmap's summation order, and
# `sgd_bound` (tests/tolerance.py) bounds what that rounding can do over a run's steps.
LR, MOMENTUM = 0.01, 0.9
SGD = Recipe(optimizer=paper_spec(OPTIMIZERS, "sgd", lr=LR, momentum=MOMENTUM, weight_decay=0.0))


def atol(steps: int) -> float:
    return sgd_bound(LR, steps, MOMENTUM)


def toy(n: int, seed: int, flip: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Two separable classes of uint8 32x32 images; `flip` swaps the labels (a hostile val set)."""
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (torch.rand(n, 3, 32, 32, generator=gen) * 100 + y.view(-1, 1, 1, 1) * 120).to(torch.uint8)
    return x, (1 - y) if flip else y


def vgg(seed: int) -> nn.Module:
    model = VGG(num_classes=2, width=0.125)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model


class TinyBN(nn.Module):
    """A conv, BatchNorm and linear layer: running statistics are per-member buffers.

    The conv has no bias, as in the ResNets: BatchNorm cancels a bias, so its gradient is pure
    rounding noise, which RMSprop scales up to whole steps (grouped and alone then differ ~1e-3).
    """

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3, stride=4, bias=False), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten()
        )
        self.fc = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x))


def tiny_bn(seed: int) -> nn.Module:
    torch.manual_seed(seed)  # test-only model: its init is not the feature under test
    return TinyBN()


def members(flip_first: bool = False) -> list[Member]:
    """Three members, each its own split and seed; the first may get a label-flipped val set."""
    return [
        Member(toy(96, 10 + k), toy(32, 20 + k, flip=flip_first and k == 0), seed=k)
        for k in range(3)
    ]


def alone_and_grouped(make, settings: TrainSettings, group: list[Member], recipe: Recipe = SGD):
    alone = []
    for m in group:
        model = make(m.seed)
        alone.append((model, fit(model, m.train, m.val, settings, CPU, m.seed, recipe=recipe)))
    models = [make(m.seed) for m in group]
    return alone, models, fit_group(models, group, settings, CPU, recipe=recipe)


def max_diff(a: nn.Module, b: nn.Module) -> float:
    sa, sb = a.state_dict(), b.state_dict()
    return max(float((sa[k].float() - sb[k].float()).abs().max()) for k in sa)


def test_members_train_grouped_as_they_would_alone():
    # member 0 validates on flipped labels: its val loss rises, it stops at patience, others go on
    settings = TrainSettings(batch_size=32, max_epochs=3, patience=1)
    alone, models, records = alone_and_grouped(vgg, settings, members(flip_first=True))
    assert [r["epochs"] for _, r in alone] == [r["epochs"] for r in records]
    assert records[0]["epochs"] < records[1]["epochs"] == 3  # different stopping decisions
    for (model, rec), grouped, grec in zip(alone, models, records, strict=True):
        assert max_diff(model, grouped) < atol(9)  # 3 epochs of 3 steps
        assert grec["best_epoch"] == rec["best_epoch"]
        assert grec["selection_rule"] == rec["selection_rule"]
        assert [sorted(h) for h in grec["history"]] == [sorted(h) for h in rec["history"]]
        for h, g in zip(rec["history"], grec["history"], strict=True):
            assert g["val/loss"] == pytest.approx(h["val/loss"], rel=1e-4, abs=1e-6)
        assert not grouped.training


def test_the_bound_tells_a_real_divergence_from_rounding():
    # one member alone, then with another data order (another seed's batches, same init)
    settings = TrainSettings(batch_size=32, max_epochs=3, early_stopping=False)
    m = members()[1]
    ours, other = vgg(1), vgg(1)
    fit(ours, m.train, m.val, settings, CPU, m.seed, recipe=SGD)
    fit(other, m.train, m.val, settings, CPU, m.seed + 7, recipe=SGD)
    assert max_diff(ours, other) > 10 * atol(9)


def test_members_start_from_their_own_init_and_data_order():
    group = members()
    models = [vgg(m.seed) for m in group]
    module = GroupedClassifier(models, TrainSettings(), [m.loss for m in group])
    for k, model in enumerate(models):
        params, _ = module.member(k)
        assert all(torch.equal(params[n], p) for n, p in model.named_parameters())
    assert not torch.equal(
        module.member(0)[0]["classifier.3.weight"], models[1].classifier[3].weight
    )
    settings = TrainSettings(batch_size=32)
    streams = [train_batches(m.train, settings, Recipe(), m.seed) for m in group]
    zipped = [tuple(b[1] for b in step) for step in Zipped(streams)]
    for k, m in enumerate(group):  # a member's batches are the ones `fit` draws for it alone
        own = [b[1] for b in train_batches(m.train, settings, Recipe(), m.seed)]
        assert all(torch.equal(step[k], y) for step, y in zip(zipped, own, strict=True))


def test_batchnorm_members_keep_their_own_running_statistics():
    # member 0 stops first: the others then train on a slice, their statistics written back
    settings = TrainSettings(batch_size=32, max_epochs=3, patience=1, channels_last=False)
    alone, models, records = alone_and_grouped(tiny_bn, settings, members(flip_first=True))
    assert records[0]["epochs"] < records[1]["epochs"] == 3
    for (model, rec), grouped, grec in zip(alone, models, records, strict=True):
        assert max_diff(model, grouped) < atol(9)  # running_mean/var and num_batches_tracked too
        assert grec["best_epoch"] == rec["best_epoch"] and grec["epochs"] == rec["epochs"]
    assert max_diff(models[0], models[1]) > 1e-3


def test_a_stopped_member_stops_changing_even_with_momentum():
    group = members()[:2]
    module = GroupedClassifier(
        [vgg(m.seed) for m in group], TrainSettings(), [m.loss for m in group]
    )
    module.runs = [MemberRun(vgg(0), None, None) for _ in group]
    module.on_train_epoch_start()
    optimizer = torch.optim.SGD(module.parameters(), lr=0.1, momentum=0.9)
    batch = tuple((m.train[0][:8], m.train[1][:8]) for m in group)
    for step in range(3):
        if step == 1:  # momentum is non-zero from here: SGD would move a zero-grad member
            freeze(module, 0, epoch=0)
            before = {n: t.clone() for n, t in module.member(0)[0].items()}
            other = {n: t.clone() for n, t in module.member(1)[0].items()}
        optimizer.zero_grad()
        module.training_step(batch, step).backward()
        optimizer.step()
        module.on_train_batch_end()
    assert all(torch.equal(before[n], t) for n, t in module.member(0)[0].items())
    assert any(not torch.equal(other[n], t) for n, t in module.member(1)[0].items())


def test_patience_decides_as_lightning_early_stopping():
    values = [1.0, 0.8, 0.8, 0.9, 0.7, 0.75, 0.74, 0.76, float("nan")]
    for patience in (0, 1, 2, 3):
        ours, theirs = Patience(patience), EarlyStopping("val/loss", patience=patience, mode="min")
        for v in values:
            stop, _ = theirs._evaluate_stopping_criteria(torch.tensor(v))
            assert ours.stop(v) == stop


def test_ungroupable_recipes_are_named():
    plain = TrainSettings()
    assert ungroupable(vgg(0), plain) is None
    assert ungroupable(tiny_bn(0), plain) is None
    assert ungroupable(vgg(0), plain, AdversarialSettings.of("pgd_at")) is None
    registered = AdversarialSettings.of("pgd_at", attack="pgd")
    assert "adversarial.attack" in ungroupable(vgg(0), plain, registered)
    assert "dropout" in ungroupable(nn.Sequential(nn.Linear(2, 2), nn.Dropout(0.5)), plain)
    assert "precision" in ungroupable(vgg(0), TrainSettings(precision="16-mixed"))
    with pytest.raises(ValueError, match="one architecture and one training-set size"):
        other = [members()[0], Member(toy(64, 1), toy(32, 2), seed=1)]
        fit_group([vgg(0), vgg(1)], other, plain, CPU)


def test_robust_selection_is_per_member():
    # KeepBest's robust rule (PGD on each member's own validation split) runs on the member's
    # own module, loaded from the stack after each epoch: the same curve and choice as alone.
    settings = TrainSettings(
        batch_size=32, max_epochs=2, selection="robust_val_acc", robust_val_steps=2
    )
    group = [Member(toy(64, 10 + k), toy(16, 20 + k), seed=k) for k in range(2)]
    alone, models, records = alone_and_grouped(vgg, settings, group)
    for (model, rec), grouped, grec in zip(alone, models, records, strict=True):
        assert (grec["epochs"], grec["best_epoch"]) == (rec["epochs"], rec["best_epoch"])
        curve = [h["val/robust_acc"] for h in rec["history"]]
        assert [h["val/robust_acc"] for h in grec["history"]] == pytest.approx(curve, abs=1e-6)
        assert max_diff(model, grouped) < atol(4)  # 2 epochs of 2 steps
