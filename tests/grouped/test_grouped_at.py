"""Grouped adversarial training: each member's inner attack and weights as if trained alone."""

from types import SimpleNamespace

import pytest
import torch
import torch.nn.functional as F
from test_grouped import CPU, max_diff, members, vgg

from imbadv.adversarial import AdversarialSettings
from imbadv.data.tensors import to_unit
from imbadv.grouped.adversarial import GroupAdversary
from imbadv.grouped.jobs import grouping_on
from imbadv.grouped.stacked import Stacked
from imbadv.grouped.train import GroupedClassifier, fit_group, ungroupable
from imbadv.optimizers import OPTIMIZERS
from imbadv.training import Recipe, TrainSettings, paper_spec
from imbadv.training.adversarial import AdversarialStep
from imbadv.training.loop import fit

MODES = [("fast_fgsm", {}), ("pgd_at", {"steps": 2}), ("trades", {"steps": 2})]
# Why these tolerances. From equal weights the grouped inner attack is the alone one bit for bit
# here (measured: 0 of 98,304 pixels differ) and one step's gradients agree to float32 rounding
# of vmap's other summation order (measured <= 7e-6 of the largest gradient: STEP_RTOL 1e-4).
# Over training that rounding moves weights by ~1e-7, and then a pixel whose input gradient is
# within rounding of zero can take the other sign: that pixel moves by 2 alpha (<= 2 eps), a
# real, not a rounding, difference in one image. Alone under another layout (NHWC vs NCHW,
# the same arithmetic) differs from itself just as much. The fit test keeps that bounded with
# eps 1/255 and plain SGD (RMSprop's first steps are sign steps: any flip there is 6 lr):
# measured over 9 steps, grouped vs alone <= 1.3e-4; one generator shared by the members, or
# members' starts swapped, moves a member by >= 2.4e-3 (fast_fgsm, pgd_at). TRADES' first
# ascent step climbs a KL between two almost equal softmaxes, whose sign rounding flips far more
# often (measured 9e-5 vs 4.8e-4 for a shared generator): its fit test checks the decisions.
STEP_RTOL, FIT_ATOL = 2e-3, 5e-4
SGD = Recipe(optimizer=paper_spec(OPTIMIZERS, "sgd", lr=0.01, momentum=0.9, weight_decay=0.0))


def adversarial(mode: str, eps: float = 8 / 255, **extra) -> AdversarialSettings:
    return AdversarialSettings.of(mode, eps=eps, **extra)


STEP_MODES = [*MODES, ("mart", {"steps": 2}), ("at_bsl", {"steps": 2})]


@pytest.mark.parametrize(("mode", "extra"), STEP_MODES)
def test_one_step_gives_each_member_its_own_examples_and_gradient(mode, extra):
    # two steps from the same weights: the second checks each member's generator advanced alone
    # eps 8/255: at 1/255 the inputs sit on the 1/255 grid and a ReLU pre-activation within
    # rounding of 0 (gradient routed or not) was seen once (2.8e-3); TRADES: 1/255 (see above)
    eps = 1 / 255 if mode == "trades" else 8 / 255
    group, adv = members(), adversarial(mode, eps=eps, **extra)
    models = [vgg(m.seed) for m in group]
    # each member's own counts (AT-BSL's prior): member k's class 0 is k + 1 times rarer
    counts = [(100, 100 * (k + 1)) for k in range(len(group))]
    adversary = GroupAdversary(adv, [m.seed for m in group], counts)
    module = GroupedClassifier(models, TrainSettings(), [m.loss for m in group], None, adversary)
    module.on_train_epoch_start()
    alone = [AdversarialStep(adv, m.seed, c) for m, c in zip(group, counts, strict=True)]
    for step in range(2):
        batch = tuple((m.train[0][32 * step :][:32], m.train[1][32 * step :][:32]) for m in group)
        module.stacked.zero_grad()
        module.training_step(batch, step).backward()
        for k, model in enumerate(models):
            model.zero_grad()
            model.train()
            alone[k](model, to_unit(batch[k][0]), batch[k][1], F.cross_entropy).backward()
            # relative to the member's largest gradient: a near-dead unit's tiny gradient
            # (1e-5 of it) carries rounding that is large relative to itself alone
            scale = max(float(p.grad.abs().max()) for p in model.parameters())
            for (name, p), stacked in zip(model.named_parameters(), module.stacked, strict=True):
                assert float((stacked.grad[k] - p.grad).abs().max()) <= STEP_RTOL * scale, name


def test_starts_come_from_each_members_own_generator():
    group, adv = members(), adversarial("fast_fgsm")
    models = [vgg(m.seed).eval() for m in group]
    x = to_unit(torch.stack([m.train[0][:16] for m in group]))
    ys = [m.train[1][:16] for m in group]
    for seeds in ([0, 1, 2], [2, 0, 1]):  # member k's examples follow its own seed
        adversary, alone = GroupAdversary(adv, seeds), [AdversarialStep(adv, s) for s in seeds]
        for _ in range(2):  # a second batch: each generator advanced by its own member only
            grouped = adversary.examples(Stacked.of(models), x, ys, [0, 1, 2])
            for k, model in enumerate(models):
                assert torch.equal(grouped[k], alone[k].examples(model, x[k], ys[k]))
    # a stopped member draws nothing more: the live ones keep their own sequences
    adversary, alone = GroupAdversary(adv, [0, 1, 2]), AdversarialStep(adv, 2)
    adversary.examples(Stacked.of(models), x, ys, [0, 1, 2])
    alone.examples(models[2], x[2], ys[2])
    grouped = adversary.examples(Stacked.of(models[1:]), x[1:], ys[1:], [1, 2])
    assert torch.equal(grouped[1], alone.examples(models[2], x[2], ys[2]))


@pytest.mark.slow
@pytest.mark.parametrize(("mode", "extra"), MODES)
def test_adversarial_members_train_grouped_as_alone(mode, extra):
    # member 0 validates on flipped labels: it stops at patience 1, the others train 3 epochs;
    # robust validation (PGD on each member's own split) runs under any AT, per member
    settings = TrainSettings(batch_size=32, max_epochs=3, patience=1, robust_val_steps=2)
    group, adv = members(flip_first=True), adversarial(mode, eps=1 / 255, **extra)
    alone = []
    for m in group:
        model = vgg(m.seed)
        rec = fit(model, m.train, m.val, settings, CPU, m.seed, recipe=SGD, adversarial=adv)
        alone.append((model, rec))
    models = [vgg(m.seed) for m in group]
    records = fit_group(models, group, settings, CPU, recipe=SGD, adversarial=adv)
    assert [r["epochs"] for r in records] == [r["epochs"] for _, r in alone] == [2, 3, 3]
    for (model, rec), grouped, grec in zip(alone, models, records, strict=True):
        assert grec["best_epoch"] == rec["best_epoch"]
        curve = [h["val/robust_acc"] for h in rec["history"]]
        assert [h["val/robust_acc"] for h in grec["history"]] == pytest.approx(curve, abs=1e-6)
        if mode != "trades":
            assert max_diff(model, grouped) < FIT_ATOL


def test_a_registered_inner_attack_is_refused():
    adv = AdversarialSettings.of("pgd_at", attack="pgd")
    reason = ungroupable(vgg(0), TrainSettings(), adv)
    assert reason is not None and "adversarial.attack pgd" in reason
    for mode, extra in MODES:
        assert ungroupable(vgg(0), TrainSettings(), adversarial(mode, **extra)) is None
    group = members()[:2]
    with pytest.raises(ValueError, match="adversarial.attack pgd"):
        fit_group([vgg(0), vgg(1)], group, TrainSettings(max_epochs=1), CPU, adversarial=adv)
    with pytest.raises(ValueError, match="cannot run grouped: adversarial.attack pgd"):
        GroupAdversary(adv, [0, 1])


def test_an_adversarial_run_that_yields_its_sibling_trains_alone():
    # alone, one fixed-length AT run serves `last` and `robust_val_acc`; grouped it would not
    cases = [("last", False, False), ("robust_val_acc", False, False), ("val_loss", True, True)]
    for selection, early, grouped in cases:
        train = TrainSettings(group="on", selection=selection, early_stopping=early)
        s = SimpleNamespace(train=train, adversarial=adversarial("pgd_at"))
        assert grouping_on(s, vgg(0), CPU) is grouped
        s = SimpleNamespace(train=train, adversarial=AdversarialSettings())
        assert grouping_on(s, vgg(0), CPU)  # standard training groups as before
