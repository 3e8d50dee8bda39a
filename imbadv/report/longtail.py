"""Report, long-tail contrasts: per-seed balanced and tail recall, settings compared seed by seed.

Each setting is keyed by the whole setting (profile, objective, adversarial training, recipe),
paired by seed value and read from the selected attack's rows.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from imbadv.report.classwise import Unit, long_tailed, recalls, thirds
from imbadv.report.stats import Stat, pct, summarize

Block = tuple
# what a treatment is compared against: standard training, cross-entropy, the paper's recipe
BASE = {"adversarial": "none", "objective": "ce", "recipe": ""}


@dataclass(frozen=True)
class Contrast:
    """One metric's difference (a - b) over seeds: within a setting (head - tail) or between two."""

    a: str
    b: str
    metric: str
    seeds: tuple[int, ...]
    stat: Stat


def seed_metrics(unit: Unit) -> dict[str, float]:
    """A model's class-wise numbers: balanced clean/robust recall, and head/tail when long-tailed."""
    clean, robust = recalls(unit)
    out = {"balanced clean": np.mean(list(clean.values()))}
    out["balanced robust"] = np.mean(list(robust.values()))
    if long_tailed(unit.train_counts):
        parts = thirds(unit.train_counts)
        for part in ("head", "tail"):
            for name, rec in (("clean", clean), ("robust", robust)):
                out[f"{part} {name}"] = np.mean([rec[c] for c in parts[part]])
    return {k: float(v) for k, v in out.items()}


def _complete(units: list[Unit]) -> dict[str, dict[int, dict[str, float]]]:
    """group -> seed -> metrics, for models with one training set and every class measured
    (balanced and tail recall are means over all classes: a sweep of some classes has none)."""
    out: dict[str, dict[int, dict[str, float]]] = {}
    for u in units:
        learned = all(e.learned for e in u.classes.values())  # never-learned models: left out
        if learned and u.train_counts is not None and len(u.classes) == len(u.train_counts):
            out.setdefault(u.group, {})[u.seed] = seed_metrics(u)
    return out


def _stat(a: str, b: str, metric: str, diffs: dict[int, float]) -> Contrast:
    seeds = tuple(sorted(diffs))
    return Contrast(a, b, metric, seeds, summarize([diffs[s] for s in seeds]))


def _pairs(units: list[Unit]) -> list[tuple[str, str]]:
    """(treatment, base) groups: same profile, one factor changed from its base value."""
    kinds = {u.group: (u.profile, u.objective, u.adversarial, u.recipe) for u in units}
    out = []
    for a, (pa, oa, aa, ra) in sorted(kinds.items()):
        for b, (pb, ob, ab, rb) in sorted(kinds.items()):
            adv = oa == ob and ra == rb and ab == BASE["adversarial"] != aa
            # a long-tail defense against PGD-AT (the field's baseline), recipe and loss alike
            defense = oa == ob and ra == rb and ab == "pgd_at" and aa not in ("none", "pgd_at")
            obj = aa == ab and ra == rb and ob == BASE["objective"] != oa
            recipe = oa == ob and aa == ab and rb == BASE["recipe"] != ra
            if pa == pb and (adv or defense or obj or recipe):
                out.append((a, b))
    return out


def contrasts(units: list[Unit]) -> list[Contrast]:
    """Head - tail within each long-tailed setting, then treatment - base per metric, by seed."""
    data, out = _complete(units), []
    for g, per_seed in sorted(data.items()):
        for name in ("clean", "robust"):
            if all(f"head {name}" in m for m in per_seed.values()):
                diffs = {s: m[f"head {name}"] - m[f"tail {name}"] for s, m in per_seed.items()}
                out.append(_stat(g, g, f"head - tail {name}", diffs))
    for a, b in _pairs(units):
        if a not in data or b not in data:
            continue
        common = sorted(set(data[a]) & set(data[b]))  # paired by seed value, never by position
        for metric in data[a][common[0]] if common else ():
            if all(metric in data[b][s] for s in common):
                out.append(
                    _stat(
                        a, b, metric, {s: data[a][s][metric] - data[b][s][metric] for s in common}
                    )
                )
    return out


def contrast_blocks(found: list[Contrast]) -> list[Block]:
    """The contrasts as one table; nothing when the sweep has no long-tailed or paired settings."""
    if not found:
        return []
    rows = [
        [
            c.a if c.a == c.b else f"{c.a} minus {c.b}",
            c.metric,
            " ".join(map(str, c.seeds)),
            pct(c.stat.mean, True),
            "—" if c.stat.n < 2 else f"[{pct(c.stat.lo, True)}, {pct(c.stat.hi, True)}]",
        ]
        for c in found
    ]
    text = (
        "Per seed, each model's balanced recall (mean over classes) and its head and tail thirds "
        "by training count; a setting against its base (no adversarial training, cross-entropy, "
        "the paper's recipe; a long-tail defense against PGD-AT), one factor changed, same "
        "profile, paired by seed value; mean difference over seeds (points) with a "
        "t-interval over seeds (95 %). Models that never learned are left out (their seeds are "
        "missing from the seeds column). Descriptive: not among the Holm-adjusted findings, "
        "no correction. A difference in balanced robust recall is between numbers whose floor is "
        "a constant predictor's 1/K (10 % on 10 classes): a gain that ends near it is a model "
        "that keeps one or two classes, not a robust one (the class-wise tables have the levels)."
    )
    head = ["setting", "metric", "seeds", "difference", "95 % interval"]
    return [("h", 2, "Long-tail contrasts, paired by seed"), ("p", text), ("table", head, rows)]
