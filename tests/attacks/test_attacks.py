"""Attacks: the invariants every registered attack keeps, directions, and agreement with torchattacks."""

import pytest
import torch
import torch.nn.functional as F
import torchattacks  # a [dev] dependency: the reference implementation
from torch import nn

from imbadv.attacks import ATTACKS, Direction, PGDParams, bim_defaults
from imbadv.attacks.core import input_gradient, margin_loss
from imbadv.attacks.gradient_sign import bim, fgsm, mifgsm
from imbadv.attacks.pgd import linf_start, pgd, pgd_l2
from imbadv.metrics import flag_gradient_masking, gradient_masking
from imbadv.models.vgg import VGG

ALL = ATTACKS.names()
ITERATIVE = ["bim", "mifgsm", "pgd", "pgd_l2"]  # fast enough for every direction
FAST = {"pgd": {"steps": 3}, "pgd_l2": {"steps": 3}, "mifgsm": {"steps": 3}}


def run_attack(method, model, x, y, eps, direction="ascent", target=None, seed=0, **params):
    """An attack by name through the registry, exactly as the evaluation calls it."""
    spec = ATTACKS.parse("attack.methods", method, {**FAST.get(method, {}), **params})
    attack = ATTACKS.get("attack.methods", method).load()
    gen = torch.Generator().manual_seed(seed)
    return attack(
        model, x, y, eps, spec.params, direction=Direction(direction), generator=gen, target=target
    )


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


class WithNormAndDropout(nn.Module):
    def __init__(self):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, 4, 3),
            nn.BatchNorm2d(4),
            nn.Dropout(0.5),
            nn.Flatten(),
            nn.Linear(4 * 30 * 30, 10),
        )

    def forward(self, x):
        return self.net(x)


def distance(method, adv, x):
    """The attack's own norm of each perturbation."""
    delta = (adv - x).flatten(1)
    if ATTACKS.get("attack.methods", method).facts.norm == "L2":
        return delta.norm(dim=1)
    return delta.abs().amax(1)


@pytest.mark.parametrize("method", ALL)
@pytest.mark.parametrize("eps", [0.0, 0.03])
def test_every_attack_stays_in_its_ball_and_range_and_restores_modes(method, eps):
    torch.manual_seed(0)  # only the model's construction; attacks take their own generator
    model = WithNormAndDropout().train()
    model.net[2].train(False)  # a mixed state must come back exactly as it was
    running = model.net[1].running_mean.clone()
    x, y = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1)), torch.arange(4)
    adv = run_attack(method, model, x, y, eps)
    assert adv.shape == x.shape and not adv.requires_grad
    assert float(distance(method, adv, x).max()) <= eps + 1e-6
    assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0
    if eps == 0.0:
        assert torch.equal(adv, x)
    assert torch.equal(model.net[1].running_mean, running)  # BatchNorm statistics untouched
    assert model.training and model.net[1].training and not model.net[2].training
    assert all(p.grad is None for p in model.parameters())


@pytest.mark.parametrize("method", ["fgsm", *ITERATIVE])
def test_ascent_raises_and_descent_lowers_the_loss(setup, method):
    model, x, y = setup
    before = loss(model, x, y)
    assert loss(model, run_attack(method, model, x, y, 0.01, "ascent"), y) > before
    assert loss(model, run_attack(method, model, x, y, 0.01, "descent"), y) < before


@pytest.mark.parametrize("method", ["fgsm", *ITERATIVE])
def test_targeted_directions_lower_the_goal_class_loss(setup, method):
    model, x, y = setup
    with torch.no_grad():
        least = model(x).masked_fill(F.one_hot(y, 10).bool(), 1e9).argmin(1)
    assert not torch.equal(least, y)
    adv = run_attack(method, model, x, y, 0.03, "least_likely")
    assert loss(model, adv, least) < loss(model, x, least)
    five = torch.full_like(y, 5)
    adv = run_attack(method, model, x, y, 0.03, "toward", target=5)
    assert loss(model, adv, five) < loss(model, x, five)
    assert loss(model, adv, five) < loss(model, run_attack(method, model, x, y, 0.03), five)


def test_toward_needs_a_target(setup):
    model, x, y = setup
    with pytest.raises(ValueError, match="target"):
        run_attack("pgd", model, x, y, 0.03, "toward")


def test_bim_defaults_from_kurakin():
    assert bim_defaults(0.01) == (pytest.approx(1 / 255), 3)  # floor(min(6.55, 3.19))
    assert bim_defaults(8 / 255)[1] == 10  # floor(min(12, 10))


def test_pgd_defaults_follow_madry():
    assert PGDParams().resolved(8 / 255)["alpha"] == pytest.approx(2 / 255)
    assert PGDParams(steps=20).resolved(8 / 255)["alpha"] == pytest.approx(1 / 255)


def test_clipping_to_pixel_range_at_the_edges(setup):
    model, _, y = setup
    x = torch.zeros(16, 3, 32, 32)
    x[:8] = 1.0
    for adv in (fgsm(model, x, y, 0.1), pgd(model, x, y, 0.1), pgd_l2(model, x, y, 2.0)):
        assert float(adv.min()) >= 0.0 and float(adv.max()) <= 1.0


def test_random_start_follows_the_generator_and_start_replaces_it(setup):
    model, x, y = setup
    a = run_attack("pgd", model, x, y, 0.03, seed=1)
    assert torch.equal(a, run_attack("pgd", model, x, y, 0.03, seed=1))
    assert not torch.equal(a, run_attack("pgd", model, x, y, 0.03, seed=2))
    start = linf_start(x, 0.03, torch.Generator().manual_seed(1))
    p = PGDParams(steps=3)
    assert torch.equal(a, pgd(model, x, y, 0.03, p, start=start))
    assert torch.equal(
        pgd(model, x, y, 0.03, PGDParams(steps=3, random_start=False)),
        pgd(model, x, y, 0.03, p, start=x),
    )


def test_restarts_keep_each_images_strongest_run(setup):
    model, x, y = setup
    one = PGDParams(steps=2)
    runs = [pgd(model, x, y, 0.03, one, generator=torch.Generator().manual_seed(0)) for _ in "a"]
    gen = torch.Generator().manual_seed(0)
    first, second = (
        pgd(model, x, y, 0.03, one, generator=gen),
        pgd(model, x, y, 0.03, one, generator=gen),
    )
    best = pgd(
        model,
        x,
        y,
        0.03,
        PGDParams(steps=2, restarts=2),
        generator=torch.Generator().manual_seed(0),
    )
    assert torch.equal(runs[0], first)
    with torch.no_grad():
        per = [F.cross_entropy(model(a), y, reduction="none") for a in (first, second, best)]
    assert torch.allclose(per[2], torch.maximum(per[0], per[1]))


def test_margin_loss_is_the_cw_margin():
    logits = torch.tensor([[3.0, 1.0, 2.0], [0.0, 5.0, 1.0]])
    assert margin_loss(logits, torch.tensor([0, 2])).tolist() == [-1.0, 4.0]


def test_margin_attack_ignores_the_logit_scale(setup):
    model, x, y = setup
    scaled = nn.Sequential(model, ScaleLogits(100.0)).eval()
    plain = pgd(model, x, y, 0.03, PGDParams(steps=3, loss="margin"))
    assert torch.equal(plain, pgd(scaled, x, y, 0.03, PGDParams(steps=3, loss="margin")))


class ScaleLogits(nn.Module):
    def __init__(self, factor):
        super().__init__()
        self.factor = factor

    def forward(self, z):
        return z * self.factor


def test_gradient_is_for_the_input_only(setup):
    model, x, y = setup
    input_gradient(model, x, y)
    assert all(p.grad is None for p in model.parameters())


def test_inference_mode_gives_a_clear_error(setup):
    model, x, y = setup
    with torch.inference_mode(), pytest.raises(RuntimeError, match="inference_mode"):
        fgsm(model, x, y)


def same_start(x, eps, seed, l2=False):
    """torchattacks' random start under `seed`: the global generator, put back afterwards."""
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        if not l2:
            return torch.clamp(x + torch.empty_like(x).uniform_(-eps, eps), 0, 1)
    return None


def test_same_images_as_torchattacks(setup):
    model, x, y = setup
    pairs = {
        "fgsm": (fgsm(model, x, y, 0.01), torchattacks.FGSM(model, eps=0.01)),
        "bim": (bim(model, x, y, 0.01), torchattacks.BIM(model, eps=0.01, alpha=1 / 255, steps=3)),
        "mifgsm": (
            mifgsm(model, x, y, 8 / 255, 2 / 255, 5),
            torchattacks.MIFGSM(model, eps=8 / 255, alpha=2 / 255, steps=5),
        ),
        "pgd": (
            pgd(
                model,
                x,
                y,
                8 / 255,
                PGDParams(steps=5, alpha=2 / 255),
                start=same_start(x, 8 / 255, 7),
            ),
            torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=5),
        ),
        # a CPU generator seeded like the global one draws the same normal and uniform numbers
        "pgd_l2": (
            pgd_l2(
                model,
                x,
                y,
                0.5,
                PGDParams(steps=5, alpha=0.1),
                generator=torch.Generator().manual_seed(7),
            ),
            torchattacks.PGDL2(model, eps=0.5, alpha=0.1, steps=5),
        ),
    }
    for name, (ours, reference) in pairs.items():
        with torch.random.fork_rng():
            torch.manual_seed(7)
            theirs = reference(x, y)
        assert float((ours - theirs).abs().max()) <= 1e-6, name


@pytest.mark.parametrize("method", ["mifgsm", "pgd"])
def test_same_images_as_torchattacks_when_targeted(setup, method):
    model, x, y = setup
    reference = {
        "mifgsm": torchattacks.MIFGSM(model, eps=8 / 255, alpha=2 / 255, steps=3),
        "pgd": torchattacks.PGD(model, eps=8 / 255, alpha=2 / 255, steps=3, random_start=False),
    }[method]
    reference.set_mode_targeted_least_likely()
    ours = run_attack(
        method,
        model,
        x,
        y,
        8 / 255,
        "least_likely",
        alpha=2 / 255,
        **({"random_start": False} if method == "pgd" else {}),
    )
    assert float((ours - reference(x, y)).abs().max()) <= 1e-6


@pytest.mark.parametrize("method", ["autoattack", "apgd_pair"])
def test_autoattack_without_the_extra_is_one_line_naming_the_install(monkeypatch, method):
    import importlib.util

    from imbadv.core.errors import ConfigError

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util,
        "find_spec",
        lambda name, *a: None if name == "pyautoattack" else real(name, *a),
    )
    with pytest.raises(ConfigError) as err:
        ATTACKS.parse("attack.methods", method, {})
    assert method in str(err.value) and 'pip install -e ".[autoattack]"' in str(err.value)
    assert "\n" not in str(err.value)


def test_autoattack_adapter_equals_pyautoattack_called_directly():
    from pyautoattack import AutoAttack

    from imbadv.attacks.autoattack import PAIR, STANDARD, autoattack

    gen = torch.Generator().manual_seed(3)
    model = VGG(width=0.0625)
    model.reset_parameters(gen)
    model.eval()
    x = torch.rand(8, 3, 32, 32, generator=gen)
    with torch.no_grad():
        y = model(x).argmax(1)  # all correct before the attack: the attack decides the accuracy
    for attacks, version in ((STANDARD, "standard"), (PAIR, "custom")):
        ours = autoattack(model, x, y, 2 / 255, attacks, seed=5)
        options = {} if version == "standard" else {"attacks": list(PAIR)}
        direct = AutoAttack(model, eps=2 / 255, seed=5, version=version, **options)
        direct.apgd_targeted.n_target_classes = 9  # what `standard` sets, for the custom pair too
        with torch.random.fork_rng():
            theirs, _ = direct.run_standard_evaluation(x, y, batch_size=len(x))
        with torch.no_grad():
            acc = [float((model(a).argmax(1) == y).float().mean()) for a in (ours, theirs)]
        assert acc[0] == acc[1] and acc[0] < 1.0, (version, acc)
        assert torch.equal(ours, theirs)
        assert float((ours - x).abs().max()) <= 2 / 255 + 1e-6


class Scaled(nn.Module):
    """A model whose logits are multiplied by `factor`: same predictions, other confidence."""

    def __init__(self, net, factor):
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, x):
        return self.net(x) * self.factor


def masking_rows(model, x, y, eps):
    """The attack rows the experiment writes for PGD-CE and PGD-margin, as far as the flag reads."""
    rows = []
    zero = float((input_gradient(model, x, y).flatten(1).abs().amax(1) == 0).float().mean())
    for loss_name in ("ce", "margin"):
        p = PGDParams(steps=10, loss=loss_name)
        adv = pgd(model, x, y, eps, p, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            acc = float((model(adv).argmax(1) == y).float().mean())
        rows.append(
            {
                "method": "pgd",
                "source": "same",
                "eps": eps,
                "direction": "ascent",
                "target_class": None,
                "params": p.resolved(eps),
                "adv_acc": acc,
                "zero_grad_fraction": zero,
            }
        )
    return flag_gradient_masking(rows)


def test_logit_scale_moves_pgd_ce_but_not_the_margin_attack_and_the_flag_fires():
    """RoBal (CVPR 2021) Sec. 3.3 at small scale: logits x 10^k, k = -2..2."""
    gen = torch.Generator().manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 64), nn.ReLU(), nn.Linear(64, 10))
    with torch.no_grad():
        for p in net.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
    x = torch.rand(200, 3, 8, 8, generator=gen)
    with torch.no_grad():
        y = net(x).argmax(1)  # every image right before the attack
    by_k = {k: masking_rows(Scaled(net, 10.0**k).eval(), x, y, 0.02) for k in range(-2, 3)}
    ce = [rows[0]["adv_acc"] for rows in by_k.values()]
    margin = [rows[1]["adv_acc"] for rows in by_k.values()]
    assert max(margin) - min(margin) <= 0.01
    assert max(ce) - min(ce) > 0.03
    assert by_k[2][0]["zero_grad_fraction"] > 0.05  # saturated softmax: gradients underflow to 0
    assert by_k[2][0]["gradient_masking"] and by_k[2][1]["gradient_masking"]  # every row
    assert all(
        rows[0]["gradient_masking"]
        == (rows[0]["masking_gap"] > 0.03 or rows[0]["zero_grad_fraction"] > 0.05)
        for rows in by_k.values()
    )


def test_masking_flag_rules():
    assert gradient_masking(0.50, 0.46, 0.0) and not gradient_masking(0.50, 0.48, 0.0)
    assert gradient_masking(None, None, 0.06) and not gradient_masking(None, None, 0.05)
    row = {
        "method": "fgsm",
        "source": "same",
        "eps": 0.01,
        "direction": "ascent",
        "params": {},
        "adv_acc": 0.2,
        "zero_grad_fraction": 0.0,
    }
    (flagged,) = flag_gradient_masking([row])
    assert flagged["gradient_masking"] is False and flagged["masking_gap"] is None
