"""Fashion-MNIST from its idx files: torchvision's FashionMNIST/raw, or Debian's dataset-fashion-mnist."""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np

from imbadv.core.errors import DataError
from imbadv.data import names
from imbadv.data.base import DataCard, Dataset
from imbadv.data.files import one_line

# Where `apt-get install dataset-fashion-mnist` puts the (gzipped) idx files.
DEBIAN_DIR = Path("/usr/share/datasets/fashion-mnist")
# Statistics of the 60,000 training images (pixel units on [0, 1]); one channel.
FASHION_MNIST_MEAN = (0.2860,)
FASHION_MNIST_STD = (0.3530,)
FILES = {
    "x_train": "train-images-idx3-ubyte",
    "y_train": "train-labels-idx1-ubyte",
    "x_test": "t10k-images-idx3-ubyte",
    "y_test": "t10k-labels-idx1-ubyte",
}
IDX_UBYTE = 0x08  # the idx type code for unsigned bytes


def _file(folder: Path, stem: str) -> Path | None:
    """The idx file `stem` in folder, uncompressed or .gz (uncompressed first, as torchvision keeps both)."""
    for path in (folder / stem, folder / f"{stem}.gz"):
        if path.is_file():
            return path
    return None


def candidates(root: Path) -> list[Path]:
    """Folders searched in order: torchvision's layout under root, then the Debian package."""
    return [root / "FashionMNIST" / "raw", DEBIAN_DIR]


def find_files(root: Path, download: bool) -> Path:
    """The first folder holding all four idx files, downloading via torchvision if none does."""
    for folder in candidates(root):
        if all(_file(folder, stem) for stem in FILES.values()):
            return folder
    where = " or ".join(str(f) for f in candidates(root))
    hint = (
        f"put the four idx files (train-images-idx3-ubyte.gz, ...) in {root / 'FashionMNIST' / 'raw'}, "
        "or `apt-get install dataset-fashion-mnist`, or set IMBADV_DATA_DIR or dataset.root"
    )
    if not download:
        raise DataError(f"Fashion-MNIST idx files not found in {where} and download is off: {hint}")
    _download(root, where, hint)
    return candidates(root)[0]


def _download(root: Path, where: str, hint: str) -> None:
    import tarfile

    from torchvision.datasets import FashionMNIST

    from imbadv.data.files import DOWNLOAD_TIMEOUT_S, socket_timeout

    try:
        with socket_timeout(DOWNLOAD_TIMEOUT_S):
            FashionMNIST(str(root), train=True, download=True)
    except (OSError, RuntimeError, EOFError, tarfile.TarError) as exc:
        raise DataError(
            f"Fashion-MNIST idx files not found in {where} and the download failed "
            f"({one_line(exc)}): {hint}"
        ) from exc


def read_idx(path: Path, ndim: int) -> np.ndarray:
    """An idx file of unsigned bytes with `ndim` dimensions (gz or raw), checked against its header."""
    try:
        opener = gzip.open if path.suffix == ".gz" else open
        with opener(path, "rb") as f:
            blob = f.read()
    except (OSError, EOFError) as exc:
        raise DataError(f"{path} cannot be read: {one_line(exc)}") from exc
    header = 4 + 4 * ndim
    if len(blob) < header or blob[:2] != b"\0\0" or blob[2] != IDX_UBYTE or blob[3] != ndim:
        raise DataError(f"{path} is not an idx file of unsigned bytes with {ndim} dimension(s)")
    shape = tuple(int(d) for d in np.frombuffer(blob, ">u4", count=ndim, offset=4))
    if len(blob) - header != int(np.prod(shape)):
        raise DataError(
            f"{path} is cut short or too long: header says {shape}, "
            f"{len(blob) - header} bytes of data follow"
        )
    # a copy: frombuffer gives a read-only view, which torch.from_numpy warns about in every job
    return np.frombuffer(blob, np.uint8, offset=header).reshape(shape).copy()


def load_fashion_mnist(root: str | Path, download: bool = True) -> Dataset:
    """Fashion-MNIST, 28x28 grayscale: uint8 images [N, 1, 28, 28] and labels 0-9."""
    folder = find_files(Path(root).expanduser(), download)
    arrays = {}
    for key, stem in FILES.items():
        path = _file(folder, stem)
        arrays[key] = read_idx(path, 3 if key.startswith("x") else 1)
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.shape[1:] != (28, 28) or len(x) != len(y) or y.max(initial=0) > 9:
            raise DataError(
                f"Fashion-MNIST {split} files in {folder}: {x.shape} images and {len(y)} labels; "
                "expected N 28x28 images and N labels 0-9"
            )
        arrays[f"x_{split}"] = np.ascontiguousarray(x[:, None])
        arrays[f"y_{split}"] = y.astype(np.int64)
    card = DataCard(names.FASHION_MNIST_CLASSES, 1, 28, FASHION_MNIST_MEAN, FASHION_MNIST_STD)
    return Dataset(
        name="fashion_mnist", card=card, source=f"Fashion-MNIST idx files in {folder}", **arrays
    )


def load(params, cache_dir: Path) -> Dataset:
    """The registry's entry: `dataset=fashion_mnist` (params: root, download)."""
    return load_fashion_mnist(params.data_root(), params.download)


def ensure_files(params) -> None:
    """Before a sweep: the idx files are found, or fetched once now."""
    find_files(params.data_root(), params.download)
