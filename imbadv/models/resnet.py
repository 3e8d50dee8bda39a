"""CIFAR-style ResNet-18 (3x3 stem, no max-pool) and PreActResNet-18, on [0, 1] pixels."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imbadv.data.base import DataCard
from imbadv.models import ResNetParams
from imbadv.models.common import Normalizing, scaled
from imbadv.models.common import head as output

STAGES = ((64, 1), (128, 2), (256, 2), (512, 2))  # (channels, stride of the first block)


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus the input (1x1 conv + BN where the shape changes), ReLU."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = nn.Sequential()
        if stride != 1 or cin != cout:
            self.shortcut = nn.Sequential(
                nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 plus the input (He et al. 2016b); 1x1 conv shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.shortcut = None
        if stride != 1 or cin != cout:
            self.shortcut = nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = self.shortcut(out) if self.shortcut is not None else x
        out = self.conv1(out)
        return self.conv2(F.relu(self.bn2(out))) + skip


class ResNet18(Normalizing):
    """ResNet-18 for 32x32 images (He et al. 2016, CIFAR variant as in kuangliu/pytorch-cifar):
    a 3x3 stem without max-pool, 4 stages of 2 blocks, global average pooling, a linear layer.

    `preact`: PreActResNet-18 (He et al. 2016b) as used in adversarial training (Wong et al.
    2020; Rice et al. 2020; CFA): pre-activation blocks, no BN after the stem, a final BN-ReLU
    before pooling. Input: [0, 1] images (N, C, H, W) of any size; output logits (N, classes).
    Parameters at width 1 and 10 classes: 11,173,962 (ResNet-18), 11,172,170 (PreActResNet-18).
    """

    head_name = "linear"  # the output layer (its input: the penultimate features)

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        width: float = 1.0,
        preact: bool = False,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        head: str = "linear",
    ) -> None:
        super().__init__(mean, std, in_channels)
        block = PreActBlock if preact else BasicBlock
        cin = scaled(64, width)
        self.stem = nn.Conv2d(in_channels, cin, 3, 1, 1, bias=False)
        self.stem_bn = None if preact else nn.BatchNorm2d(cin)
        layers = []
        for channels, stride in STAGES:
            cout = scaled(channels, width)
            layers += [block(cin, cout, stride), block(cout, cout, 1)]
            cin = cout
        self.layers = nn.Sequential(*layers)
        self.final_bn = nn.BatchNorm2d(cin) if preact else None
        self.pool = nn.AdaptiveAvgPool2d(1)  # any image size: 32x32 gives 4x4 here, as published
        self.linear = output(head, cin, num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.stem(self.normalize(x))
        if self.stem_bn is not None:
            out = F.relu(self.stem_bn(out))
        out = self.layers(out)
        if self.final_bn is not None:
            out = F.relu(self.final_bn(out))
        return self.linear(self.pool(out).flatten(1))


def build(card: DataCard, p: ResNetParams) -> ResNet18:
    """The registry's `resnet18`, sized and normalized for the card."""
    return ResNet18(card.num_classes, card.channels, p.width, False, card.mean, card.std, p.head)


def build_preact(card: DataCard, p: ResNetParams) -> ResNet18:
    """The registry's `preact_resnet18`, sized and normalized for the card."""
    return ResNet18(card.num_classes, card.channels, p.width, True, card.mean, card.std, p.head)
