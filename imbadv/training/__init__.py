"""Training: the optimizer settings and the training objectives by name (torch-free registry).

An objective is `make(params, counts) -> loss(logits, y)`, where `counts` are the training
images per class (long-tail losses need them). Add one: docs/extending.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imbadv.registry import Params, Registry, bounds


@dataclass(frozen=True)
class TrainSettings(Params):
    """Paper defaults: Keras RMSprop (rho 0.9, eps 1e-7), lr 1e-4, Keras decay 1e-5, batch 32.

    "Until convergence" made explicit: early stopping on validation loss with `patience`,
    at most `max_epochs`, the best epoch's weights kept.
    """

    lr: float = field(default=1e-4, metadata=bounds(0.0, 10.0, open_low=True))
    decay: float = field(default=1e-5, metadata=bounds(0.0))
    rho: float = field(default=0.9, metadata=bounds(0.0, 1.0))
    eps: float = field(default=1e-7, metadata=bounds(0.0, 1.0, open_low=True))
    batch_size: int = field(default=32, metadata=bounds(1))
    max_epochs: int = field(default=100, metadata=bounds(1))
    patience: int = field(default=5, metadata=bounds(0))
    precision: str = "32-true"
    channels_last: bool = True


@dataclass(frozen=True)
class CrossEntropyParams(Params):
    """Plain cross-entropy (the paper's loss) has no parameter."""


OBJECTIVES = Registry("objective")
OBJECTIVES.add(
    "ce", CrossEntropyParams, "imbadv.training.objectives:cross_entropy", "cross-entropy"
)
