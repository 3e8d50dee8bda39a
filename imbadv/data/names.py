"""Class names known without loading (torch-free): so `class=shirt` is checked before any job."""

from __future__ import annotations

import os
import re
from pathlib import Path

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
)

# Official order (label k = k-th name); torchvision's 'T-shirt/top' etc. made command-line friendly.
FASHION_MNIST_CLASSES = tuple(
    [
        "t_shirt_top",
        "trouser",
        "pullover",
        "dress",
        "coat",
        "sandal",
        "shirt",
        "sneaker",
        "bag",
        "ankle_boot",
    ]
)

# SVHN's digit k has label k (the .mat files' label 10 is digit 0, mapped to 0 as torchvision does).
SVHN_CLASSES = tuple(str(k) for k in range(10))

# The `fine_label_names` and `coarse_label_names` of cifar-100-python/meta, in label order.
CIFAR100_FINE = tuple(
    [
        "apple",
        "aquarium_fish",
        "baby",
        "bear",
        "beaver",
        "bed",
        "bee",
        "beetle",
        "bicycle",
        "bottle",
        "bowl",
        "boy",
        "bridge",
        "bus",
        "butterfly",
        "camel",
        "can",
        "castle",
        "caterpillar",
        "cattle",
        "chair",
        "chimpanzee",
        "clock",
        "cloud",
        "cockroach",
        "couch",
        "crab",
        "crocodile",
        "cup",
        "dinosaur",
        "dolphin",
        "elephant",
        "flatfish",
        "forest",
        "fox",
        "girl",
        "hamster",
        "house",
        "kangaroo",
        "keyboard",
        "lamp",
        "lawn_mower",
        "leopard",
        "lion",
        "lizard",
        "lobster",
        "man",
        "maple_tree",
        "motorcycle",
        "mountain",
        "mouse",
        "mushroom",
        "oak_tree",
        "orange",
        "orchid",
        "otter",
        "palm_tree",
        "pear",
        "pickup_truck",
        "pine_tree",
        "plain",
        "plate",
        "poppy",
        "porcupine",
        "possum",
        "rabbit",
        "raccoon",
        "ray",
        "road",
        "rocket",
        "rose",
        "sea",
        "seal",
        "shark",
        "shrew",
        "skunk",
        "skyscraper",
        "snail",
        "snake",
        "spider",
        "squirrel",
        "streetcar",
        "sunflower",
        "sweet_pepper",
        "table",
        "tank",
        "telephone",
        "television",
        "tiger",
        "tractor",
        "train",
        "trout",
        "tulip",
        "turtle",
        "wardrobe",
        "whale",
        "willow_tree",
        "wolf",
        "woman",
        "worm",
    ]
)
CIFAR100_COARSE = tuple(
    [
        "aquatic_mammals",
        "fish",
        "flowers",
        "food_containers",
        "fruit_and_vegetables",
        "household_electrical_devices",
        "household_furniture",
        "insects",
        "large_carnivores",
        "large_man-made_outdoor_things",
        "large_natural_outdoor_scenes",
        "large_omnivores_and_herbivores",
        "medium_mammals",
        "non-insect_invertebrates",
        "people",
        "reptiles",
        "small_mammals",
        "trees",
        "vehicles_1",
        "vehicles_2",
    ]
)


def friendly(name: str) -> str:
    """A name typed on a command line: lowercase, runs of other characters become one '_'."""
    return re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")


def tiny_imagenet_classes(folder: Path) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(wnids sorted, friendly names) of a tiny-imagenet-200 folder, from wnids.txt and words.txt.

    Labels follow the sorted wnids (as ImageFolder on train/ would); a name is the first synonym
    in words.txt, and a name two classes share gets the wnid appended to keep names unique.
    """
    wnids = sorted({w.strip() for w in (folder / "wnids.txt").read_text().split() if w.strip()})
    words: dict[str, str] = {}
    with open(folder / "words.txt", encoding="utf-8") as f:
        for line in f:
            wnid, _, text = line.rstrip("\n").partition("\t")
            words[wnid] = text
    first = [friendly(words.get(w, "").split(",")[0]) or w for w in wnids]
    names = tuple(
        n if first.count(n) == 1 else f"{n}_{w}" for n, w in zip(first, wnids, strict=True)
    )
    return tuple(wnids), names


def tiny_imagenet_train_counts(folder: Path) -> tuple[int, ...]:
    """Training images per class (sorted wnids), counted from file names without decoding."""
    from imbadv.data.folder import IMAGE_EXTENSIONS

    wnids = tiny_imagenet_classes(folder)[0]
    return tuple(
        sum(
            name.lower().endswith(IMAGE_EXTENSIONS)
            for name in os.listdir(folder / "train" / w / "images")
        )
        for w in wnids
    )
