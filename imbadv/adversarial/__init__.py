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

from imbadv.adversarial.params import (  # noqa: F401  (re-exported: the axis's bases)
    DEFAULT_EPS,
    AdversarialParams,
    ATBSLParams,
    AWPParams,
    BallParams,
    FastFGSMParams,
    MARTParams,
    NoParams,
    PGDATParams,
    PGDParams,
    REATParams,
    RoBalParams,
    RoBalRParams,
    TAETParams,
    TradesAWPParams,
    TradesParams,
)
from imbadv.core.registry import Facts, Params, Registry, RegistryError, params_key


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
    own, and the settings take `objective=ce` only); `head`: the output layer the method needs
    (`cosine`: model.head=cosine, checked with the settings); `features`: the outer loss takes
    the adversarial example's penultimate features (`outer(..., features=f)`). `shifted` start:
    x + eps U[0, 1) (RoBal's).
    """

    start: Literal["none", "uniform", "normal", "shifted"]
    divergence: Literal["none", "ce", "kl"]
    clean_forward: bool = False
    groups: bool = True
    perturbs_weights: bool = False
    uses_objective: bool = True
    head: Literal["any", "cosine"] = "any"
    features: bool = False

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
ROBAL = {  # one loss, two settings of the paper: its N and R rows
    "robal_n": (RoBalParams, "RoBal-N: cosine head, margin and prior-biased loss + TRADES term"),
    "robal_r": (
        RoBalRParams,
        "RoBal-R: RoBal with the class-aware margin, no test-time adjustment",
    ),
}
for _name, (_params, _what) in ROBAL.items():
    ADVERSARIAL.add(
        _name,
        _params,
        f"{_METHODS}:robal",
        f"{_what} (Wu et al. 2021)",
        start="shifted",
        divergence="ce",
        clean_forward=True,
        groups=False,
        uses_objective=False,
        head="cosine",
    )
ADVERSARIAL.add(
    "reat",
    REATParams,
    f"{_METHODS}:reat",
    "REAT: balanced softmax + the TAIL feature term (Li et al. 2023)",
    start="uniform",
    divergence="ce",
    groups=False,
    uses_objective=False,
    features=True,
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
