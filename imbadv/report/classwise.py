"""Report, class-wise: per-class clean and robust recall of every model setting, from a simple structure.

`Unit` is what the statistics read: one model setting (group) and seed, with per class the clean
and attacked confusion rows of that class's test images. `units_from_rows` builds it from the
results (class c's rows come from the job that targeted class c, or from the per-class confusion
rows of a job that attacked every class's images, `attack.images=all`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from imbadv.report.loading import Selection, pick
from imbadv.report.stats import Stat, dafa_rho, summarize, wilson


@dataclass(frozen=True)
class ClassEval:
    """One class's test images: where they went clean and under attack (confusion rows, counts)."""

    n: int
    clean_row: tuple[int, ...]
    adv_row: tuple[int, ...]
    learned: bool = True  # False: its model (or the images' source) never learned


@dataclass
class Unit:
    """One model setting and seed under one attack: per-class evaluations, the training counts."""

    group: str
    seed: int
    train_counts: tuple[int, ...] | None  # None when classes come from differently trained models
    classes: dict[int, ClassEval] = field(default_factory=dict)
    profile: str = ""  # the group's parts, for findings that pair settings
    objective: str = "ce"
    adversarial: str = "none"
    recipe: str = ""  # "" = the paper's (Keras RMSprop, Keras decay, no augmentation)


def units_from_rows(
    rows: list[dict[str, Any]],
    sel: Selection,
    source: str = "same",
    counts: dict[tuple[str, int, int], tuple[int, ...]] | None = None,
) -> list[Unit]:
    """Units from attack rows (with `group`); `counts[(group, seed, class)]` the job's train counts."""
    units: dict[tuple[str, int], Unit] = {}
    for r in pick(rows, sel, source=source):
        key, cls = (r["group"], int(r["seed"])), int(r["class"])
        unit = units.setdefault(
            key,
            Unit(
                key[0],
                key[1],
                None,
                profile=r.get("profile", r["imbalance"]),
                objective=r.get("objective", "ce"),
                adversarial=r.get("adversarial", "none"),
                recipe=r.get("recipe", ""),
            ),
        )
        learned = bool(r.get("learned", True))
        unit.classes[cls] = ClassEval(
            int(r["n"]), tuple(r["clean_row"]), tuple(r["adv_row"]), learned
        )
        for c, evaluation in every_class(r, learned).items():  # attack.images=all
            unit.classes.setdefault(c, evaluation)
    for unit in units.values():
        # A job attacking every class's images (attack.images=all) records its model's counts
        # under its own class only: classes without a record say nothing against it.
        found = {(counts or {}).get((unit.group, unit.seed, c)) for c in unit.classes} - {None}
        unit.train_counts = found.pop() if len(found) == 1 else None
    return sorted(units.values(), key=lambda u: (u.group, u.seed))


def every_class(row: dict[str, Any], learned: bool) -> dict[int, ClassEval]:
    """A row of a job that attacked every class's images (`attack.images=all`): each class's
    clean and attacked confusion rows; {} for a row of the target class's images only."""
    every = row.get("classes")
    if not every:
        return {}
    return {
        int(c["class"]): ClassEval(
            int(c["n"]),
            tuple(every["clean_confusion"][int(c["class"])]),
            tuple(every["adv_confusion"][int(c["class"])]),
            learned,
        )
        for c in every["per_class"]
    }


def train_counts(
    results: list[dict[str, Any]], group_of: Any
) -> dict[tuple[str, int, int], tuple[int, ...]]:
    """(group, seed, class) -> the attacked model's training counts, from each job's model record."""
    return {
        (group_of(r), int(r["meta"]["seed"]), int(r["meta"]["class"])): tuple(
            r["models"]["target"]["train_counts"]
        )
        for r in results
    }


def recalls(unit: Unit) -> tuple[dict[int, float], dict[int, float]]:
    """Per class: clean recall and robust recall (accuracy on the attacked images)."""
    clean = {c: e.clean_row[c] / e.n for c, e in unit.classes.items()}
    robust = {c: e.adv_row[c] / e.n for c, e in unit.classes.items()}
    return clean, robust


def long_tailed(counts: tuple[int, ...] | None) -> bool:
    """Training counts with at least three distinct values (exp profiles); two-level ones are not."""
    return counts is not None and len(set(counts)) >= 3


def thirds(counts: tuple[int, ...]) -> dict[str, list[int]]:
    """Head, middle and tail classes by training count (ties by index); 10 classes split 3/4/3."""
    order = sorted(range(len(counts)), key=lambda c: (-counts[c], c))
    k = len(order) // 3
    return {"head": order[:k], "middle": order[k : len(order) - k], "tail": order[len(order) - k :]}


@dataclass(frozen=True)
class Summary:
    """A model setting's class-wise numbers over its seeds (each a Stat over seeds)."""

    group: str
    seeds: list[int]
    classes: list[int]
    clean: dict[int, Stat]
    robust: dict[int, Stat]
    balanced_acc: Stat
    balanced_rob: Stat
    worst: Stat  # each seed's worst-class robust recall
    worst_class: int  # the class with the lowest mean robust recall
    sd_clean_err: Stat  # sd over classes of 1 - recall (population sd), per seed
    sd_rob_err: Stat
    parts: dict[str, tuple[Stat, Stat]]  # head/middle/tail: (clean, robust) when long-tailed
    flows: dict[int, list[tuple[int, float]]]  # per class: largest gains of adv - clean share


def _class_stat(units: list[Unit], cls: int, which: str) -> Stat:
    values, cis = [], []
    for u in units:
        if cls in u.classes:
            e = u.classes[cls]
            k = (e.clean_row if which == "clean" else e.adv_row)[cls]
            values.append(k / e.n)
            cis.append(wilson(k, e.n))
    return summarize(values, cis)


def summarize_group(units: list[Unit], top: int = 2) -> Summary:
    """Class-wise summary of one group's units (one per seed)."""
    classes = sorted({c for u in units for c in u.classes})
    per_seed = [recalls(u) for u in units]

    def over_seeds(fn: Any) -> Stat:
        return summarize([fn(clean, robust) for clean, robust in per_seed])

    robust = {c: _class_stat(units, c, "adv") for c in classes}
    counts = (
        units[0].train_counts
        if all(u.train_counts == units[0].train_counts for u in units)
        else None
    )
    parts = {}
    if long_tailed(counts):
        for name, members in thirds(counts).items():
            parts[name] = tuple(
                over_seeds(
                    lambda cl, ro, m=members, d=d: np.mean([d(cl, ro)[c] for c in m if c in cl])
                )
                for d in (lambda cl, ro: cl, lambda cl, ro: ro)
            )
    return Summary(
        units[0].group,
        [u.seed for u in units],
        classes,
        {c: _class_stat(units, c, "clean") for c in classes},
        robust,
        over_seeds(lambda cl, ro: np.mean(list(cl.values()))),
        over_seeds(lambda cl, ro: np.mean(list(ro.values()))),
        over_seeds(lambda cl, ro: min(ro.values())),
        min(classes, key=lambda c: robust[c].mean),
        over_seeds(lambda cl, ro: np.std([1 - v for v in cl.values()])),
        over_seeds(lambda cl, ro: np.std([1 - v for v in ro.values()])),
        parts,
        confusion_flows(units, top),
    )


def confusion_change(units: list[Unit]) -> dict[int, np.ndarray]:
    """Per class: (attacked - clean) share of its test images predicted as each class, over seeds."""
    out = {}
    for c in sorted({c for u in units for c in u.classes}):
        evs = [u.classes[c] for u in units if c in u.classes]
        n = sum(e.n for e in evs)
        out[c] = (
            np.sum([e.adv_row for e in evs], axis=0) - np.sum([e.clean_row for e in evs], axis=0)
        ) / n
    return out


def confusion_flows(units: list[Unit], top: int = 2) -> dict[int, list[tuple[int, float]]]:
    """Per class, the `top` other classes that gain most of its images under attack (cat -> dog)."""
    flows = {}
    for c, delta in confusion_change(units).items():
        others = [(j, float(v)) for j, v in enumerate(delta) if j != c and v > 0]
        flows[c] = sorted(others, key=lambda jv: -jv[1])[:top]
    return flows


def summaries(units: list[Unit]) -> dict[str, Summary]:
    """Every group's summary, in the order paper profiles first, then the rest by name."""
    groups: dict[str, list[Unit]] = {}
    for u in units:
        groups.setdefault(u.group, []).append(u)
    order = sorted(
        groups,
        key=lambda g: (
            g not in ("balanced", "under", "over"),
            ("balanced", "under", "over").index(g) if g in ("balanced", "under", "over") else 0,
            g,
        ),
    )
    return {g: summarize_group(groups[g]) for g in order}


def rho_against(base: Summary, other: Summary) -> float:
    """DAFA's rho of `other` against the baseline, on mean balanced robustness and worst class."""
    if base.worst.mean <= 0 or base.balanced_rob.mean <= 0 or base.classes != other.classes:
        return math.nan  # a baseline with a zero worst class (or other classes) has no ratio
    return dafa_rho(
        base.balanced_rob.mean, base.worst.mean, other.balanced_rob.mean, other.worst.mean
    )
