"""The paper's adapted VGG, taking [0, 1] pixels with the data's normalization inside."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from imbadv.data.base import DataCard
from imbadv.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD  # the default without a data card
from imbadv.models import VGGParams
from imbadv.models.common import CosineHead, channel_stats, drawn
from imbadv.models.common import head as output

# (channels, convs) per block, each block ending in a 2x2 max-pool (Sec. 3.1 of the paper).
PAPER_BLOCKS: tuple[tuple[int, int], ...] = ((64, 2), (128, 3), (256, 3))


class VGG(nn.Module):
    """Three VGG blocks [64x2, 128x3, 256x3] with 3x3 convs, then FC 512 + ReLU and the output layer.

    Input: float images in [0, 1], shape (N, C, H, W). Output: logits (N, num_classes).
    `width` scales every channel count and the FC size (1.0 is the paper's network, 4.0 M
    parameters for 32x32 RGB and 10 classes); small widths make CPU presets feasible.
    """

    head_name = "classifier.3"  # the output layer (its input: the penultimate features)

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        image_size: int = 32,
        width: float = 1.0,
        fc: int = 512,
        mean: Sequence[float] = CIFAR10_MEAN,
        std: Sequence[float] = CIFAR10_STD,
        head: str = "linear",
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for out, convs in PAPER_BLOCKS:
            out = max(1, round(out * width))
            for _ in range(convs):
                layers += [nn.Conv2d(channels, out, 3, padding=1), nn.ReLU(inplace=True)]
                channels = out
            layers.append(nn.MaxPool2d(2))
        self.features = nn.Sequential(*layers)
        side = image_size // 2 ** len(PAPER_BLOCKS)
        hidden = max(1, round(fc * width))
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(channels * side * side, hidden),
            nn.ReLU(inplace=True),
            output(head, hidden, num_classes),
        )
        stats = channel_stats(mean, std, in_channels)
        self.register_buffer("mean", stats[0], persistent=False)
        self.register_buffer("std", stats[1], persistent=False)
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Keras defaults (the paper's framework): Glorot-uniform weights, zero biases."""
        for module in self.modules():
            if isinstance(module, nn.Conv2d | nn.Linear):
                drawn(module.weight, nn.init.xavier_uniform_, generator)
                nn.init.zeros_(module.bias)
            elif isinstance(module, CosineHead):
                module.reset_parameters(generator)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features((x - self.mean) / self.std))


def build(card: DataCard, p: VGGParams) -> VGG:
    """The registry's entry: a VGG sized for the card, normalizing with its mean and std."""
    return VGG(
        card.num_classes, card.channels, card.image_size, p.width, p.fc, card.mean, card.std, p.head
    )


def parameter_count(model: nn.Module) -> int:
    """Trainable parameters (the paper's VGG at width 1: 3,985,866)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)
