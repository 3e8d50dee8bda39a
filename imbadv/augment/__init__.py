"""Training-data augmentation by name (torch-free registry): `make(params)` -> batch function.

A batch function takes a uint8 batch (N, C, H, W) on the training device and a torch.Generator
on that device, and returns the augmented batch there: drawn per image per step, so the same
seed gives the same batches, and no host round trip on a GPU. Only training batches are
augmented; validation, test and attacks see the images as they are.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imbadv.core.errors import ConfigError
from imbadv.core.registry import Params, Registry, bounds


@dataclass(frozen=True)
class AugmentParams(Params):
    """Base of every augmentation's parameters (`make(params)` gets them)."""

    def check_image(self, key: str, size: int) -> None:
        """Checks that need the image side (raise ConfigError naming `key`); none by default."""


@dataclass(frozen=True)
class NoAugmentParams(AugmentParams):
    """No augmentation: the paper's (its method section describes none)."""


@dataclass(frozen=True)
class CropFlipParams(NoAugmentParams):
    """The field's CIFAR augmentation (AT-BSL, RoBal: RandomCrop(32, padding=4) and
    RandomHorizontalFlip): zero-pad by `padding`, crop back to the image size at a uniform
    offset, mirror left-right with probability 1/2 when `flip`."""

    padding: int = field(default=4, metadata=bounds(0))
    flip: bool = True

    def check_image(self, key: str, size: int) -> None:
        if self.padding > size:
            raise ConfigError(
                f"{key}.padding", self.padding, f"an integer >= 0 and <= the image side ({size})"
            )


AUGMENTS = Registry("augment", base=AugmentParams)
AUGMENTS.add("none", NoAugmentParams, "imbadv.augment.batch:identity", "no augmentation")
AUGMENTS.add(
    "crop_flip", CropFlipParams, "imbadv.augment.batch:crop_flip", "pad, random crop, flip"
)

DEFAULT = "none"  # the paper's: enters no store key
