"""Report blocks beyond Table 1: sources and seed gaps, Table 2 (success among correct), the class-wise section."""

from __future__ import annotations

import math
import shlex
from typing import Any

from imbadv.report.classwise import Summary, rho_against
from imbadv.report.loading import Floor, Selection, correct, pick
from imbadv.report.stats import Stat, pct, summarize, wilson

Block = tuple
MODELS = ("balanced", "under", "over")


def stat_text(s: Stat | None) -> str:
    """`mean (lo–hi)` with one seed's Wilson or several seeds' t interval; `mean` when it has none."""
    if s is None:
        return "—"
    if math.isnan(s.lo):
        return pct(s.mean)
    return f"{pct(s.mean)} ({pct(max(0.0, s.lo))}–{pct(min(1.0, s.hi))})"


def success_cell(cell: list[dict[str, Any]]) -> Stat | None:
    """Attack success among the correctly classified images over seeds (Wilson per seed)."""
    have = [
        r for r in cell if correct(r) and not math.isnan(r["success_rate"])
    ]  # none correct: no rate
    cis = [wilson(round(r["success_rate"] * correct(r)), correct(r)) for r in have]
    return summarize([r["success_rate"] for r in have], cis)


def table2_blocks(rows: list[dict], sel: Selection, names: list[str], floor: Floor) -> list[Block]:
    """Table 2: relative drop next to the success rate among correct images, and their count."""
    header = ["Class"] + [
        f"{m}: {h}" for m in MODELS for h in ("drop", "success (95 %)", "correct")
    ]
    body = []
    for c, name in enumerate(names):
        line, any_cell = [f"{c} - {name}"], False
        for m in MODELS:
            cell = pick(rows, sel, **{"class": c, "imbalance": m, "source": "same"})
            any_cell |= bool(cell)
            drop = summarize([r["relative_drop"] for r in cell])
            flag = " †" if any(floor.degenerate(r) for r in cell) else ""
            line += [
                pct(drop.mean if drop else None),
                stat_text(success_cell(cell)),
                "/".join(str(correct(r)) for r in cell) + flag if cell else "—",
            ]
        if any_cell:
            body.append(line)
    return [
        (
            "h",
            2,
            f"Table 2: relative drop and attack success among correctly classified images (%), same-model {sel.method.upper()}",
        ),
        (
            "p",
            "Relative drop = (clean - adv) / clean. Success = the share of the correctly classified clean "
            "images that the attack makes wrong, with its 95 % Wilson interval (one seed) or t-interval "
            f"over seeds. `correct` = correctly classified clean images per seed. † = below the floor "
            f"({floor.describe()}): flagged, left out of findings.",
        ),
        ("table", header, body or [["—"] * len(header)]),
    ]


def class_table(s: Summary, names: list[str], counts: tuple[int, ...] | None) -> Block:
    """Per class: training count, clean and robust recall with intervals, where attacked images go."""
    rows = []
    for c in s.classes:
        flows = ", ".join(f"{names[j]} +{pct(v)}" for j, v in s.flows[c]) or "—"
        rows.append(
            [
                f"{c} - {names[c]}" + (" (worst)" if c == s.worst_class else ""),
                str(counts[c]) if counts else "per job",
                stat_text(s.clean[c]),
                stat_text(s.robust[c]),
                flows,
            ]
        )
    return (
        "table",
        [
            "Class",
            "train count",
            "clean recall",
            "robust recall",
            "largest flows under attack (pts)",
        ],
        rows,
    )


def overview(sums: dict[str, Summary], names: list[str], baseline: str | None) -> Block:
    """One row per model setting: balanced accuracy/robustness, worst class, spread, DAFA's rho."""
    base = sums.get(baseline) if baseline else None
    head = [
        "Setting",
        "seeds",
        "classes",
        "balanced acc",
        "balanced robustness",
        "worst class (robust)",
        "sd clean err",
        "sd robust err",
        f"rho vs {baseline or '—'}",
    ]
    rows = []
    for g, s in sums.items():
        rho = rho_against(base, s) if base is not None and s is not base else math.nan
        rows.append(
            [
                g,
                " ".join(map(str, s.seeds)),
                f"{len(s.classes)}/{len(names)}",
                stat_text(s.balanced_acc),
                stat_text(s.balanced_rob),
                f"{names[s.worst_class]} {stat_text(s.worst)}",
                pct(s.sd_clean_err.mean),
                pct(s.sd_rob_err.mean),
                "baseline" if s is base else ("—" if math.isnan(rho) else f"{rho:+.3f}"),
            ]
        )
    return ("table", head, rows)


def classwise_blocks(
    sums: dict[str, Summary],
    names: list[str],
    sel: Selection,
    baseline: str | None,
    counts: dict[str, tuple[int, ...] | None],
) -> list[Block]:
    """The class-wise section: overview with DAFA's rho, then one table per model setting."""
    blocks: list[Block] = [
        (
            "h",
            2,
            f"Class-wise: every model setting, same-model {sel.method.upper()} eps {sel.eps:g}",
        ),
        (
            "p",
            "Robust recall = accuracy of a class's test images after the attack. Class c's numbers come "
            "from the job that targeted class c; for the paper's `under`/`over` each class is therefore a "
            "different model (the one trained around it), for untargeted profiles one model per seed. "
            "Balanced accuracy/robustness = mean recall over the classes present (column `classes`). "
            "sd err = standard deviation over classes of 1 - recall. Worst class: lowest mean robust "
            "recall; its value is each seed's worst class, averaged. Intervals: Wilson (one seed) or t "
            f"over seeds. The floor: a constant predictor (one class for every image) has balanced "
            f"accuracy and balanced robustness 1/{len(names)} = {1 / len(names):.1%}; a balanced "
            "robustness near it says the model keeps about one class, not that it resists the attack.",
        ),
        overview(sums, names, baseline),
        (
            "p",
            f"rho (DAFA, Lee et al. 2024) against `{baseline}`: (worst - worst_base) / worst_base - "
            "(avg_base - avg) / avg_base on robust recall; > 0 means fairer at little average cost. It "
            "needs the same classes in both settings and a baseline whose worst class is above 0."
            if baseline
            else "rho (DAFA): no baseline setting in this sweep (name one with --baseline).",
        ),
    ]
    for g, s in sums.items():
        blocks.append(("h", 3, f"{g} (seeds {' '.join(map(str, s.seeds))})"))
        blocks.append(class_table(s, names, counts.get(g)))
        if s.parts:
            blocks.append(
                (
                    "p",
                    "Long-tailed training counts; thirds by count (head/middle/tail): "
                    + "; ".join(
                        f"{k} clean {stat_text(c)}, robust {stat_text(r)}"
                        for k, (c, r) in s.parts.items()
                    ),
                )
            )
    return blocks


def sweep_command(root: Any) -> str | None:
    """The `python -m imbadv.run -m ...` line that made a sweep, from its multirun.yaml."""
    try:
        import yaml  # PyYAML comes with Hydra; no torch

        given = yaml.safe_load((root / "multirun.yaml").read_text())["hydra"]["overrides"]
        overrides = given["task"] + [o for o in given["hydra"] if o.startswith("hydra.sweep.dir=")]
    except (OSError, KeyError, TypeError, ImportError, ValueError):
        return None
    return "python -m imbadv.run -m " + " ".join(shlex.quote(o) for o in overrides)


def sources_blocks(sweep: Any) -> list[Block]:
    """Which sweep folders the report reads (with the command that made each), and duplicates."""
    items = []
    for root in sweep.roots:
        if (man := sweep.manifests.get(str(root))) is not None:
            items.append(archive_item(root, man))
            continue
        command = sweep_command(root)
        items.append(f"`{root}`" + (f", made by `{command}`" if command else " (no multirun.yaml)"))
    if sweep.duplicates:
        dups = ", ".join(f"`{d}`" for d in sweep.duplicates)
        items.append(f"{len(sweep.duplicates)} job(s) found twice, counted once: {dups}")
    return [("p", f"Sweep folders ({len(sweep.roots)}), merged:"), ("ul", items)]


def archive_item(root: Any, man: dict) -> str:
    """An archive's line: the sweep it holds, its command, and where its numbers came from."""
    command = f", made by `{man['command']}`" if man.get("command") else " (no multirun.yaml)"
    return (
        f"`{root}`: results archive of sweep `{man.get('sweep')}`{command}; {man.get('jobs')} "
        f"job(s), every file checked against the manifest's sha256; code git "
        f"{', '.join(man.get('code_git', []))}; data {', '.join(man.get('data', []))}"
    )


def seed_gaps(records: list[dict]) -> list[str]:
    """Table 1 cells with fewer seeds than the most complete cell (seeds merged from several sweeps)."""
    seeds = sorted({s for r in records for s in r["seeds"].split()}, key=int)
    gaps = [
        f"class {r['class']} {r['column']}: seeds {' '.join(s for s in seeds if s not in r['seeds'].split())} missing"
        for r in records
        if 0 < r["n_seeds"] < len(seeds)
    ]
    return gaps
