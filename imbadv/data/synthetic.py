"""Synthetic class patterns made in memory from a seed: real structure, no files (tests, smoke runs)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from imbadv.core.errors import ConfigError
from imbadv.data.base import SPLIT_KEYS, DataCard, Dataset, pixel_stats


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
        card=DataCard(
            tuple(f"class{k}" for k in range(num_classes)), channels, image_size, *_stats(splits)
        ),
        source=f"imbadv synthetic class patterns ({settings})",
        **dict(zip(SPLIT_KEYS, (*splits[0], *splits[1]), strict=True)),
    )


def load(params, cache_dir: Path) -> Dataset:
    """The registry's entry: `dataset=synthetic` with SyntheticParams."""
    return make_synthetic(**asdict(params))


def _stats(splits: list) -> tuple[tuple[float, ...], tuple[float, ...]]:
    return pixel_stats(splits[0][0])
