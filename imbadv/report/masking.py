"""Report, the gradient-masking check: PGD with cross-entropy against its margin (CW) twin.

Every adversarially trained job attacks with the margin twin of each cross-entropy PGD setting,
and every row carries `masking_gap` (PGD-CE accuracy minus PGD-margin accuracy, the weaker loss
minus the stronger) and `gradient_masking` (a gap over 3 points or over 5 % zero input
gradients). A robust accuracy that only the cross-entropy loss sees is a masked one.
"""

from __future__ import annotations

from imbadv.report.loading import Sweep, group_of
from imbadv.report.stats import summarize
from imbadv.results import never_learned

Block = tuple


def gaps(sweep: Sweep) -> dict[tuple[str, float], dict[int, tuple[float, bool]]]:
    """(setting, eps) -> seed -> (masking gap, flagged) of the model's own-gradient PGD-CE row."""
    out: dict[tuple[str, float], dict[int, tuple[float, bool]]] = {}
    for result in sweep.results:
        if never_learned(result["models"].get("target", {})):
            continue
        for r in result.get("attacks", []):
            own_ce = r.get("source") == "same" and r.get("params", {}).get("loss", "ce") == "ce"
            if own_ce and r.get("masking_gap") is not None:
                per_seed = out.setdefault((group_of(result), float(r["eps"])), {})
                per_seed[int(result["meta"]["seed"])] = (
                    r["masking_gap"],
                    bool(r["gradient_masking"]),
                )
    return out


def rows(found: dict[tuple[str, float], dict[int, tuple[float, bool]]]) -> list[list[str]]:
    out = []
    for (group, eps), per_seed in sorted(found.items()):
        seeds = sorted(per_seed)
        gap = summarize([per_seed[s][0] for s in seeds])
        interval = "—" if gap.n < 2 else f"[{100 * gap.lo:+.1f}, {100 * gap.hi:+.1f}]"
        flagged = sum(per_seed[s][1] for s in seeds)
        seeds_text = " ".join(map(str, seeds))
        out.append([group, f"{eps:g}", seeds_text, f"{100 * gap.mean:+.1f}", interval, f"{flagged} of {len(seeds)}"])  # fmt: skip
    return out


def blocks(sweep: Sweep) -> list[Block]:
    """The section; nothing when no row has a margin twin to compare with."""
    found = gaps(sweep)
    if not found:
        return []
    text = (
        "Per model, its own-gradient PGD accuracy with cross-entropy minus the same PGD with the "
        "margin (CW) loss (`masking_gap`, points), mean over seeds with a t-interval over seeds "
        "(95 %); flagged = rows with `gradient_masking` (a gap over 3 points, or over 5 % of the "
        "images with a zero input gradient, which a model predicting one class also has). Models "
        "that never learned are left out (their seed is missing)."
    )
    head = ["setting", "eps", "seeds", "CE - margin", "95 % interval", "flagged"]
    return [("h", 2, "Gradient masking: PGD-CE against its margin twin"), ("p", text), ("table", head, rows(found))]  # fmt: skip
