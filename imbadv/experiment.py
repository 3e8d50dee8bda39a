"""Experiment stage: one job in order: data, imbalance, models (stored or trained), attacks, metrics, write."""

from __future__ import annotations

import subprocess
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from imbadv import __version__
from imbadv.attacks import EPS_SPACE
from imbadv.attacks.goals import with_target_class
from imbadv.config.errors import ImbadvError
from imbadv.config.registry import Spec, params_key
from imbadv.config.settings import Settings, from_config, parse_target, source_settings
from imbadv.config.sources import Source
from imbadv.data import DATASETS
from imbadv.data.base import Dataset
from imbadv.data.load import load_dataset
from imbadv.data.tensors import on_device, predict
from imbadv.devices import job_device, set_threads
from imbadv.imbalance import PROFILES, targeted
from imbadv.imbalance.split import Split, class_counts, select
from imbadv.metrics import (
    model_summary,
)
from imbadv.models import CHECKPOINT, MODELS
from imbadv.results import FORMAT_VERSION, format_table, judge, with_flag
from imbadv.status.progress import Watch, job_record
from imbadv.status.tracking import start_job
from imbadv.store import Store, atomic_write_json, content_key, file_sha256
from imbadv.training import OBJECTIVES
from imbadv.training.loop import fit
from imbadv.training.objectives import LogitAdjusted
from imbadv.transfer import attack_identity, attack_rows

SELECTION_RULE = "lowest clean validation loss (validation split of the training data)"
SELECTION_RULES = {  # trainer.selection -> its description in every model record
    "val_loss": SELECTION_RULE,
    "robust_val_acc": "highest PGD accuracy on the validation split of the training data",
    "last": "the last epoch (no selection)",
}


def data_identity(data: Dataset, s: Settings) -> dict[str, Any]:
    """What makes two data sets the same for the store: file copies by their source (content hash),
    the official ones by their options."""
    if DATASETS.get("dataset", s.dataset.name).facts.identity == "source":
        return {"name": data.name, "source": data.source}
    return s.dataset.key()


def model_spec(data: Dataset, s: Settings, profile: Spec, target: int) -> dict[str, Any]:
    """Everything that defines one trained model, component by component (each by name and the
    parameters that differ from their defaults); an untargeted profile does not depend on the class.
    """
    return {
        "data": data_identity(data, s),
        "imbalance": profile.key(),
        "class": target if targeted(profile.name) else None,
        "counts": class_counts(data.train_counts(), profile, target),
        "val_fraction": s.val_fraction,
        "model": s.model.key(),
        "objective": s.objective.key(),
        "train": params_key(s.train),
        "seed": s.seed,
        # only when on, so standard training keeps its stored keys
        **({"adversarial": params_key(s.adversarial)} if s.adversarial.mode != "none" else {}),
    }


def build_model(data: Dataset, s: Settings) -> torch.nn.Module:
    """The configured model for this data set's card (classes, shape, mean and std)."""
    return MODELS.get("model", s.model.name).load()(data.card, s.model.params)


def checkpoint_model(
    data: Dataset, s: Settings, device: torch.device
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """`model=checkpoint`: the file as the job's model (never trained), keyed by its sha256."""
    from imbadv.models import checkpoint

    p = s.model.params
    model, fmt = checkpoint.obtain(data, p, device)
    sha256 = file_sha256(Path(p.path))
    spec = checkpoint.spec_of(p, fmt, sha256, data_identity(data, s))
    key = content_key(spec)
    return model, {**checkpoint.record(p, fmt, sha256, key, spec), "trained_here": False}


@dataclass(frozen=True)
class Planned:
    """One model as the store knows it: its spec and key, its split, how progress names it."""

    spec: dict[str, Any]
    key: str
    split: Split
    role: str  # target, balanced or a named source
    label: str


def obtain_model(
    data: Dataset,
    s: Settings,
    profile: Spec,
    target: int,
    device: torch.device,
    store: Store,
    watch: Watch | None = None,
    role: str | None = None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model for (profile, target) from the store, trained here first if no job has yet."""
    if s.model.name == CHECKPOINT:  # it stands in for the job's own model; others train with arch
        from imbadv.models import checkpoint

        if profile == s.imbalance and role in (None, "target"):
            return checkpoint_model(data, s, device)
        s = checkpoint.trained_settings(s)
    plan = plan_model(data, s, profile, target, role)
    model = build_model(data, s)
    from imbadv import grouping  # it builds on this module: imported once a job needs a model

    record, trained = grouping.obtain(data, s, plan, model, device, store, watch)
    return posthoc(model.to(device).eval(), record, s, device), {**record, "trained_here": trained}


def plan_model(data: Dataset, s: Settings, profile: Spec, target: int, role: str | None) -> Planned:
    """The spec, key and split of the model for (profile, target), and its role and label."""
    spec = model_spec(data, s, profile, target)
    split = select(data.y_train, spec["counts"], s.val_fraction, s.seed)
    role = role or ("target" if profile == s.imbalance else "balanced")
    label = (  # an untargeted model is the same whichever job trains it, target or source
        profile.name
        if spec["class"] is None
        else f"{role} {profile.name} class {target} ({data.classes[target]})"
    )
    return Planned(spec, content_key(spec), split, role, label)


def train_model(
    model: torch.nn.Module,
    data: Dataset,
    s: Settings,
    plan: Planned,
    device: torch.device,
    watch: Watch | None,
) -> dict[str, Any]:
    """Train `model` from its seed on the planned split; returns the record the store keeps."""
    started = time.perf_counter()
    train_xy, val_xy, loss = training_inputs(model, data, s, plan, device)
    with (watch or Watch(lines=False)).training(plan.key, plan.role, plan.label) as callbacks:
        record = fit(
            model,
            train_xy,
            val_xy,
            s.train,
            device,
            s.seed,
            loss=loss,
            adversarial=s.adversarial,
            callbacks=callbacks,
        )
    return model_record(s, plan, record, time.perf_counter() - started)


# --- shared with grouped training (imbadv/grouping.py) ---


def training_inputs(
    model: torch.nn.Module, data: Dataset, s: Settings, plan: Planned, device: torch.device
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], Any]:
    """`model` initialized from its seed on `device`, its split's (train, val) there, its loss."""
    model.reset_parameters(torch.Generator().manual_seed(s.seed))
    model.to(device)
    split = plan.split
    train_xy, val_xy = on_device(data, split.train, device), on_device(data, split.val, device)
    loss = OBJECTIVES.get("objective", s.objective.name).load()(
        s.objective.params, split.train_counts
    )
    return train_xy, val_xy, loss


def model_record(s: Settings, plan: Planned, record: dict, seconds: float) -> dict[str, Any]:
    """The record the store keeps for a model `fit` (or grouped training) returned `record` for."""
    split = plan.split
    return {
        "spec": plan.spec,
        "train_counts": split.train_counts,
        "val_counts": split.val_counts,
        "split_sha256": split.digest(),
        "selection": SELECTION_RULES[s.train.selection],
        "adversarial": {"mode": s.adversarial.mode, **params_key(s.adversarial)},
        "posthoc_tau": s.train.posthoc_tau,
        "train_seconds": seconds,
        **record,
        **judge(record["history"], split.val_counts),  # a record field, never in the key
    }


def posthoc(
    model: torch.nn.Module, record: dict[str, Any], s: Settings, device: torch.device
) -> torch.nn.Module:
    """With post-hoc logit adjustment the model is evaluated and attacked as adjusted."""
    if s.train.posthoc_tau > 0:
        return LogitAdjusted(model, record["train_counts"], s.train.posthoc_tau).to(device).eval()
    return model


def model_entry(
    record: dict[str, Any],
    model: torch.nn.Module,
    data: Dataset,
    device: torch.device,
    store: Store,
) -> dict:
    """A stored model's record plus its clean accuracy on the whole test set, computed once per
    model (a balanced model serves every class's jobs; log "cleans")."""

    def clean() -> dict:
        preds = predict(model, torch.from_numpy(data.x_test).to(device))
        return model_summary(data.y_test, preds, data.num_classes)

    summary, _ = store.result(content_key({"clean": record["key"]}), clean, kind="cleans")
    entry = {k: v for k, v in record.items() if k != "trained_here"}
    return entry | {"clean": summary}


def compute(
    data: Dataset,
    s: Settings,
    target: int,
    device: torch.device,
    store: Store,
    watch: Watch | None = None,
) -> tuple[dict[str, Any], dict[str, bool]]:
    """Models, clean metrics and attack rows for one (class, imbalance, seed), computed once.

    Returns the result (from the store when another run already computed it) and, per model
    role (target, balanced, each named source), whether this job trained it.
    """
    models, records = {}, {}
    models["target"], records["target"] = obtain_model(
        data, s, s.imbalance, target, device, store, watch
    )
    if s.imbalance.name == Source.BALANCED:  # its own gradient is the balanced gradient: one row
        s = replace(
            s, sources=tuple(x for x in s.sources if x != Source.BALANCED) or (Source.SAME,)
        )
    elif Source.BALANCED in s.sources:
        models["balanced"], records["balanced"] = obtain_model(
            data, s, balanced_profile(s, data.train_counts()), target, device, store, watch
        )
    for name, source in s.named_sources.items():  # parse_sources keeps only those it lists
        cls = target if source.target is None else resolve_class(source.target, data)
        models[name], records[name] = obtain_model(
            data, source_settings(s, source), source.profile, cls, device, store, watch, name
        )
    trained = {role: r["trained_here"] for role, r in records.items()}
    keys = {role: r["key"] for role, r in records.items()}
    key = content_key(
        {
            "models": keys,
            "class": target,
            "specs": [attack_identity(x) for x in s.specs],
            "sources": list(s.sources),
            "attack_batch_size": s.attack_batch_size,
            "rows": 2,  # images through the store, the balanced model's own rows (docs/transfer.md)
            **({} if s.attack_images == "target" else {"images": [s.attack_images, s.per_class]}),
        }
    )

    def evaluate() -> dict[str, Any]:
        entries = {r: model_entry(records[r], models[r], data, device, store) for r in records}
        rows = attack_rows(data, s, target, models, keys, store, device, watch)
        return {"key": key, "models": entries, "attacks": rows}

    result, _ = store.result(key, evaluate)
    return result, trained


def balanced_profile(s: Settings, available: list[int] | None = None) -> Spec:
    """The balanced profile with the job's counts: the model whose gradient transfer rows use."""
    count = s.imbalance.params.balanced_count(available)
    return PROFILES.parse("imbalance", Source.BALANCED, {"majority": count})


def resolve_class(target: int | str, data: Dataset) -> int:
    """The class index for an index or name, checked against the data set's classes."""
    return int(parse_target(target, data.classes))


def run(cfg: DictConfig, output_dir: Path, concurrent_jobs: int = 1) -> dict[str, Any]:
    """One experiment from a composed config: writes `output_dir/results.json`, prints a table.

    `concurrent_jobs` is how many jobs share this machine's cores (`threads: 0` splits them).
    """
    s = from_config(cfg)
    with job_record(output_dir, s.store_dir):  # job.json: what `python -m imbadv.status` reads
        # W&B opens first so curves stream while models train; it never fails the job.
        watch = Watch(s.progress == "lines", start_job(cfg, output_dir), s.store_dir / "locks")
        try:
            return _run_checked(cfg, s, output_dir, concurrent_jobs, watch)
        except ImbadvError as err:  # e.g. a diverged training: leave a record next to the results
            record = {
                "error": str(err),
                "type": type(err).__name__,
                "time": time.time(),
                "config": OmegaConf.to_container(cfg, resolve=True),
            }
            atomic_write_json(output_dir / "failed.json", record)
            raise
        finally:
            watch.tracker.close()  # marks an unfinished job's run; nothing after finish()


def _run_checked(
    cfg: DictConfig, s: Settings, output_dir: Path, concurrent_jobs: int, watch: Watch
) -> dict[str, Any]:
    started = time.perf_counter()
    threads = set_threads(s.threads, concurrent_jobs)
    data = load_dataset(s.dataset, s.cache_dir)
    target = resolve_class(s.target, data)
    s = replace(s, specs=with_target_class(s.specs, data.classes, target))  # names -> indices
    store = Store(s.store_dir)
    with job_device(s.device, s.jobs_per_gpu, s.store_dir / "locks") as device:
        result, trained = compute(data, s, target, device, store, watch)
    # models and results stored before the flag existed get it here, from their own history
    result = {**result, "models": {r: with_flag(e) for r, e in result["models"].items()}}
    meta = {
        "dataset": data.name,
        "dataset_source": data.source,
        "card": asdict(data.card),
        "class": target,
        "class_name": data.classes[target],
        "imbalance": s.imbalance.name,
        "seed": s.seed,
        "eps_space": EPS_SPACE,
        "test_set": "balanced official test split, "
        + (
            "every image of the target class"
            if s.attack_images == "target"
            else f"every class ({s.per_class or 'all'} images per class, seeded)"
        ),
        "device": str(device),
        "threads": threads,
        "trained_here": trained,
        "wall_seconds": time.perf_counter() - started,
        "versions": versions(),
    }
    full = {
        "format": FORMAT_VERSION,
        "meta": meta,
        **result,
        "config": OmegaConf.to_container(cfg, resolve=True),
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / "results.json", full)
    print(format_table(full))
    watch.tracker.finish(full)  # W&B is quiet: the table stays the last thing printed
    return full


def versions() -> dict[str, str]:
    """Code and library versions, so a number can be traced to what produced it."""
    import lightning

    return {
        "imbadv": __version__,
        "git": git_commit(),
        "torch": torch.__version__,
        "lightning": lightning.__version__,
    }


def git_commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            timeout=5,
            cwd=Path(__file__).parent,
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"
