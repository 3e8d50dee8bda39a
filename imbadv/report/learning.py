"""Report, models that never learned: named, kept in the tables (marked), left out of every finding."""

from __future__ import annotations

from typing import Any

from imbadv.report.loading import Selection, Sweep, collapse_reason, group_of, pick
from imbadv.results import RULE, describe, never_learned, with_flag

Block = tuple


def unlearned_models(
    sweep: Sweep, rows: list[dict[str, Any]], collapse: dict[str, float] | None = None
) -> list[str]:
    """One line per model (by store key) whose record says it never learned, or whose clean
    predictions collapsed under the plan's rule, with its numbers."""
    names = {r.get("model_key"): r.get("model") for r in rows if r.get("model")}
    out: dict[str, str] = {}
    for result in sweep.results:
        for role, entry in result["models"].items():
            key = str(entry.get("key"))
            why = describe(entry) if never_learned(entry) else collapse_reason(entry, collapse)
            if key not in out and why:
                name = names.get(key) or role
                # a job's own model is named by its setting too: model names repeat across
                # objectives and recipes (`exp+fast_fgsm` of ce and of balanced softmax)
                setting = group_of(result) if role == "target" else ""
                where = f"{setting}, " if setting and setting != name else ""
                out[key] = (
                    f"`{name}` ({where}seed {result['meta']['seed']}, model {key}): "
                    f"{why if never_learned(entry) else 'collapsed: ' + why}"
                )
    return list(out.values())


def rules_used(sweep: Sweep) -> str:
    """The never-learned rule(s) the sweep's model records were judged by, in the order met:
    balanced accuracy for models trained since it is logged, accuracy for older records."""
    rules: dict[str, None] = {}
    for result in sweep.results:
        for entry in result["models"].values():
            rules[with_flag(entry)["learned_check"].get("rule", RULE)] = None
    return "; for records trained before balanced accuracy was logged: ".join(rules) or RULE


def blocks(
    models: list[str], rows: list[dict[str, Any]], sel: Selection, rule: str = RULE
) -> list[Block]:
    """The section: the rule, and the models that fail it with the rows it takes out of findings."""
    rule = rule or RULE
    if not models:
        return [
            ("p", f"Every model learned ({rule}), and none collapsed (when a plan sets the rule).")
        ]
    left = sum(not r.get("learned", True) for r in pick(rows, sel))
    return [
        ("h", 2, "Models that never learned"),
        (
            "p",
            f"{len(models)} model(s) never learned ({rule}) or, under an analysis plan, "
            "collapsed onto few classes (its `collapse` rule). Their rows stay in the tables "
            f"(‡ in Table 1) and are left out of every finding, each finding counting them: {left} "
            f"{sel.method.upper()} eps {sel.eps:g} row(s), transfer rows whose images came from "
            "such a model included.",
        ),
        ("ul", models),
    ]
