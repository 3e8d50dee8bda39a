"""Report, plots: the drawing functions (matplotlib, Agg); figures.py decides what data they get."""

from __future__ import annotations

import itertools
import math
import textwrap
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and in tests

import matplotlib.pyplot as plt  # noqa: E402 -- the backend must be chosen first
import numpy as np  # noqa: E402

MODEL_COLORS = {"balanced": "#4c72b0", "under": "#dd8452", "over": "#55a868"}


def _save(fig: Any, path: Path, caption: str) -> tuple[str, str]:
    """Write the figure; returns (file name, caption) for the report."""
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path.name, caption


def _title(caption: str, width: int = 90) -> str:
    """The caption without its figure number, wrapped so it never runs past a narrow figure."""
    return textwrap.fill(caption.split(": ", 1)[-1], width)


def confusion(path: Path, counts: np.ndarray, names: list[str], caption: str) -> tuple[str, str]:
    """Fig. 1: a confusion matrix as row percentages (row = true class)."""
    cm = np.asarray(counts, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        pct = 100 * cm / cm.sum(axis=1, keepdims=True)
    fig, ax = plt.subplots(figsize=(7, 6))
    image = ax.imshow(np.nan_to_num(pct), cmap="Blues", vmin=0, vmax=100)
    for (i, j), v in np.ndenumerate(pct):
        if not math.isnan(v):
            ax.text(
                j,
                i,
                f"{v:.0f}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if v > 60 else "black",
            )
    ax.set(
        xticks=range(len(names)),
        yticks=range(len(names)),
        xlabel="predicted class",
        ylabel="true class",
    )
    ax.set_title(_title(caption), fontsize=9)
    ax.set_xticklabels(names, rotation=45, ha="right")
    ax.set_yticklabels(names)
    fig.colorbar(image, ax=ax, label="% of the true class")
    return _save(fig, path, caption)


def bars(
    path: Path, series: dict[str, dict[int, Any]], names: list[str], ylabel: str, caption: str
) -> tuple[str, str]:
    """Figs. 2 and 5: one bar per class and model; error bars are each cell's 95 % interval."""
    fig, ax = plt.subplots(figsize=(9, 4))
    width = 0.8 / max(1, len(series))
    for k, (model, cells) in enumerate(series.items()):
        order = sorted(cells)
        xs = [c + (k - (len(series) - 1) / 2) * width for c in order]
        means = np.array([100 * cells[c].mean for c in order])
        # a t-interval over few seeds can pass 0 or 100 %: draw it cut to what a rate can be
        errs = np.array(
            [
                [means[i] - max(0.0, 100 * cells[c].lo), min(100.0, 100 * cells[c].hi) - means[i]]
                for i, c in enumerate(order)
            ]
        )
        ax.bar(
            xs,
            means,
            width,
            label=model,
            color=MODEL_COLORS.get(model),
            yerr=np.clip(np.nan_to_num(errs.T), 0, None),
            capsize=2,
        )
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=30, ha="right")
    ax.set(ylabel=ylabel)
    ax.set_title(_title(caption), fontsize=9)
    ax.legend(title="model")
    return _save(fig, path, caption)


def pair_panels(
    path: Path, panels: dict, pair: tuple[int, int], names: list[str], caption: str
) -> tuple[str, str]:
    """Fig. 6: where each class of the pair goes, clean and attacked, on the under and over models."""
    fig, axes = plt.subplots(2, 2, figsize=(10, 6), sharey=True, squeeze=False)
    x = np.arange(len(names))
    for (i, cls), (j, imbalance) in itertools.product(
        enumerate(pair), enumerate(("under", "over"))
    ):
        ax, data = axes[i][j], panels.get((cls, imbalance))
        ax.set_title(f"{names[cls]}, {imbalance}-sampled model", fontsize=9)
        if data is None:
            ax.text(0.5, 0.5, "no results", ha="center", transform=ax.transAxes)
            continue
        ax.bar(x - 0.2, 100 * np.asarray(data[0]), 0.4, label="clean", color="#999999")
        ax.bar(x + 0.2, 100 * np.asarray(data[1]), 0.4, label="attacked", color="#c44e52")
        ax.axvline(pair[1 - i], color="black", lw=0.8, ls=":")  # the partner class
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=45, ha="right", fontsize=7)
    for ax in axes[:, 0]:
        ax.set_ylabel("% of the class's test images")
    handles = [h for ax in axes.flat for h in ax.get_legend_handles_labels()[0]][:2]
    if handles:
        fig.legend(handles, ["clean", "attacked"], loc="upper right")
    return _save(fig, path, caption)


def eps_curves(
    path: Path, curves: dict[str, list[tuple[float, float]]], caption: str
) -> tuple[str, str]:
    """Adversarial target-class accuracy against eps, one line per Table 1 column."""
    fig, ax = plt.subplots(figsize=(7, 4))
    for label, points in curves.items():
        eps, acc = zip(*sorted(points), strict=True)
        ax.plot(
            eps,
            [100 * a for a in acc],
            marker="o",
            label=label,
            ls="--" if label.startswith("Different") else "-",
        )
    ax.set(xlabel="eps (pixel units on [0, 1])", ylabel="adversarial accuracy (%)")
    ax.set_title(_title(caption), fontsize=9)
    ax.legend(fontsize=8)
    return _save(fig, path, caption)


def classwise_bars(
    path: Path, sums: dict[str, Any], names: list[str], caption: str
) -> tuple[str, str]:
    """Per-class robust recall of every model setting, error bars its 95 % interval."""
    series = {g: s.robust for g, s in sums.items()}
    return bars(path, series, names, "robust recall (%)", caption)


def matrix_order(names: set[str]) -> list[str]:
    """The paper's models first (balanced, under, over), then the others by name."""
    first = ["balanced", "under-c", "over-c", "matched"]
    return [n for n in first if n in names] + sorted(names - set(first))


def transfer_map(path: Path, grid: dict[tuple[str, str], float], caption: str) -> tuple[str, str]:
    """Heat map: gradient source (rows) x attacked model (columns), adversarial accuracy."""
    sources = matrix_order({k[0] for k in grid})
    models = matrix_order({k[1] for k in grid})
    data = np.array([[grid.get((s, m), np.nan) for m in models] for s in sources]) * 100
    fig, ax = plt.subplots(figsize=(2.4 + 1.3 * len(models), 1.4 + 0.6 * len(sources)))
    image = ax.imshow(np.ma.masked_invalid(data), cmap="viridis", vmin=0, vmax=100)
    for (i, j), v in np.ndenumerate(data):
        ax.text(
            j,
            i,
            "—" if np.isnan(v) else f"{v:.1f}",
            ha="center",
            va="center",
            color="white" if not np.isnan(v) and v < 50 else "black",
            fontweight="bold" if sources[i] == models[j] else "normal",  # white box
        )
    ax.set(xticks=range(len(models)), yticks=range(len(sources)), xlabel="attacked model")
    ax.set_xticklabels(models, rotation=30 if len(models) > 4 else 0)
    ax.set_yticklabels([f"gradient of {s}" for s in sources])
    ax.set_title(_title(caption, 55), fontsize=9)
    fig.colorbar(image, ax=ax, label="adversarial accuracy (%)")
    return _save(fig, path, caption)
