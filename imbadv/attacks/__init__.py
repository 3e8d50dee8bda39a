"""Attacks by name: each a pure function on [0, 1] images, registered with its checked parameters.

Every registered function has one signature, `attack(model, x, y, eps, params, *, direction,
generator, target=None) -> x_adv`: x (N, C, H, W) float in [0, 1], y (N,) int64 true labels, eps
in pixel units, `target` the class index for `Direction.TOWARD`, x_adv detached and shaped like x.
Add one: docs/attacks.md.
"""

from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, ClassVar, Literal

from imbadv.core.errors import ConfigError
from imbadv.core.registry import Facts, Params, Registry, bounds

# eps, step sizes and every image live in pixel space [0, 1]: the model normalizes inside.
EPS_SPACE = "pixel [0, 1]"


class Direction(StrEnum):
    """Which way an attack moves the images.

    `ascent` raises the true label's loss (the attack); `descent` lowers it (the paper, Sec. 3.3);
    `least_likely` lowers the loss of the class the attacked model finds least likely for the clean
    image; `toward` lowers the loss of `attack.target_class` (targeted).
    """

    ASCENT = "ascent"
    DESCENT = "descent"
    LEAST_LIKELY = "least_likely"
    TOWARD = "toward"


UNTARGETED = (Direction.ASCENT, Direction.DESCENT)
ALL_DIRECTIONS = tuple(Direction)

# The attacks whose cross-entropy and margin losses the gradient-masking check compares
# (imbadv.metrics.masking_pair; the settings add the margin twin: config.settings.masking_twins).
MASKING_METHODS = ("pgd", "pgd_l2")


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
    steps: int | None = field(default=None, metadata=bounds(1, 100_000))

    def resolved(self, eps: float) -> dict[str, Any]:
        alpha, steps = bim_defaults(eps)
        return {
            "alpha": alpha if self.alpha is None else self.alpha,
            "steps": steps if self.steps is None else self.steps,
        }


def bim_defaults(eps: float) -> tuple[float, int]:
    """Kurakin et al. (2016): alpha = 1/255 and steps = floor(min(255 eps + 4, 1.25 * 255 eps))."""
    return 1.0 / 255.0, int(math.floor(min(eps * 255 + 4, 1.25 * eps * 255)))


@dataclass(frozen=True)
class PGDParams(AttackParams):
    """Madry et al. (2018); alpha None = 2.5 eps / steps (Madry lab's rule: 2/255 at 8/255, 10 steps).

    `loss`: `ce` (cross-entropy) or `margin` (Carlini-Wagner margin max_{j != y} z_j - z_y,
    invariant to the logits' scale, so it is not fooled by saturated softmax). `logit_scale`
    multiplies the logits inside the attack's loss only (AT-BSL's check "logits x10": a model
    whose robustness vanishes at another scale was masking its gradients); the model is the same.
    """

    alpha: float | None = field(default=None, metadata=bounds(0.0, 1.0, open_low=True))
    steps: int = field(default=10, metadata=bounds(1, 100_000))
    restarts: int = field(default=1, metadata=bounds(1, 1000))
    random_start: bool = True
    loss: Literal["ce", "margin"] = "ce"
    logit_scale: float = field(default=1.0, metadata=bounds(0.0, open_low=True))

    def resolved(self, eps: float) -> dict[str, Any]:
        alpha = 2.5 * eps / self.steps if self.alpha is None else self.alpha
        return {**self.__dict__, "alpha": alpha}


@dataclass(frozen=True)
class PGDL2Params(PGDParams):
    """PGD in the L2 ball (Madry et al. 2018): attack.eps is the L2 radius in pixel units."""


@dataclass(frozen=True)
class MIFGSMParams(AttackParams):
    """Dong et al. (2018); alpha None = eps / steps (the paper's choice), decay mu = 1.0."""

    alpha: float | None = field(default=None, metadata=bounds(0.0, 1.0, open_low=True))
    steps: int = field(default=10, metadata=bounds(1, 100_000))
    decay: float = field(default=1.0, metadata=bounds(0.0, 100.0))

    def resolved(self, eps: float) -> dict[str, Any]:
        alpha = eps / self.steps if self.alpha is None else self.alpha
        return {**self.__dict__, "alpha": alpha}


AUTOATTACK_INSTALL = 'pip install -e ".[autoattack]"'


@dataclass(frozen=True)
class AutoAttackParams(AttackParams):
    """pyautoattack's `standard` or APGD-CE + APGD-T; L-inf; needs the optional extra."""

    norm: Literal["Linf", "L2"] = "Linf"
    registered: ClassVar[str] = "autoattack"  # the name in a refusal

    def check(self, key: str) -> None:
        super().check(key)
        # torch-free: find_spec looks for the package without importing it (or torch)
        if importlib.util.find_spec("pyautoattack") is None:
            raise ConfigError(
                key, self.registered, f"pyautoattack installed ({AUTOATTACK_INSTALL})"
            )


@dataclass(frozen=True)
class APGDPairParams(AutoAttackParams):
    """APGD-CE + APGD-T from pyautoattack (RoBal's "AutoAttack"): named apart on purpose."""

    registered: ClassVar[str] = "apgd_pair"


@dataclass(frozen=True)
class AttackFacts(Facts):
    """What every attack declares when registered.

    `norm`: the ball its perturbation stays in (the eps it takes is that norm's radius);
    `directions`: the Direction values it supports (settings refuse the others); `reuses_gradient`:
    its images are one signed step of the clean gradient, so one backward pass serves every eps;
    `draws`: it draws random numbers (random starts, proposals) from its generator, one stream per
    image set. `draws=False` promises images that are a function of the model and each image
    alone: only those are crafted for several sources in one stacked call (docs/transfer.md,
    "Stacked attacks"). True unless declared: a plug-in that does not say is never stacked.
    """

    norm: Literal["Linf", "L2"]
    directions: tuple[Direction, ...]
    reuses_gradient: bool = False
    draws: bool = True

    @property
    def targeted(self) -> bool:
        """Whether it can move images toward a named class (`attack.direction=toward`)."""
        return Direction.TOWARD in self.directions


ATTACKS = Registry("attack.methods", AttackFacts, AttackParams)
_LINF = {"norm": "Linf", "directions": ALL_DIRECTIONS}
_DETERMINISTIC = {**_LINF, "draws": False}  # no random start: images stack exactly
ATTACKS.add(
    "fgsm",
    FGSMParams,
    "imbadv.attacks.gradient_sign:fgsm_attack",
    "fast gradient sign, L-inf (Goodfellow et al. 2015)",
    reuses_gradient=True,
    **_DETERMINISTIC,
)
ATTACKS.add(
    "bim",
    BIMParams,
    "imbadv.attacks.gradient_sign:bim_attack",
    "iterative gradient sign, L-inf (Kurakin et al. 2016)",
    **_DETERMINISTIC,
)
ATTACKS.add(
    "mifgsm",
    MIFGSMParams,
    "imbadv.attacks.gradient_sign:mifgsm_attack",
    "momentum iterative gradient sign, L-inf (Dong et al. 2018)",
    **_DETERMINISTIC,
)
ATTACKS.add(
    "pgd",
    PGDParams,
    "imbadv.attacks.pgd:pgd_attack",
    "projected gradient descent, L-inf (Madry et al. 2018)",
    **_LINF,
)
ATTACKS.add(
    "pgd_l2",
    PGDL2Params,
    "imbadv.attacks.pgd:pgd_l2_attack",
    "projected gradient descent, L2 (Madry et al. 2018)",
    norm="L2",
    directions=ALL_DIRECTIONS,
)
# AutoAttack's norm fact is its default (`norm: L2` is one of its parameters); ascent only.
ATTACKS.add(
    "autoattack",
    AutoAttackParams,
    "imbadv.attacks.autoattack:autoattack_attack",
    "AutoAttack standard: APGD-CE, APGD-T, FAB-T, Square (Croce & Hein 2020)",
    norm="Linf",
    directions=(Direction.ASCENT,),
)
ATTACKS.add(
    "apgd_pair",
    APGDPairParams,
    "imbadv.attacks.autoattack:apgd_pair_attack",
    "APGD-CE + APGD-T only: never to be called AutoAttack",
    norm="Linf",
    directions=(Direction.ASCENT,),
)
