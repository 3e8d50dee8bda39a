"""Report, the paper's view: Table 1 next to Possas & Zhou's, and their findings checked."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from imbadv.report.stats import Finding, compare, summarize
from imbadv.report.sweep import CIFAR10_CLASSES, ReportError, Selection, per_class, pick

PAPER_CLASSES = CIFAR10_CLASSES
# Possas & Zhou, Table 1: adversarial accuracy of the target class (%), FGSM, eps 0.01, CIFAR-10.

PAPER_TABLE1 = {
    "diff_under": (60, 64, 38, 21, 58, 47, 76, 59, 69, 46),
    "diff_over": (87, 91, 73, 72, 80, 76, 88, 88, 89, 87),
    "same_balanced": (36, 23, 20, 11, 20, 15, 27, 20, 37, 49),
    "same_under": (19, 16, 9.4, 0.5, 9.8, 9, 20, 18, 19, 21),
    "same_over": (61, 63, 27, 19, 20, 38, 49, 52, 59, 54),
}


# (key, heading, imbalance of the attacked model, whose gradient makes the images)
COLUMNS = (
    ("diff_under", "Different model: under", "under", "balanced"),
    ("diff_over", "Different model: over", "over", "balanced"),
    ("same_balanced", "Same model: balanced", "balanced", "same"),
    ("same_under", "Same model: under", "under", "same"),
    ("same_over", "Same model: over", "over", "same"),
)


def table1(rows: list[dict[str, Any]], sel: Selection, names: list[str]) -> list[dict[str, Any]]:
    """Table 1 as one record per (class, column): our adversarial accuracy, the paper's, the gap."""
    out = []
    for cls, name in enumerate(names):
        for key, _, imbalance, source in COLUMNS:
            cell = pick(rows, sel, **{"class": cls, "imbalance": imbalance, "source": source})
            stat = summarize([r["adv_acc"] for r in cell], [tuple(r["adv_acc_ci95"]) for r in cell])
            paper = PAPER_TABLE1[key][cls] / 100 if cls < 10 else math.nan
            out.append({"class": cls, "class_name": name, "column": key, "imbalance": imbalance,
                        "source": source, "method": sel.method, "eps": sel.eps,
                        "seeds": " ".join(str(s) for s in sorted({r["seed"] for r in cell})),
                        "n_seeds": stat.n if stat else 0, "mean": stat.mean if stat else math.nan,
                        "sd": stat.sd if stat else math.nan, "ci_lo": stat.lo if stat else math.nan,
                        "ci_hi": stat.hi if stat else math.nan, "paper": paper,
                        "diff": (stat.mean - paper) if stat else math.nan})  # fmt: skip
    return out


def findings(rows: list[dict[str, Any]], sel: Selection, names: list[str]) -> list[Finding]:
    """The paper's claims (Sec. 4.1-4.3), each checked against the sweep's numbers."""
    drop = {m: {c: s.mean for c, s in per_class(rows, sel, "relative_drop", imbalance=m, source="same").items()}
            for m in ("balanced", "under", "over")}  # fmt: skip
    acc = {(m, src): {c: s.mean for c, s in per_class(rows, sel, "adv_acc", imbalance=m, source=src).items()}
           for m in ("under", "over") for src in ("same", "balanced")}  # fmt: skip
    what = "relative drop (same-model attack)"
    out = [
        compare("Under-sampled models are more vulnerable than the balanced model (Sec. 4.1, Fig. 5)",
                what, drop["under"], drop["balanced"], ("under", "balanced")),
        compare("Over-sampled models are less vulnerable than the balanced model (Sec. 4.1)",
                what, drop["balanced"], drop["over"], ("balanced", "over")),
        compare("Over-sampled models are less vulnerable than under-sampled ones (Sec. 4.1)",
                what, drop["under"], drop["over"], ("under", "over")),
    ]  # fmt: skip
    for m in ("under", "over"):
        out.append(compare(f"Transfer (balanced model's gradient) is weaker than the {m}-sampled model's own (Sec. 4.2)",
                           f"adversarial accuracy, {m}-sampled model", acc[(m, "balanced")], acc[(m, "same")],
                           ("transfer", "same-model")))  # fmt: skip
    for a, b in ((3, 5), (1, 9)):
        out.append(pair_finding(rows, sel, names, a, b))
    return out


def pair_finding(
    rows: list[dict[str, Any]], sel: Selection, names: list[str], a: int, b: int
) -> Finding:
    """Sec. 4.3: does the attack send more of each class of a pair into the other?"""
    claim = f"{names[a]}/{names[b]} confusion grows under attack (Sec. 4.3, Figs. 1 and 6)"
    if max(a, b) >= len(names):
        return Finding(claim, "not enough data", "the data set has fewer classes")
    clean, adv = {}, {}
    for src, dst in ((a, b), (b, a)):
        for m in ("balanced", "under", "over"):
            cell = pick(rows, sel, **{"class": src, "imbalance": m, "source": "same"})
            if cell:
                clean[(m, src)] = np.mean([r["clean_row"][dst] / r["n"] for r in cell])
                adv[(m, src)] = np.mean([r["adv_row"][dst] / r["n"] for r in cell])
    return compare(claim, f"share of {names[a]} sent to {names[b]} and back, same-model attack",
                   adv, clean, ("attacked", "clean"), unit="(model, class) cases")  # fmt: skip


def parse_pair(text: str | None, names: list[str]) -> tuple[int, int]:
    """Fig. 6's class pair from names or indices; by default cat/dog, else classes 3 and 5."""
    if text is None:
        if "cat" in names and "dog" in names:
            return names.index("cat"), names.index("dog")
        return (3, 5) if len(names) > 5 else (0, 1)
    parts = [p.strip() for p in text.split(",")]
    found = [names.index(p) if p in names else int(p) if p.isdigit() and int(p) < len(names) else None
             for p in parts]  # fmt: skip
    if len(found) != 2 or None in found or found[0] == found[1]:
        raise ReportError(
            f"--pair {text}: expected two different classes (names or 0..{len(names) - 1})"
        )
    return found[0], found[1]
