"""The adversarial-training methods' parameters: one dataclass per method, torch-free.

`AdversarialParams` is the axis's base (`budget()`, `posthoc(counts)`); `BallParams` adds the
inner attack's ball and the class-wise eps option, `PGDParams` its steps.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from imbadv.core.errors import ConfigError
from imbadv.core.registry import Params, bounds

DEFAULT_EPS = 8 / 255  # the field's L-inf budget on [0, 1] pixels; robust validation's default


@dataclass(frozen=True)
class AdversarialParams(Params):
    """Base of every method's parameters; standard training (`none`) adds none."""

    def budget(self) -> float:
        """The eps robust validation attacks at: the method's own, or the field's 8/255."""
        return DEFAULT_EPS

    def posthoc(self, counts: Sequence[int]) -> tuple[float, list[float]] | None:
        """The output layer's (scale, per-class bias) set after training, or None (most methods):
        RoBal-N answers 10 z - 0.1 log pi at test time."""
        return None


@dataclass(frozen=True)
class NoParams(AdversarialParams):
    """Standard training: no inner attack."""


@dataclass(frozen=True)
class BallParams(AdversarialParams):
    """An inner attack in the L-inf `eps` ball (pixels in [0, 1]); `alpha` None = the method's step.

    Class-wise eps (RobustLT's rule, any method; imbadv/adversarial/classwise.py): eps_c =
    (1 - a) eps + tau sqrt(log(n_max / n_c)) eps with tau set so the training images' mean budget
    is eps, ramped in from 0 over the first `classwise_ramp` x max_epochs epochs."""

    eps: float = field(default=DEFAULT_EPS, metadata=bounds(0.0, 1.0))
    alpha: float | None = field(default=None, metadata=bounds(0.0, 1.0, open_low=True))
    classwise: bool = False
    classwise_a: float = field(default=0.3, metadata=bounds(0.0, 1.0))  # RobustLT's alpha
    classwise_ramp: float = field(default=0.8, metadata=bounds(0.0, 1.0))  # RobustLT's beta

    def budget(self) -> float:
        return self.eps

    def inner_steps(self) -> int:
        return 1

    def step_size(self) -> float:
        """The inner attack's step: `alpha`, or eps/4 (2/255 at 8/255)."""
        return self.eps / 4 if self.alpha is None else self.alpha


@dataclass(frozen=True)
class FastFGSMParams(BallParams):
    """Wong et al. (2020): one step of alpha (None = 1.25 eps) from a uniform random start."""

    def step_size(self) -> float:
        return 1.25 * self.eps if self.alpha is None else self.alpha


@dataclass(frozen=True)
class PGDParams(BallParams):
    """An inner PGD of `steps` steps of `alpha` (None = eps/4)."""

    steps: int = field(default=10, metadata=bounds(1))

    def inner_steps(self) -> int:
        return self.steps


@dataclass(frozen=True)
class PGDATParams(PGDParams):
    """Madry et al. (2018); `attack` names a registered attack to run instead of the built-in PGD."""

    attack: str | None = None

    def check(self, key: str) -> None:
        super().check(key)
        if self.attack is not None:
            from imbadv.attacks import ATTACKS  # torch-free registry

            ATTACKS.get(f"{key}.attack", self.attack)
            if self.classwise:
                raise ConfigError(f"{key}.attack", self.attack, "null with classwise eps")


@dataclass(frozen=True)
class TradesParams(PGDParams):
    """Zhang et al. (2019): loss(clean) + beta KL(clean || adversarial); 6 is their CIFAR-10 value."""

    beta: float = field(default=6.0, metadata=bounds(0.0))


@dataclass(frozen=True)
class MARTParams(PGDParams):
    """Wang et al. (2020): boosted CE on the adversarial example + beta KL weighted by 1 - p_y."""

    beta: float = field(default=6.0, metadata=bounds(0.0))


@dataclass(frozen=True)
class ATBSLParams(PGDParams):
    """Yue et al. (2024): PGD-AT whose outer loss is balanced softmax, CE(logits + tau log n_c)."""

    tau: float = field(default=1.0, metadata=bounds(0.0))


@dataclass(frozen=True)
class AWPParams(PGDParams):
    """Wu et al. (2020): each step's loss at weights moved by gamma ||w|| g / ||g|| per layer
    (g: the gradient of the adversarial loss), from epoch `warmup` on (0-based)."""

    gamma: float = field(default=5e-3, metadata=bounds(0.0))
    warmup: int = field(default=0, metadata=bounds(0))  # epochs without the perturbation first


@dataclass(frozen=True)
class TradesAWPParams(AWPParams):
    """AWP on TRADES; their script perturbs from its epoch 10 (1-based) of 200: warmup 9."""

    beta: float = field(default=6.0, metadata=bounds(0.0))
    warmup: int = field(default=9, metadata=bounds(0))


@dataclass(frozen=True)
class TAETParams(PGDParams):
    """TAET (Wang et al. 2025): `clean_epochs` of plain CE, then the hierarchical adversarial
    robust loss (HARL) on PGD examples: alpha mean_c L_c + beta var_c L_c + gamma sum_c q_c^2,
    L_c the batch's mean adversarial CE of class c, q_c = L_c / sum_k L_k."""

    clean_epochs: int = field(default=40, metadata=bounds(0))
    harl_alpha: float = field(default=0.1, metadata=bounds(0.0))
    harl_beta: float = field(default=0.1, metadata=bounds(0.0))
    harl_gamma: float = field(default=0.1, metadata=bounds(0.0))


@dataclass(frozen=True)
class RoBalParams(PGDParams):
    """RoBal-N (Wu et al. 2021) on a cosine head: CE(s (z - m_y [k = y]) + tau_b log pi, y) on
    the PGD example, m_c = m + tau_m log(n_c / n_min) / s, plus beta KL(clean || adversarial) on
    the raw outputs; inner PGD-5 on plain CE from x + eps U[0, 1); answers
    eval_scale z - eval_tau log pi after training."""

    steps: int = field(default=5, metadata=bounds(1))
    m: float = field(default=0.1, metadata=bounds(0.0))
    s: float = field(default=10.0, metadata=bounds(0.0, open_low=True))
    tau_b: float = field(default=1.2, metadata=bounds(0.0))
    tau_m: float = field(default=0.0, metadata=bounds(0.0))
    beta: float = field(default=6.0, metadata=bounds(0.0))
    eval_scale: float = field(default=10.0, metadata=bounds(0.0, open_low=True))
    eval_tau: float = field(default=0.1, metadata=bounds(0.0))

    def posthoc(self, counts: Sequence[int]) -> tuple[float, list[float]] | None:
        if self.eval_scale == 1.0 and self.eval_tau == 0.0:
            return None
        from math import log

        total = sum(counts)
        return self.eval_scale, [-self.eval_tau * log(max(n, 1) / total) for n in counts]


@dataclass(frozen=True)
class RoBalRParams(RoBalParams):
    """RoBal-R: tau_b 1.5 and the class-aware margin tau_m 0.3, no test-time adjustment."""

    tau_b: float = field(default=1.5, metadata=bounds(0.0))
    tau_m: float = field(default=0.3, metadata=bounds(0.0))
    eval_scale: float = field(default=1.0, metadata=bounds(0.0, open_low=True))
    eval_tau: float = field(default=0.0, metadata=bounds(0.0))


@dataclass(frozen=True)
class REATParams(PGDParams):
    """REAT (Li et al. 2023): balanced softmax on the PGD example plus the TAIL term on the
    penultimate features, anchored on the `tail` fewest-image classes (their code: the last
    third, C - (2 floor(C / 3) + 1): 3 of 10)."""

    tail: int | None = field(default=None, metadata=bounds(1))

    def tail_classes(self, counts: Sequence[int]) -> list[int]:
        """The anchors' classes: the `tail` classes with the fewest training images."""
        c = len(counts)
        k = c - (2 * (c // 3) + 1) if self.tail is None else min(self.tail, c)
        return sorted(sorted(range(c), key=lambda i: (counts[i], -i))[:k])
