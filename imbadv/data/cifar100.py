"""CIFAR-100, the official python pickles: unpickled only after their published md5s match."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import numpy as np

from imbadv.core.errors import DataError
from imbadv.data import names
from imbadv.data.base import DataCard, Dataset
from imbadv.data.files import checksum_failures, extract, fetch

# Per-channel statistics of the official CIFAR-100 training set (pixel units on [0, 1]).
CIFAR100_MEAN = (0.5071, 0.4865, 0.4409)
CIFAR100_STD = (0.2673, 0.2564, 0.2762)


def _published(folder: Path) -> list[tuple[Path, str]]:
    """(file, md5) for train, test and meta, as torchvision publishes them."""
    from torchvision.datasets import CIFAR100

    listed = [
        *CIFAR100.train_list,
        *CIFAR100.test_list,
        [CIFAR100.meta["filename"], CIFAR100.meta["md5"]],
    ]
    return [(folder / name, md5) for name, md5 in listed]


def ensure_cifar100(root: Path, download: bool) -> Path:
    """The cifar-100-python folder with every file matching its checksum (extracted or fetched)."""
    from torchvision.datasets import CIFAR100

    folder = root / CIFAR100.base_folder
    bad = checksum_failures(_published(folder))
    if not bad:
        return folder
    archive = root / CIFAR100.filename
    if not checksum_failures([(archive, CIFAR100.tgz_md5)]):
        extract(archive, root)
    elif not download:
        raise DataError(_missing(folder, root, bad, "download is off"))
    else:
        try:
            fetch(CIFAR100.url, root, CIFAR100.filename, CIFAR100.tgz_md5)
        except DataError as err:
            raise DataError(_missing(folder, root, bad, str(err))) from err
    bad = checksum_failures(_published(folder))
    if bad:
        raise DataError(_missing(folder, root, bad, "the official archive did not restore them"))
    return folder


def _missing(folder: Path, root: Path, bad: list[str], reason: str) -> str:
    return (
        f"CIFAR-100 files missing or not matching their published md5 in {folder} "
        f"({', '.join(bad)}; nothing was unpickled) and {reason}: place the official archive "
        f"cifar-100-python.tar.gz in {root}, or set IMBADV_DATA_DIR or dataset.root to a folder "
        "that has it"
    )


def _unpickle(path: Path) -> dict[str, Any]:
    # Only ever called on files whose md5 matched the published one (ensure_cifar100).
    with open(path, "rb") as f:
        return pickle.load(f, encoding="latin1")


def load_cifar100(root: str | Path, labels: str = "fine", download: bool = True) -> Dataset:
    """Official CIFAR-100 with its fine (100) or coarse (20) labels."""
    folder = ensure_cifar100(Path(root).expanduser(), download)
    classes = names.CIFAR100_FINE if labels == "fine" else names.CIFAR100_COARSE
    meta = _unpickle(folder / "meta")[f"{labels}_label_names"]
    if tuple(meta) != classes:
        raise DataError(f"{folder / 'meta'} lists other {labels} class names than CIFAR-100's")
    splits = []
    for split in ("train", "test"):
        batch = _unpickle(folder / split)
        x = np.asarray(batch["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        y = np.asarray(batch[f"{labels}_labels"], dtype=np.int64)
        if len(y) != len(x) or y.min(initial=0) < 0 or y.max(initial=0) >= len(classes):
            raise DataError(
                f"{folder / split}: {len(x)} images and {len(y)} labels, which must be in "
                f"0..{len(classes) - 1}"
            )
        splits += [np.ascontiguousarray(x), y]
    return Dataset(
        name="cifar100",
        card=DataCard(classes, 3, 32, CIFAR100_MEAN, CIFAR100_STD),
        x_train=splits[0],
        y_train=splits[1],
        x_test=splits[2],
        y_test=splits[3],
        source=f"CIFAR-100 python pickles ({labels} labels, md5-checked) in {folder.resolve()}",
    )


def load(params, cache_dir: Path) -> Dataset:
    """The registry's entry: `dataset=cifar100` (params: labels, root, download)."""
    return load_cifar100(params.data_root(), params.labels, params.download)


def ensure_files(params) -> None:
    """Before a sweep: the checked files are here, or fetched once now."""
    ensure_cifar100(params.data_root(), params.download)
