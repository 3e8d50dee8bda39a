"""Report, two sweeps side by side: the settings that differ, shared cells paired by seed, the rest."""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imbadv.report.stats import INTERVAL, Paired, clustered, paired, pct
from imbadv.results import SweepError
from imbadv.table import Table, kind, read

COMPARED = ("clean_acc", "adv_acc", "relative_drop", "success_rate")
# Never part of a cell: the replication unit (seed) and who ran a row (a balanced model's own row
# in an `under` job is the balanced job's row: same model, same images).
NOT_KEY = ("seed", "role")


class CompareError(Exception):
    """Two sweeps that cannot be compared; the message names the path."""


@dataclass(frozen=True)
class Difference:
    """A column whose values differ between the sweeps; `across`: one value each, so cells pair across it."""

    column: str
    a: tuple[str, ...]
    b: tuple[str, ...]
    across: bool


@dataclass
class Cell:
    """One cell both sweeps measured: per metric the means over shared seeds and B - A by seed."""

    label: str
    seeds: tuple[Any, ...]
    a: dict[str, float]
    b: dict[str, float]
    diff: dict[str, Paired]


@dataclass
class Comparison:
    """Everything `--compare` prints: differences, shared cells, overall paired effects, the rest."""

    names: tuple[str, str]
    tables: tuple[Table, Table]
    differences: list[Difference]
    provenance: list[Difference]
    shared: list[Cell]
    overall: dict[str, dict[str, Paired]]  # per attack method (and "all"), per metric
    only: tuple[list[str], list[str]]
    no_common_seed: list[str] = field(default_factory=list)


def compare(a: str | Path, b: str | Path) -> Comparison:
    """Read two sweeps (folders or archives) through the long table and pair their cells."""
    try:
        ta, tb = read(a), read(b)
    except SweepError as err:
        raise CompareError(str(err)) from None
    for path, t in ((a, ta), (b, tb)):
        if not t.rows:
            raise CompareError(f"{path}: no results ({len(t.missing)} jobs without)")
    return pair_tables((str(a), str(b)), ta, tb)


def pair_tables(names: tuple[str, str], ta: Table, tb: Table) -> Comparison:
    """The comparison of two tables (rows measured twice within a sweep count once)."""
    ra, rb = ([r for r in t.rows if not r["repeat"]] for t in (ta, tb))
    columns = list(dict.fromkeys(ta.columns + tb.columns))
    diffs = [d for c in columns if (d := difference(c, ra, rb)) is not None]
    settings = [d for d in diffs if kind(d.column) == 1]
    across = {d.column for d in settings if d.across}
    key_cols = [c for c in columns if kind(c) == 1 and c not in across and c not in NOT_KEY]
    ca, cb = cells(ra, key_cols), cells(rb, key_cols)
    label = labeler(key_cols, ra + rb)
    both = [k for k in ca if k in cb]
    shared = [k for k in both if set(ca[k]) & set(cb[k])]
    return Comparison(
        names,
        (ta, tb),
        settings,
        [d for d in diffs if kind(d.column) == 2],
        [side_by_side(label(k), ca[k], cb[k]) for k in shared],
        overall(shared, ca, cb, key_cols),
        ([label(k) for k in ca if k not in cb], [label(k) for k in cb if k not in ca]),
        [label(k) for k in both if k not in shared],
    )


def hashable(value: Any) -> Any:
    return json.dumps(value) if isinstance(value, list | dict) else value


def difference(column: str, ra: list[dict], rb: list[dict]) -> Difference | None:
    """How a setting differs; `across` when each sweep has one value of it (absent counts as one)."""
    if kind(column) not in (1, 2) or column in ("job_key",):
        return None
    va, vb = ({hashable(r.get(column)) for r in rows} for rows in (ra, rb))
    if va == vb:
        return None
    na, nb = va - {None}, vb - {None}
    # e.g. eps 0.01 vs 0.02, or adversarial.eps absent vs 8/255: one value on each side.
    across = column != "class" and len(na) <= 1 and len(nb) <= 1 and na != nb
    show = lambda vs: tuple(sorted(("—" if v is None else str(v)) for v in vs))  # noqa: E731
    return Difference(column, show(va), show(vb), across)


def cells(rows: list[dict], key_cols: list[str]) -> dict[tuple, dict[Any, dict[str, float]]]:
    """Per cell, per seed, each compared metric (averaged if a sweep measured it twice)."""
    grouped: dict[tuple, dict[Any, list[dict]]] = {}
    for r in rows:
        key = tuple(hashable(r.get(c)) for c in key_cols)
        grouped.setdefault(key, {}).setdefault(r["seed"], []).append(r)
    return {
        key: {seed: {m: mean([r.get(m) for r in rs]) for m in COMPARED} for seed, rs in by.items()}
        for key, by in grouped.items()
    }


def mean(values: list[Any]) -> float:
    known = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return sum(known) / len(known) if known else math.nan


# Shown through the row's own names (attacked model, attack label, class), not as column=value.
NAMED = ("profile", "model_class", "source", "method", "class")


def labeler(key_cols: list[str], rows: list[dict]) -> Any:
    """A cell's name: `under-0 <- balanced: bim, class 0 (cat)`, plus any other key column whose
    value varies between cells as `column=value` (the first row seen names the cell)."""
    first: dict[tuple, dict] = {}
    for r in rows:
        first.setdefault(tuple(hashable(r.get(c)) for c in key_cols), r)
    varying = [i for i in range(len(key_cols)) if len({k[i] for k in first}) > 1]
    named = lambda c: c in NAMED or c.startswith(("attack.", "profile."))  # noqa: E731
    short = [i for i in varying if not named(key_cols[i])]

    def label(key: tuple, extra: list[int]) -> str:
        r = first[key]
        tail = "".join(f", {key_cols[i]}={key[i]}" for i in extra)
        return (
            f"{r.get('attacked_model')} ← {r['source']}: {r['attack']}, "
            f"class {r['class']} ({r['class_name']}){tail}"
        )

    # Names stand for their settings unless two cells would read the same (e.g. swept counts).
    unique = len({label(k, short) for k in first}) == len(first)
    return lambda key: label(key, short if unique else varying)


def side_by_side(label: str, a: dict[Any, dict], b: dict[Any, dict]) -> Cell:
    """A shared cell: means over the seeds both have, and B - A paired by seed."""
    seeds = tuple(sorted(set(a) & set(b), key=str))
    ma, mb, diff = {}, {}, {}
    for m in COMPARED:
        ok = [s for s in seeds if not (math.isnan(a[s][m]) or math.isnan(b[s][m]))]
        ma[m] = mean([a[s][m] for s in ok])
        mb[m] = mean([b[s][m] for s in ok])
        diff[m] = paired([b[s][m] - a[s][m] for s in ok])
    return Cell(label, seeds, ma, mb, diff)


def overall(
    shared: list[tuple], ca: dict, cb: dict, key_cols: list[str]
) -> dict[str, dict[str, Paired]]:
    """B - A over the shared cells, at the unit of replication: mean within a seed, t over seeds;
    for all cells and for each attack method."""
    method = key_cols.index("method") if "method" in key_cols else None
    groups = {"all": shared}
    if method is not None and len({k[method] for k in shared}) > 1:
        for k in shared:
            groups.setdefault(str(k[method]), []).append(k)
    out = {}
    for name, keys in groups.items():
        out[name] = {}
        for m in COMPARED:
            diffs = {
                (s, k): cb[k][s][m] - ca[k][s][m]
                for k in keys
                for s in set(ca[k]) & set(cb[k])
                if not (math.isnan(ca[k][s][m]) or math.isnan(cb[k][s][m]))
            }
            out[name][m] = clustered(diffs) if diffs else paired([])
    return out


def span(p: Paired) -> str:
    return "—" if math.isnan(p.lo) else f"[{pct(p.lo, True)}, {pct(p.hi, True)}]"


def markdown(c: Comparison) -> str:
    """The comparison as a Markdown page (percent; B - A)."""
    (na, nb), (ta, tb) = c.names, c.tables
    out = ["# Two sweeps compared", ""]
    for tag, name, t in (("A", na, ta), ("B", nb, tb)):
        jobs = len({r["job"] for r in t.rows})
        out.append(
            f"- **{tag}**: `{name}`: {jobs} jobs, {len(t.rows)} rows, {len(t.missing)} missing"
        )
    out += ["", "## Settings that differ", ""] + differences_md(c) + [""]
    out += overall_md(c) + [""] + cells_md(c) + [""]
    for tag, labels in (("A", c.only[0]), ("B", c.only[1])):
        out += [f"## Cells only in {tag}", ""] + [f"- {x}" for x in labels or ["none"]] + [""]
    if c.no_common_seed:
        out += ["## Cells both have, on no common seed", ""]
        out += [f"- {x}" for x in c.no_common_seed] + [""]
    for tag, t in (("A", ta), ("B", tb)):
        out += [f"- missing in {tag}: `{m['job']}`: {m['reason']}" for m in t.missing]
    return "\n".join(out).rstrip() + "\n"


def differences_md(c: Comparison) -> list[str]:
    if not c.differences:
        lines = ["No setting differs: the cells pair on every setting."]
    else:
        lines = ["| setting | A | B | cells |", "| --- | --- | --- | --- |"]
        for d in c.differences:
            how = (
                "paired across it" if d.across else "matched on it (values one sweep lacks: below)"
            )
            lines.append(f"| `{d.column}` | {', '.join(d.a)} | {', '.join(d.b)} | {how} |")
    if c.provenance:
        names = ", ".join(f"`{d.column}`" for d in c.provenance)
        lines += [
            "",
            f"Also different (provenance and labels derived from settings, never paired on): {names}.",
        ]
    return lines


def overall_md(c: Comparison) -> list[str]:
    lines = [
        f"## Over the {len(c.shared)} shared cells (B − A, percentage points)",
        "",
        f"Each seed's differences are averaged over the cells first, then a {INTERVAL}.",
        "",
        "| attack | metric | mean B − A | 95 % interval | seeds | pairs |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for group, by_metric in c.overall.items():
        for m, p in by_metric.items():
            lines.append(f"| {group} | {m} | {pct(p.mean, True)} | {span(p)} | {p.n} | {p.pairs} |")
    if any(p.n == 1 for g in c.overall.values() for p in g.values()):
        lines += ["", "With 1 seed there is no interval at the unit of replication (—)."]
    return lines


def cells_md(c: Comparison) -> list[str]:
    lines = [
        "## Shared cells (percent; interval: t over the seeds both have)",
        "",
        "| cell | seeds | clean A | clean B | adv A | adv B | adv B − A | interval | drop A | drop B | drop B − A |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for x in c.shared:
        adv, drop = x.diff["adv_acc"], x.diff["relative_drop"]
        lines.append(
            f"| {x.label} | {', '.join(map(str, x.seeds))} | {pct(x.a['clean_acc'])} | "
            f"{pct(x.b['clean_acc'])} | {pct(x.a['adv_acc'])} | {pct(x.b['adv_acc'])} | "
            f"{pct(adv.mean, True)} | {span(adv)} | {pct(x.a['relative_drop'])} | "
            f"{pct(x.b['relative_drop'])} | {pct(drop.mean, True)} |"
        )
    return lines


def records(c: Comparison) -> list[dict[str, Any]]:
    """The shared cells as CSV records: per metric A, B, B - A and its interval (fractions)."""
    out = []
    for x in c.shared:
        rec: dict[str, Any] = {"cell": x.label, "seeds": " ".join(map(str, x.seeds))}
        for m in COMPARED:
            d = x.diff[m]
            rec |= {f"{m}_a": x.a[m], f"{m}_b": x.b[m], f"{m}_diff": d.mean}
            rec |= {f"{m}_diff_lo": d.lo, f"{m}_diff_hi": d.hi}
        out.append(rec)
    return out
