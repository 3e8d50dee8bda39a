"""Report stage: `python -m imbadv.report SWEEP`: Table 1, figures and findings from a sweep's results."""

from __future__ import annotations

import argparse
import csv
import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from imbadv.stats import Finding, Stat, compare, summarize

# Possas & Zhou, Table 1: adversarial accuracy of the target class (%), FGSM, eps 0.01, CIFAR-10.
PAPER_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")  # fmt: skip
PAPER_TABLE1 = {
    "diff_under": (60, 64, 38, 21, 58, 47, 76, 59, 69, 46),
    "diff_over": (87, 91, 73, 72, 80, 76, 88, 88, 89, 87),
    "same_balanced": (36, 23, 20, 11, 20, 15, 27, 20, 37, 49),
    "same_under": (19, 16, 9.4, 0.5, 9.8, 9, 20, 18, 19, 21),
    "same_over": (61, 63, 27, 19, 20, 38, 49, 52, 59, 54),
}


# (key, heading, imbalance of the attacked model, whose gradient makes the images)
COLUMNS = (
    ("diff_under", "Different model: under", "under", "balanced"),
    ("diff_over", "Different model: over", "over", "balanced"),
    ("same_balanced", "Same model: balanced", "balanced", "same"),
    ("same_under", "Same model: under", "under", "same"),
    ("same_over", "Same model: over", "over", "same"),
)


class ReportError(Exception):
    """A sweep that cannot be reported; the message names the path or option."""


@dataclass
class Sweep:
    """What a sweep folder holds now: finished results and the jobs without any (yet)."""

    root: Path
    results: list[dict[str, Any]]
    pending: list[str] = field(default_factory=list)  # job folders with no results.json
    unreadable: list[str] = field(default_factory=list)


def load_sweep(root: Path) -> Sweep:
    """Every results.json under `root`; job folders (with `.hydra/`) that lack one are pending."""
    if not root.is_dir():
        raise ReportError(f"{root}: no such sweep folder")
    sweep = Sweep(root, [])
    for path in sorted(root.rglob("results.json")):
        try:
            sweep.results.append(json.loads(path.read_text()))
        except (OSError, ValueError):
            sweep.unreadable.append(str(path.parent.relative_to(root)))
    for hydra_dir in sorted(root.rglob(".hydra")):
        if not (hydra_dir.parent / "results.json").exists():
            sweep.pending.append(str(hydra_dir.parent.relative_to(root)))
    if not sweep.results:
        raise ReportError(f"{root}: no results.json found (jobs started: {len(sweep.pending)})")
    return sweep


def newest_sweep(base: Path) -> Path:
    """The newest sweep folder (by its multirun.yaml) under `base` that has results."""
    candidates = [
        p.parent for p in base.rglob("multirun.yaml") if any(p.parent.rglob("results.json"))
    ]
    if not candidates:
        raise ReportError(
            f"{base}: no sweep with results (run `python -m imbadv.run -m ...` first)"
        )
    return max(candidates, key=lambda p: (p / "multirun.yaml").stat().st_mtime)


@dataclass(frozen=True)
class Selection:
    """Which attack rows make the report: one method, one eps, one direction."""

    method: str
    eps: float
    direction: str
    all_eps: tuple[float, ...]
    eps_space: str = "pixel [0, 1]"


def choose(rows: list[dict[str, Any]], method: str, eps: float | None) -> Selection:
    """The attack and eps to report; the paper's 0.01 when the sweep has it, else the most common."""
    mine = [r for r in rows if r["method"] == method]
    if not mine:
        found = sorted({r["method"] for r in rows})
        raise ReportError(
            f"--attack {method}: the sweep has no such rows (it has {', '.join(found)})"
        )
    all_eps = tuple(sorted({float(r["eps"]) for r in mine}))
    if eps is None:
        counts = {e: sum(float(r["eps"]) == e for r in mine) for e in all_eps}
        eps = 0.01 if 0.01 in counts else max(counts, key=counts.get)
    elif not any(math.isclose(eps, e) for e in all_eps):
        raise ReportError(
            f"--eps {eps:g}: not in the sweep (it has {', '.join(f'{e:g}' for e in all_eps)})"
        )
    eps = next(e for e in all_eps if math.isclose(eps, e))
    directions = [r["direction"] for r in mine]
    direction = "ascent" if "ascent" in directions else directions[0]
    return Selection(method, eps, direction, all_eps, str(mine[0].get("eps_space", "unknown")))


def pick(
    rows: list[dict[str, Any]], sel: Selection, eps: float | None = None, **match: Any
) -> list:
    """The rows of the selection (at `eps` if given) whose fields equal `match`."""
    eps = sel.eps if eps is None else eps
    return [r for r in rows if r["method"] == sel.method and math.isclose(float(r["eps"]), eps)
            and r["direction"] == sel.direction and all(r[k] == v for k, v in match.items())]  # fmt: skip


def attack_rows(sweep: Sweep) -> list[dict[str, Any]]:
    return [row for result in sweep.results for row in result["attacks"]]


def class_names(sweep: Sweep) -> list[str]:
    """Names per class index: from the jobs that targeted each class, else from the data set kind."""
    first = sweep.results[0]
    num = len(next(iter(first["models"].values()))["clean"]["confusion"])
    kind = first["meta"]["dataset"]
    names = list(PAPER_CLASSES) if kind == "cifar10" and num == 10 else [
        f"class{i}" if kind == "synthetic" else str(i) for i in range(num)]  # fmt: skip
    for result in sweep.results:
        names[int(result["meta"]["class"])] = result["meta"]["class_name"]
    return names


def is_cifar10(sweep: Sweep) -> bool:
    """Whether every job's target class has the CIFAR-10 name at its index (any copy of the data)."""
    return all(
        len(next(iter(r["models"].values()))["clean"]["confusion"]) == len(PAPER_CLASSES)
        and PAPER_CLASSES[int(r["meta"]["class"])] == r["meta"]["class_name"]
        for r in sweep.results
    )


def table1(rows: list[dict[str, Any]], sel: Selection, names: list[str]) -> list[dict[str, Any]]:
    """Table 1 as one record per (class, column): our adversarial accuracy, the paper's, the gap."""
    out = []
    for cls, name in enumerate(names):
        for key, _, imbalance, source in COLUMNS:
            cell = pick(rows, sel, **{"class": cls, "imbalance": imbalance, "source": source})
            stat = summarize([r["adv_acc"] for r in cell], [tuple(r["adv_acc_ci95"]) for r in cell])
            paper = PAPER_TABLE1[key][cls] / 100 if cls < 10 else math.nan
            out.append({"class": cls, "class_name": name, "column": key, "imbalance": imbalance,
                        "source": source, "method": sel.method, "eps": sel.eps,
                        "seeds": " ".join(str(s) for s in sorted({r["seed"] for r in cell})),
                        "n_seeds": stat.n if stat else 0, "mean": stat.mean if stat else math.nan,
                        "sd": stat.sd if stat else math.nan, "ci_lo": stat.lo if stat else math.nan,
                        "ci_hi": stat.hi if stat else math.nan, "paper": paper,
                        "diff": (stat.mean - paper) if stat else math.nan})  # fmt: skip
    return out


def write_csv(records: list[dict[str, Any]], path: Path) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)


def per_class(
    rows: list[dict[str, Any]], sel: Selection, metric: str, **match: Any
) -> dict[int, Stat]:
    """Per class, `metric` over seeds for the rows matching (with its interval when one is stored)."""
    by_class: dict[int, list[dict[str, Any]]] = {}
    for r in pick(rows, sel, **match):
        by_class.setdefault(int(r["class"]), []).append(r)
    ci = f"{metric}_ci95"
    stats = {c: summarize([r[metric] for r in rs], [tuple(r[ci]) if ci in r else None for r in rs])
             for c, rs in by_class.items()}  # fmt: skip
    return {c: s for c, s in stats.items() if s is not None}


def findings(rows: list[dict[str, Any]], sel: Selection, names: list[str]) -> list[Finding]:
    """The paper's claims (Sec. 4.1-4.3), each checked against the sweep's numbers."""
    drop = {m: {c: s.mean for c, s in per_class(rows, sel, "relative_drop", imbalance=m, source="same").items()}
            for m in ("balanced", "under", "over")}  # fmt: skip
    acc = {(m, src): {c: s.mean for c, s in per_class(rows, sel, "adv_acc", imbalance=m, source=src).items()}
           for m in ("under", "over") for src in ("same", "balanced")}  # fmt: skip
    what = "relative drop (same-model attack)"
    out = [
        compare("Under-sampled models are more vulnerable than the balanced model (Sec. 4.1, Fig. 5)",
                what, drop["under"], drop["balanced"], ("under", "balanced")),
        compare("Over-sampled models are less vulnerable than the balanced model (Sec. 4.1)",
                what, drop["balanced"], drop["over"], ("balanced", "over")),
        compare("Over-sampled models are less vulnerable than under-sampled ones (Sec. 4.1)",
                what, drop["under"], drop["over"], ("under", "over")),
    ]  # fmt: skip
    for m in ("under", "over"):
        out.append(compare(f"Transfer (balanced model's gradient) is weaker than the {m}-sampled model's own (Sec. 4.2)",
                           f"adversarial accuracy, {m}-sampled model", acc[(m, "balanced")], acc[(m, "same")],
                           ("transfer", "same-model")))  # fmt: skip
    for a, b in ((3, 5), (1, 9)):
        out.append(pair_finding(rows, sel, names, a, b))
    return out


def pair_finding(
    rows: list[dict[str, Any]], sel: Selection, names: list[str], a: int, b: int
) -> Finding:
    """Sec. 4.3: does the attack send more of each class of a pair into the other?"""
    claim = f"{names[a]}/{names[b]} confusion grows under attack (Sec. 4.3, Figs. 1 and 6)"
    if max(a, b) >= len(names):
        return Finding(claim, "not enough data", "the data set has fewer classes")
    clean, adv = {}, {}
    for src, dst in ((a, b), (b, a)):
        for m in ("balanced", "under", "over"):
            cell = pick(rows, sel, **{"class": src, "imbalance": m, "source": "same"})
            if cell:
                clean[(m, src)] = np.mean([r["clean_row"][dst] / r["n"] for r in cell])
                adv[(m, src)] = np.mean([r["adv_row"][dst] / r["n"] for r in cell])
    return compare(claim, f"share of {names[a]} sent to {names[b]} and back, same-model attack",
                   adv, clean, ("attacked", "clean"), unit="(model, class) cases")  # fmt: skip


def parse_pair(text: str | None, names: list[str]) -> tuple[int, int]:
    """Fig. 6's class pair from names or indices; by default cat/dog, else classes 3 and 5."""
    if text is None:
        if "cat" in names and "dog" in names:
            return names.index("cat"), names.index("dog")
        return (3, 5) if len(names) > 5 else (0, 1)
    parts = [p.strip() for p in text.split(",")]
    found = [names.index(p) if p in names else int(p) if p.isdigit() and int(p) < len(names) else None
             for p in parts]  # fmt: skip
    if len(found) != 2 or None in found or found[0] == found[1]:
        raise ReportError(
            f"--pair {text}: expected two different classes (names or 0..{len(names) - 1})"
        )
    return found[0], found[1]


def build_report(sweep: Sweep, attack: str, eps: float | None, pair: str | None) -> Path:
    """Everything the report needs, computed here; written (files, figures) by imbadv.document."""
    from imbadv import document  # matplotlib is loaded only once the sweep is known to be usable

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
    parser.add_argument(
        "--wandb",
        nargs="?",
        const="",
        default=None,
        metavar="MODE",
        help="also log Table 1, findings and figures as one W&B run in the sweep's group "
        "(MODE offline|online; default: the jobs' logger.mode)",
    )
    args = parser.parse_args(argv)
    try:
        root = args.sweep if args.sweep is not None else newest_sweep(Path("multirun"))
        written = build_report(load_sweep(root), args.attack, args.eps, args.pair)
    except ReportError as err:
        print(f"imbadv.report: error: {err}", file=sys.stderr)
        return 2
    print(f"report: {written}")
    if args.wandb is not None:
        from imbadv.tracking import log_report

        log_report(
            root,
            {"table1": root / "table1.csv"},
            sorted(root.glob("fig*.png")),
            {"report": root / "report.html", "findings": root / "report.md"},
            mode=args.wandb or None,
        )
    return 0


if __name__ == "__main__":
    # `python -m` runs this file as __main__; going through the package keeps one copy of the
    # module, so imbadv.document and imbadv.figures (which import imbadv.report) share its classes.
    from imbadv.report import main as package_main

    sys.exit(package_main())
