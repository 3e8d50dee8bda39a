"""The results.json schema, declared once: its format version, fields, and the one reader everyone uses."""

from __future__ import annotations

import json
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from imbadv.config.errors import ImbadvError

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
    # model / source_model (canonical names: under-3, balanced+fast_fgsm), model_key, images_key.


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
        data = json.loads(Path(path).read_text())
    except (OSError, ValueError) as err:
        raise ResultsError(f"{path}: unreadable ({err})") from None
    return check(data, str(path))


def format_table(full: dict[str, Any]) -> str:
    """A job's numbers as a short text table (the same numbers as its results.json)."""
    m = full["meta"]
    lines = [
        f"imbadv  {m['dataset']}  class {m['class']} ({m['class_name']})  "
        f"imbalance={m['imbalance']}  seed={m['seed']}  eps space: {m['eps_space']}"
    ]
    for role, entry in full["models"].items():
        lines.append(
            f"  {role:<9} model: test acc {entry['clean']['acc']:.3f}  "
            f"train counts {counts_text(entry['train_counts'])}  best epoch {entry['best_epoch']}"
        )
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
    return "\n".join(lines)


def counts_text(counts: list[int]) -> str:
    """Per-class counts for the table: all of them, or a summary past 20 classes (one line)."""
    if len(counts) <= 20:
        return "[" + ",".join(str(c) for c in counts) + "]"
    return f"{len(counts)} classes, {min(counts)}..{max(counts)} each, {sum(counts)} in all"
