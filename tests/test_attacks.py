"""Attacks: the invariants any gradient sign attack must keep, and agreement with torchattacks."""

import pytest
import torch
import torch.nn.functional as F
import torchattacks  # a [dev] dependency: the reference implementation
from torch import nn

from imbadv.attacks import ATTACKS, Direction, bim_defaults
from imbadv.attacks.core import input_gradient
from imbadv.attacks.gradient_sign import bim, fgsm
from imbadv.models.vgg import VGG


def run_attack(method, model, x, y, eps, direction="ascent", **params):
    """An attack by name through the registry, exactly as the evaluation calls it."""
    spec = ATTACKS.parse("attack.methods", method, params)
    attack = ATTACKS.get("attack.methods", method).load()
    return attack(model, x, y, eps, spec.params, direction=Direction(direction))


@pytest.fixture(scope="module")
def setup():
    gen = torch.Generator().manual_seed(0)
    model = VGG(width=0.125)
    model.reset_parameters(gen)
    x = torch.rand(16, 3, 32, 32, generator=gen)
    y = torch.randint(0, 10, (16,), generator=gen)
    return model.eval(), x, y


def loss(model, x, y):
    with torch.no_grad():
        return float(F.cross_entropy(model(x), y, reduction="sum"))


@pytest.mark.parametrize("method", ["fgsm", "bim"])
@pytest.mark.parametrize("eps", [0.0, 0.01, 0.05])
def test_perturbation_stays_in_ball_and_range(setup, method, eps):
    model, x, y = setup
    adv = run_attack(method, model, x, y, eps)
    assert adv.shape == x.shape and not adv.requires_grad
    assert float((adv - x).abs().max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


@pytest.mark.parametrize("method", ["fgsm", "bim"])
def test_eps_zero_changes_nothing(setup, method):
    model, x, y = setup
    assert torch.equal(run_attack(method, model, x, y, 0.0), x)


@pytest.mark.parametrize("method", ["fgsm", "bim"])
def test_ascent_raises_and_descent_lowers_the_loss(setup, method):
    model, x, y = setup
    before = loss(model, x, y)
    assert loss(model, run_attack(method, model, x, y, 0.01, "ascent"), y) > before
    assert loss(model, run_attack(method, model, x, y, 0.01, "descent"), y) < before


def test_clipping_to_pixel_range_at_the_edges(setup):
    model, _, y = setup
    x = torch.zeros(16, 3, 32, 32)
    x[:8] = 1.0
    adv = fgsm(model, x, y, 0.1)
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


def test_bim_defaults_from_kurakin():
    assert bim_defaults(0.01) == (pytest.approx(1 / 255), 3)  # floor(min(6.55, 3.19))
    assert bim_defaults(8 / 255)[1] == 10  # floor(min(12, 10))


class WithNormAndDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.Dropout(0.5),
                                 nn.Flatten(), nn.Linear(4 * 30 * 30, 10))  # fmt: skip

    def forward(self, x):
        return self.net(x)


@pytest.mark.parametrize("method", ["fgsm", "bim"])
def test_attack_runs_in_eval_mode_and_restores_the_mode(method):
    model = WithNormAndDropout().train()
    model.net[2].train(False)  # a mixed state must come back exactly as it was
    running = model.net[1].running_mean.clone()
    x, y = torch.rand(4, 3, 32, 32), torch.tensor([0, 1, 2, 3])
    a = run_attack(method, model, x, y, 0.01)
    b = run_attack(method, model, x, y, 0.01)
    assert torch.equal(a, b)  # dropout was off: the attack is deterministic
    assert torch.equal(model.net[1].running_mean, running)  # BatchNorm statistics untouched
    assert model.training and model.net[1].training and not model.net[2].training


def test_gradient_is_for_the_input_only(setup):
    model, x, y = setup
    input_gradient(model, x, y)
    assert all(p.grad is None for p in model.parameters())


def test_inference_mode_gives_a_clear_error(setup):
    model, x, y = setup
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        fgsm(model, x, y)


def test_same_images_as_torchattacks(setup):
    model, x, y = setup
    ours = fgsm(model, x, y, 0.01)
    theirs = torchattacks.FGSM(model, eps=0.01)(x, y)
    assert float((ours - theirs).abs().max()) < 1e-6
    ours = bim(model, x, y, 0.01)
    theirs = torchattacks.BIM(model, eps=0.01, alpha=1 / 255, steps=3)(x, y)
    assert float((ours - theirs).abs().max()) < 1e-6
