"""Report statistics: verdict boundaries, paired t-intervals, the floor, class-wise numbers, DAFA's rho."""

from __future__ import annotations

import math

import numpy as np
import pytest

from imbadv.report import classwise, paper, stats, studies
from imbadv.report.sweep import Floor, Selection

SEL = Selection("fgsm", 0.01, "ascent", (0.01,))


def test_dafa_rho_reproduces_the_published_trades_vs_dafa_figure():
    # DAFA (ICLR 2024): TRADES avg robust 49.80, worst 21.31 -> DAFA 49.05, 30.53: rho 0.418
    assert stats.dafa_rho(49.80, 21.31, 49.05, 30.53) == pytest.approx(0.418, abs=5e-4)
    assert stats.dafa_rho(49.80, 21.31, 49.80, 21.31) == 0  # the baseline against itself
    # a lower average costs, a higher worst class gains: the sign of each term matters
    assert stats.dafa_rho(50, 20, 40, 20) == pytest.approx(-0.2)
    assert stats.dafa_rho(50, 20, 50, 30) == pytest.approx(0.5)


@pytest.mark.parametrize(
    ("lo", "hi", "verdict"),
    [
        (0.001, 0.2, "confirmed"),
        (0.0, 0.2, "inconclusive"),
        (-0.1, 0.2, "inconclusive"),
        (-0.2, 0.0, "inconclusive"),
        (-0.2, -0.001, "contradicted"),
        (math.nan, math.nan, "inconclusive"),
    ],
)
def test_verdict_boundaries(lo, hi, verdict):
    assert stats.verdict(lo, hi) == verdict


def test_paired_t_interval_matches_the_formula_and_its_verdicts():
    diffs = [0.10, 0.14, 0.08, 0.12, 0.11, 0.09]
    test = stats.paired(diffs)
    mean, sd = np.mean(diffs), np.std(diffs, ddof=1)
    half = 2.571 * sd / math.sqrt(6)  # t 97.5 % with 5 degrees of freedom
    assert (test.n, test.mean, test.sd) == (6, pytest.approx(mean), pytest.approx(sd))
    assert (test.lo, test.hi) == (pytest.approx(mean - half), pytest.approx(mean + half))
    assert test.d_z == pytest.approx(mean / sd) and test.verdict == "confirmed"
    assert stats.paired([-d for d in diffs]).verdict == "contradicted"
    # a positive mean whose interval spans 0 is not a confirmation (the bug of issue 12)
    assert stats.paired([0.9, -0.7, 0.2]).verdict == "inconclusive"
    one = stats.paired([0.5])
    assert one.verdict == "inconclusive" and math.isnan(one.lo) and one.mean == 0.5


def test_compare_is_paired_by_key_not_by_position():
    # a large shared per-key offset (seed/class effect) with a constant +0.02 difference: only a
    # paired test sees it; unpaired means would drown in the spread between keys
    a = {(s, c): 0.1 * c + 0.01 * s + 0.02 for s in range(3) for c in range(5)}
    b = {(s, c): 0.1 * c + 0.01 * s + 0.001 * ((s + c) % 2) for s in range(3) for c in range(5)}
    b[(9, 9)] = 0.0  # unpaired key: ignored
    found = stats.compare("claim", "what", a, b, ("a", "b"))
    assert found.verdict == "confirmed" and "over 15 (seed, class) pairs" in found.evidence
    assert "paired t-interval" in found.evidence and "d_z" in found.evidence
    single = stats.compare("claim", "what", {(0, 0): 0.9}, {(0, 0): 0.1}, ("a", "b"))
    assert single.verdict == "inconclusive" and "1 pair: no interval" in single.evidence
    none = stats.compare("claim", "what", {}, {(0, 0): 0.1}, ("a", "b"))
    assert none.verdict == "inconclusive" and "not in this sweep" in none.evidence


def test_wilson_interval():
    lo, hi = stats.wilson(15, 30)
    assert (lo, hi) == (pytest.approx(0.3315, abs=1e-4), pytest.approx(0.6685, abs=1e-4))
    assert stats.wilson(0, 10)[0] == 0 and stats.wilson(10, 10)[1] == pytest.approx(1)
    assert all(math.isnan(v) for v in stats.wilson(0, 0))


def row(
    cls: int, seed: int, imbalance: str, drop: float, clean: float = 0.8, n: int = 100, **extra
) -> dict:
    return {
        "method": "fgsm",
        "eps": 0.01,
        "direction": "ascent",
        "source": "same",
        "class": cls,
        "seed": seed,
        "imbalance": imbalance,
        "relative_drop": drop,
        "adv_acc": clean * (1 - drop),
        "clean_acc": clean,
        "adv_acc_ci95": [0, 1],
        "n": n,
        "clean_row": [0] * 10,
        "adv_row": [0] * 10,
        **extra,
    }


def test_floor_flags_and_leaves_out_degenerate_cells():
    floor = Floor(0.05, 20)
    assert floor.degenerate(row(0, 0, "under", 1.0, clean=0.007, n=1000))  # cat at 0.7 %: 7 images
    assert floor.degenerate(row(0, 0, "under", 1.0, clean=0.5, n=30))  # 15 correct < 20
    assert not floor.degenerate(row(0, 0, "under", 1.0, clean=0.05, n=1000))  # 50 images, at 5 %
    # under looks far more vulnerable only because of degenerate cells: with them left out the
    # remaining pairs show no difference, so the verdict cannot be "confirmed"
    rows = [row(c, s, "balanced", 0.5 + 0.01 * s) for c in range(5) for s in range(3)]
    rows += [
        row(
            c,
            s,
            "under",
            1.0 if c < 2 else 0.5 + 0.01 * s + 0.005 * (-1) ** c,
            clean=0.01 if c < 2 else 0.8,
        )
        for c in range(5)
        for s in range(3)
    ]
    under = paper.findings(rows, SEL, list(paper.PAPER_CLASSES), floor)[0]
    assert under.verdict == "inconclusive" and "6 (seed, class) pair(s) left out" in under.evidence
    assert "over 9 (seed, class) pairs" in under.evidence
    kept_all = paper.findings(rows, SEL, list(paper.PAPER_CLASSES), Floor(0, 0))[0]
    assert (
        "over 15 (seed, class) pairs" in kept_all.evidence and "left out" not in kept_all.evidence
    )
    records = paper.table1(rows, SEL, list(paper.PAPER_CLASSES), floor)
    flagged = {r["class"] for r in records if r["column"] == "same_under" and r["degenerate"]}
    assert flagged == {0, 1}


def test_over_vs_matched_needs_the_control():
    rows = [
        row(c, s, "over", 0.2, objective="ce", adversarial="none", of="")
        for c in range(4)
        for s in range(2)
    ]
    absent = studies.over_vs_matched(rows, SEL, Floor(0, 0))
    assert (
        absent.verdict == "inconclusive" and "no matched control in this sweep" in absent.evidence
    )
    rows += [
        row(c, s, "matched", 0.5 + 0.01 * c, objective="ce", adversarial="none", of="over")
        for c in range(4)
        for s in range(2)
    ]
    found = studies.over_vs_matched(rows, SEL, Floor(0, 0))
    assert found.verdict == "confirmed" and "over 8 (seed, class) pairs" in found.evidence


def unit(
    group: str, seed: int, robust: list[int], counts: tuple[int, ...] | None, n: int = 100, **kw
) -> classwise.Unit:
    """A 10-class unit whose class c keeps robust[c] of n images; clean: all correct."""
    u = classwise.Unit(group, seed, counts, **kw)
    for c, k in enumerate(robust):
        clean = [0] * 10
        clean[c] = n
        adv = [0] * 10
        adv[c], adv[(c + 1) % 10] = k, n - k  # every lost image goes to the next class
        u.classes[c] = classwise.ClassEval(n, tuple(clean), tuple(adv))
    return u


LT = (5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500)  # CIFAR-10-LT, IR 10


def test_classwise_summary_thirds_flows_and_rho():
    robust = [90, 80, 70, 60, 50, 40, 30, 20, 10, 5]
    units = [
        unit("exp(ratio=10)", s, [k + s for k in robust], LT, profile="exp(ratio=10)")
        for s in range(2)
    ]
    s = classwise.summarize_group(units)
    assert s.worst_class == 9 and s.worst.mean == pytest.approx(0.055)
    assert s.balanced_acc.mean == 1 and s.balanced_rob.mean == pytest.approx(
        np.mean(robust) / 100 + 0.005
    )
    assert s.sd_rob_err.mean == pytest.approx(np.std(robust) / 100)
    assert classwise.thirds(LT) == {"head": [0, 1, 2], "middle": [3, 4, 5, 6], "tail": [7, 8, 9]}
    assert s.parts["head"][1].mean == pytest.approx(0.805) and s.parts["tail"][
        1
    ].mean == pytest.approx((35 / 3 + 0.5) / 100)
    assert s.flows[3] == [(4, pytest.approx(0.395))]  # adversarial minus clean share, over seeds
    assert not classwise.long_tailed((1000, 5000, 5000)) and classwise.long_tailed(LT)
    fairer = classwise.summarize_group(
        [unit("x", s, [k * 0.8 + 15 for k in robust], LT) for s in range(2)]
    )
    base_avg, base_worst = s.balanced_rob.mean, s.worst.mean
    expect = stats.dafa_rho(base_avg, base_worst, fairer.balanced_rob.mean, fairer.worst.mean)
    assert classwise.rho_against(s, fairer) == pytest.approx(expect) and expect > 0


def test_head_vs_tail_and_balanced_softmax_findings():
    robust = [90, 80, 70, 60, 50, 40, 30, 20, 10, 5]
    std = [unit("exp", s, robust, LT, profile="exp") for s in range(2)]
    assert studies.head_vs_tail(std, adversarial=False).verdict == "confirmed"
    assert "not in this sweep" in studies.head_vs_tail(std, adversarial=True).evidence
    at_ce = [
        unit("exp + pgd_at", s, [40] * 10, LT, profile="exp", adversarial="pgd_at")
        for s in range(2)
    ]
    at_bsl = [
        unit(
            "exp + balanced_softmax + pgd_at",
            s,
            [40 + (c % 3) for c in range(10)],
            LT,
            profile="exp",
            objective="balanced_softmax",
            adversarial="pgd_at",
        )
        for s in range(2)
    ]
    assert "not in this sweep" in studies.bsl_vs_ce(at_bsl).evidence
    found = studies.bsl_vs_ce(at_ce + at_bsl)
    assert found.verdict == "confirmed" and "over 20 (setting, seed, class) pairs" in found.evidence
    worse = [
        unit(
            u.group,
            u.seed,
            [38] * 10,
            LT,
            profile="exp",
            objective="balanced_softmax",
            adversarial="pgd_at",
        )
        for u in at_bsl
    ]
    worse_found = studies.bsl_vs_ce(
        at_ce + worse
    )  # every pair 2 points lower: a zero-width interval
    assert worse_found.verdict == "contradicted" and "d_z undefined" in worse_found.evidence
