"""Report, loading: a sweep folder's results, the attack rows a report selects, per-class statistics."""

from __future__ import annotations

import csv
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imbadv.report.stats import Stat, summarize

CIFAR10_CLASSES = (
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
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
    names = list(CIFAR10_CLASSES) if kind == "cifar10" and num == 10 else [
        f"class{i}" if kind == "synthetic" else str(i) for i in range(num)]  # fmt: skip
    for result in sweep.results:
        names[int(result["meta"]["class"])] = result["meta"]["class_name"]
    return names


def is_cifar10(sweep: Sweep) -> bool:
    """Whether every job's target class has the CIFAR-10 name at its index (any copy of the data)."""
    return all(
        len(next(iter(r["models"].values()))["clean"]["confusion"]) == len(CIFAR10_CLASSES)
        and CIFAR10_CLASSES[int(r["meta"]["class"])] == r["meta"]["class_name"]
        for r in sweep.results
    )


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
