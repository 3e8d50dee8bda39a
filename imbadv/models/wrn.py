"""WideResNet (Zagoruyko & Komodakis 2016) as used for robustness (Madry, TRADES, RoBal)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imbadv.data.base import DataCard
from imbadv.models import WRNParams
from imbadv.models.common import Normalizing, scaled
from imbadv.models.common import head as output


class WideBlock(nn.Module):
    """BN-ReLU-conv3x3-(dropout)-BN-ReLU-conv3x3 plus the input (1x1 conv where the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int, dropout: float) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.dropout = nn.Dropout(dropout) if dropout > 0 else nn.Identity()
        self.equal = cin == cout and stride == 1
        self.shortcut = None if self.equal else nn.Conv2d(cin, cout, 1, stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(x))
        skip = x if self.shortcut is None else self.shortcut(out)
        out = self.conv1(out)
        out = self.conv2(self.dropout(F.relu(self.bn2(out))))
        return out + skip


class WideResNet(Normalizing):
    """WRN-depth-widen: a 3x3 stem of 16 channels, 3 groups of (depth - 4) / 6 wide blocks of
    16k, 32k, 64k channels (strides 1, 2, 2), BN-ReLU, global average pooling, a linear layer.

    Input: [0, 1] images (N, C, H, W) of any size; output logits (N, classes). `width` scales
    every channel count on top of `widen`. Parameters at width 1 and 10 classes: WRN-28-10
    36,479,194; WRN-34-10 46,160,474.
    """

    head_name = "linear"  # the output layer (its input: the penultimate features)

    def __init__(
        self,
        num_classes: int = 10,
        in_channels: int = 3,
        depth: int = 28,
        widen: int = 10,
        width: float = 1.0,
        dropout: float = 0.0,
        mean=(0.4914, 0.4822, 0.4465),
        std=(0.2470, 0.2435, 0.2616),
        head: str = "linear",
    ) -> None:
        super().__init__(mean, std, in_channels)
        n = (depth - 4) // 6
        cin = scaled(16, width)
        self.stem = nn.Conv2d(in_channels, cin, 3, 1, 1, bias=False)
        blocks = []
        for channels, stride in ((16 * widen, 1), (32 * widen, 2), (64 * widen, 2)):
            cout = scaled(channels, width)
            for i in range(n):
                blocks.append(WideBlock(cin, cout, stride if i == 0 else 1, dropout))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.bn = nn.BatchNorm2d(cin)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.linear = output(head, cin, num_classes)
        self.reset_parameters()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.blocks(self.stem(self.normalize(x)))
        return self.linear(self.pool(F.relu(self.bn(out))).flatten(1))


def build(card: DataCard, p: WRNParams) -> WideResNet:
    """The registry's `wrn`, sized and normalized for the card."""
    return WideResNet(
        card.num_classes,
        card.channels,
        p.depth,
        p.widen,
        p.width,
        p.dropout,
        card.mean,
        card.std,
        p.head,
    )
