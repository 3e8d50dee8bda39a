"""Stage "data": load a dataset (CIFAR-10, a class-folder copy, or synthetic) as uint8 arrays."""

from __future__ import annotations

import contextlib
import hashlib
import inspect
import io
import os
import socket
import tarfile
import tempfile
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from filelock import FileLock
from numpy.lib.stride_tricks import sliding_window_view

from imbadv.errors import ConfigError, DataError

DATASET_NAMES = ("cifar10", "folder", "synthetic")
SPLIT_KEYS = ("x_train", "y_train", "x_test", "y_test")
# The extensions torchvision's ImageFolder accepts, so both read the same files.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
# Bump when the decoded layout changes, so caches written by older code are rebuilt.
CACHE_VERSION = 1
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
    root = Path(root).expanduser()
    is_archive = root.is_file() and root.name.lower().endswith(ARCHIVE_SUFFIXES)
    if not root.is_dir() and not is_archive:
        what = "is not a folder or a .tar.gz" if root.exists() else "does not exist"
        raise DataError(
            f"dataset.root={root} {what}: expected a folder with train/ and test/ "
            "class folders, or a .tar.gz of one"
        )
    key = _sha256_file(root) if is_archive else _listing_key(root)
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / f"folder-{key}.npz"
    arrays = _read_cache(cache, delete_bad=False)
    if arrays is None:
        with FileLock(str(cache_dir / f"folder-{key}.lock")):
            # Another job may have decoded it while this one waited for the lock.
            arrays = _read_cache(cache, delete_bad=True)
            if arrays is None:
                arrays = _decode_folder(root, is_archive)
                _write_cache(cache, arrays)
    kind = "sha256" if is_archive else "file-list sha256"
    return Dataset(
        name="folder",
        classes=tuple(str(c) for c in arrays["classes"]),
        source=f"class folders from {root.resolve()} ({kind} {key})",
        **{k: arrays[k] for k in SPLIT_KEYS},
    )


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def _listing_key(root: Path) -> str:
    # Sizes and mtimes stand in for content: hashing every image would cost as much as decoding.
    entries = []
    for dirpath, _, filenames in os.walk(root):
        for fname in filenames:
            path = Path(dirpath, fname)
            st = path.stat()
            entries.append(f"{path.relative_to(root).as_posix()}\t{st.st_size}\t{st.st_mtime_ns}")
    return hashlib.sha256("\n".join(sorted(entries)).encode()).hexdigest()


def _read_cache(path: Path, delete_bad: bool) -> dict[str, np.ndarray] | None:
    if not path.exists():
        return None
    try:
        with np.load(path, allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        _check_arrays(arrays)
        return arrays
    except Exception as exc:  # any unreadable cache is rebuilt from the source
        if delete_bad:
            warnings.warn(f"cache {path} is unreadable ({exc}); rebuilding it", stacklevel=3)
            path.unlink(missing_ok=True)
        return None


def _check_arrays(arrays: dict[str, np.ndarray]) -> None:
    if int(arrays["version"]) != CACHE_VERSION:
        raise ValueError(f"cache version {int(arrays['version'])}, expected {CACHE_VERSION}")
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        if x.dtype != np.uint8 or x.ndim != 4 or y.dtype != np.int64 or y.shape != x.shape[:1]:
            raise ValueError(f"{split} arrays have shapes {x.shape}, {y.shape}")


def _write_cache(path: Path, arrays: dict[str, np.ndarray]) -> None:
    # Written beside the target and renamed, so a killed job never leaves half a cache under
    # the final name; uncompressed so that a reload is a plain read.
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.stem}-", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.chmod(tmp, 0o644)  # mkstemp makes it private; the cache is shared by jobs and users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _decode_folder(root: Path, is_archive: bool) -> dict[str, np.ndarray]:
    blobs = _read_archive(root) if is_archive else _read_directory(root)
    classes, items = _index(list(blobs), root)
    names = [name for name, _, _ in items]
    images = _decode_images([(name, blobs[name]) for name in names])
    labels = np.array([label for _, label, _ in items], dtype=np.int64)
    is_train = np.array([split == "train" for _, _, split in items])
    return {
        "x_train": images[is_train],
        "y_train": labels[is_train],
        "x_test": images[~is_train],
        "y_test": labels[~is_train],
        "classes": np.array(classes),
        "version": np.array(CACHE_VERSION),
    }


def _read_directory(root: Path) -> dict[str, bytes]:
    blobs = {}
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for fname in filenames:
            if not fname.startswith(".") and fname.lower().endswith(IMAGE_EXTENSIONS):
                path = Path(dirpath, fname)
                blobs[path.relative_to(root).as_posix()] = path.read_bytes()
    return blobs


def _read_archive(archive: Path) -> dict[str, bytes]:
    # Read as a stream from the archive: nothing is extracted, and every member is vetted
    # first because an archive is data, not code.
    blobs = {}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                parts = _safe_member_parts(member, archive)
                if not member.isfile() or any(p.startswith(".") for p in parts):
                    continue
                if parts and parts[-1].lower().endswith(IMAGE_EXTENSIONS):
                    blobs["/".join(parts)] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DataError(f"dataset.root={archive} is not a readable .tar.gz: {exc}") from exc
    return blobs


def _safe_member_parts(member: tarfile.TarInfo, archive: Path) -> list[str]:
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        raise DataError(f"{archive} member {name!r} points outside the archive; refusing it")
    if not (member.isfile() or member.isdir()):
        raise DataError(
            f"{archive} member {name!r} is a link or device, not a file; refusing the archive "
            "(repack it with plain files only)"
        )
    return [p for p in name.split("/") if p not in ("", ".")]


def _index(paths: list[str], root: Path) -> tuple[list[str], list[tuple[str, int, str]]]:
    """Classes (sorted train/ folder names) and (path, label, split) for every image."""
    prefix = _layout_prefix(paths, root)
    found: dict[str, dict[str, list[str]]] = {"train": {}, "test": {}}
    for path in sorted(paths):
        parts = path[len(prefix) :].split("/") if path.startswith(prefix) else []
        if len(parts) >= 3 and parts[0] in found:
            found[parts[0]].setdefault(parts[1], []).append(path)
    classes = sorted(found["train"])
    if not classes:
        raise DataError(f"{root}: {prefix}train/ has no class folders with images in them")
    if sorted(found["test"]) != classes:
        extra = sorted(set(found["test"]).symmetric_difference(classes))
        raise DataError(
            f"{root}: {prefix}test/ must have the same class folders as {prefix}train/ "
            f"({', '.join(classes)}); these differ or are empty: {', '.join(extra)}"
        )
    items = [
        (path, label, split)
        for split in ("train", "test")
        for label, cls in enumerate(classes)
        for path in found[split][cls]
    ]
    return classes, items


def _layout_prefix(paths: list[str], root: Path) -> str:
    """The path prefix of train/ and test/: empty at the top, or the one top-level folder."""
    tops = {p.split("/", 1)[0] for p in paths if "/" in p}
    if {"train", "test"} <= tops:
        return ""
    if len(tops) == 1:
        top = next(iter(tops))
        if {"train", "test"} <= {p.split("/")[1] for p in paths if p.count("/") >= 2}:
            return top + "/"
    raise DataError(
        f"dataset.root={root} has no train/ and test/ class folders (at the top or inside one "
        "top-level folder): expected train/<class>/<image> and test/<class>/<image>"
    )


def _decode_images(items: list[tuple[str, bytes]]) -> np.ndarray:
    """Decode every image once; uint8 [N, C, H, W], 1 channel only when every image is "L"."""
    from PIL import Image

    arrays, size, first = [], None, ""
    for name, blob in items:
        try:
            with Image.open(io.BytesIO(blob)) as im:
                if size is None:
                    size, first = im.size, name
                elif im.size != size:
                    raise DataError(
                        f"{name} is {im.size[0]}x{im.size[1]} but {first} is {size[0]}x{size[1]}:"
                        " all images must have one size (resize the copy first)"
                    )
                arrays.append(np.asarray(im if im.mode == "L" else im.convert("RGB")))
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DataError(f"{name} cannot be decoded as an image: {exc}") from exc
    if all(a.ndim == 2 for a in arrays):
        return np.stack(arrays)[:, None]
    # PIL's L->RGB conversion is channel replication; doing it here avoids decoding twice.
    rgb = [np.repeat(a[:, :, None], 3, axis=2) if a.ndim == 2 else a for a in arrays]
    return np.ascontiguousarray(np.stack(rgb).transpose(0, 3, 1, 2))


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
