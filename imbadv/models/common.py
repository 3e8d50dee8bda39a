"""What the BatchNorm networks share: normalization inside the model and a seeded initialization."""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import nn

from imbadv.models.vgg import _channel_stats


def scaled(channels: int, width: float) -> int:
    """A channel count times the width multiplier, at least 1."""
    return max(1, round(channels * width))


class Normalizing(nn.Module):
    """Base of models taking [0, 1] pixels: subtracts the data's mean and divides by its std first.

    The statistics are non-persistent buffers: they follow the model's device but are not stored
    weights, so attacks and eps stay in pixel space whatever the data set.
    """

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int) -> None:
        super().__init__()
        stats = _channel_stats(mean, std, channels)
        self.register_buffer("mean", stats[0], persistent=False)
        self.register_buffer("std", stats[1], persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He-normal convs (fan out, as torchvision's ResNets), BatchNorm 1 and 0 with fresh
        running statistics, and PyTorch's default uniform Linear init: all from `generator`."""
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(
                    m.weight, mode="fan_out", nonlinearity="relu", generator=generator
                )
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()
            elif isinstance(m, nn.Linear):
                nn.init.kaiming_uniform_(m.weight, a=math.sqrt(5), generator=generator)
                bound = 1 / math.sqrt(m.in_features)
                nn.init.uniform_(m.bias, -bound, bound, generator=generator)
