"""Which training images a profile keeps, and the validation share, drawn from the seed alone."""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from imbadv.core.errors import ConfigError
from imbadv.core.registry import Spec
from imbadv.imbalance import PROFILES, targeted


@dataclass(frozen=True)
class Split:
    """Indices into the training arrays: what the model trains on and what early stopping watches."""

    train: np.ndarray
    val: np.ndarray
    train_counts: tuple[int, ...]
    val_counts: tuple[int, ...]

    def digest(self) -> str:
        """sha256 (16 hex digits) of the train and validation indices: recorded in every result."""
        blob = np.concatenate([self.train, [-1], self.val]).astype("<i8").tobytes()
        return hashlib.sha256(blob).hexdigest()[:16]


def class_counts(
    available: Sequence[int], profile: Spec, target: int | None, val_fraction: float = 0.0
) -> list[int]:
    """Images kept per class under `profile`; refuses counts larger than the data has, and counts
    that leave a class with no training image or (when `val_fraction` > 0) no validation image.
    """
    entry = PROFILES.get("imbalance", profile.name)
    if targeted(profile.name) and not (target is not None and 0 <= target < len(available)):
        raise ConfigError("class", target, f"a class index 0..{len(available) - 1}")
    counts = [int(c) for c in entry.load()(list(available), target, profile.params)]
    for label, (want, have) in enumerate(zip(counts, available, strict=True)):
        if want > have:
            raise ConfigError(
                f"imbalance (class {label})", want, f"at most the {have} training images it has"
            )
        if want < 1:
            raise ConfigError(f"imbalance (class {label})", want, "at least 1 image per class")
    check_split(counts, val_fraction)
    return counts


def check_split(counts: Sequence[int], val_fraction: float) -> None:
    """Every class keeps >= 1 training image, and >= 1 validation image when val_fraction > 0."""
    for label, count in enumerate(counts):
        n_val = validation_size(count, val_fraction)
        if count - n_val < 1 or (val_fraction > 0 and n_val < 1):
            raise ConfigError(
                f"imbalance (class {label})",
                count,
                f"a count leaving >= 1 training and >= 1 validation image at "
                f"counts.val_fraction={val_fraction:g} (here {count - n_val} and {n_val})",
            )


def validation_size(count: int, val_fraction: float) -> int:
    """Validation images held out of a class with `count` kept images."""
    return int(round(count * val_fraction))


def select(labels: np.ndarray, counts: Sequence[int], val_fraction: float, seed: int) -> Split:
    """Keep `counts[c]` images of each class, chosen by `seed` alone, and hold out a validation share.

    The choice for a class depends only on (seed, class): a permutation of that class's
    indices is drawn and the first `counts[c]` kept, so the 1,000 images an under-sampled
    class keeps are the first 1,000 of the same order the balanced model's 5,000 come from.
    """
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError("counts.val_fraction", val_fraction, "a fraction in [0, 1)")
    check_split(counts, val_fraction)
    train, val = [], []
    for label, count in enumerate(counts):
        idx = np.flatnonzero(labels == label)
        order = np.random.default_rng([seed, label]).permutation(idx)[:count]
        n_val = validation_size(count, val_fraction)
        val.append(np.sort(order[:n_val]))
        train.append(np.sort(order[n_val:]))
    return Split(
        train=np.concatenate(train),
        val=np.concatenate(val),
        train_counts=tuple(len(t) for t in train),
        val_counts=tuple(len(v) for v in val),
    )
