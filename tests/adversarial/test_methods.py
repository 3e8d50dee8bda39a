"""The long-tail defenses against their papers' formulas, each on a case computed by hand."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imbadv.adversarial import ADVERSARIAL, AdversarialSettings
from imbadv.adversarial.classwise import class_eps
from imbadv.training.adversarial import AdversarialStep
from imbadv.training.awp import perturbed, weight_ascent

LOG2 = math.log(2.0)


def outer(mode: str, counts=None, **options):
    s = AdversarialSettings.of(mode, **options)
    return ADVERSARIAL.get("adversarial", mode).load()(s.params, counts)


def test_mart_on_a_hand_computed_case():
    # adversarial p = (1/2, 1/4, 1/4), label 0: the strongest wrong class has p 1/4; clean p uniform
    adv, clean, y = torch.tensor([[LOG2, 0.0, 0.0]]), torch.zeros(1, 3), torch.tensor([0])
    got = outer("mart", beta=6.0)(clean, adv, y, F.cross_entropy)
    boosted = -math.log(0.5) - math.log(1.0001 - 0.25 + 1e-12)
    kl = (1 / 3) * (math.log(1 / 3) - math.log(0.5 + 1e-12)) + (2 / 3) * (
        math.log(1 / 3) - math.log(0.25 + 1e-12)
    )
    assert float(got) == pytest.approx(boosted + 6.0 * kl * (1.0000001 - 1 / 3), rel=1e-6)


def test_mart_takes_the_top_wrong_class_when_the_label_is_not_the_top():
    # p_adv = (1/4, 1/2, 1/4), label 0: the wrong class pushed down is class 1 (p 1/2)
    adv, y = torch.tensor([[0.0, LOG2, 0.0]]), torch.tensor([0])
    got = outer("mart", beta=0.0)(adv.clone(), adv, y, F.cross_entropy)
    assert float(got) == pytest.approx(-math.log(0.25) - math.log(1.0001 - 0.5 + 1e-12), rel=1e-6)


def test_at_bsl_is_balanced_softmax_on_the_adversarial_logits():
    # counts 100 and 10, equal logits, label 1: CE(log n) = -log(10 / 110) = log 11
    got = outer("at_bsl", counts=[100, 10])(None, torch.zeros(1, 2), torch.tensor([1]), None)
    assert float(got) == pytest.approx(math.log(11.0), rel=1e-6)
    half = outer("at_bsl", counts=[100, 10], tau=0.5)(
        None, torch.zeros(1, 2), torch.tensor([1]), None
    )
    assert float(half) == pytest.approx(math.log(1 + math.sqrt(10.0)), rel=1e-6)


def test_taet_harl_on_a_hand_computed_case():
    # 3 classes, rows of class 0 (CE log 2, log 2) and class 1 (CE 0 + tiny): class 2 absent
    adv = torch.tensor([[0.0, 0.0, -1e9], [0.0, -1e9, 0.0], [-1e9, 50.0, -1e9]])
    y = torch.tensor([0, 0, 1])
    got = outer("taet", counts=[5, 5, 5], harl_alpha=1.0, harl_beta=1.0, harl_gamma=1.0)(
        None, adv, y, None
    )
    per_class = [LOG2, 0.0, 0.0]
    mean = sum(per_class) / 3
    spread = sum((c - mean) ** 2 for c in per_class) / 3
    shares = sum((c / (sum(per_class) + 1e-10)) ** 2 for c in per_class)
    assert float(got) == pytest.approx(mean + spread + shares, rel=1e-5)


def test_class_wise_eps_follows_robustlt():
    # n = (1000, 100, 10): r = (0, sqrt(ln 10), sqrt(ln 100)), pi = (1000, 100, 10) / 1110
    p = AdversarialSettings.of("pgd_at", classwise=True, classwise_a=0.3).params
    r = [0.0, math.sqrt(math.log(10)), math.sqrt(math.log(100))]
    pi = [1000 / 1110, 100 / 1110, 10 / 1110]
    tau = 0.3 / sum(a * b for a, b in zip(pi, r, strict=True))
    expected = [0.7 * p.eps + tau * rc * p.eps for rc in r]
    got = class_eps(p, [1000, 100, 10])
    assert got == pytest.approx(expected, rel=1e-9)
    assert sum(a * b for a, b in zip(pi, got, strict=True)) == pytest.approx(p.eps)  # mean kept
    assert got[0] < p.eps < got[2]  # the head gets less, the tail more
    # ramped from 0 over 0.8 x 10 epochs: epoch 0 is clean, epoch 4 is half way, 8 on is full
    assert class_eps(p, [1000, 100, 10], 0, 10) == [0.0, 0.0, 0.0]
    assert class_eps(p, [1000, 100, 10], 4, 10) == pytest.approx([e / 2 for e in expected])
    assert class_eps(p, [1000, 100, 10], 9, 10) == pytest.approx(expected)
    assert class_eps(p, [50, 50, 50]) == pytest.approx([p.eps] * 3)  # balanced: eps everywhere


def test_class_wise_examples_stay_in_each_rows_own_ball():
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    s = AdversarialSettings.of("pgd_at", classwise=True, steps=3, eps=0.1, classwise_ramp=0.0)
    step = AdversarialStep(s, seed=0, counts=[1000, 100, 10])
    x, y = torch.rand(6, 3, 2, 2), torch.tensor([0, 1, 2, 0, 1, 2])
    x_adv = step.examples(model, x, y)
    bound = torch.tensor(class_eps(s.params, [1000, 100, 10]))[y]
    assert ((x_adv - x).flatten(1).abs().amax(1) <= bound + 1e-6).all()
    assert (x_adv - x)[2].abs().max() > bound[0]  # the tail row went past the head's budget


class Linear(nn.Module):
    """logits = x W^T + b, with a buffer a forward changes (as BatchNorm's statistics)."""

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(2, 2)
        self.register_buffer("calls", torch.zeros(()))

    def forward(self, x):
        self.calls += 1
        return self.fc(x)


def test_awp_moves_each_kernel_by_gamma_norm_along_its_gradient():
    torch.manual_seed(0)
    model, x, y = Linear(), torch.randn(4, 2), torch.tensor([0, 1, 1, 0])
    steps = weight_ascent(model, 5e-3, lambda m: F.cross_entropy(m(x), y))
    assert set(steps) == {"fc.weight"} == set(perturbed(model))  # kernels only, not the bias
    w = model.fc.weight.detach()
    p = F.softmax(x @ w.T + model.fc.bias.detach(), 1)  # d CE / d W = (p - onehot)^T x / N
    g = (p - F.one_hot(y, 2)).T @ x / len(y)
    assert torch.allclose(steps["fc.weight"], 5e-3 * w.norm() / g.norm() * g, atol=1e-8)
    assert float(model.calls) == 0  # the buffer the ascent's forward touched is put back


def sgd_round(step, model, x, y, lr=0.1):
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    opt.zero_grad()
    step(model, x, y, F.cross_entropy).backward()
    opt.step()
    step.after_step(model)


def test_awp_step_is_the_gradient_at_the_perturbed_weights_applied_to_the_original():
    torch.manual_seed(0)
    x, y = torch.rand(8, 2), torch.tensor([0, 1] * 4)
    model = Linear()
    s = AdversarialSettings.of("awp", eps=0.05, steps=2, gamma=0.01)
    step, twin = AdversarialStep(s, seed=0), AdversarialStep(s, seed=0)
    w0, b0 = model.fc.weight.detach().clone(), model.fc.bias.detach().clone()
    x_adv = twin.examples(model, x, y)  # the same starts: the same examples as the step's
    v = weight_ascent(model, 0.01, lambda m: F.cross_entropy(m(x_adv), y))["fc.weight"]
    shifted = Linear()
    with torch.no_grad():
        shifted.fc.weight.copy_(w0 + v)
        shifted.fc.bias.copy_(b0)
    gw, gb = torch.autograd.grad(F.cross_entropy(shifted(x_adv), y), list(shifted.fc.parameters()))
    sgd_round(step, model, x, y)
    assert torch.allclose(model.fc.weight, w0 - 0.1 * gw, atol=1e-7)  # perturbation taken back
    assert torch.allclose(model.fc.bias, b0 - 0.1 * gb, atol=1e-7)


def test_awp_waits_for_its_warmup():
    torch.manual_seed(0)
    x, y = torch.rand(8, 2), torch.tensor([0, 1] * 4)
    plain, awp = Linear(), Linear()
    awp.load_state_dict(plain.state_dict())
    at = AdversarialStep(AdversarialSettings.of("pgd_at", eps=0.05, steps=2), seed=0)
    early = AdversarialStep(AdversarialSettings.of("awp", eps=0.05, steps=2, warmup=1), seed=0)
    sgd_round(at, plain, x, y)
    sgd_round(early, awp, x, y)  # epoch 0 < warmup 1: PGD-AT exactly
    assert torch.equal(plain.fc.weight, awp.fc.weight) and early.pending is None
    early.epoch = 1
    sgd_round(at, plain, x, y)
    sgd_round(early, awp, x, y)
    assert not torch.allclose(plain.fc.weight, awp.fc.weight)


def test_taet_trains_clean_before_its_adversarial_stage():
    torch.manual_seed(0)
    model, x, y = (
        nn.Sequential(nn.Flatten(), nn.Linear(12, 3)),
        torch.rand(6, 3, 2, 2),
        torch.arange(6) % 3,
    )
    step = AdversarialStep(AdversarialSettings.of("taet", clean_epochs=2, steps=2), 0, [2, 2, 2])
    assert torch.equal(step(model, x, y, F.cross_entropy), F.cross_entropy(model(x), y))
    step.epoch = 2
    assert not torch.equal(step(model, x, y, F.cross_entropy), F.cross_entropy(model(x), y))


def test_training_takes_the_weight_perturbation_back_after_every_step():
    from imbadv.optimizers import OPTIMIZERS
    from imbadv.training import Recipe, TrainSettings, paper_spec
    from imbadv.training.loop import fit

    gen = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, 256, (64, 3, 4, 4), generator=gen, dtype=torch.uint8), torch.arange(64) % 2) for _ in range(2)]  # fmt: skip
    model = nn.Sequential(nn.Flatten(), nn.Linear(48, 2))
    before = model[1].weight.detach().clone()
    # gamma 1 moves each kernel by its own norm; at lr 1e-9 only a missing restore moves it far
    tiny = Recipe(optimizer=paper_spec(OPTIMIZERS, "sgd", lr=1e-9, momentum=0.0, weight_decay=0.0))
    s = TrainSettings(batch_size=16, max_epochs=1, channels_last=False, early_stopping=False)
    awp = AdversarialSettings.of("awp", steps=1, gamma=1.0)
    fit(model, *data, s, torch.device("cpu"), seed=0, adversarial=awp, recipe=tiny)
    assert (model[1].weight - before).abs().max() < 1e-6


def test_a_method_whose_facts_contradict_its_params_is_refused_at_registration():
    from imbadv.adversarial import NoParams, PGDParams
    from imbadv.core.registry import RegistryError

    with pytest.raises(RegistryError, match="adversarial mine: a method with an inner attack"):
        ADVERSARIAL.add("mine", NoParams, "my:outer", start="uniform", divergence="ce")
    with pytest.raises(RegistryError, match="adversarial mine: perturbs_weights needs"):
        ADVERSARIAL.add("mine", PGDParams, "my:outer", start="uniform", divergence="ce", perturbs_weights=True)  # fmt: skip
    with pytest.raises(
        RegistryError, match="must derive from imbadv.adversarial.params.AdversarialParams"
    ):
        from imbadv.training import CrossEntropyParams

        ADVERSARIAL.add("mine", CrossEntropyParams, "my:outer", start="none", divergence="none")
    assert "mine" not in ADVERSARIAL.entries


def test_at_bsl_and_taet_take_objective_ce_only(tmp_path):
    from conftest import TINY, one_line_refusal, run_cli

    for mode in ("at_bsl", "taet"):
        proc = run_cli(["-m", *TINY, f"adversarial={mode}", "objective=balanced_softmax", f"hydra.sweep.dir={tmp_path}/{mode}"], tmp_path)  # fmt: skip
        one_line_refusal(proc, f"objective=balanced_softmax is not allowed: expected ce with adversarial={mode} (the method brings its own loss)")  # fmt: skip
        assert proc.returncode == 2 and not (tmp_path / mode).exists()
