"""Model: the paper's adapted VGG's shapes, parameter count, width factor and normalization."""

import torch

from imbadv.models.vgg import VGG, parameter_count


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
