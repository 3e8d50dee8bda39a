"""RoBal (cosine head, margin loss, test-time output) and REAT (balanced softmax + TAIL) against
hand-computed cases, and the plumbing they need: the shifted start, features, the head check."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from imbadv.adversarial import ADVERSARIAL, AdversarialSettings
from imbadv.models.common import CosineHead, output_layer
from imbadv.models.vgg import VGG
from imbadv.training.adversarial import AdversarialStep, penultimate


def outer(mode: str, counts=None, **options):
    s = AdversarialSettings.of(mode, **options)
    return ADVERSARIAL.get("adversarial", mode).load()(s.params, counts)


def test_the_cosine_head_normalizes_features_and_weights():
    layer = CosineHead(2, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, 0.0], [0.0, 2.0]]))
    got = layer(torch.tensor([[3.0, 4.0]]))  # f / ||f|| = (0.6, 0.8)
    want = [0.6 / (1 + 1 / 32), 0.8 * 2 / (2 + 1 / 32)]
    assert got.tolist()[0] == pytest.approx(want, rel=1e-6)
    with torch.no_grad():
        layer.scale.fill_(10.0), layer.bias.copy_(torch.tensor([1.0, -1.0]))
    assert layer(torch.tensor([[3.0, 4.0]])).tolist()[0] == pytest.approx(
        [10 * want[0] + 1, 10 * want[1] - 1], rel=1e-6
    )


def test_robal_r_loss_on_a_hand_computed_case():
    # counts 100 and 10; cosine outputs 0: logits' = 10 (0 - m_y [k = y]) + 1.5 log pi_k
    counts, z = [100, 10], torch.zeros(2, 2)
    got = outer("robal_r", counts)(z, z, torch.tensor([0, 1]), None)
    prior = [1.5 * math.log(100 / 110), 1.5 * math.log(10 / 110)]
    m = [0.1 + 0.3 * math.log(10.0) / 10, 0.1]  # the head class gets the larger margin

    def ce(logits, y):
        return -logits[y] + math.log(sum(math.exp(v) for v in logits))

    want = (ce([prior[0] - 10 * m[0], prior[1]], 0) + ce([prior[0], prior[1] - 10 * m[1]], 1)) / 2
    assert float(got) == pytest.approx(want, rel=1e-6)


def test_robal_adds_beta_kl_of_the_raw_outputs():
    counts, y = [5, 5], torch.tensor([0])
    clean, adv = torch.zeros(1, 2), torch.tensor([[math.log(3.0), 0.0]])  # p_adv (3/4, 1/4)
    base = outer("robal_n", counts, beta=0.0)(clean, adv, y, None)
    full = outer("robal_n", counts, beta=6.0)(clean, adv, y, None)
    kl = 0.5 * (math.log(0.5) - math.log(0.75 + 1e-12)) + 0.5 * (
        math.log(0.5) - math.log(0.25 + 1e-12)
    )
    assert float(full - base) == pytest.approx(6.0 * kl, rel=1e-5)


def test_robal_n_answers_ten_z_minus_a_tenth_log_prior_after_training():
    counts = [40, 10]
    model = VGG(2, 3, 8, width=0.05, head="cosine").eval()
    x = torch.rand(3, 3, 8, 8)
    raw = model(x)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    step = AdversarialStep(AdversarialSettings.of("robal_n"), 0, counts)
    with torch.no_grad():
        step.finish(model)
    shift = torch.tensor([-0.1 * math.log(0.8), -0.1 * math.log(0.2)])
    assert torch.allclose(model(x), 10 * raw + shift, atol=1e-5)
    step.finish(model, state)  # a sibling's weights get the same output
    assert torch.equal(state["classifier.3.scale"], model.classifier[3].scale)
    AdversarialStep(AdversarialSettings.of("robal_r"), 0, counts).finish(model.eval(), state)
    assert float(state["classifier.3.scale"]) == 10.0  # RoBal-R: no adjustment


def test_robal_starts_on_the_positive_side_of_the_ball():
    step = AdversarialStep(AdversarialSettings.of("robal_n"), 0, [5, 5])
    x = torch.full((4, 3, 8, 8), 0.5)
    d = step.start(x, 0.1) - x
    assert float(d.min()) >= 0.0 and float(d.max()) < 0.1 and float(d.mean()) > 0.03


def test_reat_tail_classes_are_the_fewest_images():
    p = AdversarialSettings.of("reat").params
    assert p.tail_classes([5000 - 400 * c for c in range(10)]) == [7, 8, 9]  # their last third
    assert p.tail_classes([500, 500, 500, 100, 500, 500, 500, 500, 500, 500]) == [3, 8, 9]
    assert p.tail_classes([5] * 100)[:1] == [67] and len(p.tail_classes([5] * 100)) == 33


def test_reat_loss_on_a_hand_computed_case():
    # counts 1 and 4 (class 0 the tail); rows: class 0 with f (0, 0), class 1 with f (log 3, 0)
    counts, y = [1, 4], torch.tensor([0, 1])
    f = torch.tensor([[0.0, 0.0], [math.log(3.0), 0.0]])
    adv = torch.zeros(2, 2)
    got = outer("reat", counts)(None, adv, y, None, features=f)
    bsl = (-math.log(1 / 5) - math.log(4 / 5)) / 2  # CE(0 + log n, y) of each row
    kl = (0.5 * (math.log(0.5) - math.log(0.75)) + 0.5 * (math.log(0.5) - math.log(0.25))) / 4
    w0, w1 = math.sqrt(5.0), math.sqrt(5 / 4)
    c = (-(w0 + w0) + (w0 + w1)) / 2  # same class: -1, other class: +1
    assert float(got) == pytest.approx(bsl + kl * c, rel=1e-6)
    no_tail = outer("reat", counts)(None, adv, torch.tensor([1, 1]), None, features=f)
    assert float(no_tail) == pytest.approx(-math.log(4 / 5), rel=1e-6)


def test_reats_reweighted_attack_takes_the_steps_of_plain_ce():
    torch.manual_seed(0)
    model, x, y = (
        nn.Sequential(nn.Flatten(), nn.Linear(12, 3)),
        torch.rand(8, 3, 2, 2),
        torch.arange(8) % 3,
    )
    x.requires_grad_(True)
    weight = torch.tensor([0.2, 1.7, 5.0])  # their effective-number weights: positive per class
    (g_rbl,) = torch.autograd.grad(F.cross_entropy(model(x), y, weight=weight), x)
    (g_ce,) = torch.autograd.grad(F.cross_entropy(model(x), y), x)
    assert torch.equal(g_rbl.sign(), g_ce.sign())


def test_penultimate_collects_the_output_layers_input():
    model = VGG(2, 3, 8, width=0.05).eval()
    x = torch.rand(2, 3, 8, 8)
    with penultimate(model) as seen:
        out = model(x)
    assert torch.allclose(output_layer(model)(seen[0]), out)
    assert torch.allclose(
        seen[0], model.classifier[:3](model.features((x - model.mean) / model.std))
    )


def test_reat_and_robal_train_through_fit():
    from imbadv.training import TrainSettings
    from imbadv.training.loop import fit

    gen = torch.Generator().manual_seed(0)
    data = [(torch.randint(0, 256, (32, 3, 8, 8), generator=gen, dtype=torch.uint8), torch.arange(32) % 2) for _ in range(2)]  # fmt: skip
    s = TrainSettings(batch_size=16, max_epochs=1, channels_last=False, early_stopping=False)
    for mode in ("reat", "robal_n"):
        model = VGG(2, 3, 8, width=0.05, head="cosine")
        before = output_layer(model).weight.detach().clone()
        adv = AdversarialSettings.of(mode, steps=1)
        fit(model, *data, s, torch.device("cpu"), seed=0, adversarial=adv, counts=[24, 8])
        assert not torch.equal(output_layer(model).weight, before)
        assert float(output_layer(model).scale) == (10.0 if mode == "robal_n" else 1.0)


def test_robal_needs_the_cosine_head(tmp_path):
    from conftest import TINY, one_line_refusal, run_cli

    proc = run_cli(["-m", *TINY, "adversarial=robal_n", f"hydra.sweep.dir={tmp_path}/r"], tmp_path)
    want = "model.head=linear is not allowed: expected cosine with adversarial=robal_n"
    one_line_refusal(proc, f"{want} (its loss is on cosine outputs)")
    assert proc.returncode == 2 and not (tmp_path / "r").exists()
