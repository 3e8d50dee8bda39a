"""Adversarial training: inner examples within eps and [0, 1], eval mode inside, modes restored."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imbadv.adversarial import AdversarialSettings
from imbadv.core.errors import ConfigError
from imbadv.training import Recipe, TrainSettings
from imbadv.training.adversarial import AdversarialStep, kl_divergence, robust_accuracy
from imbadv.training.loop import fit

EPS = 8 / 255


class Net(nn.Module):
    """A small net with BatchNorm and dropout, recording its mode at every forward pass."""

    def __init__(self, classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten())
        self.drop, self.head = nn.Dropout(0.5), nn.Linear(4 * 6 * 6, classes)
        self.modes = []

    def forward(self, x):
        self.modes.append((self.body[1].training, self.drop.training))
        return self.head(self.drop(self.body(x)))


def images(n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 3, 8, 8, generator=gen)
    x[:2] = x[:2].round()  # pixels at 0 and 1: the [0, 1] clip must act
    return x, torch.randint(0, 3, (n,), generator=gen)


def settings(mode, **options):
    return AdversarialSettings.of(mode, **options)


MODES = [("pgd_at", {}), ("fast_fgsm", {}), ("trades", {}), ("pgd_at", {"attack": "bim"})]


@pytest.mark.parametrize(("mode", "options"), MODES)
def test_inner_examples_within_eps_and_unit_box_in_eval_mode(mode, options):
    torch.manual_seed(0)
    model, (x, y) = Net(), images()
    model.train()
    model.drop.eval()  # a mixed state: each submodule's own mode must come back
    steps = {} if mode == "fast_fgsm" else {"steps": 3}  # fast FGSM has one step, no option
    step = AdversarialStep(settings(mode, **steps, **options), seed=1)
    x_adv = step.examples(model, x, y)
    assert x_adv.shape == x.shape and not x_adv.requires_grad
    assert (x_adv - x).abs().max() <= EPS + 1e-6
    assert x_adv.min() >= 0 and x_adv.max() <= 1
    assert (x_adv != x).any()
    assert model.modes and all(m == (False, False) for m in model.modes)  # eval inside
    assert model.training and model.body[1].training and not model.drop.training
    assert all(p.grad is None for p in model.parameters())  # weights untouched by the inner attack


def test_pgd_raises_the_loss_and_repeats_with_the_seed():
    torch.manual_seed(0)
    model, (x, y) = Net().eval(), images(32)
    a = AdversarialStep(settings("pgd_at", steps=5), seed=3).examples(model, x, y)
    b = AdversarialStep(settings("pgd_at", steps=5), seed=3).examples(model, x, y)
    c = AdversarialStep(settings("pgd_at", steps=5), seed=4).examples(model, x, y)
    assert torch.equal(a, b) and not torch.equal(a, c)
    with torch.no_grad():
        assert F.cross_entropy(model(a), y) > F.cross_entropy(model(x), y)


def test_losses_per_mode():
    torch.manual_seed(0)
    model, (x, y) = Net(), images()
    model.eval()  # dropout off so the clean forward passes agree
    clean = F.cross_entropy(model(x), y)
    assert torch.allclose(AdversarialStep(settings("none"))(model, x, y, F.cross_entropy), clean)
    trades0 = AdversarialStep(settings("trades", beta=0.0, steps=2))(model, x, y, F.cross_entropy)
    assert torch.allclose(trades0, clean)  # beta 0: TRADES is the clean loss
    trades = AdversarialStep(settings("trades", beta=6.0, steps=2), seed=0)
    x_adv = AdversarialStep(settings("trades", steps=2), seed=0).examples(model, x, y)
    with torch.no_grad():
        expected = clean + 6.0 * kl_divergence(model(x_adv), model(x), y) / len(y)
    assert torch.allclose(trades(model, x, y, F.cross_entropy), expected, atol=1e-5)
    pgd = AdversarialStep(settings("pgd_at", steps=2), seed=0)
    x_pgd = AdversarialStep(settings("pgd_at", steps=2), seed=0).examples(model, x, y)
    assert torch.allclose(pgd(model, x, y, F.cross_entropy), F.cross_entropy(model(x_pgd), y))


def test_default_steps():
    assert settings("pgd_at").params.step_size() == pytest.approx(2 / 255)
    assert settings("fast_fgsm").params.step_size() == pytest.approx(1.25 * EPS)
    assert settings("trades", alpha=0.01).params.step_size() == 0.01


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"mode": "trades", "beta": -1}, "adversarial.beta=-1"),
        ({"mode": "pgd_at", "attack": "nope"}, "adversarial.attack=nope"),
        (
            {"mode": "trades", "attack": "bim"},
            "adversarial.attack=bim is not allowed: expected a known option",
        ),
        (
            {"mode": "fast_fgsm", "steps": 3},
            "adversarial.steps=3 is not allowed: expected a known option",
        ),
        ({"mode": "free"}, "adversarial.mode=free"),
        ({"mode": "pgd_at", "eps": 2}, "adversarial.eps=2"),
    ],
)
def test_bad_adversarial_settings(options, message):
    with pytest.raises(ConfigError, match=message):
        AdversarialSettings.parse("adversarial", options)


def toy(n, seed):
    # two classes 0.47 apart in brightness: separable far beyond eps = 8/255
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (torch.rand(n, 3, 8, 8, generator=gen) * 100 + y.view(-1, 1, 1, 1) * 120).to(torch.uint8)
    return x, y


class Centered(nn.Module):
    """Normalization inside the model, as every imbadv model does (inputs stay in [0, 1])."""

    def forward(self, x):
        return (x - 0.45) / 0.25


def test_a_tiny_adversarial_training_learns_and_logs_robust_validation():
    torch.manual_seed(0)
    model = nn.Sequential(Centered(), nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    s = TrainSettings(batch_size=32, max_epochs=3, patience=3, channels_last=False)
    record = fit(
        model,
        toy(128, 0),
        toy(64, 1),
        s,
        torch.device("cpu"),
        seed=0,
        adversarial=settings("fast_fgsm"),
        recipe=Recipe.paper(lr=1e-2),
    )
    last = record["history"][-1]
    assert last["val/acc"] > 0.9 and last["val/robust_acc"] > 0.9
    assert not model.training
    x, y = toy(64, 2)
    assert robust_accuracy(model, x, y, EPS, steps=5) > 0.9


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["adversarial=trades", "adversarial.beta=-1"], "adversarial.beta=-1"),
        (["imbalance=exp", "imbalance.ratio=0.5", "adversarial=pgd_at"], "imbalance.ratio=0.5"),
    ],
)
def test_bad_long_tail_input_exits_2_before_any_work(tmp_path, args, message):
    from conftest import TINY, run_cli

    proc = run_cli(
        ["-m", *TINY, *args, f"paths.store_dir={tmp_path}/store", f"hydra.sweep.dir={tmp_path}/mr"],
        cwd=tmp_path,
    )
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and message in lines[-1] and lines[-1].startswith("imbadv: error")
    assert not (tmp_path / "mr").exists() and not (tmp_path / "store").exists()
