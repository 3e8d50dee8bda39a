"""Grouped adversarial training: the live members' inner attacks as one call on a `Stacked` view."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from imbadv.adversarial import AdversarialSettings
from imbadv.grouped.stacked import Stacked, stack_rows
from imbadv.training.adversarial import AdversarialStep
from imbadv.training.objectives import Loss

# stacked inputs (live K, B, C, H, W) -> the live members' logits (live K, B, classes), train mode
Forward = Callable[[torch.Tensor], torch.Tensor]


class GroupAdversary:
    """Each member's own `AdversarialStep` (seeded as `fit` seeds it alone), their inner
    maximization run as one ascent over the live members' concatenated rows.

    Exact as alone because every draw is the member's: its start comes from its own generator,
    for a batch of its own shape, once per step, as alone; and the ascent treats rows
    independently (a summed loss: member k's rows get member k's input gradient).
    """

    def __init__(
        self,
        settings: AdversarialSettings,
        seeds: Sequence[int],
        counts: Sequence[Sequence[int] | None] | None = None,
    ) -> None:
        if settings.grouping() is not None:  # e.g. one generator for the whole batch
            raise ValueError(f"cannot run grouped: {settings.grouping()}")
        self.s = settings
        counts = counts or [None] * len(seeds)
        self.steps = [AdversarialStep(settings, s, c) for s, c in zip(seeds, counts, strict=True)]

    def examples(
        self,
        stacked: Stacked,
        x: torch.Tensor,
        ys: Sequence[torch.Tensor],
        live: Sequence[int],
    ) -> torch.Tensor:
        """The live members' adversarial batches, shaped like `x` (live K, B, C, H, W).

        `stacked` holds the live members' detached tensors, in their order; `ys` their labels."""
        starts = [self.steps[k].start(xk, self.s.eps) for k, xk in zip(live, x, strict=True)]
        rows = x.reshape(-1, *x.shape[2:])
        adv = self.steps[live[0]].ascend(stacked, rows, stack_rows(ys), stack_rows(starts))
        return adv.reshape(x.shape)

    def losses(
        self,
        forward: Forward,
        x: torch.Tensor,
        x_adv: torch.Tensor,
        ys: Sequence[torch.Tensor],
        losses: Sequence[Loss],
        live: Sequence[int],
    ) -> list[torch.Tensor]:
        """The live members' outer losses, each its own step's `outer` of its own logits; the
        forwards in the order alone runs them (clean first), for BatchNorm's statistics."""
        clean = forward(x) if self.s.facts.clean_forward else None
        adv = forward(x_adv)
        return [
            self.steps[k].outer(None if clean is None else clean[i], adv[i], y, loss)
            for i, (k, y, loss) in enumerate(zip(live, ys, losses, strict=True))
        ]


def stacked_view(
    params: dict[str, torch.Tensor],
    buffers: dict[str, torch.Tensor],
    template: nn.Module,
    call: Callable[..., torch.Tensor] | None = None,
) -> Stacked:
    """The live members as one module for the inner attack: detached weights, shared buffers
    (eval mode never writes them); `call` the stacked forward (default: vmap, eager)."""
    return Stacked({n: p.detach() for n, p in params.items()}, buffers, template, call)
