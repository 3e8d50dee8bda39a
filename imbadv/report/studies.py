"""Report, findings beyond Table 1: imbalance or size (`matched`), head vs tail, balanced softmax in AT.

Each is a function over attack rows or class-wise units filtered by their setting (profile,
objective, adversarial); a sweep without such runs gets "not tested", never a verdict. Keys put
the seed first: the seed is the unit of replication (stats.clustered).
"""

from __future__ import annotations

from typing import Any

from imbadv.report.classwise import Unit, long_tailed, thirds
from imbadv.report.loading import BELOW, NOT_LEARNED, Floor, Selection
from imbadv.report.paper import DEFAULT_FLOOR, all_left_out, floored, left_out_note, paired_cells
from imbadv.report.stats import INCONCLUSIVE, Finding, compare, keyed, not_tested

PLAIN = {"source": "same", "objective": "ce", "adversarial": "none"}
RUN_MATCHED = (
    "no matched control in this sweep (run `imbalance=matched imbalance.of=over` beside `over`)"
)


def _drops(rows: list[dict[str, Any]], sel: Selection, floor: Floor, **match: Any) -> tuple:
    return paired_cells(rows, sel, "relative_drop", floor, **PLAIN, **match)


def over_vs_matched(rows: list[dict[str, Any]], sel: Selection, floor: Floor) -> Finding:
    """Is the over-sampled model's lower vulnerability imbalance, or only its smaller data set?"""
    claim = (
        "The over-sampled model is less vulnerable than its same-size balanced control "
        "(`matched`, of=over): imbalance, beyond data size"
    )
    matched = _drops(rows, sel, floor, imbalance="matched", of="over")
    if not (matched[0] or matched[1]):
        return not_tested(claim, RUN_MATCHED)
    over = _drops(rows, sel, floor, imbalance="over")
    return floored(claim, "relative drop (same-model attack)", matched, over, ("matched", "over"))


def matched_vs_balanced(rows: list[dict[str, Any]], sel: Selection, floor: Floor) -> Finding:
    """The size effect: the same-size control (`matched`) against the full balanced model."""
    claim = (
        "The smaller training set alone lowers vulnerability: the same-size balanced control "
        "(`matched`, of=over) is less vulnerable than the balanced model (size effect)"
    )
    matched = _drops(rows, sel, floor, imbalance="matched", of="over")
    if not (matched[0] or matched[1]):
        return not_tested(claim, RUN_MATCHED)
    balanced = _drops(rows, sel, floor, imbalance="balanced")
    return floored(
        claim, "relative drop (same-model attack)", balanced, matched, ("balanced", "matched")
    )


def _why_out(unit: Unit, cls: int, floor: Floor) -> str | None:
    """Why the class is left out in this unit (its model never learned, or below the floor)."""
    e = unit.classes[cls]
    if not e.learned:
        return NOT_LEARNED
    return BELOW if floor.below(e.clean_row[cls], e.n) else None


def _robust(unit: Unit, cls: int) -> float:
    e = unit.classes[cls]
    return e.adv_row[cls] / e.n


def head_vs_tail(units: list[Unit], adversarial: bool, floor: Floor = DEFAULT_FLOOR) -> Finding:
    """Long-tail studies: head classes keep more robust recall than tail classes (k-th vs k-th)."""
    kind = "adversarial" if adversarial else "standard"
    claim = f"Head classes are more robust than tail classes under {kind} training (long-tailed profiles)"
    head, tail, gone = {}, {}, []
    for u in units:
        if (u.adversarial != "none") != adversarial or not long_tailed(u.train_counts):
            continue
        parts = thirds(u.train_counts)
        for k, (h, t) in enumerate(zip(parts["head"], reversed(parts["tail"]), strict=True)):
            if h not in u.classes or t not in u.classes:
                continue
            if why := _why_out(u, h, floor) or _why_out(u, t, floor):
                gone.append(why)
                continue
            # the k-th most frequent vs the k-th least frequent class of one model
            head[(u.seed, u.group, k)], tail[(u.seed, u.group, k)] = _robust(u, h), _robust(u, t)
    if not head and not gone:
        return not_tested(claim, f"no long-tailed profile with {kind} training")
    if not head:
        return Finding(claim, INCONCLUSIVE, all_left_out(gone, "robust recall", "pair(s)"))
    return compare(
        claim,
        "robust recall",
        head,
        tail,
        ("head", "tail"),
        unit="(seed, setting, rank) pairs",
        left_out=left_out_note(gone, "(seed, setting, rank) pair(s)"),
        parts="(setting, rank) pairs",
    )


def bsl_vs_ce(units: list[Unit], floor: Floor = DEFAULT_FLOOR) -> Finding:
    """AT-BSL: balanced softmax raises robust recall over cross-entropy in adversarial training."""
    claim = "Balanced softmax gives higher robust recall than cross-entropy inside adversarial training (AT-BSL)"
    bsl, ce, gone = {}, {}, []
    twins = {(u.profile, u.adversarial, u.seed): u for u in units if u.objective == "ce"}
    for u in units:
        base = twins.get((u.profile, u.adversarial, u.seed))
        if u.objective != "balanced_softmax" or u.adversarial == "none" or base is None:
            continue
        for c in sorted(set(u.classes) & set(base.classes)):  # same seed, same class: the pair
            if why := _why_out(u, c, floor) or _why_out(base, c, floor):
                gone.append(why)
                continue
            bsl[(u.seed, u.group, c)], ce[(u.seed, u.group, c)] = _robust(u, c), _robust(base, c)
    if not bsl and not gone:
        return not_tested(
            claim, "no balanced softmax run with its cross-entropy twin under adversarial training"
        )
    if not bsl:
        return Finding(claim, INCONCLUSIVE, all_left_out(gone, "robust recall", "pair(s)"))
    return compare(
        claim,
        "robust recall",
        bsl,
        ce,
        ("balanced softmax", "cross-entropy"),
        unit="(seed, setting, class) pairs",
        left_out=left_out_note(gone, "(seed, setting, class) pair(s)"),
        parts="(setting, class) pairs",
    )


def study_findings(
    rows: list[dict[str, Any]], sel: Selection, units: list[Unit], floor: Floor
) -> list[Finding]:
    """The findings that need controls or studies beyond the paper's three profiles."""
    found = [
        over_vs_matched(rows, sel, floor),
        matched_vs_balanced(rows, sel, floor),
        head_vs_tail(units, False, floor),
        head_vs_tail(units, True, floor),
        bsl_vs_ce(units, floor),
    ]
    return keyed(found, list(STUDY_KEYS))


STUDY_KEYS = (
    "over_vs_matched",
    "matched_vs_balanced",
    "head_tail_standard",
    "head_tail_adversarial",
    "bsl_vs_ce",
)
