"""Adversarial training methods by name (config group `adversarial`), torch-free.

A method is its parameters (a subclass of `AdversarialParams`), its facts (how its inner attack
starts and what it ascends, whether its outer loss needs the clean forward, whether members can
train grouped, whether it perturbs weights) and one function, `make(params, counts) -> outer`,
where `outer(clean, adv, y, loss)` is the batch's training loss from the logits (`clean` is None
unless the method declares `clean_forward`; `loss` is the job's objective; `counts` are the
training images per class). The shared machinery (random starts, the ascent, class-wise eps,
weight perturbation) lives in imbadv/training/adversarial.py and reads only these facts.
Add one: docs/extending.md. The store key of a method is {"mode": name, **changed parameters}.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from imbadv.core.errors import ConfigError
from imbadv.core.registry import Facts, Params, Registry, RegistryError, bounds, params_key

DEFAULT_EPS = 8 / 255  # the field's L-inf budget on [0, 1] pixels; robust validation's default


@dataclass(frozen=True)
class AdversarialParams(Params):
    """Base of every method's parameters; standard training (`none`) adds none."""

    def budget(self) -> float:
        """The eps robust validation attacks at: the method's own, or the field's 8/255."""
        return DEFAULT_EPS


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
class AdversarialFacts(Facts):
    """What the machinery needs to know about a method, declared in its registry line.

    `start`: the inner attack's random start (`uniform` in the eps ball, `normal` = x + 0.001
    N(0, 1) as TRADES and MART draw it, `none` = no inner attack: standard training);
    `divergence`: what the inner attack ascends (`ce` of the true label, `kl` between the clean
    and adversarial softmax); `clean_forward`: the outer loss needs the clean logits (computed
    first, so BatchNorm sees the clean batch first); `groups`: members can train grouped exactly
    as alone; `perturbs_weights`: adversarial weight perturbation before the outer loss;
    `uses_objective`: the outer loss applies the job's objective (False: the method brings its
    own, and the settings take `objective=ce` only).
    """

    start: Literal["none", "uniform", "normal"]
    divergence: Literal["none", "ce", "kl"]
    clean_forward: bool = False
    groups: bool = True
    perturbs_weights: bool = False
    uses_objective: bool = True

    def check(self, where: str, params: type[Params]) -> None:
        attacks = self.start != "none"
        if attacks != issubclass(params, BallParams) or attacks != (self.divergence != "none"):
            raise RegistryError(
                f"{where}: a method with an inner attack (start and divergence not none) needs "
                f"params deriving from imbadv.adversarial.BallParams, and only such a method does"
            )
        if self.perturbs_weights and not issubclass(params, AWPParams):
            raise RegistryError(
                f"{where}: perturbs_weights needs params deriving from "
                "imbadv.adversarial.AWPParams (gamma, warmup)"
            )


ADVERSARIAL = Registry("adversarial", AdversarialFacts, AdversarialParams)
_METHODS = "imbadv.adversarial.methods"
ADVERSARIAL.add("none", NoParams, f"{_METHODS}:standard", "standard training", start="none", divergence="none")  # fmt: skip
ADVERSARIAL.add(
    "fast_fgsm",
    FastFGSMParams,
    f"{_METHODS}:adversarial_loss",
    "fast FGSM (Wong et al. 2020)",
    start="uniform",
    divergence="ce",
)
ADVERSARIAL.add(
    "pgd_at",
    PGDATParams,
    f"{_METHODS}:adversarial_loss",
    "PGD-AT (Madry et al. 2018)",
    start="uniform",
    divergence="ce",
)
ADVERSARIAL.add(
    "trades",
    TradesParams,
    f"{_METHODS}:trades",
    "TRADES (Zhang et al. 2019)",
    start="normal",
    divergence="kl",
    clean_forward=True,
)
ADVERSARIAL.add(
    "mart",
    MARTParams,
    f"{_METHODS}:mart",
    "MART (Wang et al. 2020)",
    start="normal",
    divergence="ce",
    clean_forward=True,
)
ADVERSARIAL.add(
    "at_bsl",
    ATBSLParams,
    f"{_METHODS}:at_bsl",
    "AT-BSL: PGD-AT with balanced softmax (Yue et al. 2024)",
    start="normal",
    divergence="ce",
    uses_objective=False,
)
ADVERSARIAL.add(
    "awp",
    AWPParams,
    f"{_METHODS}:adversarial_loss",
    "PGD-AT with adversarial weight perturbation (Wu et al. 2020)",
    start="uniform",
    divergence="ce",
    groups=False,
    perturbs_weights=True,
)
ADVERSARIAL.add(
    "trades_awp",
    TradesAWPParams,
    f"{_METHODS}:trades",
    "TRADES with adversarial weight perturbation (Wu et al. 2020)",
    start="normal",
    divergence="kl",
    clean_forward=True,
    groups=False,
    perturbs_weights=True,
)
ADVERSARIAL.add(
    "taet",
    TAETParams,
    f"{_METHODS}:taet",
    "TAET: clean epochs, then the hierarchical adversarial robust loss (Wang et al. 2025)",
    start="normal",
    divergence="ce",
    groups=False,
    uses_objective=False,
)


@dataclass(frozen=True)
class AdversarialSettings:
    """The job's adversarial training: the method's name (`mode`) and its checked parameters."""

    mode: str = "none"
    params: AdversarialParams = field(default_factory=NoParams)

    @classmethod
    def parse(cls, key: str, options: Mapping[str, Any]) -> AdversarialSettings:
        """From the config group's options (`mode` and the method's parameters), checked."""
        options = dict(options)
        mode = options.pop("mode", "none")
        ADVERSARIAL.get(f"{key}.mode", mode)  # an unknown method: named by its key
        spec = ADVERSARIAL.parse(key, mode, options)
        return cls(spec.name, spec.params)

    @classmethod
    def of(cls, mode: str = "none", **options: Any) -> AdversarialSettings:
        """`AdversarialSettings.of("pgd_at", eps=...)` in code and tests, checked as a config is."""
        return cls.parse("adversarial", {"mode": mode, **options})

    @property
    def facts(self) -> AdversarialFacts:
        return ADVERSARIAL.get("adversarial", self.mode).facts

    @property
    def on(self) -> bool:
        """Whether this is adversarial training at all (not `none`)."""
        return self.facts.start != "none"

    @property
    def eps(self) -> float:
        return self.params.budget()

    @property
    def attack(self) -> str | None:
        """A registered attack run as the inner attack (pgd_at only), else None."""
        return getattr(self.params, "attack", None)

    def key(self) -> dict[str, Any]:
        """What enters a model's store key: the method's name and its changed parameters."""
        return {"mode": self.mode, **params_key(self.params)}

    def resolved(self, counts: Sequence[int] | None) -> dict[str, Any]:
        """Every hyper-parameter as training used it (defaults filled), for the model record."""
        out: dict[str, Any] = {"mode": self.mode, **asdict(self.params)}
        if isinstance(self.params, BallParams):
            out["alpha"] = self.params.step_size()
            out["inner_steps"] = self.params.inner_steps()
            if self.params.classwise:
                from imbadv.adversarial.classwise import class_eps

                out["class_eps"] = [round(e, 6) for e in class_eps(self.params, counts)]
        return out

    def grouping(self) -> str | None:
        """Why members under this method cannot train grouped, or None if they can."""
        if not self.facts.groups:  # AWP's weight step, TAET's clean stage: per model
            return f"adversarial={self.mode} (its registry line declares groups=False)"
        if self.attack is not None:  # one generator over the whole batch, not one per member
            return f"adversarial.attack {self.attack} (a registered inner attack is per model)"
        if getattr(self.params, "classwise", False):
            return "adversarial.classwise (each member's eps follows its own class counts)"
        return None
