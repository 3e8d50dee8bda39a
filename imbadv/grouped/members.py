"""Grouped training's members: what each brings, what a group refuses, their batch streams."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from imbadv.adversarial import AdversarialSettings
from imbadv.data.tensors import TensorBatches
from imbadv.training import TrainSettings
from imbadv.training.objectives import Loss


@dataclass
class Member:
    """One member's own split, seed and objective: what `fit` would be given for it alone."""

    train: tuple[torch.Tensor, torch.Tensor]
    val: tuple[torch.Tensor, torch.Tensor]
    seed: int
    loss: Loss = F.cross_entropy
    counts: tuple[int, ...] | None = None  # training images per class (count-aware methods)


def ungroupable(
    model: nn.Module, settings: TrainSettings, adversarial: AdversarialSettings | None = None
) -> str | None:
    """Why members like `model` cannot train grouped exactly as alone, or None if they can."""
    if adversarial is not None and adversarial.grouping() is not None:
        return adversarial.grouping()
    if settings.precision in ("16-mixed", "16-true"):
        # one GradScaler over the stack: one member's overflow would skip every member's step
        return f"precision {settings.precision} (one loss scaler would couple the members)"
    for m in model.modules():
        if isinstance(m, nn.modules.dropout._DropoutNd) and m.p > 0:
            return "dropout (its masks come from the global RNG, drawn once for the group)"
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.momentum is None:
            return "BatchNorm with cumulative averages (momentum None)"
    return None


class Zipped:
    """The K members' own batch streams, one tuple of K batches per step."""

    def __init__(self, streams: Sequence[TensorBatches]) -> None:
        self.streams = list(streams)

    def __len__(self) -> int:
        return len(self.streams[0])

    def __iter__(self) -> Iterator[tuple[tuple[torch.Tensor, torch.Tensor], ...]]:
        return zip(*self.streams, strict=True)


def check_members(
    models: Sequence[nn.Module],
    members: Sequence[Member],
    settings: TrainSettings,
    adversarial: AdversarialSettings,
) -> None:
    """Refuse a group that could not be exact: mixed shapes, sizes, or an ungroupable recipe."""
    if not models or len(models) != len(members):
        raise ValueError(f"{len(models)} models for {len(members)} members")
    reason = ungroupable(models[0], settings, adversarial)
    if reason is not None:
        raise ValueError(f"these models cannot train grouped: {reason}")
    shapes = {tuple((n, tuple(p.shape)) for n, p in m.state_dict().items()) for m in models}
    sizes = {len(m.train[1]) for m in members}
    if len(shapes) != 1 or len(sizes) != 1:
        raise ValueError("grouped members need one architecture and one training-set size")
