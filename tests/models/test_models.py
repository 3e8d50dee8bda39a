"""Model: the paper's adapted VGG's shapes, parameter count, width factor and normalization."""

import pytest
import torch
from torch import nn

from imbadv.core.errors import ConfigError
from imbadv.data.base import DataCard
from imbadv.models import MODELS
from imbadv.models.resnet import ResNet18
from imbadv.models.vgg import VGG, parameter_count
from imbadv.models.wrn import WideResNet
from imbadv.training import Recipe, TrainSettings
from imbadv.training.loop import fit


def test_paper_vgg_shape_and_parameter_count():
    model = VGG()
    assert parameter_count(model) == 3_985_866  # convs 1,883,072 + fc 2,097,664 + out 5,130
    assert model(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    convs = [m for m in model.features if isinstance(m, torch.nn.Conv2d)]
    assert [c.out_channels for c in convs] == [64, 64, 128, 128, 128, 256, 256, 256]
    assert all(c.kernel_size == (3, 3) and c.padding == (1, 1) for c in convs)
    assert sum(isinstance(m, torch.nn.MaxPool2d) for m in model.features) == 3


def test_width_factor_and_grayscale():
    small = VGG(width=0.25)
    assert parameter_count(small) < parameter_count(VGG()) / 10
    gray = VGG(num_classes=5, in_channels=1, image_size=28, width=0.125)
    assert gray(torch.rand(3, 1, 28, 28)).shape == (3, 5)


def test_normalization_is_inside_and_not_trainable():
    model = VGG(width=0.125)
    assert "mean" not in dict(model.named_parameters())
    assert "mean" not in model.state_dict()  # a buffer, not part of the stored weights
    x = torch.full((1, 3, 32, 32), 0.5)
    assert torch.allclose(((x - model.mean) / model.std).mean(), torch.tensor(0.0), atol=0.5)


def test_initialisation_follows_the_generator():
    a, b = VGG(width=0.125), VGG(width=0.125)
    a.reset_parameters(torch.Generator().manual_seed(1))
    b.reset_parameters(torch.Generator().manual_seed(1))
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert all(
        float(m.bias.detach().abs().sum()) == 0
        for m in a.modules()
        if hasattr(m, "bias") and m.bias is not None
    )


# --- the BatchNorm networks of the robustness literature ---


CARD = DataCard(tuple("abcdefghij"), 3, 32, (0.5, 0.4, 0.3), (0.2, 0.25, 0.3))
GRAY = DataCard(tuple("abcde"), 1, 20, (0.3,), (0.3,))


def build(name, card=CARD, **options):
    spec = MODELS.parse("model", name, options)
    return MODELS.get("model", name).load()(card, spec.params)


@pytest.mark.parametrize(
    ("model", "count"),
    [
        (lambda: ResNet18(), 11_173_962),  # kuangliu/pytorch-cifar, RoBal, AT-BSL, DAFA
        (lambda: ResNet18(preact=True), 11_172_170),  # Wong et al. 2020 / Rice et al. 2020 / CFA
        (lambda: WideResNet(depth=28, widen=10), 36_479_194),
        (lambda: WideResNet(depth=34, widen=10), 46_160_474),
    ],
    ids=["resnet18", "preact_resnet18", "wrn-28-10", "wrn-34-10"],
)
def test_published_parameter_counts(model, count):
    with torch.device("meta"):  # shapes only: no memory, no initialization time
        assert parameter_count(model()) == count


@pytest.mark.parametrize("name", ["resnet18", "preact_resnet18", "wrn"])
def test_each_network_fits_any_card_and_width(name):
    options = {"depth": 10, "widen": 2} if name == "wrn" else {}
    small = build(name, width=0.125, **options)
    assert small(torch.rand(2, 3, 32, 32)).shape == (2, 10)
    gray = build(name, GRAY, width=0.125, **options)
    assert gray(torch.rand(3, 1, 20, 20)).shape == (3, 5)  # adaptive pooling: any image size
    assert parameter_count(build(name, width=0.25, **options)) < parameter_count(
        build(name, width=0.5, **options)
    )


@pytest.mark.parametrize("name", ["resnet18", "preact_resnet18", "wrn"])
def test_normalization_inside_and_seeded_initialization(name):
    options = {"depth": 10, "widen": 1} if name == "wrn" else {}
    a, b = build(name, width=0.125, **options), build(name, width=0.125, **options)
    assert "mean" not in a.state_dict() and torch.allclose(a.std.flatten(), torch.tensor(CARD.std))
    x = torch.rand(2, 3, 32, 32)
    assert torch.allclose(
        a.normalize(x),
        (x - torch.tensor(CARD.mean).view(1, 3, 1, 1)) / torch.tensor(CARD.std).view(1, 3, 1, 1),
    )
    a.reset_parameters(torch.Generator().manual_seed(1))
    b.reset_parameters(torch.Generator().manual_seed(1))
    assert all(
        torch.equal(p, q)
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )
    b.reset_parameters(torch.Generator().manual_seed(2))
    assert not torch.equal(a.linear.weight, b.linear.weight)


def test_wrn_depth_must_be_6n_plus_4():
    with pytest.raises(ConfigError, match="model.depth=30"):
        MODELS.parse("model", "wrn", {"depth": 30})


def test_a_batchnorm_model_trains_through_the_lightning_path():
    gen = torch.Generator().manual_seed(0)
    y = torch.arange(64) % 2
    x = (torch.rand(64, 3, 16, 16, generator=gen) * 100 + y.view(-1, 1, 1, 1) * 120).to(torch.uint8)
    card = DataCard(("a", "b"), 3, 16, (0.5,) * 3, (0.25,) * 3)
    model = build("resnet18", card, width=0.0625)
    model.reset_parameters(torch.Generator().manual_seed(0))
    before = model.layers[0].bn1.running_mean.clone()
    settings = TrainSettings(batch_size=16, max_epochs=2, patience=2)
    recipe = Recipe.paper(lr=1e-3)
    record = fit(model, (x, y), (x[:32], y[:32]), settings, torch.device("cpu"), 0, recipe=recipe)
    assert not torch.equal(model.layers[0].bn1.running_mean, before)  # BatchNorm trained
    assert record["history"][-1]["val/acc"] > 0.9
    assert isinstance(model.layers[0].bn1, nn.BatchNorm2d)
