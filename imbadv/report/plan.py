"""Report, the analysis plan: which findings are confirmatory (one Holm family), read from a file.

A plan (conf/report/plan.yaml) is declared before the numbers: the confirmatory family, as
`section:key` names over every section of a results page, and the rules the report applies
(floor, collapse, the clean-accuracy adjustment). Under a plan the report Holm-adjusts the
family's raw p-values together, whichever section is being written, so the family is what the
plan says, not whatever one report run merged. Every other finding is descriptive: shown with
its unadjusted interval and labelled so, never confirmed. Its version and sha256 head each
section, so a changed plan changes the page visibly.
"""

from __future__ import annotations

import hashlib
import math
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import yaml

from imbadv.report.errors import ReportError
from imbadv.report.stats import ALPHA, CONFIRMED, CONTRADICTED, INCONCLUSIVE, Finding, holm, pval

DESCRIPTIVE = "descriptive"  # under a plan: shown, never a confirmatory verdict
KEYS = {"version", "declared", "alpha", "family", "sections", "collapse", "rules"}


@dataclass(frozen=True)
class Plan:
    """An analysis plan as read: its family, the sections' report arguments and rules."""

    path: Path
    sha256: str
    version: int
    alpha: float
    family: tuple[str, ...]
    sections: dict[str, list[str]]
    collapse: dict[str, float] = field(default_factory=dict)
    rules: dict[str, str] = field(default_factory=dict)

    def in_family(self, section: str, key: str) -> bool:
        return f"{section}:{key}" in self.family


def load_plan(path: Path) -> Plan:
    """The plan at `path`; one line naming the key and what is allowed when it cannot be used."""
    try:
        raw = path.read_bytes()
        data = yaml.safe_load(raw)
    except (OSError, yaml.YAMLError) as err:
        raise ReportError(f"--plan {path}: cannot read it ({type(err).__name__})") from None
    if not isinstance(data, dict) or not {"version", "family", "sections"} <= set(data):
        raise ReportError(f"--plan {path}: expected a mapping with version, family, sections")
    if unknown := sorted(set(data) - KEYS):
        raise ReportError(
            f"--plan {path}: unknown key {unknown[0]}; allowed: {', '.join(sorted(KEYS))}"
        )
    family = tuple(str(f) for f in data["family"] or ())
    sections = {str(k): [str(a) for a in v] for k, v in (data["sections"] or {}).items()}
    for name in family:
        if name.split(":", 1)[0] not in sections or ":" not in name:
            raise ReportError(
                f"--plan {path}: family member {name!r}: expected section:key with a section "
                f"of {', '.join(sections)}"
            )
    alpha = float(data.get("alpha", ALPHA))
    if not 0 < alpha < 1:
        raise ReportError(f"--plan {path}: alpha {alpha:g}: must be in (0, 1)")
    collapse = {k: float(v) for k, v in (data.get("collapse") or {}).items()}
    rules = {str(k): str(v).strip() for k, v in (data.get("rules") or {}).items()}
    digest = hashlib.sha256(raw).hexdigest()
    return Plan(path, digest, int(data["version"]), alpha, family, sections, collapse, rules)


def check_section(plan: Plan, section: str | None, args: list[str]) -> None:
    """The page can only say what the plan declared: the section and its arguments must be the
    plan's (the report arguments other than --section, --results-page and --plan)."""
    if section is None or section not in plan.sections:
        allowed = ", ".join(plan.sections)
        raise ReportError(f"--section {section}: not a section of the plan {plan.path} ({allowed})")
    if args != plan.sections[section]:
        raise ReportError(
            f"--section {section}: arguments {' '.join(args)} differ from the plan's "
            f"({' '.join(plan.sections[section])}); change the plan, not the command"
        )


def page_verdicts(plan: Plan, section: str, found: dict[str, list[Finding]]) -> list[Finding]:
    """`section`'s findings, judged under the plan: Holm over the family's raw p-values from
    every section's findings (`found`: section -> findings), the rest descriptive."""
    members = [
        (name, f)
        for name, fs in found.items()
        for f in fs
        if plan.in_family(name, f.key) and not math.isnan(f.p)
    ]
    names = [f"{n}:{f.key}" for n, f in members]
    adjusted = dict(zip(names, holm([f.p for _, f in members]), strict=True))
    size = len(members)
    out = []
    for f in found[section]:
        if plan.in_family(section, f.key) and math.isnan(f.p):
            out.append(f)  # a member tested without an answer (every pair left out): as it is
        else:
            out.append(judge(plan, f, adjusted.get(f"{section}:{f.key}"), size))
    return out


def judge(plan: Plan, f: Finding, q: float | None, size: int) -> Finding:
    """One finding's verdict: by its family-adjusted p, or descriptive outside the family."""
    if not f.tested:
        return f
    if q is None:
        raw = f"; p = {pval(f.p)}" if not math.isnan(f.p) else ""
        note = f"{raw} (descriptive, no correction: not in the plan's confirmatory family)"
        return replace(f, verdict=DESCRIPTIVE, evidence=f.evidence + note)
    verdict = INCONCLUSIVE if q >= plan.alpha else CONFIRMED if f.mean > 0 else CONTRADICTED
    note = f"; p = {pval(f.p)}, Holm-adjusted p = {pval(q)} (Holm over the plan's {size} confirmatory findings with a p-value, every section)"
    return replace(f, verdict=verdict, p_adj=q, evidence=f.evidence + note)


def plan_blocks(plan: Plan, section: str) -> list[tuple[Any, ...]]:
    """The plan quoted at the head of a section: version, digest, family, rules."""
    mine = [m.split(":", 1)[1] for m in plan.family if m.startswith(f"{section}:")]
    text = (
        f"Analysis plan: `{plan.path.as_posix()}` version {plan.version} (sha256 "
        f"{plan.sha256[:12]}), declared before these numbers were read. Confirmatory: "
        f"{len(plan.family)} findings over the whole page, one Holm family at alpha "
        f"{plan.alpha:g}; {len(mine)} of them in this section ({', '.join(mine) or 'none'}). "
        "Every other finding is **descriptive, no correction**."
    )
    rules = [f"{k.replace('_', ' ')}: {v}" for k, v in plan.rules.items()]
    return [("p", text), *([("ul", rules)] if rules else [])]
