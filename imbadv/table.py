"""Results as one long table: a row per (job, attacked model, attack, gradient source, class)."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imbadv.results import job_files, job_result

# The numbers of a row as results.json stores them (intervals split into _lo / _hi columns).
METRICS = (
    "n",
    "clean_acc",
    "clean_acc_lo",
    "clean_acc_hi",
    "adv_acc",
    "adv_acc_lo",
    "adv_acc_hi",
    "relative_drop",
    "success_rate",
    "clean_row",
    "adv_row",
    "max_abs_delta",
    "zero_grad_fraction",
    "masking_gap",
    "gradient_masking",
)
# Where a number came from, never what was asked for: listed when sweeps differ, never paired on.
PROVENANCE = (
    "dataset_source",
    "dataset_checksum",
    "split_sha256",
    "model_key",
    "model_sha256",
    "model_file",
    "source_sha256",
    "source_file",
    "images_key",
    "git",
    "imbadv_version",
    "torch",
    "lightning",
)
ID = ("sweep", "job", "job_key", "repeat")
# What the attacked model is and did, not what was asked for (its setting is the profile columns).
MODEL_FACTS = (
    "train_counts",
    "train_count",
    "model_epochs",
    "model_best_epoch",
    "model_clean_acc",
    "predicted_share",  # the attacked model's clean prior for the row's class
    "precision",
    "attacked_model",
    "source_model",
    "source_seed",
    "attack",
)


@dataclass
class Table:
    """The rows of one or more sweeps, and the jobs that have no readable results (and why)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    missing: list[dict[str, str]] = field(default_factory=list)  # sweep, job, reason

    @property
    def columns(self) -> list[str]:
        """Every column: identity, settings, provenance, metrics; first-seen order within each."""
        seen = list(dict.fromkeys(k for row in self.rows for k in row))
        return sorted(seen, key=lambda k: (kind(k), seen.index(k)))


def kind(column: str) -> int:
    """0 identity, 1 setting, 2 provenance and model facts, 3 metric."""
    if column in ID:
        return 0
    if column in METRICS or column == "class_name":
        return 3
    return 2 if column in PROVENANCE or column in MODEL_FACTS else 1


def read(*sweeps: str | Path) -> Table:
    """The long table of sweep folders or archives (.tar, .tar.gz, .tgz, .zip), in the order given."""
    table, seen = Table(), set()
    for sweep in map(Path, sweeps):
        for job, files in sorted(job_files(sweep).items()):
            where = f"{sweep}/{job}" if job else str(sweep)
            full, reason = job_result(files, where)
            if full is None:
                table.missing.append({"sweep": str(sweep), "job": job, "reason": reason})
                continue
            for row in job_rows(full, str(sweep), job):
                ident = (row["model_key"], row["images_key"], row["class"])
                row["repeat"] = ident[0] is not None and ident in seen
                seen.add(ident)
                table.rows.append(row)
    return table


def job_rows(full: dict[str, Any], sweep: str, job: str) -> list[dict[str, Any]]:
    """Every row of one job: its attack rows, one per class when the whole test set was attacked."""
    base = {"sweep": sweep, "job": job, "job_key": full["key"], "repeat": False}
    base |= job_settings(full)
    rows = []
    for attack in full["attacks"]:
        model = full["models"].get(attack.get("role", "target"), {})
        common = {**base, **model_columns(model), **attack_columns(attack)}
        common |= source_columns(full["models"], attack)
        for cls in class_metrics(attack, full["meta"]):
            counts = model.get("train_counts") or []
            train = counts[cls["class"]] if cls["class"] < len(counts) else None
            rows.append({**common, **cls, "train_count": train, **prior(model, cls["class"])})
    return rows


def prior(model: dict[str, Any], cls: int) -> dict[str, float | None]:
    """The attacked model's clean prior for the row's class: how often it predicts the class at
    all (share of every test image) and how often it is right when it does (precision)."""
    confusion = (model.get("clean") or {}).get("confusion") or []
    if cls >= len(confusion):
        return {"predicted_share": None, "precision": None}
    column = sum(row[cls] for row in confusion)
    total = sum(map(sum, confusion))
    share = column / total if total else None
    return {"predicted_share": share, "precision": confusion[cls][cls] / column if column else None}


# Before the recipe was a set of components, the paper's optimizer and schedule were
# trainer.lr, rho, eps and decay; a job written then ran exactly these.
LEGACY = {
    "optimizer": ("rmsprop_keras", ("lr", "rho", "eps")),
    "schedule": ("keras_decay", ("decay",)),
}


def recipe_of(cfg: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The job's optimizer, schedule and augmentation groups, for old jobs too."""
    trainer = cfg.get("trainer") or {}
    out = {}
    for part, (name, keys) in LEGACY.items():
        legacy = {"name": name, **{k: trainer[k] for k in keys if k in trainer}}
        out[part] = cfg.get(part) or legacy
    out["augment"] = cfg.get("augment") or {"name": "none"}
    return out


def recipe_columns(part: str, spec: dict[str, Any]):
    """`optimizer` = its name, then `optimizer.<param>` per parameter."""
    yield part, spec.get("name")
    yield from flat(part, spec).items()


def job_settings(full: dict[str, Any]) -> dict[str, Any]:
    """The job's own settings: data set, architecture, recipe, objective, adversarial training."""
    cfg, meta = full["config"], full["meta"]
    versions = meta.get("versions", {})
    data = cfg.get("dataset", {})
    return {
        "dataset": meta["dataset"],
        **flat("dataset", data),
        "dataset_source": meta.get("dataset_source"),
        "dataset_checksum": checksum(meta.get("dataset_source", "")),
        "model": (cfg.get("model") or {}).get("name"),
        **flat("model", cfg.get("model") or {}),
        **flat("trainer", cfg.get("trainer") or {}),
        **{
            col: v for part, spec in recipe_of(cfg).items() for col, v in recipe_columns(part, spec)
        },
        "objective": (cfg.get("objective") or {}).get("name", "ce"),
        **flat("objective", cfg.get("objective") or {}),
        "adversarial": (cfg.get("adversarial") or {}).get("mode", "none"),
        **flat("adversarial", cfg.get("adversarial") or {}, skip="mode"),
        "images": (cfg.get("attack") or {}).get("images", "target"),
        "per_class": (cfg.get("attack") or {}).get("per_class"),
        "git": versions.get("git"),
        "imbadv_version": versions.get("imbadv"),
        "torch": versions.get("torch"),
        "lightning": versions.get("lightning"),
    }


def model_columns(model: dict[str, Any]) -> dict[str, Any]:
    """The attacked model: its profile (by its own record: a balanced model's rows say balanced)."""
    spec = model.get("spec", {})
    imb = spec.get("imbalance", {})
    file = model.get("checkpoint") or {}  # model=checkpoint: the file it was read from
    return {
        "profile": imb.get("name"),
        **flat("profile", imb.get("params") or {}),
        "model_class": spec.get("class"),
        "train_counts": model.get("train_counts"),
        "split_sha256": model.get("split_sha256"),
        "model_sha256": model.get("sha256") or file.get("sha256"),
        "model_file": file.get("file"),
        "model_epochs": model.get("epochs"),
        "model_best_epoch": model.get("best_epoch"),
        "model_clean_acc": (model.get("clean") or {}).get("acc"),
    }


def source_columns(models: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint file as the row's gradient source (`attack.sources=[checkpoint:FILE]`): its
    file name and sha256 (None for a model imbadv trained, named by `source_model` and its key)."""
    file = (models.get(row["source"]) or {}).get("checkpoint") or {}
    return {"source_file": file.get("file"), "source_sha256": file.get("sha256")}


def attack_columns(row: dict[str, Any]) -> dict[str, Any]:
    """The attack setting and the row-level numbers (shared by every class of the row)."""
    return {
        "role": row.get("role", "target"),
        "attacked_model": row.get("model"),
        "source": row["source"],
        "source_model": row.get("source_model"),
        "source_seed": row.get("source_seed"),  # only another seed's model (`balanced@seed+1`)
        "method": row["method"],
        "attack": row["attack"],
        **flat("attack", row.get("params") or {}),
        "eps": row["eps"],
        "eps_space": row["eps_space"],
        "direction": row["direction"],
        "target_class": row.get("target_class"),
        "seed": row["seed"],
        "model_key": row.get("model_key"),
        "images_key": row.get("images_key"),
        **{k: row.get(k) for k in ("max_abs_delta", "zero_grad_fraction")},
        **{k: row.get(k) for k in ("masking_gap", "gradient_masking")},
    }


def class_metrics(row: dict[str, Any], meta: dict[str, Any]) -> list[dict[str, Any]]:
    """Per class: the row's target class as stored, and with attack.images=all every other class
    (accuracies, intervals and confusion rows; drop and success rate are stored for the target only).
    """
    target = {
        "class": int(row["class"]),
        "class_name": row["class_name"],
        "n": row["n"],
        **interval("clean_acc", row["clean_acc"], row["clean_acc_ci95"]),
        **interval("adv_acc", row["adv_acc"], row["adv_acc_ci95"]),
        "relative_drop": row["relative_drop"],
        "success_rate": row["success_rate"],
        "clean_row": row["clean_row"],
        "adv_row": row["adv_row"],
    }
    if "classes" not in row:
        return [target]
    names = (meta.get("card") or {}).get("classes") or []
    every = row["classes"]
    out = []
    for c in every["per_class"]:
        i = int(c["class"])
        if i == target["class"]:
            out.append(target)
            continue
        out.append(
            {
                "class": i,
                "class_name": names[i] if i < len(names) else str(i),
                "n": c["n"],
                **interval("clean_acc", c["clean_acc"], c["clean_acc_ci95"]),
                **interval("adv_acc", c["adv_acc"], c["adv_acc_ci95"]),
                "relative_drop": None,
                "success_rate": None,
                "clean_row": every["clean_confusion"][i],
                "adv_row": every["adv_confusion"][i],
            }
        )
    return out


def interval(name: str, value: float, ci: list | None) -> dict[str, Any]:
    lo, hi = ci if ci else (None, None)
    return {name: value, f"{name}_lo": lo, f"{name}_hi": hi}


def flat(prefix: str, section: dict[str, Any], skip: str = "name") -> dict[str, Any]:
    """`prefix.key` columns for a config section; nested values as JSON text (one cell each)."""
    return {
        f"{prefix}.{k}": json.dumps(v, sort_keys=True) if isinstance(v, dict | list) else v
        for k, v in section.items()
        if k != skip
    }


def checksum(source: str) -> str | None:
    """The content hash a data copy's source line names (folder, Tiny-ImageNet); None for the
    official sets, which are identified by name and checked against their published md5."""
    found = re.search(r"sha256 ([0-9a-f]{16,64})", source or "")
    return found.group(1) if found else None


def frame(*sweeps: str | Path) -> Any:
    """The long table as a pandas DataFrame (`pip install -e ".[table]"`); `.attrs["missing"]`
    lists the jobs without results."""
    import pandas as pd  # optional: only this entry point and parquet need it

    table = read(*sweeps)
    df = pd.DataFrame(table.rows, columns=table.columns)
    df.attrs["missing"] = table.missing
    return df
