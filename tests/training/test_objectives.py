"""Long-tail objectives: balanced softmax, class weights, post-hoc adjustment, by name."""

import math

import pytest
import torch
import torch.nn.functional as F

from imbadv.core.errors import ConfigError
from imbadv.training import OBJECTIVES
from imbadv.training.objectives import LogitAdjusted, class_weights


def make(name, counts, **params):
    spec = OBJECTIVES.parse("objective", name, params)
    return OBJECTIVES.get("objective", name).load()(spec.params, counts)


def batch(n=16, classes=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(n, classes, generator=gen) * 3, torch.randint(
        0, classes, (n,), generator=gen
    )


def test_balanced_softmax_is_cross_entropy_when_counts_are_equal():
    logits, y = batch()
    loss = make("balanced_softmax", [250] * 4)
    assert torch.allclose(loss(logits, y), F.cross_entropy(logits, y), atol=1e-6)


def test_balanced_softmax_is_cross_entropy_on_shifted_logits():
    logits, y = batch()
    counts = [1000, 300, 50, 7]
    shift = torch.tensor([math.log(c) for c in counts])
    assert torch.allclose(
        make("balanced_softmax", counts)(logits, y), F.cross_entropy(logits + shift, y), atol=1e-6
    )
    half = make("balanced_softmax", counts, tau=0.5)(logits, y)
    assert torch.allclose(half, F.cross_entropy(logits + 0.5 * shift, y), atol=1e-6)
    # the shift lowers the loss of labels from rare classes' competitors: not plain CE
    assert not torch.allclose(half, F.cross_entropy(logits, y))


def test_class_weight_formulae():
    counts = [1000, 100, 10]
    inverse = class_weights(counts, "inverse")
    expected = torch.tensor([1 / 1000, 1 / 100, 1 / 10])
    assert torch.allclose(inverse, expected / expected.sum() * 3)
    beta = 0.999
    eff = torch.tensor([(1 - beta) / (1 - beta**n) for n in counts])
    assert torch.allclose(class_weights(counts, "effective", beta), eff / eff.sum() * 3)
    assert torch.allclose(class_weights(counts, "effective", 0.0), torch.ones(3))
    assert class_weights(counts, "effective", 0.9999).sum().item() == pytest.approx(3.0)


def test_weighted_ce_uses_the_weights():
    logits, y = batch()
    counts = [500, 200, 50, 10]
    w = class_weights(counts, "inverse")
    got = make("weighted_ce", counts, weights="inverse")(logits, y)
    per = F.cross_entropy(logits, y, reduction="none")
    assert torch.allclose(got, (per * w[y]).sum() / w[y].sum(), atol=1e-6)


def test_post_hoc_adjustment_subtracts_tau_log_prior():
    net = torch.nn.Linear(3, 3, bias=False)
    x = torch.randn(5, 3)
    adjusted = LogitAdjusted(net, [100, 10, 1], tau=1.0)
    assert torch.allclose(adjusted(x), net(x) - torch.tensor([100.0, 10.0, 1.0]).log())


def test_bad_objectives_are_refused():
    with pytest.raises(ConfigError, match="objective=focal"):
        OBJECTIVES.parse("objective", "focal", {})
    with pytest.raises(ConfigError, match="objective.beta=1"):
        OBJECTIVES.parse("objective", "weighted_ce", {"beta": 1.0})
    with pytest.raises(ConfigError, match="objective.weights=sqrt"):
        OBJECTIVES.parse("objective", "weighted_ce", {"weights": "sqrt"})
    with pytest.raises(ConfigError, match="objective.tau=-1"):
        OBJECTIVES.parse("objective", "balanced_softmax", {"tau": -1})
