"""Imbalance profiles by name: per-class training counts from a profile function (RoBal's idea).

A profile maps (images available per class, target class, its parameters) to the count kept
per class; `split.select` then draws which images, from the seed alone. `targeted` profiles
skew around the `class` key; the others ignore it (the class is then only the attacked one).
Add one: docs/extending.md.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, fields

from imbadv.core.errors import ConfigError
from imbadv.core.registry import Facts, Params, Registry, Spec, bounds


@dataclass(frozen=True)
class ProfileParams(Params):
    """Every profile names the per-class count of its balanced counterpart (the transfer source)."""

    def balanced_count(self, available: Sequence[int] | None = None) -> int:
        raise NotImplementedError


@dataclass(frozen=True)
class BalancedParams(ProfileParams):
    """Every class at `majority` images."""

    majority: int = field(default=5000, metadata=bounds(1))

    def balanced_count(self, available: Sequence[int] | None = None) -> int:
        return self.majority


@dataclass(frozen=True)
class PaperParams(BalancedParams):
    """Possas & Zhou's counts: a full class has `majority` images, an under-sampled one `minority`."""

    minority: int = field(default=1000, metadata=bounds(1))

    def check(self, key: str) -> None:
        super().check(key)
        # under's target class and over's other classes are the minority: never the larger count
        if self.minority > self.majority:
            raise ConfigError(
                f"{key}.minority",
                self.minority,
                f"an integer <= {key}.majority={self.majority} (the profiles read counts.minority "
                "and counts.majority)",
            )


@dataclass(frozen=True)
class LongTailParams(ProfileParams):
    """Head-to-tail profiles (CIFAR-10-LT): imbalance ratio, the head's count, the class order.

    `n_max` None = the smallest class's available count (5,000 on CIFAR-10); `order` lists the
    classes from head to tail (None = index order, as LDAM and RoBal do).
    """

    ratio: float = field(default=10.0, metadata=bounds(1.0))
    n_max: int | None = field(default=None, metadata=bounds(1))
    order: tuple[int, ...] | None = None

    def head(self, available: Sequence[int] | None) -> int:
        """The head class's count: `n_max`, or what the data has when it is None."""
        if self.n_max is not None:
            return self.n_max
        if available is None:
            raise ConfigError(
                "imbalance.n_max", None, "a number when the data's counts are unknown"
            )
        return min(available)

    def balanced_count(self, available: Sequence[int] | None = None) -> int:
        return self.head(available)

    def ranks(self, classes: int) -> list[int]:
        """rank[c] = position of class c from head (0) to tail (classes - 1)."""
        order = list(range(classes)) if self.order is None else list(self.order)
        if sorted(order) != list(range(classes)):
            raise ConfigError("imbalance.order", order, f"a permutation of 0..{classes - 1}")
        ranks = [0] * classes
        for rank, label in enumerate(order):
            ranks[label] = rank
        return ranks


# Fields `matched` may pass on to the profile it copies the total of (the built-in profiles').
MATCHABLE = ("majority", "minority", "ratio", "n_max", "order")


@dataclass(frozen=True)
class MatchedParams(ProfileParams):
    """A balanced subsample with the total of profile `of` (the size control of that profile).

    The other fields are `of`'s parameters (None = its default); fields `of` does not have are
    ignored, so one YAML serves every `of`. Each class gets floor(total / classes) images: the
    remainder (< classes images) is dropped so that the control stays exactly balanced.
    """

    of: str = "over"
    majority: int | None = field(default=None, metadata=bounds(1))
    minority: int | None = field(default=None, metadata=bounds(1))
    ratio: float | None = field(default=None, metadata=bounds(1.0))
    n_max: int | None = field(default=None, metadata=bounds(1))
    order: tuple[int, ...] | None = None

    def check(self, key: str) -> None:
        super().check(key)
        if self.of == "matched":
            raise ConfigError(f"{key}.of", self.of, "a profile other than matched")
        self.inner(key)

    def inner(self, key: str = "imbalance") -> Spec:
        """The profile whose total is matched, with the fields it has."""
        entry = PROFILES.get(f"{key}.of", self.of)
        known = {f.name for f in fields(entry.params)}
        options = {k: getattr(self, k) for k in MATCHABLE if k in known}
        return PROFILES.parse(key, self.of, {k: v for k, v in options.items() if v is not None})

    def balanced_count(self, available: Sequence[int] | None = None) -> int:
        # the same transfer source as the profile it controls, so the two compare like for like
        return self.inner().params.balanced_count(available)


@dataclass(frozen=True)
class ProfileFacts(Facts):
    """`targeted`: the profile skews around the `class` key (under, over), so its models are
    named and keyed by class; an untargeted profile's model is the same for every class."""

    targeted: bool


PROFILES = Registry("imbalance", ProfileFacts, ProfileParams)
PROFILES.add(
    "balanced",
    BalancedParams,
    "imbadv.imbalance.paper:balanced",
    "every class at majority",
    targeted=False,
)
PROFILES.add(
    "under", PaperParams, "imbadv.imbalance.paper:under", "the class at minority", targeted=True
)
PROFILES.add(
    "over",
    PaperParams,
    "imbadv.imbalance.paper:over",
    "the class at majority, the rest at minority",
    targeted=True,
)
PROFILES.add(
    "exp",
    LongTailParams,
    "imbadv.imbalance.longtail:exponential",
    "CIFAR-10-LT: n_max * (1/ratio)^(rank/(C-1))",
    targeted=False,
)
PROFILES.add(
    "step",
    LongTailParams,
    "imbadv.imbalance.longtail:step",
    "the head half at n_max, the tail half at n_max/ratio",
    targeted=False,
)
PROFILES.add(
    "matched",
    MatchedParams,
    "imbadv.imbalance.longtail:matched",
    "balanced, with the total of profile `of`",
    targeted=False,
)


def targeted(profile: str) -> bool:
    """Whether `profile` skews around a target class (under, over): its models are keyed by class."""
    return PROFILES.get("imbalance", profile).facts.targeted
