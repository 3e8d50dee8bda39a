"""Report command line: `python -m imbadv.report SWEEP [SWEEP ...]`: tables, figures and findings."""

from __future__ import annotations

import argparse
import shlex
import shutil
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from imbadv.report import classwise
from imbadv.report.paper import findings, parse_pair, table1
from imbadv.report.studies import study_findings
from imbadv.report.sweep import (
    Floor,
    ReportError,
    Sweep,
    attack_rows,
    choose,
    class_names,
    group_of,
    load_sweeps,
    newest_sweep,
    write_csv,
)


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
    command: str = ""


def compute(
    sweep: Sweep,
    attack: str,
    eps: float | None,
    pair: str | None,
    floor: Floor,
    baseline: str | None = None,
    command: str = "",
) -> Report:
    """The report's numbers: Table 1, findings, class-wise summaries (no files written)."""
    rows, names = attack_rows(sweep), class_names(sweep)
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
    found = findings(rows, sel, names, floor) + study_findings(rows, sel, units, floor)
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
        found,
        floor,
        sums,
        baseline,
        counts,
        command,
    )


def build_report(rep: Report) -> Path:
    """Write table1.csv, then the document (matplotlib is loaded only once the sweep is usable)."""
    from imbadv.report import document

    rep.sweep.root.mkdir(parents=True, exist_ok=True)
    write_csv(rep.records, rep.sweep.root / "table1.csv")
    return document.write_report(rep)


def results_page(report_md: Path, page: Path) -> None:
    """Copy report.md to `page` and its figures into `<page stem>/` next to it, links rewritten."""
    folder = page.with_suffix("")
    folder.mkdir(parents=True, exist_ok=True)
    text = report_md.read_text()
    for png in sorted(report_md.parent.glob("*.png")):
        if f"]({png.name})" in text:
            shutil.copy(png, folder / png.name)
            text = text.replace(f"]({png.name})", f"]({folder.name}/{png.name})")
    page.write_text(text)


def parse_floor(min_clean: float, min_correct: int) -> Floor:
    """The floor from the command line; one line naming the option when out of range."""
    if not 0 <= min_clean <= 1:
        raise ReportError(f"--min-clean {min_clean:g}: must be a fraction in [0, 1]")
    if min_correct < 0:
        raise ReportError(f"--min-correct {min_correct}: must be >= 0")
    return Floor(min_clean, min_correct)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m imbadv.report", description=__doc__)
    p.add_argument(
        "sweeps",
        nargs="*",
        type=Path,
        help="sweep folders, merged (seeds run as separate sweeps); default: the newest under ./multirun",
    )
    p.add_argument("--attack", default="fgsm", help="attack rows to report (default fgsm)")
    p.add_argument("--eps", type=float, default=None, help="default: 0.01 if swept")
    p.add_argument("--pair", default=None, help="Fig. 6 class pair, names or indices (cat,dog)")
    p.add_argument(
        "--min-clean",
        type=float,
        default=Floor.min_clean,
        help="floor: clean target-class accuracy below it is degenerate (default 0.05)",
    )
    p.add_argument(
        "--min-correct",
        type=int,
        default=Floor.min_correct,
        help="floor: fewer correctly classified clean images is degenerate (default 20)",
    )
    p.add_argument(
        "--baseline", default=None, help="setting DAFA's rho compares against (default balanced)"
    )
    p.add_argument(
        "--out",
        type=Path,
        default=None,
        help="report folder (default: the sweep folder; with several, ./report)",
    )
    p.add_argument(
        "--results-page",
        type=Path,
        default=None,
        help="also write the report as this Markdown page, figures in a folder beside it",
    )
    p.add_argument(
        "--wandb",
        nargs="?",
        const="",
        default=None,
        metavar="MODE",
        help="also log Table 1, findings and figures as one W&B run in the sweep's group "
        "(MODE offline|online; default: the jobs' logger.mode)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (2 for a path or option that cannot be used)."""
    args = parser().parse_args(argv)
    command = "python -m imbadv.report " + shlex.join(sys.argv[1:] if argv is None else argv)
    try:
        floor = parse_floor(args.min_clean, args.min_correct)
        roots = args.sweeps or [newest_sweep(Path("multirun"))]
        out = args.out or (None if len(roots) == 1 else Path("report"))
        sweep = load_sweeps(roots, out)
        rep = compute(sweep, args.attack, args.eps, args.pair, floor, args.baseline, command)
        written = build_report(rep)
        if args.results_page is not None:
            results_page(written, args.results_page)
    except ReportError as err:
        print(f"imbadv.report: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {written}")
    if args.wandb is not None:
        log_to_wandb(written.parent, args.wandb or None)
    return 0


def log_to_wandb(folder: Path, mode: str | None) -> None:
    """The report's tables, figures and documents as one summary run (W&B failures only warn)."""
    from imbadv.tracking import log_report  # wandb loads only when asked for

    documents = {"report": folder / "report.html", "findings": folder / "report.md"}
    log_report(
        folder,
        {"table1": folder / "table1.csv"},
        sorted(folder.glob("fig*.png")),
        documents,
        mode=mode,
    )
