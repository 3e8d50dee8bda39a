"""The paper's profiles (Possas & Zhou, Sec. 3.2): balanced, one class under- or over-sampled."""

from __future__ import annotations

from collections.abc import Sequence

from imbadv.imbalance import BalancedParams, PaperParams


def balanced(available: Sequence[int], target: int | None, p: BalancedParams) -> list[int]:
    """Every class at `majority`."""
    return [p.majority] * len(available)


def under(available: Sequence[int], target: int | None, p: PaperParams) -> list[int]:
    """The target class down to `minority`, every other class at `majority`."""
    counts = [p.majority] * len(available)
    counts[target] = p.minority
    return counts


def over(available: Sequence[int], target: int | None, p: PaperParams) -> list[int]:
    """The target class at `majority`, every other class down to `minority`."""
    counts = [p.minority] * len(available)
    counts[target] = p.majority
    return counts
