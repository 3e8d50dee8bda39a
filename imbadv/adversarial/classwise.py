"""Class-wise eps for adversarial training (RobustLT, Zhang et al. 2026): pure and torch-free.

As zhang-lilin/RobustLT computes it (core/methods/robustlt.py): r_c = sqrt(log(n_max / n_c)),
tau = a / sum_c pi_c r_c with pi_c = n_c / N, and eps_c = (1 - a) eps + tau r_c eps, so the
head class gets (1 - a) eps, the tail more, and the training images' mean budget
sum_c pi_c eps_c is exactly eps. It is ramped in linearly from 0: eps_c(t) = eps_c min(1,
t / (ramp x max_epochs)) at 0-based epoch t (their (epoch - 1) at 1-based), so the first epoch
trains on clean images. The inner step scales with the budget (alpha eps_c / eps); the random
start stays uniform in the global eps ball, projected into each row's own.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from imbadv.adversarial import BallParams


def class_eps(
    p: BallParams, counts: Sequence[int] | None, epoch: float = math.inf, max_epochs: int = 1
) -> list[float]:
    """The per-class eps at `epoch` (0-based) of `max_epochs`; fully ramped in by default."""
    if counts is None:
        raise ValueError("class-wise eps needs the training counts per class")
    n = [max(float(c), 1.0) for c in counts]
    total, top = sum(n), max(n)
    r = [math.sqrt(math.log(top / c)) for c in n]
    spread = sum(c / total * rc for c, rc in zip(n, r, strict=True))
    tau = p.classwise_a / spread if spread > 0 else 0.0  # all classes equal: eps everywhere
    a = p.classwise_a if spread > 0 else 0.0
    full = [(1 - a) * p.eps + tau * rc * p.eps for rc in r]
    ramp_epochs = p.classwise_ramp * max_epochs
    weight = 1.0 if ramp_epochs <= 0 else min(1.0, epoch / ramp_epochs)
    return [min(1.0, e * weight) for e in full]
