"""Tiny-ImageNet-200 from its official folder layout; its labelled val/ split is the test split.

tiny-imagenet-200/ holds wnids.txt, words.txt, train/<wnid>/images/*.JPEG and val/images/ with
val/val_annotations.txt (test/ has no labels and is not read). Decoded once into an .npz cache.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imbadv.core.errors import DataError
from imbadv.data import names
from imbadv.data.base import SPLIT_KEYS, DataCard, Dataset, pixel_stats_chunked
from imbadv.data.files import checksum_failures, extract, fetch
from imbadv.data.folder import IMAGE_EXTENSIONS, cached_arrays, decode_images, listing_key

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
ZIP_MD5 = "90528d7ca1a48142e341f4ef8d21d0de"  # the official 248 MB zip
FOLDER = "tiny-imagenet-200"
REQUIRED = ("wnids.txt", "words.txt", "train", "val/images", "val/val_annotations.txt")


def _absent(folder: Path) -> list[str]:
    return [part for part in REQUIRED if not (folder / part).exists()]


def ensure_tiny_imagenet(root: Path, download: bool) -> Path:
    """The tiny-imagenet-200 folder with every required part (extracted or fetched if missing)."""
    folder = root / FOLDER
    absent = _absent(folder)
    if not absent:
        return folder
    archive = root / f"{FOLDER}.zip"
    if not checksum_failures([(archive, ZIP_MD5)]):
        extract(archive, root)
    elif not download:
        raise DataError(_missing(folder, root, absent, "download is off"))
    else:
        try:
            fetch(URL, root, archive.name, ZIP_MD5)
        except DataError as err:
            raise DataError(_missing(folder, root, absent, str(err))) from err
    absent = _absent(folder)
    if absent:
        raise DataError(_missing(folder, root, absent, "the official zip did not provide them"))
    return folder


def _missing(folder: Path, root: Path, absent: list[str], reason: str) -> str:
    return (
        f"Tiny-ImageNet: {folder} lacks {', '.join(absent)} and {reason}: unpack the official "
        f"tiny-imagenet-200.zip ({URL}) into {root}, or set IMBADV_DATA_DIR or dataset.root "
        "to a folder that has tiny-imagenet-200/"
    )


def index(folder: Path) -> tuple[tuple[str, ...], list[tuple[Path, int, str]]]:
    """Class names (by sorted wnid) and (image path, label, split) for train/ and val/."""
    try:
        wnids, classes = names.tiny_imagenet_classes(folder)
        annotations = (folder / "val" / "val_annotations.txt").read_text().splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise DataError(f"{folder}: wnids.txt, words.txt or val_annotations.txt: {exc}") from exc
    label = {w: k for k, w in enumerate(wnids)}
    items = []
    for wnid in wnids:
        images = sorted((folder / "train" / wnid / "images").glob("*"))
        images = [p for p in images if p.suffix.lower() in IMAGE_EXTENSIONS]
        if not images:
            raise DataError(f"{folder}/train/{wnid}/images has no images (wnids.txt lists {wnid})")
        items += [(p, label[wnid], "train") for p in images]
    for number, line in enumerate(annotations, 1):
        parts = line.split("\t")
        if not line.strip():
            continue
        if len(parts) < 2 or parts[1] not in label:
            raise DataError(
                f"{folder}/val/val_annotations.txt line {number}: expected '<image>\\t<wnid>...' "
                f"with a wnid from wnids.txt, got {line.strip()[:60]!r}"
            )
        path = folder / "val" / "images" / parts[0]
        if not path.is_file():
            raise DataError(f"{path} is annotated (val_annotations.txt line {number}) but missing")
        items.append((path, label[parts[1]], "test"))
    if not any(split == "test" for _, _, split in items):
        raise DataError(f"{folder}/val/val_annotations.txt annotates no images")
    return classes, items


def _decode(folder: Path) -> dict[str, np.ndarray]:
    classes, items = index(folder)
    x = decode_images([(p.relative_to(folder).as_posix(), p.read_bytes()) for p, _, _ in items])
    if x.shape[2] != x.shape[3]:
        raise DataError(f"{folder}: images are {x.shape[3]}x{x.shape[2]}, expected square images")
    y = np.array([label for _, label, _ in items], dtype=np.int64)
    train = np.array([split == "train" for _, _, split in items])
    mean, std = pixel_stats_chunked(x[train])
    return {
        "x_train": x[train],
        "y_train": y[train],
        "x_test": x[~train],
        "y_test": y[~train],
        "classes": np.array(classes),
        "mean": np.array(mean),
        "std": np.array(std),
    }


def load_tiny_imagenet(root: str | Path, cache_dir: str | Path, download: bool = True) -> Dataset:
    """Tiny-ImageNet-200: uint8 images [N, 3, 64, 64], 200 classes named from words.txt."""
    folder = ensure_tiny_imagenet(Path(root).expanduser(), download)
    key = listing_key(folder)
    arrays = cached_arrays(Path(cache_dir), f"tiny-imagenet-{key}", lambda: _decode(folder))
    x = arrays["x_train"]
    card = DataCard(
        tuple(str(c) for c in arrays["classes"]),
        x.shape[1],
        x.shape[2],
        tuple(float(m) for m in arrays["mean"]),
        tuple(float(s) for s in arrays["std"]),
    )
    return Dataset(
        name="tiny_imagenet",
        card=card,
        source=f"Tiny-ImageNet-200 in {folder.resolve()}, val/ as the test split (file-list sha256 {key})",
        **{k: arrays[k] for k in SPLIT_KEYS},
    )


def load(params, cache_dir: Path) -> Dataset:
    """The registry's entry: `dataset=tiny_imagenet` (params: root, download)."""
    return load_tiny_imagenet(params.data_root(), cache_dir, params.download)


def ensure_files(params) -> None:
    """Before a sweep: the folder is complete, or extracted / fetched once now."""
    ensure_tiny_imagenet(params.data_root(), params.download)
