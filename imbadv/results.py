"""The results.json schema, declared once: its format version, fields, the one reader everyone uses, the learned check."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, fields
from pathlib import Path, PurePosixPath
from typing import Any

from imbadv.core.errors import ImbadvError
from imbadv.data.tarsafe import ARCHIVE_SUFFIXES, read_verified

# Version 2: components by name and parameters, the data card, split hashes, attack params.
FORMAT_VERSION = 2


class ResultsError(ImbadvError):
    """A results file that cannot be read as this version of imbadv writes it."""


@dataclass(frozen=True)
class AttackRow:
    """One (gradient source, attack setting) on the target class's test images."""

    method: str  # registered attack name
    attack: str  # name with its non-default parameters: unique within a run
    params: dict  # every parameter as used, defaults resolved (e.g. BIM's alpha and steps)
    eps: float
    eps_space: str
    direction: str
    source: str  # whose gradient made the images: same | balanced | a model of the sweep (under-3)
    seed: int
    dataset: str
    class_name: str
    imbalance: str
    n: int
    clean_acc: float
    clean_acc_ci95: list
    adv_acc: float
    adv_acc_ci95: list
    relative_drop: float
    success_rate: float
    clean_row: list  # where the clean images were predicted (a confusion-matrix row)
    adv_row: list
    max_abs_delta: float
    zero_grad_fraction: float
    # Written since named sources (absent in older files, which the report still reads):
    # model / source_model (canonical names: under-3, balanced+fast_fgsm), model_key, images_key;
    # source_seed only from another seed's model (source balanced@seed+1, docs/transfer.md).


@dataclass(frozen=True)
class ModelEntry:
    """A model the job used: its store record, training record and clean test metrics."""

    key: str
    spec: dict
    train_counts: list
    val_counts: list
    split_sha256: str
    selection: str
    epochs: int
    best_epoch: int
    best_val_loss: float
    history: list
    clean: dict  # acc, per_class_acc, confusion


@dataclass(frozen=True)
class Results:
    """A job's results.json: `meta` (what ran where), `models` by role, `attacks` rows, `config`."""

    format: int
    meta: dict
    key: str
    models: dict
    attacks: list
    config: dict


REQUIRED = {
    "results": [f.name for f in fields(Results)],
    "model": [f.name for f in fields(ModelEntry)],
    # `class` is a Python keyword, so it is named here rather than declared as a field.
    "attack": [f.name for f in fields(AttackRow)] + ["class"],
}


def check(data: Any, where: str = "results") -> dict[str, Any]:
    """`data` if it is a results file of this format with every declared field, else ResultsError."""
    if not isinstance(data, dict) or data.get("format") != FORMAT_VERSION:
        got = data.get("format") if isinstance(data, dict) else type(data).__name__
        raise ResultsError(f"{where}: results format {got}, this imbadv reads {FORMAT_VERSION}")
    _fields(data, "results", where)
    for role, entry in data["models"].items():
        _fields(entry, "model", f"{where}: model {role}")
    for i, row in enumerate(data["attacks"]):
        _fields(row, "attack", f"{where}: attack row {i}")
    return data


def _fields(data: dict, kind: str, where: str) -> None:
    missing = [name for name in REQUIRED[kind] if name not in data]
    if missing:
        raise ResultsError(f"{where}: missing {', '.join(missing)}")


def read_results(path: Path) -> dict[str, Any]:
    """A results.json, checked against the schema; ResultsError when unreadable or of another format."""
    try:
        text = Path(path).read_text()
    except OSError as err:
        raise ResultsError(f"{path}: unreadable ({err})") from None
    return parse_results(text, str(path))


def parse_results(text: str | bytes, where: str) -> dict[str, Any]:
    """A results.json's text (e.g. an archive member), checked as `read_results` checks a file."""
    try:
        data = json.loads(text)
    except ValueError as err:
        raise ResultsError(f"{where}: unreadable ({err})") from None
    return check(data, where)


def format_table(full: dict[str, Any]) -> str:
    """A job's numbers as a short text table (the same numbers as its results.json)."""
    m = full["meta"]
    lines = [
        f"imbadv  {m['dataset']}  class {m['class']} ({m['class_name']})  "
        f"imbalance={m['imbalance']}  seed={m['seed']}  eps space: {m['eps_space']}"
    ]
    for role, entry in full["models"].items():
        file = entry.get("checkpoint")  # a model trained elsewhere: its file and hash instead
        trained = (
            f"checkpoint {file['file']} sha256 {file['sha256'][:16]} ({file['format']})"
            if file
            else f"train counts {counts_text(entry['train_counts'])}  best epoch {entry['best_epoch']}"
        ) + (f"  ** {describe(entry)} **" if never_learned(entry) else "")
        lines.append(f"  {role:<9} model: test acc {entry['clean']['acc']:.3f}  {trained}")
    w = max([10, *(len(r["attack"]) for r in full["attacks"])])  # long labels stay aligned
    m = max([9, *(len(r.get("model", "")) for r in full["attacks"])])
    s = max([9, *(len(r["source"]) for r in full["attacks"])])
    lines.append(
        f"  {'model':<{m}} {'source':<{s}} {'attack':<{w}} {'eps':>6}  {'clean':>6}  {'adv':>6}  "
        f"{'drop':>6}  {'success':>7}  {'95% CI adv':>13}"
    )
    for r in full["attacks"]:
        lo, hi = r["adv_acc_ci95"]
        lines.append(
            f"  {r.get('model', r['imbalance']):<{m}} {r['source']:<{s}} {r['attack']:<{w}} {r['eps']:>6g}  {r['clean_acc']:>6.3f}  "
            f"{r['adv_acc']:>6.3f}  {r['relative_drop']:>6.3f}  {r['success_rate']:>7.3f}  "
            f"[{lo:.3f},{hi:.3f}]"
        )
    if any(never_learned(e) for e in full["models"].values()):
        lines.append(
            "  ** rows of a model that never learned are left out of the report's findings **"
        )
    return "\n".join(lines)


def counts_text(counts: list[int]) -> str:
    """Per-class counts for the table: all of them, or a summary past 20 classes (one line)."""
    if len(counts) <= 20:
        return "[" + ",".join(str(c) for c in counts) + "]"
    return f"{len(counts)} classes, {min(counts)}..{max(counts)} each, {sum(counts)} in all"


# A sweep's job folders, from a folder or a results archive: what the table and the report read.
class SweepError(ImbadvError):
    """A sweep path that is neither a folder nor a readable results archive; the message names it."""


def job_result(files: dict[str, bytes | None], where: str) -> tuple[dict | None, str]:
    """A job's checked results, or None and why not (failed, unreadable, not written yet)."""
    if files.get("results.json") is not None:
        try:
            return parse_results(files["results.json"], f"{where}/results.json"), ""
        except ResultsError as err:
            return None, f"unreadable results.json: {err}"
    if files.get("failed.json") is not None:
        try:
            failed = json.loads(files["failed.json"])
            return None, f"failed: {failed.get('type', 'error')}: {failed.get('error', '')}"
        except (ValueError, AttributeError):
            return None, "failed (failed.json unreadable)"
    return None, "no results.json (running, interrupted or not started)"


def job_files(sweep: Path) -> dict[str, dict[str, bytes | None]]:
    """Per job folder (its path inside the sweep): its results.json and failed.json bytes."""
    if sweep.is_dir():
        jobs: dict[str, dict[str, bytes | None]] = {}
        for p in sweep.rglob("*"):
            rel = p.relative_to(sweep)
            if p.name == ".hydra":
                jobs.setdefault(_name(rel.parent), {})
            elif p.is_file() and p.name in ("results.json", "failed.json"):
                jobs.setdefault(_name(rel.parent), {})[p.name] = p.read_bytes()
        return jobs
    if sweep.is_file() and sweep.name.endswith(ARCHIVE_SUFFIXES):
        manifest, blobs = read_verified(sweep, SweepError)  # `python -m imbadv.report --archive`
        jobs = {job: {} for job in manifest.get("pending", [])}
        for name, data in blobs.items():
            if name.startswith("jobs/") and name.endswith("/results.json"):
                jobs[name[len("jobs/") : -len("/results.json")]] = {"results.json": data}
        return jobs
    raise SweepError(
        f"{sweep}: no such sweep folder or results archive ({', '.join(ARCHIVE_SUFFIXES)}, "
        "made by python -m imbadv.report SWEEP --archive FILE)"
    )


def _name(folder: PurePosixPath | Path) -> str:
    return "" if str(folder) == "." else folder.as_posix()


# Whether a trained model learned at all: its best validation accuracy against chance plus
# noise (docs/report.md). The rule, written into every model record (`learned`, `learned_check`;
# never into its spec, so store keys stay as they were) and applied by the report and status:
#
# - chance is the accuracy of always answering the validation split's most common class,
#   max(val_counts) / sum(val_counts): 1/C on a balanced split, more on a long-tailed one (a
#   model that predicts the head class only is not a model that learned);
# - the margin is Z = 3 binomial standard deviations of that accuracy on the split's n images,
#   3 * sqrt(p (1 - p) / n): the best of many epochs is a maximum over several noisy looks, and
#   with 3 sd a model at chance stays under the bar even when it is looked at 15-50 times
#   (one-sided 0.13 % a look);
# - a model learned when its best validation accuracy over the epochs is above chance + margin.
#
# Bars on balanced splits: 0.182 at the test suite's smoke size (120 validation images), 0.128
# at the quick preset's (1,000), 0.113 at the paper's (5,000). An over-sampled split's chance is its
# target class's share: 0.357 at the quick preset, so its bar is 0.443.

#
# Records trained since models log `val/balanced_acc` (the mean of the per-class validation
# recalls) are judged on it instead, BALANCED_RULE: a model answering one class, or guessing, has
# balanced accuracy 1/C in expectation whatever the split's skew, so the bar no longer rises with
# the head class's share. A long-tail method that trades head accuracy for tail recall (balanced
# softmax, logit adjustment) can sit under the head share's bar in plain accuracy and still have
# learned; the accuracy rule flagged the quick preset's over-3 model of seed 4 (0.432 against a
# bar of 0.443, above its head share 0.357) without being able to tell. Chance there is 1/C over the C classes present in the split; the sd is that of a guesser
# answering each class with probability 1/C: sqrt(sum_c (1/C)(1 - 1/C)/n_c) / C.

Z = 3.0
RULE = (
    "learned = best validation accuracy over the epochs > chance + 3 binomial sd, chance = "
    "the validation split's most common class share (1/C when balanced), sd = sqrt(p(1-p)/n)"
)
BALANCED_RULE = (
    "learned = best balanced validation accuracy (mean per-class recall) over the epochs > "
    "1/C + 3 sd, sd = sqrt(sum_c (1/C)(1-1/C)/n_c)/C over the C classes of the validation split"
)


def bar(val_counts: Sequence[int]) -> tuple[float, float]:
    """(chance, the accuracy a model must exceed) for a validation split with these counts."""
    n = sum(val_counts)
    if n <= 0:
        return math.nan, math.nan
    p = max(val_counts) / n
    return p, p + Z * math.sqrt(p * (1 - p) / n)


def balanced_bar(val_counts: Sequence[int]) -> tuple[float, float]:
    """(chance, the balanced accuracy a model must exceed) for a split with these counts."""
    present = [n for n in val_counts if n > 0]
    if not present:
        return math.nan, math.nan
    c = len(present)
    p = 1 / c
    return p, p + Z * math.sqrt(sum(p * (1 - p) / n for n in present)) / c


def judge(history: Sequence[dict[str, Any]], val_counts: Sequence[int]) -> dict[str, Any]:
    """The check for one training record: `learned` (None when the history has no accuracy),
    on balanced accuracy where the history has it, else on accuracy (records from before)."""
    balanced = any("val/balanced_acc" in h for h in history)
    metric = "val/balanced_acc" if balanced else "val/acc"
    accs = [float(h[metric]) for h in history if metric in h]
    chance, needed = (balanced_bar if balanced else bar)(val_counts)
    best = max(accs) if accs else math.nan
    known = bool(accs) and not math.isnan(needed)
    return {
        "learned": (best > needed) if known else None,
        "learned_check": {
            ("best_balanced_acc" if balanced else "best_val_acc"): best,
            "chance": chance,
            "bar": needed,
            "n_val": int(sum(val_counts)),
            "rule": BALANCED_RULE if balanced else RULE,
        },
    }


def with_flag(record: dict[str, Any]) -> dict[str, Any]:
    """`record` with `learned` and `learned_check` (computed for records written before them)."""
    if "learned" in record and "learned_check" in record:
        return record
    return record | judge(record.get("history", []), record.get("val_counts", []))


def never_learned(record: dict[str, Any]) -> bool:
    """True only when the record is known not to have learned (an unknown one is not flagged)."""
    return with_flag(record)["learned"] is False


def describe(record: dict[str, Any]) -> str:
    """One phrase for tables and status lines: the best accuracy against the bar."""
    c = with_flag(record)["learned_check"]
    what, best = "validation accuracy", c.get("best_val_acc")
    if "best_balanced_acc" in c:
        what, best = "balanced validation accuracy", c["best_balanced_acc"]
    return (
        f"never learned: best {what} {best:.3f} <= "
        f"{c['bar']:.3f} (chance {c['chance']:.3f} + 3 sd, n={c['n_val']})"
    )


if (
    __name__ == "__main__"
):  # `python -m imbadv.results SWEEP --to csv`: the long table (imbadv.export)
    import sys

    from imbadv.export import main

    sys.exit(main())
