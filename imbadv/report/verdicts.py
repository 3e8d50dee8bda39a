"""Report, the findings section: tested findings with Holm-adjusted verdicts, the untested apart."""

from __future__ import annotations

from typing import Any

from imbadv.report.stats import ALPHA, CONFIRMED, Finding

Block = tuple
SIZE, IMBALANCE = "size effect", "imbalance, beyond data size"


def size_sentence(found: list[Finding]) -> str | None:
    """When both matched findings were tested: how much of over-vs-balanced the size explains."""
    by = {f.claim: f for f in found if f.tested}
    size = next((f for c, f in by.items() if SIZE in c), None)
    imb = next((f for c, f in by.items() if IMBALANCE in c), None)
    if size is None or imb is None:
        return None
    if size.verdict == CONFIRMED and imb.verdict == CONFIRMED:
        return (
            "Imbalance or size: the smaller training set alone lowers the relative drop "
            f"({size.mean:+.1%} balanced minus matched) and the over-sampled model is lower still "
            f"({imb.mean:+.1%} matched minus over): the over-sampled model's lower vulnerability "
            "is **not fully explained** by its smaller training set."
        )
    if imb.verdict == CONFIRMED:
        return (
            "Imbalance or size: `over` is less vulnerable than its same-size control; the size "
            "effect alone (balanced vs matched) has no clear answer here."
        )
    return None


def finding_blocks(
    found: list[Finding],
    names: list[str],
    cifar10: bool,
    floor: Any,
    plan: Any = None,
    scale: str | None = None,
) -> list[Block]:
    """The claims with a verdict (raw and Holm-adjusted p), then those this sweep cannot test."""
    blocks: list[Block] = [("h", 2, "The paper's findings, checked on this sweep")]
    if scale:
        blocks.append(("p", scale))
    if not cifar10:
        blocks.append(
            (
                "p",
                f"**The data set here is not CIFAR-10** (classes {', '.join(names)}): the paper's "
                "numbers are for reference only; these checks say whether the same pattern "
                "appears in this data, not whether the paper is reproduced.",
            )
        )
    tested = [f for f in found if f.tested]
    untested = [f for f in found if not f.tested]
    counts = {
        v: sum(f.verdict == v for f in tested) for v in dict.fromkeys(f.verdict for f in tested)
    }
    blocks.append(
        (
            "p",
            f"{len(tested)} finding(s) tested"
            + (": " + ", ".join(f"{n} {v}" for v, n in counts.items()) if tested else "")
            + f"; {len(untested)} not tested (listed below, not counted among the verdicts).",
        )
    )
    if tested:
        blocks.append(("ul", [f"**{f.verdict}**: {f.claim}. {f.evidence}." for f in tested]))
    if sentence := size_sentence(found):
        blocks.append(("p", sentence))
    if untested:
        blocks.append(("h", 3, "Not tested in this sweep"))
        blocks.append(("ul", [f"{f.claim}: {f.evidence}." for f in untested]))
    blocks.append(("p", method_text(floor, plan)))
    return blocks


def method_text(floor: Any, plan: Any = None) -> str:
    """How a verdict is reached, in the words docs/report.md uses."""
    family = (
        "The p-values of all tested findings of this report are Holm-adjusted"
        if plan is None
        else f"The p-values of the plan's confirmatory findings (`{plan.path.as_posix()}`, "
        "every section of the page) are Holm-adjusted together; every other finding is "
        "**descriptive** (its unadjusted interval and p, no correction, never a verdict)"
    )
    return (
        "Verdicts: the unit of replication is the seed (every class of a seed shares its "
        "balanced and matched models; a long-tail setting is one model per seed), so each "
        "difference is first averaged over the classes of a seed, and the interval is a Student "
        f"t-interval over the seed means (n = seeds; one seed gives no interval). {family}: "
        "**confirmed** = adjusted p < "
        f"{ALPHA:g} with the difference in the paper's direction; **contradicted** = adjusted "
        f"p < {ALPHA:g} the other way; **inconclusive** = neither (the unadjusted 95 % interval "
        "is shown; it can exclude 0 while the adjusted p does not). `k of K classes` counts the "
        "classes whose seed-averaged difference points the claimed way. A finding the sweep has "
        "no runs for is **not tested** and is not a verdict. Cells below the floor "
        f"({floor.describe()}; `--min-clean`, `--min-correct`) and rows of a model that never "
        "learned (or made with its gradient; see 'Models that never learned') are left out of "
        "every finding, and each finding says how many of each."
    )
