"""Report, the paper's view: Table 1 next to Possas & Zhou's, and their findings checked."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from imbadv.report.loading import (
    BELOW,
    CIFAR10_CLASSES,
    NOT_LEARNED,
    Floor,
    ReportError,
    Selection,
    pick,
)
from imbadv.report.stats import INCONCLUSIVE, Finding, compare, keyed, not_tested, summarize

PAPER_CLASSES = CIFAR10_CLASSES
DEFAULT_FLOOR = Floor()
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


def table1(
    rows: list[dict[str, Any]], sel: Selection, names: list[str], floor: Floor = DEFAULT_FLOOR
) -> list[dict[str, Any]]:
    """Table 1 as one record per (class, column): our adversarial accuracy, the paper's, the gap.

    `degenerate` counts the seeds whose cell is below the floor (flagged, left out of findings)."""
    out = []
    for cls, name in enumerate(names):
        for key, _, imbalance, source in COLUMNS:
            cell = pick(rows, sel, **{"class": cls, "imbalance": imbalance, "source": source})
            stat = summarize([r["adv_acc"] for r in cell], [tuple(r["adv_acc_ci95"]) for r in cell])
            paper = PAPER_TABLE1[key][cls] / 100 if cls < 10 else math.nan
            out.append(
                {
                    "class": cls,
                    "class_name": name,
                    "column": key,
                    "imbalance": imbalance,
                    "source": source,
                    "method": sel.method,
                    "eps": sel.eps,
                    "seeds": " ".join(str(s) for s in sorted({r["seed"] for r in cell})),
                    "n_seeds": stat.n if stat else 0,
                    "mean": stat.mean if stat else math.nan,
                    "sd": stat.sd if stat else math.nan,
                    "ci_lo": stat.lo if stat else math.nan,
                    "ci_hi": stat.hi if stat else math.nan,
                    "paper": paper,
                    "diff": (stat.mean - paper) if stat else math.nan,
                    "degenerate": sum(floor.degenerate(r) for r in cell),
                    "not_learned": sum(not r.get("learned", True) for r in cell),
                }
            )
    return out


def left_out_note(reasons: list[str], what: str) -> str:
    """`(3 <what> left out: a cell below the floor) (1 ... : a model that never learned)`."""
    return " ".join(
        f"({reasons.count(why)} {what} left out: {why})"
        for why in (BELOW, NOT_LEARNED)
        if why in reasons
    )


def all_left_out(reasons: list[str], what: str, unit: str) -> str:
    """The evidence of a finding whose every pair was left out."""
    whys = "; ".join(why for why in (BELOW, NOT_LEARNED) if why in reasons)
    return f"{what}: all {len(reasons)} {unit} left out ({whys}): nothing left to test"


def paired_cells(
    rows: list[dict[str, Any]], sel: Selection, metric: str, floor: Floor, **match: Any
) -> tuple[dict[tuple[int, int], float], dict[tuple[int, int], str]]:
    """`metric` per (seed, class) for the matching rows findings may use, and why the others go
    (below the floor, or a model that never learned)."""
    kept, dropped = {}, {}
    for r in pick(rows, sel, **match):
        key = (int(r["seed"]), int(r["class"]))
        if why := floor.why_out(r):
            dropped[key] = why
        else:
            kept[key] = float(r[metric])
    return kept, dropped


def floored(claim: str, what: str, a: tuple, b: tuple, labels: tuple[str, str]) -> Finding:
    """compare() on two paired_cells() results; pairs with a left-out cell on either side go."""
    (va, da), (vb, db) = a, b
    gone = (set(va) | set(da)) & (set(vb) | set(db)) & (set(da) | set(db))
    # a pair is out for the model that never learned first, else for the floor
    reasons = [NOT_LEARNED if NOT_LEARNED in (da.get(k), db.get(k)) else BELOW for k in gone]
    if gone and not set(va) & set(vb) - gone:
        return Finding(claim, INCONCLUSIVE, all_left_out(reasons, what, "(seed, class) pair(s)"))
    note = left_out_note(reasons, "(seed, class) pair(s)")
    return compare(
        claim,
        what,
        {k: v for k, v in va.items() if k not in gone},
        {k: v for k, v in vb.items() if k not in gone},
        labels,
        left_out=note,
    )


# Sec. 4.1: (claim, the model expected to lose more to its own attack, the one expected to lose less)
VULNERABILITY = (
    (
        "Under-sampled models are more vulnerable than the balanced model (Sec. 4.1, Fig. 5)",
        "under",
        "balanced",
    ),
    (
        "Over-sampled models are less vulnerable than the balanced model (Sec. 4.1)",
        "balanced",
        "over",
    ),
    ("Over-sampled models are less vulnerable than under-sampled ones (Sec. 4.1)", "under", "over"),
)


def findings(
    rows: list[dict[str, Any]], sel: Selection, names: list[str], floor: Floor = DEFAULT_FLOOR
) -> list[Finding]:
    """The paper's claims (Sec. 4.1-4.3), each tested on (seed, class) pairs above the floor."""
    found = [
        *vulnerability_findings(rows, sel, floor),
        *transfer_findings(rows, sel, floor),
        *(pair_finding(rows, sel, names, a, b, floor) for a, b in PAIRS),
        *(pair_finding(rows, sel, names, a, b, floor, ("balanced",)) for a, b in PAIRS),
    ]
    pairs = [f"pair_{a}_{b}" for a, b in PAIRS]
    return keyed(found, [*PAPER_KEYS, *pairs, *(f"{k}_balanced" for k in pairs)])


PAIRS = ((3, 5), (1, 9))  # Sec. 4.3: cat/dog and automobile/truck on CIFAR-10
PAPER_KEYS = (
    "under_vs_balanced",
    "over_vs_balanced",
    "over_vs_under",
    "transfer_under",
    "transfer_over",
)


def vulnerability_findings(
    rows: list[dict[str, Any]], sel: Selection, floor: Floor
) -> list[Finding]:
    """Sec. 4.1: relative drops under the same-model attack, model against model."""
    drop = {
        m: paired_cells(rows, sel, "relative_drop", floor, imbalance=m, source="same")
        for m in ("balanced", "under", "over")
    }
    what = "relative drop (same-model attack)"
    return [floored(claim, what, drop[a], drop[b], (a, b)) for claim, a, b in VULNERABILITY]


def transfer_findings(rows: list[dict[str, Any]], sel: Selection, floor: Floor) -> list[Finding]:
    """Sec. 4.2: the balanced model's gradient against each imbalanced model's own."""
    out = []
    for m in ("under", "over"):
        acc = {
            src: paired_cells(rows, sel, "adv_acc", floor, imbalance=m, source=src)
            for src in ("same", "balanced")
        }
        out.append(
            floored(
                f"Transfer (balanced model's gradient) is weaker than the {m}-sampled model's own (Sec. 4.2)",
                f"adversarial accuracy, {m}-sampled model",
                acc["balanced"],
                acc["same"],
                ("transfer", "same-model"),
            )
        )
    return out


def pair_finding(
    rows: list[dict[str, Any]],
    sel: Selection,
    names: list[str],
    a: int,
    b: int,
    floor: Floor = DEFAULT_FLOOR,
    models: tuple[str, ...] = ("balanced", "under", "over"),
) -> Finding:
    """Sec. 4.3: of the images the attack takes from one class of a pair, does the other get more
    than the other destinations? (Before vs after would be confirmed by any successful attack.)
    Pooled over `models` with equal weight per cell, or on the balanced model alone (the model
    the paper's Figs. 1 and 6 show)."""
    na, nb = (names[c] if c < len(names) else f"class {c}" for c in (a, b))
    alone = " on the balanced model alone" if models == ("balanced",) else ""
    claim = (
        f"{na} and {nb} receive more of each other's lost images than the other "
        f"classes do{alone} (Sec. 4.3, Figs. 1 and 6)"
    )
    if max(a, b) >= len(names):
        return not_tested(claim, "the data set has fewer classes")
    named, others, gone, none_lost = {}, {}, [], 0
    for src, dst in ((a, b), (b, a)):
        for m in models:
            for r in pick(rows, sel, **{"class": src, "imbalance": m, "source": "same"}):
                shares, why = lost_shares(r["clean_row"], r["adv_row"], src), floor.why_out(r)
                if why or shares is None:
                    gone, none_lost = gone + [why] * bool(why), none_lost + (shares is None)
                    continue
                key = (int(r["seed"]), m, src)
                rest = [v for j, v in enumerate(shares) if j not in (src, dst)]
                named[key], others[key] = shares[dst], float(np.mean(rest))
    note = left_out_note(gone, "cell(s)")
    note += f" ({none_lost} cell(s) left out: no image lost)" if none_lost else ""
    if not named and (gone or none_lost):  # measured, but nothing usable: tested, no answer
        return Finding(
            claim, INCONCLUSIVE, f"every cell left out {note.strip()}: nothing left to test"
        )
    return compare(
        claim,
        f"share of the lost {names[a]} images sent to {names[b]} and back, same-model attack",
        named,
        others,
        (f"to {names[b]}/{names[a]}", "mean of the other destinations"),
        unit="(seed, model, class) cases",
        left_out=note.strip(),
        parts="(model, class) cases",
    )


def lost_shares(clean: list[int], adv: list[int], src: int) -> list[float] | None:
    """Per destination, its share of the class's net loss under attack; None when none was lost.

    Net flows: an image that left j for k counts against j, so shares over j != src sum to 1."""
    lost = clean[src] - adv[src]
    if lost <= 0:
        return None
    return [(adv[j] - clean[j]) / lost if j != src else 0.0 for j in range(len(clean))]


def parse_pair(text: str | None, names: list[str]) -> tuple[int, int]:
    """Fig. 6's class pair from names or indices; by default cat/dog, else classes 3 and 5."""
    if text is None:
        if "cat" in names and "dog" in names:
            return names.index("cat"), names.index("dog")
        return (3, 5) if len(names) > 5 else (0, 1)
    parts = [p.strip() for p in text.split(",")]
    found = [
        names.index(p) if p in names else int(p) if p.isdigit() and int(p) < len(names) else None
        for p in parts
    ]
    if len(found) != 2 or None in found or found[0] == found[1]:
        raise ReportError(
            f"--pair {text}: expected two different classes (names or 0..{len(names) - 1})"
        )
    return found[0], found[1]
