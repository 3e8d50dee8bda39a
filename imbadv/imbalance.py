"""Imbalance stage: per-class training counts for a profile and the seeded choice of samples."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum

import numpy as np

from imbadv.errors import ConfigError


class Profile(StrEnum):
    """How the training set is skewed around one target class (Possas & Zhou, Sec. 3.2)."""

    BALANCED = "balanced"  # every class at its full count
    UNDER = "under"  # target class down to `minority`, the others full
    OVER = "over"  # target class at `majority`, every other class down to `minority`


@dataclass(frozen=True)
class Split:
    """Indices into the training arrays: what the model trains on and what early stopping watches."""

    train: np.ndarray
    val: np.ndarray
    train_counts: tuple[int, ...]
    val_counts: tuple[int, ...]


def class_counts(
    available: Sequence[int],
    profile: Profile | str,
    target: int,
    majority: int = 5000,
    minority: int = 1000,
) -> list[int]:
    """Images kept per class; `balanced` and the non-target classes of `under` keep `majority`."""
    profile = parse_profile(profile)
    if not 0 <= target < len(available):
        raise ConfigError("class", target, f"a class index 0..{len(available) - 1}")
    if minority <= 0 or majority <= 0:
        raise ConfigError("counts", f"majority={majority},minority={minority}", "positive counts")
    counts = [majority] * len(available)
    if profile is Profile.UNDER:
        counts[target] = minority
    elif profile is Profile.OVER:
        counts = [minority] * len(available)
        counts[target] = majority
    for label, (want, have) in enumerate(zip(counts, available, strict=True)):
        if want > have:
            raise ConfigError(
                f"counts (class {label})", want, f"at most the {have} training images it has"
            )
    return counts


def parse_profile(profile: Profile | str) -> Profile:
    """The Profile for a config string, or a ConfigError listing the allowed names."""
    try:
        return Profile(profile)
    except ValueError:
        raise ConfigError("imbalance", profile, [p.value for p in Profile]) from None


def select(labels: np.ndarray, counts: Sequence[int], val_fraction: float, seed: int) -> Split:
    """Keep `counts[c]` images of each class, chosen by `seed` alone, and hold out a validation share.

    The choice for a class depends only on (seed, class): a permutation of that class's
    indices is drawn and the first `counts[c]` kept, so the 1,000 images an under-sampled
    class keeps are the first 1,000 of the same order the balanced model's 5,000 come from.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError("val_fraction", val_fraction, "a fraction in [0, 1)")
    train, val = [], []
    for label, count in enumerate(counts):
        idx = np.flatnonzero(labels == label)
        order = np.random.default_rng([seed, label]).permutation(idx)[:count]
        n_val = int(round(count * val_fraction))
        val.append(np.sort(order[:n_val]))
        train.append(np.sort(order[n_val:]))
    return Split(
        train=np.concatenate(train),
        val=np.concatenate(val),
        train_counts=tuple(len(t) for t in train),
        val_counts=tuple(len(v) for v in val),
    )
