"""Report command line: `python -m imbadv.report SWEEP`: Table 1, figures and findings from a sweep."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from imbadv.report.paper import findings, parse_pair, table1
from imbadv.report.sweep import (
    ReportError,
    Sweep,
    attack_rows,
    choose,
    class_names,
    load_sweep,
    newest_sweep,
    write_csv,
)


def build_report(sweep: Sweep, attack: str, eps: float | None, pair: str | None) -> Path:
    """Everything the report needs, computed here; written (files, figures) by imbadv.document."""
    from imbadv.report import (
        document,  # matplotlib is loaded only once the sweep is known to be usable
    )

    rows, names = attack_rows(sweep), class_names(sweep)
    sel = choose(rows, attack, eps)
    pair_ix = parse_pair(pair, names)
    records = table1(rows, sel, names)
    write_csv(records, sweep.root / "table1.csv")
    return document.write_report(
        sweep, rows, sel, names, pair_ix, records, findings(rows, sel, names)
    )


def main(argv: list[str] | None = None) -> int:
    """The command line; returns the exit code (2 for a path or option that cannot be used)."""
    parser = argparse.ArgumentParser(prog="python -m imbadv.report", description=__doc__)
    parser.add_argument(
        "sweep", nargs="?", type=Path, help="multirun/<date>/<time> (default: newest)"
    )
    parser.add_argument("--attack", choices=("fgsm", "bim"), default="fgsm")
    parser.add_argument("--eps", type=float, default=None, help="default: 0.01 if swept")
    parser.add_argument(
        "--pair", default=None, help="Fig. 6 class pair, names or indices (cat,dog)"
    )
    args = parser.parse_args(argv)
    try:
        root = args.sweep if args.sweep is not None else newest_sweep(Path("multirun"))
        written = build_report(load_sweep(root), args.attack, args.eps, args.pair)
    except ReportError as err:
        print(f"imbadv.report: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {written}")
    return 0
