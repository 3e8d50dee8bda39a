"""Experiment stage: one job in order: data, imbalance, models (stored or trained), attacks, metrics, write."""

from __future__ import annotations

import logging
import subprocess
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch
from omegaconf import DictConfig, OmegaConf

from imbadv import __version__
from imbadv.attacks import EPS_SPACE
from imbadv.attacks.goals import with_target_class
from imbadv.config.errors import ImbadvError
from imbadv.config.settings import Settings, from_config, source_settings
from imbadv.config.sources import CheckpointSource, Source
from imbadv.data.base import Dataset
from imbadv.data.load import load_dataset
from imbadv.data.tensors import predict
from imbadv.devices import job_device, set_threads
from imbadv.metrics import (
    model_summary,
)
from imbadv.obtain import checkpoint_source, obtain_model
from imbadv.plan import balanced_profile, resolve_class
from imbadv.results import FORMAT_VERSION, format_table, with_flag
from imbadv.status.progress import Watch, job_record, quiet_console
from imbadv.status.tracking import start_job
from imbadv.store import Store, atomic_write_json, content_key
from imbadv.transfer import attack_identity, attack_rows

log = logging.getLogger("imbadv.progress")  # Hydra prints it and keeps it in the job's log


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
    files = {  # checkpoint sources first: a file that does not load is refused before any training
        name: checkpoint_source(data, s, source, device)
        for name, source in s.named_sources.items()
        if isinstance(source, CheckpointSource)
    }
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
    for name in s.named_sources:  # parse_sources keeps only those it lists
        if name in files:
            models[name], records[name] = files[name]
            continue
        models[name], records[name] = named_model(data, s, name, target, device, store, watch)
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


def named_model(
    data: Dataset,
    s: Settings,
    name: str,
    target: int,
    device: torch.device,
    store: Store,
    watch: Watch | None,
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A named source's model (`under-3`, `balanced@seed+1`) as the job that trains it would:
    its profile, class, training mode and seed; another seed's `balanced` is the control of the
    job's profile, as the `balanced` source is, so its key is the one that seed's job stores."""
    source = s.named_sources[name]
    ss = source_settings(s, source)
    cls = target if source.target is None else resolve_class(source.target, data)
    profile = balanced_profile(ss, data.train_counts()) if source.control else source.profile
    return obtain_model(data, ss, profile, cls, device, store, watch, name)


def run(cfg: DictConfig, output_dir: Path, concurrent_jobs: int = 1) -> dict[str, Any]:
    """One experiment from a composed config: writes `output_dir/results.json`, prints a table.

    `concurrent_jobs` is how many jobs share this machine's cores (`threads: 0` splits them).
    """
    s = from_config(cfg)
    with job_record(output_dir, s.store_dir):  # job.json: what `python -m imbadv.status` reads
        # W&B opens first so curves stream while models train; it never fails the job.
        watch = Watch(s.progress == "lines", start_job(cfg, output_dir), s.store_dir / "locks")
        if not watch.lines:
            quiet_console()  # the lines still go to the job's run.log
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
    if s.masking_twins:
        log.info(
            "attack.methods: an adversarially trained model is attacked, so the gradient-masking "
            "check (masking_gap) gets the margin twin of each cross-entropy PGD setting: added %s",
            ", ".join(s.masking_twins),
        )
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
        **({"masking_twins": list(s.masking_twins)} if s.masking_twins else {}),
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
