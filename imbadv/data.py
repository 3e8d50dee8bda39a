"""Stage "data": load a dataset (CIFAR-10, a class-folder copy, or synthetic) as uint8 arrays."""

from __future__ import annotations

import contextlib
import inspect
import os
import socket
import tarfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from imbadv.errors import ConfigError, DataError
from imbadv.folders import read_folder

DATASET_NAMES = ("cifar10", "folder", "synthetic")
SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
# urllib waits forever by default; a firewall that drops packets would hang a job.
DOWNLOAD_TIMEOUT_S = 30.0


@dataclass(frozen=True, eq=False)  # arrays have no single truth value, so == is identity
class Dataset:
    """Train and test splits in memory: images uint8 [N, C, H, W], labels int64 [N]."""

    name: str
    classes: tuple[str, ...]
    x_train: np.ndarray
    y_train: np.ndarray
    x_test: np.ndarray
    y_test: np.ndarray
    source: str

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def train_counts(self) -> list[int]:
        """Images per class in the training split, indexed by label."""
        return np.bincount(self.y_train, minlength=self.num_classes).tolist()


@contextlib.contextmanager
def _socket_timeout(seconds: float) -> Iterator[None]:
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


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
            with _socket_timeout(DOWNLOAD_TIMEOUT_S):
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
        classes=tuple(train.classes),
        x_train=np.ascontiguousarray(train.data.transpose(0, 3, 1, 2)),
        y_train=np.asarray(train.targets, dtype=np.int64),
        x_test=np.ascontiguousarray(test.data.transpose(0, 3, 1, 2)),
        y_test=np.asarray(test.targets, dtype=np.int64),
        source=f"torchvision CIFAR-10 binary batches in {batches.resolve()}",
    )


def _cifar10_missing(batches: Path, root: Path, reason: str) -> str:
    return (
        f"CIFAR-10 not found in {batches} and {reason}: place the official archive "
        f"cifar-10-python.tar.gz in {root} by hand, or set IMBADV_DATA_DIR or dataset.root "
        "to a folder that has it, or use dataset=folder dataset.root=<class-folder copy or .tar.gz>"
    )


def load_folder(root: str | Path, cache_dir: str | Path) -> Dataset:
    """ImageFolder-style train/ and test/ class folders (a directory or a .tar.gz), cached."""
    arrays, source = read_folder(Path(root).expanduser(), Path(cache_dir))
    return Dataset(
        name="folder",
        classes=tuple(str(c) for c in arrays["classes"]),
        source=source,
        **{k: arrays[k] for k in SPLIT_KEYS},
    )


def _upsampler(grid: int, size: int) -> np.ndarray:
    """[size*size, grid*grid] matrix that bilinearly upsamples a flattened grid x grid pattern."""
    pos = np.linspace(0, grid - 1, size)
    lo = np.clip(np.floor(pos).astype(np.int64), 0, grid - 2)
    m = np.zeros((size, grid), dtype=np.float32)
    m[np.arange(size), lo] = lo + 1 - pos
    m[np.arange(size), lo + 1] = pos - lo
    return np.kron(m, m)


def _smooth(rng: np.random.Generator, lead: tuple[int, ...], grid: int, size: int) -> np.ndarray:
    """Smooth random patterns [*lead, size, size] with unit RMS (upsampled white noise)."""
    up = _upsampler(grid, size)
    coarse = rng.standard_normal((*lead, grid * grid), dtype=np.float32)
    rms = np.sqrt((up**2).sum(axis=1).mean())
    return (coarse @ (up.T / rms)).reshape(*lead, size, size)


def make_synthetic(
    train_per_class: int = 500,
    test_per_class: int = 100,
    num_classes: int = 10,
    image_size: int = 32,
    channels: int = 3,
    noise: float = 2.0,
    seed: int = 0,
) -> Dataset:
    """Deterministic images with real class structure: shifted class patterns under clutter.

    Each class has a smooth random pattern; classes 0-1, 2-3, ... share part of theirs, so they
    overlap. A sample is a randomly shifted crop of its class pattern with random contrast and
    brightness, plus `noise` times (smooth random clutter + pixel noise); higher noise is harder.
    """
    params = dict(locals())
    for key in ("train_per_class", "test_per_class", "num_classes", "channels", "image_size"):
        if params[key] < (4 if key == "image_size" else 1):
            raise ConfigError(f"dataset.{key}", params[key], "a larger positive integer")
    if noise < 0:
        raise ConfigError("dataset.noise", noise, "a number >= 0")
    rng = np.random.default_rng(seed)
    shift = max(1, image_size // 8)
    protos = _smooth(rng, (num_classes, channels), 5, image_size + 2 * shift)
    # Correlation 0.6 within each pair keeps some classes confusable, as in real data.
    odd = slice(1, num_classes // 2 * 2, 2)
    protos[odd] = 0.6 * protos[0 : num_classes // 2 * 2 : 2] + 0.8 * protos[odd]
    windows = sliding_window_view(protos, (image_size, image_size), axis=(2, 3))
    splits = []
    for per_class in (train_per_class, test_per_class):
        y = np.repeat(np.arange(num_classes, dtype=np.int64), per_class)
        n = len(y)
        dy, dx = rng.integers(0, 2 * shift + 1, size=(2, n))
        x = windows[y, :, dy, dx] * rng.uniform(0.7, 1.3, (n, 1, 1, 1)).astype(np.float32)
        x += rng.normal(0.0, 0.3, (n, channels, 1, 1)).astype(np.float32)
        x += noise * _smooth(rng, (n, channels), 4, image_size)
        # Uniform uint8 noise costs a tenth of Gaussian noise; 0.5 / 73.9 gives std 0.5.
        pixels = rng.integers(0, 256, x.shape, dtype=np.uint8).astype(np.float32) - 127.5
        x += (noise * 0.5 / 73.9) * pixels
        # Scale so the pixel spread stays about the same whatever the noise level.
        x *= 42.0 / np.sqrt(1.0 + 1.25 * noise**2)
        x += 128.0
        splits.append((np.clip(np.rint(x, out=x), 0, 255, out=x).astype(np.uint8), y))
    settings = ", ".join(f"{k}={v}" for k, v in params.items())
    return Dataset(
        name="synthetic",
        classes=tuple(f"class{k}" for k in range(num_classes)),
        source=f"imbadv synthetic class patterns ({settings})",
        **dict(zip(SPLIT_KEYS, (*splits[0], *splits[1]), strict=True)),
    )


def load_dataset(
    name: str, root: str | None = None, cache_dir: str | Path = "data/cache", **options: Any
) -> Dataset:
    """Load dataset.name with its config keys; cache_dir comes from paths.cache_dir."""
    if name == "synthetic":
        _reject_options(options, list(inspect.signature(make_synthetic).parameters))
        return make_synthetic(**options)
    if name == "cifar10":
        _reject_options(options, ["download"])
        default_root = os.environ.get("IMBADV_DATA_DIR", "data")
        return load_cifar10(root if root is not None else default_root, **options)
    if name == "folder":
        _reject_options(options, [])
        if root is None:
            raise ConfigError(
                "dataset.root", root, "a folder with train/ and test/ class folders or a .tar.gz"
            )
        return load_folder(root, cache_dir)
    raise ConfigError("dataset.name", name, list(DATASET_NAMES))


def _reject_options(options: dict[str, Any], allowed: list[str]) -> None:
    for key, value in options.items():
        if key not in allowed:
            raise ConfigError(
                f"dataset.{key}", value, f"no such key (allowed: {allowed or 'none'})"
            )
