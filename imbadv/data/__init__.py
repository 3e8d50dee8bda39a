"""Data sets by name: each registered with its options (checked torch-free) and a loader.

`load(params, cache_dir) -> Dataset`; the Dataset carries its card (classes, channels, image
size, mean, std), which models and attacks read. Add one: docs/extending.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from imbadv.core.errors import ConfigError
from imbadv.core.registry import UNKEYED, Facts, Params, Registry, bounds
from imbadv.data import names
from imbadv.data.names import CIFAR10_CLASSES


@dataclass(frozen=True)
class DataParams(Params):
    """What every data set can tell before loading; None means "known only once loaded"."""

    def known_classes(self) -> tuple[str, ...] | None:
        return None

    def known_train_per_class(self) -> int | None:
        return None

    def known_image_size(self) -> int | None:
        """The smaller image side if known before loading (the augmentation's padding check)."""
        return None

    def known_train_counts(self) -> tuple[int, ...] | None:
        """Training images per class (label order) if known before loading; for the counts check."""
        classes, per_class = self.known_classes(), self.known_train_per_class()
        return None if classes is None or per_class is None else (per_class,) * len(classes)

    def preflight(self) -> None:
        """Make sure the files exist (download once if needed) before any job starts."""


@dataclass(frozen=True)
class CIFAR10Params(DataParams):
    root: str | None = field(default=None, metadata=UNKEYED)  # None: $IMBADV_DATA_DIR or data/
    download: bool = field(default=True, metadata=UNKEYED)

    def known_image_size(self) -> int:
        return 32

    def known_classes(self) -> tuple[str, ...]:
        return CIFAR10_CLASSES

    def known_train_per_class(self) -> int:
        return 5000

    def preflight(self) -> None:
        from imbadv.data.cifar10 import ensure_files

        ensure_files(self)


@dataclass(frozen=True)
class FolderParams(DataParams):
    root: str = field(default="", metadata=UNKEYED)  # the content hash identifies the data

    def check(self, key: str) -> None:
        from pathlib import Path

        if not self.root or not Path(self.root).expanduser().exists():
            raise ConfigError(
                f"{key}.root",
                self.root or "???",
                "an existing folder with train/ and test/, or a .tar.gz of one",
            )


@dataclass(frozen=True)
class SyntheticParams(DataParams):
    train_per_class: int = field(default=500, metadata=bounds(1))
    test_per_class: int = field(default=100, metadata=bounds(1))
    num_classes: int = field(default=10, metadata=bounds(2))
    image_size: int = field(default=32, metadata=bounds(4))
    channels: int = field(default=3, metadata=bounds(1))
    noise: float = field(default=2.0, metadata=bounds(0))
    seed: int = field(default=0, metadata=bounds(0))

    def known_image_size(self) -> int:
        return self.image_size

    def known_classes(self) -> tuple[str, ...]:
        return tuple(f"class{k}" for k in range(self.num_classes))

    def known_train_per_class(self) -> int:
        return self.train_per_class


@dataclass(frozen=True)
class FilesParams(DataParams):
    """An official data set's files under `root` (None: $IMBADV_DATA_DIR or data/), fetched if missing."""

    root: str | None = field(default=None, metadata=UNKEYED)
    download: bool = field(default=True, metadata=UNKEYED)

    def data_root(self) -> Path:
        import os

        root = self.root if self.root is not None else os.environ.get("IMBADV_DATA_DIR", "data")
        return Path(root).expanduser()


@dataclass(frozen=True)
class CIFAR100Params(FilesParams):
    labels: Literal["fine", "coarse"] = "fine"  # 100 classes, or the 20 superclasses

    def known_image_size(self) -> int:
        return 32

    def known_classes(self) -> tuple[str, ...]:
        return names.CIFAR100_FINE if self.labels == "fine" else names.CIFAR100_COARSE

    def known_train_per_class(self) -> int:
        return 500 if self.labels == "fine" else 2500

    def preflight(self) -> None:
        from imbadv.data.cifar100 import ensure_files

        ensure_files(self)


@dataclass(frozen=True)
class SVHNParams(FilesParams):
    def known_image_size(self) -> int:
        return 32

    def known_classes(self) -> tuple[str, ...]:
        return names.SVHN_CLASSES

    def known_train_per_class(self) -> int:
        # The split is imbalanced; the smallest class (digit 9) bounds what every class can give.
        return min(SVHN_TRAIN_COUNTS)

    def known_train_counts(self) -> tuple[int, ...]:
        return SVHN_TRAIN_COUNTS

    def preflight(self) -> None:
        from imbadv.data.svhn import ensure_files

        ensure_files(self)


# Images per digit 0..9 in SVHN's train_32x32.mat (the split is itself imbalanced).
SVHN_TRAIN_COUNTS = (4948, 13861, 10585, 8497, 7458, 6882, 5727, 5595, 5045, 4659)


@dataclass(frozen=True)
class FashionMNISTParams(FilesParams):
    def known_image_size(self) -> int:
        return 28

    def known_classes(self) -> tuple[str, ...]:
        return names.FASHION_MNIST_CLASSES

    def known_train_per_class(self) -> int:
        return 6000

    def preflight(self) -> None:
        from imbadv.data.fashion_mnist import ensure_files

        ensure_files(self)


@dataclass(frozen=True)
class TinyImageNetParams(FilesParams):
    def known_image_size(self) -> int:
        return 64

    def known_classes(self) -> tuple[str, ...] | None:
        folder = self.data_root() / "tiny-imagenet-200"
        try:
            return names.tiny_imagenet_classes(folder)[1]
        except OSError:  # not here yet: names are checked once the files are
            return None

    def known_train_per_class(self) -> int | None:
        counts = self.known_train_counts()
        return min(counts) if counts else None

    def known_train_counts(self) -> tuple[int, ...] | None:
        folder = self.data_root() / "tiny-imagenet-200"
        try:
            return names.tiny_imagenet_train_counts(folder)
        except OSError:
            return None

    def preflight(self) -> None:
        from imbadv.data.tiny_imagenet import ensure_files

        ensure_files(self)


@dataclass(frozen=True)
class DataFacts(Facts):
    """`identity`: what identifies the data in store keys: `options` (an official set, by its
    options) or `source` (the loaded copy's content hash: two folders with the same options can
    hold different images)."""

    identity: Literal["options", "source"]


DATASETS = Registry("dataset", DataFacts, DataParams)
DATASETS.add(
    "cifar10", CIFAR10Params, "imbadv.data.cifar10:load", "official CIFAR-10", identity="options"
)
# identity="source": stored models are keyed by the loaded copy (its content hash), not options,
# because two folders with the same options can hold different images.
DATASETS.add(
    "folder", FolderParams, "imbadv.data.folder:load", "ImageFolder train/ test/", identity="source"
)
DATASETS.add(
    "synthetic",
    SyntheticParams,
    "imbadv.data.synthetic:load",
    "generated patterns",
    identity="options",
)
DATASETS.add(
    "cifar100",
    CIFAR100Params,
    "imbadv.data.cifar100:load",
    "official CIFAR-100 (python)",
    identity="options",
)
DATASETS.add(
    "svhn",
    SVHNParams,
    "imbadv.data.svhn:load",
    "SVHN .mat files (imbalanced train)",
    identity="options",
)
DATASETS.add(
    "fashion_mnist",
    FashionMNISTParams,
    "imbadv.data.fashion_mnist:load",
    "Fashion-MNIST idx",
    identity="options",
)
DATASETS.add(
    "tiny_imagenet",
    TinyImageNetParams,
    "imbadv.data.tiny_imagenet:load",
    "Tiny-ImageNet-200",
    identity="source",
)
