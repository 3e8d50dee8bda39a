"""Imbalance profiles by name: per-class training counts from a profile function (RoBal's idea).

A profile maps (images available per class, target class, its parameters) to the count kept
per class; `split.select` then draws which images, from the seed alone. `targeted` profiles
skew around the `class` key; the others ignore it. Add one: docs/extending.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imbadv.registry import Params, Registry, bounds


@dataclass(frozen=True)
class ProfileParams(Params):
    """Every profile names the per-class count of its balanced counterpart (the transfer source)."""

    def balanced_count(self) -> int:
        raise NotImplementedError


@dataclass(frozen=True)
class BalancedParams(ProfileParams):
    """Every class at `majority` images."""

    majority: int = field(default=5000, metadata=bounds(1))

    def balanced_count(self) -> int:
        return self.majority


@dataclass(frozen=True)
class PaperParams(BalancedParams):
    """Possas & Zhou's counts: a full class has `majority` images, an under-sampled one `minority`."""

    minority: int = field(default=1000, metadata=bounds(1))


PROFILES = Registry("imbalance")
PROFILES.add("balanced", BalancedParams, "imbadv.imbalance.paper:balanced", "every class at majority",
             targeted=False)  # fmt: skip
PROFILES.add("under", PaperParams, "imbadv.imbalance.paper:under", "the class at minority",
             targeted=True)  # fmt: skip
PROFILES.add("over", PaperParams, "imbadv.imbalance.paper:over", "the class at majority, the rest at minority",
             targeted=True)  # fmt: skip
