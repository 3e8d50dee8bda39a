"""Stage "data", class folders: train/ and test/ class folders or a .tar.gz of them, cached as .npz."""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
from filelock import FileLock

from imbadv.core.errors import DataError
from imbadv.data.base import SPLIT_KEYS, DataCard, Dataset, pixel_stats
from imbadv.data.tarsafe import read_members

# The extensions torchvision's ImageFolder accepts, so both read the same files.
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".ppm", ".bmp", ".pgm", ".tif", ".tiff", ".webp")
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
# Bump when the decoded layout changes, so caches written by older code are rebuilt.
CACHE_VERSION = 1


def read_folder(root: Path, cache_dir: Path) -> tuple[dict[str, np.ndarray], str]:
    """A class-folder copy's arrays and source line; decoded once, then read from cache_dir."""
    is_archive = root.is_file() and root.name.lower().endswith(ARCHIVE_SUFFIXES)
    if not root.is_dir() and not is_archive:
        what = "is not a folder or a .tar.gz" if root.exists() else "does not exist"
        raise DataError(
            f"dataset.root={root} {what}: expected a folder with train/ and test/ "
            "class folders, or a .tar.gz of one"
        )
    key = _sha256_file(root) if is_archive else listing_key(root)
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
    return arrays, f"class folders from {root.resolve()} ({kind} {key})"


def cached_arrays(cache_dir: Path, stem: str, build: Callable[[], dict[str, np.ndarray]]) -> dict:
    """cache_dir/<stem>.npz, or `build()` once under a file lock and written there (other loaders)."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    cache = cache_dir / f"{stem}.npz"
    arrays = _read_cache(cache, delete_bad=False)
    if arrays is None:
        with FileLock(str(cache_dir / f"{stem}.lock")):
            arrays = _read_cache(cache, delete_bad=True)
            if arrays is None:
                arrays = {**build(), "version": np.array(CACHE_VERSION)}
                _write_cache(cache, arrays)
    return arrays


def _sha256_file(path: Path) -> str:
    with open(path, "rb") as f:
        return hashlib.file_digest(f, "sha256").hexdigest()


def listing_key(root: Path) -> str:
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
            # stacklevel 4: the warning names the line that called data.load_folder.
            warnings.warn(f"cache {path} is unreadable ({exc}); rebuilding it", stacklevel=4)
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
    images = decode_images([(name, blobs[name]) for name in names])
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
    # Read as a stream from the archive: nothing is extracted, every member is vetted first.
    def images(parts: list[str]) -> bool:
        hidden = any(p.startswith(".") for p in parts)
        return bool(parts) and not hidden and parts[-1].lower().endswith(IMAGE_EXTENSIONS)

    return read_members(archive, images, DataError, f"dataset.root={archive}")


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


def decode_images(items: list[tuple[str, bytes]]) -> np.ndarray:
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


def load_folder(root: str | Path, cache_dir: str | Path) -> Dataset:
    """ImageFolder-style train/ and test/ class folders (a directory or a .tar.gz), cached."""
    arrays, source = read_folder(Path(root).expanduser(), Path(cache_dir))
    x = arrays["x_train"]
    card = DataCard(
        tuple(str(c) for c in arrays["classes"]), x.shape[1], x.shape[2], *pixel_stats(x)
    )
    return Dataset(name="folder", card=card, source=source, **{k: arrays[k] for k in SPLIT_KEYS})


def load(params, cache_dir: Path) -> Dataset:
    """The registry's entry: `dataset=folder dataset.root=PATH`."""
    return load_folder(params.root, cache_dir)
