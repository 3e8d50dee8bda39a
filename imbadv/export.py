"""`python -m imbadv.results SWEEP... --to csv|jsonl|parquet [--out FILE]`: the long table, written."""

from __future__ import annotations

import argparse
import csv
import io
import json
import sys
from pathlib import Path
from typing import Any

from imbadv.results import SweepError
from imbadv.table import Table, read

FORMATS = ("csv", "jsonl", "parquet")
EXTRA = 'pip install -e ".[table]"'


def to_csv(table: Table, out: io.TextIOBase) -> None:
    """CSV: empty cells for absent values, lists (confusion rows) as JSON text."""
    writer = csv.DictWriter(out, fieldnames=table.columns, restval="")
    writer.writeheader()
    for row in table.rows:
        writer.writerow({k: cell(v) for k, v in row.items()})


def cell(value: Any) -> Any:
    if value is None:
        return ""
    return json.dumps(value) if isinstance(value, list | dict) else value


def to_jsonl(table: Table, out: io.TextIOBase) -> None:
    """One JSON object a line, every column present (null where a job lacks it)."""
    columns = table.columns
    for row in table.rows:
        out.write(json.dumps({k: row.get(k) for k in columns}) + "\n")


def to_parquet(table: Table, path: Path) -> None:
    """Parquet through pandas and pyarrow; a column mixing text and numbers is stored as text."""
    import pandas as pd

    df = pd.DataFrame(table.rows, columns=table.columns)
    for name in df.select_dtypes(include="object").columns:
        kinds = {type(v) for v in df[name] if v is not None and v == v}
        if len(kinds - {list}) > 1:  # e.g. a class given by name in one job, by index in another
            df[name] = [None if v is None else str(v) for v in df[name]]
    df.to_parquet(path, index=False)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m imbadv.results", description=__doc__)
    p.add_argument("sweeps", nargs="+", type=Path, help="sweep folders or archives, in order")
    p.add_argument("--to", choices=FORMATS, default="csv", help="table format (default csv)")
    p.add_argument("--out", type=Path, default=None, help="file to write (default: stdout)")
    return p


def missing_parquet_extra() -> str | None:
    """Why parquet cannot be written here, or None."""
    try:
        import pandas  # noqa: F401
        import pyarrow  # noqa: F401
    except ImportError as err:
        return f"--to parquet needs pandas and pyarrow ({err.name} is not installed): {EXTRA}"
    return None


def main(argv: list[str] | None = None) -> int:
    """The command line; 2 for a path, format or extra that cannot be used (before reading)."""
    args = parser().parse_args(argv)
    problem = None
    if args.to == "parquet":
        problem = missing_parquet_extra() or (None if args.out else "--to parquet needs --out FILE")
    if problem is None:
        try:
            table = read(*args.sweeps)
        except SweepError as err:
            problem = str(err)
    if problem is None and not table.rows:
        problem = (
            f"{', '.join(map(str, args.sweeps))}: no results ({len(table.missing)} jobs without)"
        )
    if problem:
        print(f"imbadv.results: error: {problem}", file=sys.stderr)
        return 2
    for job in table.missing:  # a failed or unfinished job is listed, never fatal
        print(
            f"imbadv.results: missing {job['sweep']}/{job['job']}: {job['reason']}", file=sys.stderr
        )
    write(table, args.to, args.out)
    if args.out:
        print(f"{args.out}: {len(table.rows)} rows, {len(table.columns)} columns", file=sys.stderr)
    return 0


def write(table: Table, fmt: str, out: Path | None) -> None:
    """The table in `fmt` to `out` (stdout when None; parquet needs a file)."""
    if fmt == "parquet":
        to_parquet(table, out)
        return
    writer = to_csv if fmt == "csv" else to_jsonl
    if out is None:
        writer(table, sys.stdout)
        return
    with out.open("w", newline="") as f:
        writer(table, f)
