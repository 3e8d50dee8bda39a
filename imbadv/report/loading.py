"""Report, loading: a sweep folder's results, the attack rows a report selects, per-class statistics."""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imbadv.data.names import (
    CIFAR10_CLASSES,
)  # only to decide whether Table 1 stands by the paper's
from imbadv.report.controls import collapsed
from imbadv.report.errors import ReportError
from imbadv.report.stats import Stat, summarize
from imbadv.results import ResultsError, never_learned, read_results
from imbadv.table import recipe_of


@dataclass
class Sweep:
    """What one or more sweep folders hold now: finished results and the jobs without any (yet)."""

    roots: list[Path]
    results: list[dict[str, Any]]
    pending: list[str] = field(default_factory=list)  # job folders with no results.json
    unreadable: list[str] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)  # the same job found in two folders
    out: Path | None = None  # where the report is written
    manifests: dict[str, dict] = field(default_factory=dict)  # archive path -> its manifest

    @property
    def root(self) -> Path:
        """The folder the report goes into."""
        return self.out if self.out is not None else self.roots[0]


def load_sweep(root: Path) -> Sweep:
    """Every results.json under `root`; job folders (with `.hydra/`) that lack one are pending."""
    return load_sweeps([root])


def load_sweeps(roots: list[Path], out: Path | None = None) -> Sweep:
    """Sweep folders or results archives as one (e.g. seeds run as separate sweeps); a job found
    twice counts once."""
    sweep, seen = Sweep(list(roots), [], out=out), set()
    for root in roots:
        # with several roots, job names carry their root so the report says where each is
        prefix = "" if len(roots) == 1 else f"{root.name}/"
        jobs, pending = folder_jobs(root) if root.is_dir() else archive_jobs(root, sweep)
        sweep.pending += [prefix + p for p in pending]
        for name, full in jobs:
            if full is None:  # another format is unreadable, not guessed
                sweep.unreadable.append(prefix + name)
            elif full.get("key") in seen:  # the same job (key: class, profile, seed, settings)
                sweep.duplicates.append(prefix + name)
            else:
                seen.add(full.get("key"))
                sweep.results.append(full)
    if not sweep.results:
        names = ", ".join(map(str, roots))
        raise ReportError(f"{names}: no results.json found (jobs started: {len(sweep.pending)})")
    return sweep


def folder_jobs(root: Path) -> tuple[list[tuple[str, dict | None]], list[str]]:
    """(job folder, its results or None if unreadable) for a sweep folder, and jobs without any."""
    jobs = []
    for path in sorted(root.rglob("results.json")):
        try:  # the declared schema (imbadv.results)
            full = read_results(path)
        except ResultsError:
            full = None
        jobs.append((path.parent.relative_to(root).as_posix(), full))
    pending = [
        h.parent.relative_to(root).as_posix()
        for h in sorted(root.rglob(".hydra"))
        if not (h.parent / "results.json").exists()
    ]
    return jobs, pending


def archive_jobs(root: Path, sweep: Sweep) -> tuple[list[tuple[str, dict | None]], list[str]]:
    """The same from a results archive (`python -m imbadv.report SWEEP --archive FILE`)."""
    from imbadv.report.archive import is_archive, read_archive

    if not is_archive(root):
        raise ReportError(f"{root}: no such sweep folder or results archive (.tar.gz)")
    manifest, results = read_archive(root)
    sweep.manifests[str(root)] = manifest
    return sorted(results.items()), list(manifest.get("pending", []))


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
    """Which attack rows make the report: one method, one eps, one direction; with `attack`, one
    setting of the method (its rows' label) when the sweep ran several."""

    method: str
    eps: float
    direction: str
    all_eps: tuple[float, ...]
    eps_space: str = "pixel [0, 1]"
    attack: str | None = None  # None: every row of the method (it ran with one setting)


def choose(rows: list[dict[str, Any]], method: str, eps: float | None) -> Selection:
    """The attack and eps to report; the paper's 0.01 when the sweep has it, else the most common."""
    mine = [r for r in rows if r["method"] == method]
    if not mine:
        found = sorted({r["method"] for r in rows})
        raise ReportError(
            f"--attack {method}: the sweep has no such rows (it has {', '.join(found)})"
        )
    attack = plain_setting(mine)
    if attack is not None:
        mine = [r for r in mine if r.get("attack") == attack]
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
    space = str(mine[0].get("eps_space", "unknown"))
    return Selection(method, eps, direction, all_eps, space, attack)


def plain_setting(rows: list[dict[str, Any]]) -> str | None:
    """The setting (row label) reported for a method that ran with several, else None.

    PGD runs beside its margin twin (added for the gradient-masking check) and AT-BSL's logits x10
    check: mixed, a model would have several rows per class. The plain one is reported: the
    cross-entropy loss on logits as they are; among several, the most frequent, then by name.
    """
    counts: dict[str, int] = {}
    for r in rows:
        counts[r.get("attack")] = counts.get(r.get("attack"), 0) + 1
    if len(counts) < 2:
        return None

    def plain(label: str) -> bool:
        params = [r.get("params") or {} for r in rows if r.get("attack") == label]
        return any(p.get("loss", "ce") == "ce" and p.get("logit_scale", 1.0) == 1.0 for p in params)

    return min(counts, key=lambda a: (not plain(a), -counts[a], str(a)))


def pick(
    rows: list[dict[str, Any]], sel: Selection, eps: float | None = None, **match: Any
) -> list:
    """The rows of the selection (at `eps` if given) whose fields equal `match`."""
    eps = sel.eps if eps is None else eps
    return [
        r
        for r in rows
        if r["method"] == sel.method
        and (sel.attack is None or r.get("attack") == sel.attack)
        and math.isclose(float(r["eps"]), eps)
        and r["direction"] == sel.direction
        and all(r[k] == v for k, v in match.items())
    ]


def attack_rows(sweep: Sweep, collapse: dict[str, float] | None = None) -> list[dict[str, Any]]:
    """Every attack row, with its model's setting (profile, objective, adversarial, of) and `group`.

    A row measured in several jobs (the balanced model's own rows for a class come with every
    job that uses its images) counts once: rows are told apart by attacked model and image set.
    A model that never learned, or whose predictions collapsed (`collapse`: min_classes,
    max_share), makes its rows `learned: false`.
    """
    out, seen = [], set()
    for result in sweep.results:
        ok = {
            role: not never_learned(e) and not collapse_reason(e, collapse)
            for role, e in result["models"].items()
        }
        for row in result["attacks"]:
            ident = (row.get("model_key"), row.get("images_key"))
            if ident[0] is not None and ident in seen:
                continue
            seen.add(ident)
            merged = {**setting(result), **row}  # a balanced model's own row says "balanced"
            out.append({**merged, "group": group_label(merged), "learned": row_learned(row, ok)})
    return out


def collapse_reason(entry: dict[str, Any], collapse: dict[str, float] | None) -> str:
    """Why a model's clean predictions count as collapsed under the plan's rule ("" if not)."""
    confusion = (entry.get("clean") or {}).get("confusion")
    if not collapse or not confusion:
        return ""
    rule = collapsed(confusion, int(collapse["min_classes"]), float(collapse["max_share"]))
    return rule.reason


def row_learned(row: dict[str, Any], ok: dict[str, bool]) -> bool:
    """Whether the attacked model and the model whose gradient made the images both learned."""
    attacked = row.get("role", "target")
    source = attacked if row["source"] == "same" else row["source"]
    return ok.get(attacked, True) and ok.get(source, True)


def class_names(sweep: Sweep) -> list[str]:
    """Names per class index, from the data card every result carries (no guessing by data set)."""
    first = sweep.results[0]
    num = len(next(iter(first["models"].values()))["clean"]["confusion"])
    names = list(first["meta"].get("card", {}).get("classes") or [str(i) for i in range(num)])
    for result in sweep.results:
        names[int(result["meta"]["class"])] = result["meta"]["class_name"]
    return names


PAPER_SCALE = (1.0, 5000)  # the paper's VGG width and images per class (Possas & Zhou)


def scale_note(sweep: Sweep) -> str | None:
    """A caveat when the jobs ran below the paper's scale (a thinner VGG or fewer images per
    class): their findings show directions, not the paper's numbers. None at the paper's scale."""
    small = set()
    for r in sweep.results:
        cfg = r.get("config") or {}
        width = (cfg.get("model") or {}).get("width", 1.0)
        majority = (cfg.get("counts") or {}).get("majority", PAPER_SCALE[1])
        if width < PAPER_SCALE[0] or majority < PAPER_SCALE[1]:
            small.add((width, majority))
    if not small:
        return None
    what = "; ".join(f"width {w:g}, {m:,} images per class" for w, m in sorted(small))
    return (
        f"**Below the paper's scale** ({what}; the paper: width 1, 5,000 per class): every "
        "verdict here is about the direction of an effect at this scale, not the paper's numbers."
    )


def is_cifar10(sweep: Sweep) -> bool:
    """Whether every job's target class has the CIFAR-10 name at its index (any copy of the data)."""
    return all(
        len(next(iter(r["models"].values()))["clean"]["confusion"]) == len(CIFAR10_CLASSES)
        and CIFAR10_CLASSES[int(r["meta"]["class"])] == r["meta"]["class_name"]
        for r in sweep.results
    )


BELOW, NOT_LEARNED = "a cell below the floor", "a model that never learned (or collapsed)"


@dataclass(frozen=True)
class Floor:
    """Cells below it are degenerate: flagged in Table 1, left out of findings.

    A relative drop or success rate is a ratio over the correctly classified images: with 20 of
    them its 95 % binomial interval is up to +/-22 points wide, with 5 it says nothing; and a
    class recognised less than 5 % of the time (half of chance on 10 classes) was not learned,
    so "how much of it the attack destroys" has no meaning there.
    """

    min_clean: float = 0.05
    min_correct: int = 20

    def degenerate(self, row: dict[str, Any]) -> bool:
        return row["clean_acc"] < self.min_clean or correct(row) < self.min_correct

    def why_out(self, row: dict[str, Any]) -> str | None:
        """Why a row is left out of findings (a model that never learned first), or None."""
        if not row.get("learned", True):
            return NOT_LEARNED
        return BELOW if self.degenerate(row) else None

    def below(self, right: int, n: int) -> bool:
        """The same rule on counts: `right` of the class's `n` clean test images classified right."""
        return n <= 0 or right / n < self.min_clean or right < self.min_correct

    def describe(self) -> str:
        return f"clean target-class accuracy < {self.min_clean:.0%} or < {self.min_correct} correctly classified images"


def correct(row: dict[str, Any]) -> int:
    """The count of correctly classified clean images of the target class."""
    return round(row["clean_acc"] * row["n"])


def setting(result: dict[str, Any]) -> dict[str, str]:
    """A job's model setting: profile (with `of`/ratio), objective, adversarial training, as labels."""
    cfg = result.get("config", {})
    imb = cfg.get("imbalance") or {"name": result["meta"]["imbalance"]}
    extra = [f"{k}={imb[k]}" for k in ("of", "ratio") if imb.get(k) is not None]
    return {
        "profile": imb["name"] + (f"({', '.join(extra)})" if extra else ""),
        "objective": (cfg.get("objective") or {}).get("name", "ce"),
        "adversarial": adversarial_label(cfg.get("adversarial") or {}),
        "of": str(imb.get("of") or ""),
        "recipe": recipe_label(cfg),
    }


def adversarial_label(adv: dict[str, Any]) -> str:
    """`pgd_at`, or `pgd_at(classwise)` with class-wise eps: another setting of the same method."""
    mode = adv.get("mode", "none")
    return f"{mode}(classwise)" if adv.get("classwise") else mode


PAPER_RECIPE = ("rmsprop_keras", "keras_decay", "none")


def recipe_label(cfg: dict[str, Any]) -> str:
    """`sgd/step/crop_flip` for a recipe other than the paper's (optimizer/schedule/augment);
    "" for the paper's, so the paper's settings keep their labels."""
    names = tuple(part.get("name") for part in recipe_of(cfg).values())
    return "" if names == PAPER_RECIPE else "/".join(names)


def group_of(result: dict[str, Any]) -> str:
    """The setting as one label: `exp(ratio=50) + balanced_softmax + pgd_at`; defaults left out."""
    return group_label(setting(result))


def group_label(s: dict[str, Any]) -> str:
    extra = [s["objective"]] * (s["objective"] != "ce") + [s["adversarial"]] * (
        s["adversarial"] != "none"
    )
    recipe = [s["recipe"]] if s.get("recipe") else []
    return " + ".join([s["profile"], *extra, *recipe])


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
    stats = {
        c: summarize([r[metric] for r in rs], [tuple(r[ci]) if ci in r else None for r in rs])
        for c, rs in by_class.items()
    }
    return {c: s for c, s in stats.items() if s is not None}
