"""Report, the numbers: everything a report shows, computed from a sweep before anything is written."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imbadv.report import classwise, learning, longtail
from imbadv.report.controlled import controlled_findings
from imbadv.report.loading import (
    Floor,
    ReportError,
    Sweep,
    attack_rows,
    choose,
    class_names,
    group_of,
    write_csv,
)
from imbadv.report.paper import findings, parse_pair, table1
from imbadv.report.stats import adjust
from imbadv.report.studies import study_findings


@dataclass
class Report:
    """Everything a report shows, computed before anything is written."""

    sweep: Sweep
    rows: list[dict[str, Any]]
    sel: Any
    names: list[str]
    pair: tuple[int, int]
    records: list[dict[str, Any]]
    found: list[Any]
    floor: Floor
    sums: dict[str, classwise.Summary]
    baseline: str | None
    counts: dict[str, tuple[int, ...] | None]
    contrasts: list[longtail.Contrast]
    command: str = ""
    unlearned: list[str] = field(default_factory=list)  # models that never learned, described
    raw: list[Any] = field(default_factory=list)  # the findings before any adjustment
    plan: Any = None  # the analysis plan the verdicts follow (report.plan.Plan), if any
    section: str | None = None
    learned_rules: str = ""  # the never-learned rule(s) the sweep's records were judged by


def compute(
    sweep: Sweep,
    attack: str,
    eps: float | None,
    pair: str | None,
    floor: Floor,
    baseline: str | None = None,
    command: str = "",
    collapse: dict[str, float] | None = None,
) -> Report:
    """The report's numbers: Table 1, findings, class-wise summaries (no files written)."""
    rows, names = attack_rows(sweep, collapse), class_names(sweep)
    sel = choose(rows, attack, eps)
    units = classwise.units_from_rows(
        rows, sel, counts=classwise.train_counts(sweep.results, group_of)
    )
    sums = classwise.summaries(units)
    if baseline is not None and baseline not in sums:
        raise ReportError(
            f"--baseline {baseline}: no such setting (the sweep has {', '.join(sums)})"
        )
    baseline = baseline or ("balanced" if "balanced" in sums else None)
    # rows of models that never learned stay in `rows` (tables); findings leave them out, counted
    raw = findings(rows, sel, names, floor) + study_findings(rows, sel, units, floor)
    raw += controlled_findings(rows, sel, floor, sweep.results, collapse)
    counts = {
        g: s_units[0].train_counts if len({u.train_counts for u in s_units}) == 1 else None
        for g in sums
        for s_units in [[u for u in units if u.group == g]]
    }
    return Report(
        sweep,
        rows,
        sel,
        names,
        parse_pair(pair, names),
        table1(rows, sel, names, floor),
        adjust(raw),
        floor,
        sums,
        baseline,
        counts,
        longtail.contrasts(units),
        command,
        learning.unlearned_models(sweep, rows, collapse),
        raw,
        learned_rules=learning.rules_used(sweep),
    )


def build_report(rep: Report) -> Path:
    """Write table1.csv, then the document (matplotlib is loaded only once the sweep is usable)."""
    from imbadv.report import document

    rep.sweep.root.mkdir(parents=True, exist_ok=True)
    write_csv(rep.records, rep.sweep.root / "table1.csv")
    return document.write_report(rep)
