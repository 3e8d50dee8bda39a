"""Report stage, figures: which data each figure of a report shows; drawn by plots.py into the folder."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np

from imbadv.report import paper as rp
from imbadv.report.loading import per_class, pick
from imbadv.report.plots import (
    MODEL_COLORS,
    bars,
    classwise_bars,
    confusion,
    eps_curves,
    pair_panels,
    transfer_map,
)


def matrix_role(name: str, cls: int) -> str:
    """A model name relative to the row's class: `under-3` on class 3's images is `under-c`."""
    if name.startswith("checkpoint:"):  # a file as the source: its name as written
        return name
    name, at, seed = name.partition("@")  # another seed's model: under-3@seed+1 is under-c@seed+1
    base, plus, mode = name.partition("+")
    if base.endswith(f"-{cls}"):
        base = base[: -len(str(cls))] + "c"
    return base + plus + mode + at + seed


def cell_names(r: dict) -> tuple[str, str]:
    """(gradient source, attacked model) of a row, class-relative; older rows carry neither name."""
    targeted = r["imbalance"] in ("under", "over")  # the report stays free of the registries
    model = r.get("model") or r["imbalance"] + (f"-{r['class']}" if targeted else "")
    source = r.get("source_model") or (model if r["source"] == "same" else "balanced")
    # sources train with the job's objective: a name alone would pool ce and balanced softmax
    tag = "" if r.get("objective", "ce") == "ce" else f" [{r['objective']}]"
    return matrix_role(source, r["class"]) + tag, matrix_role(model, r["class"]) + tag


def transfer_grid(rows: list[dict], sel: Any) -> dict[tuple[str, str], float]:
    """(source, attacked model) -> mean adversarial target-class accuracy over classes (each class
    first averaged over its seeds). The diagonal is the white-box attack."""
    cells: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in pick(rows, sel):
        cells.setdefault(cell_names(r), {}).setdefault(int(r["class"]), []).append(r["adv_acc"])
    return {
        k: float(np.mean([np.mean(v) for v in by_class.values()])) for k, by_class in cells.items()
    }


def draw(
    sweep: Any,
    rows: list[dict],
    sel: Any,
    names: list[str],
    pair: tuple[int, int],
    sums: dict[str, Any],
) -> list[tuple[str, str]]:
    """Every figure the sweep has data for, as (file name, caption); written into the sweep folder."""
    d = figure_data(sweep, rows, sel, pair, sums)
    tag = f"{sel.method.upper()}, eps {sel.eps:g}"
    plan = [
        *clean_figures(d, names),
        *same_model_figures(d, tag, names, pair),
        *attack_figures(d, tag, sel),
    ]
    return [
        plot(sweep.root / name, *args, caption) for have, plot, name, args, caption in plan if have
    ]


def figure_data(
    sweep: Any, rows: list[dict], sel: Any, pair: tuple[int, int], sums: dict[str, Any]
) -> dict[str, Any]:
    """What the figures show, by name; an empty or false entry leaves its figure out."""

    def per_model(metric: str) -> dict[str, dict]:
        series = {m: per_class(rows, sel, metric, imbalance=m, source="same") for m in MODEL_COLORS}
        return {m: s for m, s in series.items() if s}

    counts, n_models = balanced_confusion(sweep.results)
    grid = transfer_grid(rows, sel)
    return {
        "counts": counts,
        "n_models": n_models,
        "grid": grid,
        "transfer": any(s != m for s, m in grid),  # a matrix with a diagonal only says nothing new
        "clean": per_model("clean_acc"),
        "drop": per_model("relative_drop"),
        "pairs": pair_data(rows, sel, pair),
        "sums": sums,
        "eps": eps_data(rows, sel),
    }


# A figure's plan: (whether there is data, plot function, file, its data arguments, caption)
Figure = tuple


def clean_figures(d: dict[str, Any], names: list[str]) -> list[Figure]:
    """Figs. 1 and 2: the balanced model's confusion and every model's clean accuracy."""
    n_models = d["n_models"]
    return [
        (
            n_models,
            confusion,
            "fig1_confusion_balanced.png",
            (d["counts"], names),
            f"Fig. 1: the balanced model's confusion on the clean test set (row %, {n_models} seed(s) summed)",
        ),
        (
            d["clean"],
            bars,
            "fig2_clean_accuracy.png",
            (d["clean"], names, "clean accuracy (%)"),
            "Fig. 2: clean target-class accuracy of every model (error bars: 95 % interval)",
        ),
    ]


def same_model_figures(
    d: dict[str, Any], tag: str, names: list[str], pair: tuple[int, int]
) -> list[Figure]:
    """Figs. 5 and 6 and the class-wise bars: what the same-model attack does."""
    a, b = (names[i] for i in pair)
    return [
        (
            d["drop"],
            bars,
            "fig5_relative_drop.png",
            (d["drop"], names, "relative drop (%)"),
            f"Fig. 5: relative drop (clean - adv) / clean, same-model {tag} (error bars: 95 % interval over seeds)",
        ),
        (
            d["pairs"],
            pair_panels,
            f"fig6_pair_{a}_{b}.png",
            (d["pairs"], pair, names),
            f"Fig. 6: where {a} and {b} test images go, clean and attacked (same-model {tag})",
        ),
        (
            d["sums"],
            classwise_bars,
            "fig_classwise_robust.png",
            (d["sums"], names),
            f"Class-wise: per-class robust recall of every model setting, same-model {tag} (error bars: 95 % interval)",
        ),
    ]


def attack_figures(d: dict[str, Any], tag: str, sel: Any) -> list[Figure]:
    """The transfer matrix and accuracy against eps."""
    return [
        (
            d["transfer"],
            transfer_map,
            "fig_transfer.png",
            (d["grid"],),
            f"Transfer matrix: gradient source (rows) x attacked model (columns), {tag}, mean target-class accuracy over classes and seeds; -c = the row's target class; the diagonal is the white-box attack",
        ),
        (
            len(sel.all_eps) > 1,
            eps_curves,
            "fig_eps.png",
            (d["eps"],),
            f"Accuracy against eps: adversarial target-class accuracy, {sel.method.upper()}, mean over classes and seeds",
        ),
    ]


def balanced_confusion(results: list[dict]) -> tuple[np.ndarray, int]:
    """The balanced models' clean confusion counts summed over distinct models (one per seed)."""
    models = {}
    for r in results:
        entry = (
            r["models"]["target"]
            if r["meta"]["imbalance"] == "balanced"
            else r["models"].get("balanced")
        )
        if entry is not None:
            models[entry["key"]] = np.asarray(entry["clean"]["confusion"])
    return (sum(models.values()) if models else np.zeros((0, 0))), len(models)


def pair_data(rows: list[dict], sel: Any, pair: tuple[int, int]) -> dict[tuple[int, str], Any]:
    """Per (class, under|over): the share of the class's images predicted as each class."""
    panels = {}
    for cls in pair:
        for m in ("under", "over"):
            cell = pick(rows, sel, **{"class": cls, "imbalance": m, "source": "same"})
            if cell:
                n = sum(r["n"] for r in cell)
                panels[(cls, m)] = tuple(
                    np.sum([r[k] for r in cell], axis=0) / n for k in ("clean_row", "adv_row")
                )
    return panels


def eps_data(rows: list[dict], sel: Any) -> dict[str, list[tuple[float, float]]]:
    """Per Table 1 column, (eps, adversarial accuracy averaged over classes) for every swept eps."""
    curves: dict[str, list[tuple[float, float]]] = {}
    for _, label, imbalance, source in rp.COLUMNS:
        for eps in sel.all_eps:
            cells = per_class(
                rows, replace(sel, eps=eps), "adv_acc", imbalance=imbalance, source=source
            )
            if cells:
                curves.setdefault(label, []).append(
                    (eps, float(np.mean([s.mean for s in cells.values()])))
                )
    return curves
