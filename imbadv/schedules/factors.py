"""The registered schedules as pure functions: optimizer step -> factor of the optimizer's lr."""

from __future__ import annotations

import math
from collections.abc import Callable

from imbadv.schedules import (
    ConstantParams,
    CosineParams,
    KerasDecayParams,
    OneCycleParams,
    ScheduleParams,
    StepParams,
)

Factor = Callable[[int], float]


def warmed(p: ScheduleParams, steps_per_epoch: int, factor: Factor) -> Factor:
    """`factor` times a linear ramp (step + 1) / warm-up steps over the warm-up."""
    warm = round(p.warmup_epochs * steps_per_epoch)
    if warm <= 0:
        return factor
    return lambda step: factor(step) * min(1.0, (step + 1) / warm)


def keras_decay(p: KerasDecayParams, steps_per_epoch: int, max_epochs: int) -> Factor:
    """Keras' decay: 1 / (1 + decay * step)."""
    return warmed(p, steps_per_epoch, lambda step: 1.0 / (1.0 + p.decay * step))


def constant(p: ConstantParams, steps_per_epoch: int, max_epochs: int) -> Factor:
    """1 throughout (after the warm-up)."""
    return warmed(p, steps_per_epoch, lambda step: 1.0)


def step(p: StepParams, steps_per_epoch: int, max_epochs: int) -> Factor:
    """factor ** (milestones passed): the drop lands on the first step of the milestone epoch."""
    edges = [m * steps_per_epoch for m in p.milestones]
    return warmed(p, steps_per_epoch, lambda t: p.factor ** sum(t >= e for e in edges))


def cosine(p: CosineParams, steps_per_epoch: int, max_epochs: int) -> Factor:
    """min + (1 - min) (1 + cos(pi t / T)) / 2 over the steps after the warm-up."""
    start = round(p.warmup_epochs * steps_per_epoch)
    span = max(1, max_epochs * steps_per_epoch - start)

    def factor(t: int) -> float:
        done = min(1.0, max(0, t - start) / span)
        return p.min_factor + (1 - p.min_factor) * (1 + math.cos(math.pi * done)) / 2

    return warmed(p, steps_per_epoch, factor)


def onecycle(p: OneCycleParams, steps_per_epoch: int, max_epochs: int) -> Factor:
    """torch's OneCycleLR (cosine annealing, three_phase off) as a factor of the peak lr."""
    total = max_epochs * steps_per_epoch
    up = max(1.0, p.pct_start * total - 1)  # torch: phase end step = pct_start * total - 1
    low, end = 1 / p.div_factor, 1 / (p.div_factor * p.final_div_factor)

    def anneal(a: float, b: float, frac: float) -> float:
        return b + (a - b) * (1 + math.cos(math.pi * min(1.0, frac))) / 2

    def factor(t: int) -> float:
        if t <= up:
            return anneal(low, 1.0, t / up)
        return anneal(1.0, end, (t - up) / max(1.0, total - 1 - up))

    return warmed(p, steps_per_epoch, factor)
