"""Data sets by name: each registered with its options (checked torch-free) and a loader.

`load(params, cache_dir) -> Dataset`; the Dataset carries its card (classes, channels, image
size, mean, std), which models and attacks read. Add one: docs/extending.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imbadv.errors import ConfigError
from imbadv.registry import UNKEYED, Params, Registry, bounds

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


@dataclass(frozen=True)
class DataParams(Params):
    """What every data set can tell before loading; None means "known only once loaded"."""

    def known_classes(self) -> tuple[str, ...] | None:
        return None

    def known_train_per_class(self) -> int | None:
        return None

    def preflight(self) -> None:
        """Make sure the files exist (download once if needed) before any job starts."""


@dataclass(frozen=True)
class CIFAR10Params(DataParams):
    root: str | None = field(default=None, metadata=UNKEYED)  # None: $IMBADV_DATA_DIR or data/
    download: bool = field(default=True, metadata=UNKEYED)

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
                f"{key}.root", self.root or "???",
                "an existing folder with train/ and test/, or a .tar.gz of one",
            )  # fmt: skip


@dataclass(frozen=True)
class SyntheticParams(DataParams):
    train_per_class: int = field(default=500, metadata=bounds(1))
    test_per_class: int = field(default=100, metadata=bounds(1))
    num_classes: int = field(default=10, metadata=bounds(2))
    image_size: int = field(default=32, metadata=bounds(4))
    channels: int = field(default=3, metadata=bounds(1))
    noise: float = field(default=2.0, metadata=bounds(0))
    seed: int = field(default=0, metadata=bounds(0))

    def known_classes(self) -> tuple[str, ...]:
        return tuple(f"class{k}" for k in range(self.num_classes))

    def known_train_per_class(self) -> int:
        return self.train_per_class


DATASETS = Registry("dataset")
DATASETS.add("cifar10", CIFAR10Params, "imbadv.data.cifar10:load", "official CIFAR-10")
DATASETS.add("folder", FolderParams, "imbadv.data.folder:load", "ImageFolder train/ test/")
DATASETS.add("synthetic", SyntheticParams, "imbadv.data.synthetic:load", "generated patterns")
