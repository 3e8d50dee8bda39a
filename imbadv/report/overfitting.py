"""Report, robust overfitting: the best and the last epoch's robust validation accuracy per model.

Every adversarially trained model (and every model selected on robust validation accuracy)
records `val/robust_acc` after each epoch, on the validation split of its training data. The gap
best - last is robust overfitting (Rice et al. 2020) as the validation split sees it; no test
image is involved, so the table is safe to read before choosing anything.
"""

from __future__ import annotations

from typing import Any

from imbadv.report.loading import Sweep, group_of
from imbadv.report.stats import summarize
from imbadv.results import never_learned

Block = tuple


def curves(sweep: Sweep) -> dict[str, dict[int, list[float]]]:
    """setting -> seed -> the target model's robust validation accuracy per epoch."""
    out: dict[str, dict[int, list[float]]] = {}
    seen: set[str] = set()
    for result in sweep.results:
        model = result["models"].get("target", {})
        curve = [h["val/robust_acc"] for h in model.get("history", []) if "val/robust_acc" in h]
        if not curve or model.get("key") in seen or never_learned(model):
            continue
        seen.add(model.get("key"))
        out.setdefault(group_of(result), {})[int(result["meta"]["seed"])] = curve
    return out


def gap_rows(found: dict[str, dict[int, list[float]]]) -> list[list[str]]:
    """Per setting: seeds, best and last robust validation accuracy (means), gap with interval."""
    rows = []
    for group, per_seed in sorted(found.items()):
        seeds = sorted(per_seed)
        best = [max(per_seed[s]) for s in seeds]
        last = [per_seed[s][-1] for s in seeds]
        argmax = [per_seed[s].index(max(per_seed[s])) + 1 for s in seeds]
        gap = summarize([b - la for b, la in zip(best, last, strict=True)])
        interval = "—" if gap.n < 2 else f"[{100 * gap.lo:+.1f}, {100 * gap.hi:+.1f}]"
        rows.append(
            [
                group,
                " ".join(map(str, seeds)),
                f"{100 * sum(best) / len(best):.1f}",
                " ".join(map(str, argmax)),
                f"{100 * sum(last) / len(last):.1f}",
                f"{100 * gap.mean:+.1f}",
                interval,
            ]
        )
    return rows


def blocks(sweep: Sweep) -> list[Block]:
    """The section; nothing when no model recorded a robust validation curve."""
    found = curves(sweep)
    if not found:
        return []
    text = (
        "Per model, the robust validation accuracy (PGD on the validation split of its training "
        "data, `trainer.robust_val_steps` steps at `adversarial.eps`) at its best epoch and at its "
        "last; gap = best - last (points), mean over seeds with a t-interval over seeds (95 %). "
        "A positive gap is robust overfitting; the model kept is the one its selection rule picks. "
        "Models that never learned are left out (their seed is missing)."
    )
    head = ["setting", "seeds", "best (%)", "best epoch", "last (%)", "gap", "95 % interval"]
    rows: list[Any] = gap_rows(found)
    return [
        ("h", 2, "Robust overfitting, on the validation split"),
        ("p", text),
        ("table", head, rows),
    ]
