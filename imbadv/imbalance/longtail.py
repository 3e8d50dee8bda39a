"""Long-tail profiles (CIFAR-10-LT as LDAM and RoBal build it) and the same-size balanced control."""

from __future__ import annotations

from collections.abc import Sequence

from imbadv.imbalance import LongTailParams, MatchedParams


def exponential(available: Sequence[int], target: int | None, p: LongTailParams) -> list[int]:
    """n_c = int(n_max * (1/ratio)^(rank_c / (C - 1))): LDAM's `get_img_num_per_cls`, exactly."""
    classes, n_max = len(available), p.head(available)
    ranks = p.ranks(classes)
    return [int(n_max * (1.0 / p.ratio) ** (ranks[c] / (classes - 1.0))) for c in range(classes)]


def step(available: Sequence[int], target: int | None, p: LongTailParams) -> list[int]:
    """The first half of the classes (head to tail) at n_max, the rest at int(n_max * (1/ratio)).

    LDAM's form of n_max / ratio (its `imb_type == "step"`); with an odd class count the middle
    class is a tail class.
    """
    classes, n_max = len(available), p.head(available)
    tail = int(n_max * (1.0 / p.ratio))
    return [n_max if rank < classes // 2 else tail for rank in p.ranks(classes)]


def matched(available: Sequence[int], target: int | None, p: MatchedParams) -> list[int]:
    """floor(total of profile `of` / classes) per class; `of`'s counts are also checked here."""
    from imbadv.imbalance.split import class_counts  # the same checks as for `of` itself

    total = sum(class_counts(available, p.inner(), 0 if target is None else target))
    return [total // len(available)] * len(available)
