"""Report, findings beyond Table 1: imbalance or size (`matched`), head vs tail, balanced softmax in AT.

Each is a function over attack rows filtered by their setting (profile, objective, adversarial);
when a sweep has no such rows it says "not in this sweep" rather than guessing.
"""

from __future__ import annotations

from typing import Any

from imbadv.report.classwise import Unit, long_tailed, recalls, thirds
from imbadv.report.paper import floored, paired_cells
from imbadv.report.stats import INCONCLUSIVE, Finding, compare
from imbadv.report.sweep import Floor, Selection


def over_vs_matched(rows: list[dict[str, Any]], sel: Selection, floor: Floor) -> Finding:
    """Is the over-sampled model's lower vulnerability imbalance, or only its smaller data set?"""
    claim = (
        "The over-sampled model is less vulnerable than its same-size balanced control "
        "(`matched`, of=over): imbalance, not data size"
    )
    over = paired_cells(
        rows,
        sel,
        "relative_drop",
        floor,
        imbalance="over",
        source="same",
        objective="ce",
        adversarial="none",
    )
    matched = paired_cells(
        rows,
        sel,
        "relative_drop",
        floor,
        imbalance="matched",
        of="over",
        source="same",
        objective="ce",
        adversarial="none",
    )
    if not (matched[0] or matched[1]):
        return Finding(
            claim,
            INCONCLUSIVE,
            "no matched control in this sweep "
            "(run `imbalance=matched imbalance.of=over` beside `over`)",
        )
    return floored(claim, "relative drop (same-model attack)", matched, over, ("matched", "over"))


def head_vs_tail(units: list[Unit], adversarial: bool) -> Finding:
    """Long-tail studies: head classes keep more robust recall than tail classes (k-th vs k-th)."""
    kind = "adversarial" if adversarial else "standard"
    claim = f"Head classes are more robust than tail classes under {kind} training (long-tailed profiles)"
    head, tail = {}, {}
    for u in units:
        if (u.adversarial != "none") != adversarial or not long_tailed(u.train_counts):
            continue
        parts, (_, robust) = thirds(u.train_counts), recalls(u)
        for k, (h, t) in enumerate(zip(parts["head"], reversed(parts["tail"]), strict=True)):
            if h in robust and t in robust:  # k-th most frequent vs k-th least frequent class
                head[(u.group, u.seed, k)], tail[(u.group, u.seed, k)] = robust[h], robust[t]
    if not head:
        return Finding(
            claim, INCONCLUSIVE, f"not in this sweep: no long-tailed profile with {kind} training"
        )
    return compare(
        claim, "robust recall", head, tail, ("head", "tail"), unit="(setting, seed, rank) pairs"
    )


def bsl_vs_ce(units: list[Unit]) -> Finding:
    """AT-BSL: balanced softmax raises robust recall over cross-entropy in adversarial training."""
    claim = "Balanced softmax gives higher robust recall than cross-entropy inside adversarial training (AT-BSL)"
    bsl, ce = {}, {}
    twins = {(u.profile, u.adversarial, u.seed): u for u in units if u.objective == "ce"}
    for u in units:
        base = twins.get((u.profile, u.adversarial, u.seed))
        if u.objective != "balanced_softmax" or u.adversarial == "none" or base is None:
            continue
        (_, rb), (_, rc) = recalls(u), recalls(base)
        for c in set(rb) & set(rc):  # same seed, same class: the pair
            bsl[(u.group, u.seed, c)], ce[(u.group, u.seed, c)] = rb[c], rc[c]
    if not bsl:
        return Finding(
            claim,
            INCONCLUSIVE,
            "not in this sweep: no balanced softmax run with its "
            "cross-entropy twin under adversarial training",
        )
    return compare(
        claim,
        "robust recall",
        bsl,
        ce,
        ("balanced softmax", "cross-entropy"),
        unit="(setting, seed, class) pairs",
    )


def study_findings(
    rows: list[dict[str, Any]], sel: Selection, units: list[Unit], floor: Floor
) -> list[Finding]:
    """The findings rows that need controls or studies beyond the paper's three profiles."""
    return [
        over_vs_matched(rows, sel, floor),
        head_vs_tail(units, False),
        head_vs_tail(units, True),
        bsl_vs_ce(units),
    ]
