"""Data sets in memory: uint8 images, int64 labels and the card that models and attacks read."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")


@dataclass(frozen=True)
class DataCard:
    """What a model needs to know of its data: classes, image shape, per-channel mean and std.

    Models normalize inside with `mean`/`std` (pixel units on [0, 1]), so attacks and eps stay in
    pixel space for every data set. `note` says anything a user must know (e.g. an imbalanced split).
    """

    classes: tuple[str, ...]
    channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    note: str = ""

    @property
    def num_classes(self) -> int:
        return len(self.classes)


def pixel_stats(x: np.ndarray) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images [N, C, H, W], in [0, 1] units."""
    flat = x.transpose(1, 0, 2, 3).reshape(x.shape[1], -1)
    mean = flat.mean(axis=1, dtype=np.float64) / 255.0
    std = flat.std(axis=1, dtype=np.float64) / 255.0
    return tuple(round(float(m), 4) for m in mean), tuple(round(float(s), 4) for s in std)


@dataclass(frozen=True, eq=False)  # arrays have no single truth value, so == is identity
class Dataset:
    """Train and test splits in memory: images uint8 [N, C, H, W], labels int64 [N]."""

    name: str
    card: DataCard
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def classes(self) -> tuple[str, ...]:
        return self.card.classes

    @property
    def num_classes(self) -> int:
        return self.card.num_classes

    def train_counts(self) -> list[int]:
        """Images per class in the training split, indexed by label."""
        return np.bincount(self.y_train, minlength=self.num_classes).tolist()
