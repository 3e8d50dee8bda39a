"""SVHN (cropped digits), the official train_32x32.mat / test_32x32.mat through torchvision."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from imbadv.core.errors import DataError
from imbadv.data import names
from imbadv.data.base import DataCard, Dataset
from imbadv.data.files import checksum_failures, fetch, one_line

# Per-channel statistics of SVHN's training split (pixel units on [0, 1]).
SVHN_MEAN = (0.4377, 0.4438, 0.4728)
SVHN_STD = (0.1980, 0.2010, 0.1970)
SPLITS = ("train", "test")


def ensure_svhn(root: Path, download: bool) -> None:
    """Both .mat files in root matching their published md5, fetched when missing and allowed."""
    from torchvision.datasets import SVHN

    for split in SPLITS:
        url, filename, md5 = SVHN.split_list[split]
        if not checksum_failures([(root / filename, md5)]):
            continue
        what = (
            "is missing" if not (root / filename).exists() else "does not match its published md5"
        )
        if not download:
            raise DataError(_missing(root, filename, what, "download is off"))
        try:
            fetch(url, root, filename, md5, extract=False)
        except DataError as err:
            raise DataError(_missing(root, filename, what, str(err))) from err


def _missing(root: Path, filename: str, what: str, reason: str) -> str:
    return (
        f"SVHN: {root / filename} {what} and {reason}: put the official train_32x32.mat and "
        f"test_32x32.mat (ufldl.stanford.edu/housenumbers) in {root}, or set IMBADV_DATA_DIR "
        "or dataset.root to a folder that has them"
    )


def _read(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    from torchvision.datasets import SVHN

    # scipy's loadmat reads MATLAB v5 arrays: data only, nothing is unpickled.
    try:
        data = SVHN(str(root), split=split, download=False)
    except (KeyError, ValueError, TypeError, OSError, NotImplementedError) as exc:
        name = SVHN.split_list[split][1]
        raise DataError(f"{root / name} is not a readable SVHN .mat file: {one_line(exc)}") from exc
    x, y = np.ascontiguousarray(data.data, dtype=np.uint8), data.labels.astype(np.int64)
    if (
        x.ndim != 4
        or x.shape[1:] != (3, 32, 32)
        or len(y) != len(x)
        or not np.isin(y, range(10)).all()
    ):
        raise DataError(
            f"{root / SVHN.split_list[split][1]}: expected X 32x32x3xN and N labels 1..10, got "
            f"{x.shape} images and {len(y)} labels"
        )
    return x, y


def load_svhn(root: str | Path, download: bool = True) -> Dataset:
    """SVHN's train and test splits (digit 0's label 10 becomes 0, as in torchvision)."""
    root = Path(root).expanduser()
    ensure_svhn(root, download)
    (x_train, y_train), (x_test, y_test) = (_read(root, split) for split in SPLITS)
    counts = np.bincount(y_train, minlength=10).tolist()
    note = (
        "SVHN's own training split is imbalanced: images per digit 0-9 = "
        f"{', '.join(map(str, counts))} (max/min {max(counts) / max(1, min(counts)):.2f}); "
        "its test split likewise"
    )
    return Dataset(
        name="svhn",
        card=DataCard(names.SVHN_CLASSES, 3, 32, SVHN_MEAN, SVHN_STD, note),
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        source=f"SVHN train_32x32.mat and test_32x32.mat (md5-checked) in {root.resolve()}",
    )


def load(params, cache_dir: Path) -> Dataset:
    """The registry's entry: `dataset=svhn` (params: root, download)."""
    return load_svhn(params.data_root(), params.download)


def ensure_files(params) -> None:
    """Before a sweep: both .mat files are here, or fetched once now."""
    ensure_svhn(params.data_root(), params.download)
