"""Attacks by name: each a pure function on [0, 1] images, registered with its checked parameters.

Every registered function has one signature, `attack(model, x, y, eps, params, *, direction,
generator) -> x_adv`: x (N, C, H, W) float in [0, 1], y (N,) int64 true labels, eps in pixel
units, x_adv detached and shaped like x. Add one: docs/extending.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from imbadv.registry import Params, Registry, bounds

# eps, step sizes and every image live in pixel space [0, 1]: the model normalizes inside.
EPS_SPACE = "pixel [0, 1]"


class Direction(StrEnum):
    """`ascent` raises the true label's loss (the attack); `descent` lowers it (Sec. 3.3)."""

    ASCENT = "ascent"
    DESCENT = "descent"


@dataclass(frozen=True)
class AttackParams(Params):
    """Parameters of an attack; `resolved` fills the defaults that depend on eps, for the record."""

    def resolved(self, eps: float) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items()}


@dataclass(frozen=True)
class FGSMParams(AttackParams):
    """FGSM has no parameter besides eps and direction."""


@dataclass(frozen=True)
class BIMParams(AttackParams):
    """Kurakin et al. (2016); None = alpha 1/255, steps floor(min(255 eps + 4, 1.25 * 255 eps))."""

    alpha: float | None = field(default=None, metadata=bounds(0.0, 1.0, open_low=True))
    steps: int | None = field(default=None, metadata=bounds(1))

    def resolved(self, eps: float) -> dict[str, Any]:
        alpha, steps = bim_defaults(eps)
        return {
            "alpha": alpha if self.alpha is None else self.alpha,
            "steps": steps if self.steps is None else self.steps,
        }


def bim_defaults(eps: float) -> tuple[float, int]:
    """Kurakin et al. (2016): alpha = 1/255 and steps = floor(min(255 eps + 4, 1.25 * 255 eps))."""
    return 1.0 / 255.0, int(math.floor(min(eps * 255 + 4, 1.25 * eps * 255)))


ATTACKS = Registry("attack.methods")
ATTACKS.add("fgsm", FGSMParams, "imbadv.attacks.gradient_sign:fgsm_attack",
            "fast gradient sign, L-inf (Goodfellow et al. 2015)", reuses_gradient=True)  # fmt: skip
ATTACKS.add("bim", BIMParams, "imbadv.attacks.gradient_sign:bim_attack",
            "iterative gradient sign, L-inf (Kurakin et al. 2016)")  # fmt: skip
