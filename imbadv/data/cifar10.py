"""CIFAR-10, the official binary batches through torchvision (downloaded when missing)."""

from __future__ import annotations

import os
import tarfile
from pathlib import Path

import numpy as np

from imbadv.core.errors import DataError
from imbadv.data.base import DataCard, Dataset
from imbadv.data.files import DOWNLOAD_TIMEOUT_S, socket_timeout

# Per-channel statistics of the official CIFAR-10 training set (pixel units on [0, 1]).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)


def load_cifar10(root: str | Path, download: bool = True) -> Dataset:
    """Official CIFAR-10 through torchvision; downloads into root when the batches are missing."""
    from torchvision.datasets import CIFAR10
    from torchvision.datasets.utils import check_integrity, download_and_extract_archive

    root = Path(root).expanduser()
    batches = root / "cifar-10-batches-py"
    archive = root / CIFAR10.filename
    try:
        train = CIFAR10(str(root), train=True, download=False)
    except RuntimeError:
        # A hand-placed official archive needs no network, so it is used even with download off.
        if not download and not check_integrity(str(archive), CIFAR10.tgz_md5):
            raise DataError(_cifar10_missing(batches, root, "download is off")) from None
        try:
            with socket_timeout(DOWNLOAD_TIMEOUT_S):
                download_and_extract_archive(
                    CIFAR10.url, str(root), filename=CIFAR10.filename, md5=CIFAR10.tgz_md5
                )
            train = CIFAR10(str(root), train=True, download=False)
        except (OSError, RuntimeError, EOFError, tarfile.TarError) as exc:
            reason = f"the download failed ({' '.join(str(exc).split())})"
            raise DataError(_cifar10_missing(batches, root, reason)) from exc
    test = CIFAR10(str(root), train=False, download=False)
    return Dataset(
        name="cifar10",
        card=DataCard(tuple(train.classes), 3, 32, CIFAR10_MEAN, CIFAR10_STD),
        x_train=np.ascontiguousarray(train.data.transpose(0, 3, 1, 2)),
        y_train=np.asarray(train.targets, dtype=np.int64),
        x_test=np.ascontiguousarray(test.data.transpose(0, 3, 1, 2)),
        y_test=np.asarray(test.targets, dtype=np.int64),
        source=f"torchvision CIFAR-10 binary batches in {batches.resolve()}",
    )


def _cifar10_missing(batches: Path, root: Path, reason: str) -> str:
    return (
        f"CIFAR-10 not found (or not matching its published md5) in {batches} and {reason}: "
        "place the official archive "
        f"cifar-10-python.tar.gz in {root} by hand, or set IMBADV_DATA_DIR or dataset.root "
        "to a folder that has it, or use dataset=folder dataset.root=<class-folder copy or .tar.gz>"
    )


def load(params, cache_dir: Path) -> Dataset:
    """The registry's entry: `dataset=cifar10` (params: root, download)."""
    return load_cifar10(data_root(params), params.download)


def data_root(params) -> Path:
    root = params.root if params.root is not None else os.environ.get("IMBADV_DATA_DIR", "data")
    return Path(root).expanduser()


def ensure_files(params) -> None:
    """Before a sweep: the batches or the official archive are here, or are downloaded once now.

    Without this every job of a sweep would try, fail and print the same error.
    """
    root = data_root(params)
    if (root / "cifar-10-batches-py" / "data_batch_1").exists():
        return
    load_cifar10(root, params.download)
