"""What the BatchNorm networks share: normalization inside the model and a seeded initialization."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn


def channel_stats(
    mean: Sequence[float], std: Sequence[float], channels: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """The data's per-channel mean and std as (1, C, 1, 1) tensors; a grayscale data set gets the
    mean of RGB statistics rather than an error."""
    if len(mean) != channels:
        mean, std = [sum(mean) / len(mean)] * channels, [sum(std) / len(std)] * channels
    shape = (1, channels, 1, 1)
    return torch.tensor(mean).view(shape), torch.tensor(std).view(shape)


def drawn(
    tensor: torch.Tensor, init: Callable[..., torch.Tensor], generator: torch.Generator | None
) -> None:
    """Fill `tensor` with `init(t, generator=generator)` drawn into a fresh contiguous CPU tensor,
    then copied in: a model's initial weights are the same whether it was moved to a GPU or made
    channels_last before or after (an in-place draw follows the tensor's device and memory order).
    """
    if generator is not None and generator.device.type != "cpu":
        raise ValueError(f"initialize from a CPU generator, not one on {generator.device}")
    values = torch.empty(tuple(tensor.shape))
    init(values, generator=generator)
    with torch.no_grad():
        tensor.copy_(values)


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
        stats = channel_stats(mean, std, channels)
        self.register_buffer("mean", stats[0], persistent=False)
        self.register_buffer("std", stats[1], persistent=False)

    def normalize(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """He-normal convs (fan out, as torchvision's ResNets), BatchNorm 1 and 0 with fresh
        running statistics, and PyTorch's default uniform Linear init: all drawn on the CPU from
        `generator` (a CPU generator), wherever the model is."""
        he = partial(nn.init.kaiming_normal_, mode="fan_out", nonlinearity="relu")
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                drawn(m.weight, he, generator)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
                m.reset_running_stats()
            elif isinstance(m, nn.Linear):
                drawn(m.weight, partial(nn.init.kaiming_uniform_, a=math.sqrt(5)), generator)
                bound = 1 / math.sqrt(m.in_features)
                drawn(m.bias, partial(nn.init.uniform_, a=-bound, b=bound), generator)
            elif isinstance(m, CosineHead):
                m.reset_parameters(generator)


class CosineHead(nn.Module):
    """RoBal's cosine classifier (Wu et al. 2021, `CosPlus_Classifier`): z_c = scale <f / ||f||,
    w_c / (||w_c|| + gamma)> + bias_c, gamma = 1/32.

    `scale` (1) and `bias` (0) are stored buffers, not trained: a method may set them after
    training (RoBal-N's 10 z - 0.1 log pi), and the stored model then answers with them.
    """

    def __init__(self, in_features: int, out_features: int, gamma: float = 1 / 32) -> None:
        super().__init__()
        self.in_features, self.out_features, self.gamma = in_features, out_features, gamma
        self.weight = nn.Parameter(torch.empty(out_features, in_features))
        self.register_buffer("scale", torch.ones(()))
        self.register_buffer("bias", torch.zeros(out_features))
        self.reset_parameters()

    def reset_parameters(self, generator: torch.Generator | None = None) -> None:
        """Rows drawn uniform in [-1, 1] and scaled to unit norm (their code's init)."""
        drawn(self.weight, partial(nn.init.uniform_, a=-1.0, b=1.0), generator)
        with torch.no_grad():
            self.weight.div_(self.weight.norm(dim=1, keepdim=True).clamp_min(1e-12))
            self.scale.fill_(1.0)
            self.bias.zero_()

    def forward(self, f: torch.Tensor) -> torch.Tensor:
        w = self.weight / (self.weight.norm(dim=1, keepdim=True) + self.gamma)
        return self.scale * F.linear(F.normalize(f, dim=1), w) + self.bias


HEADS = ("linear", "cosine")


def head(kind: str, in_features: int, out_features: int) -> nn.Module:
    """The output layer: `linear` (nn.Linear) or `cosine` (CosineHead)."""
    if kind == "cosine":
        return CosineHead(in_features, out_features)
    return nn.Linear(in_features, out_features)


def output_layer(model: nn.Module) -> nn.Module:
    """The model's output layer (its `head_name` attribute's module): the penultimate features
    are this layer's input, and RoBal-N's adjustment lives in it."""
    name = getattr(model, "head_name", None)
    if name is None:
        raise ValueError(f"{type(model).__name__} does not name its output layer (head_name)")
    return model.get_submodule(name)
