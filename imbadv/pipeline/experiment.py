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
from imbadv.config.settings import Settings, from_config, source_settings
from imbadv.config.sources import CheckpointSource, Source
from imbadv.core.errors import ImbadvError
from imbadv.data.base import Dataset
from imbadv.data.load import load_dataset
from imbadv.data.tensors import predict
from imbadv.devices import job_device, set_threads
from imbadv.metrics import (
    model_summary,
)
from imbadv.pipeline.attack import attack_identity, attack_rows
from imbadv.pipeline.job import Job
from imbadv.pipeline.obtain import checkpoint_source, obtain_model
from imbadv.pipeline.plan import balanced_profile, resolve_class
from imbadv.results import FORMAT_VERSION, format_table, with_flag
from imbadv.store import Store, atomic_write_json, content_key
from imbadv.telemetry.progress import Watch, job_record, quiet_console
from imbadv.telemetry.tracking import start_job

log = logging.getLogger("imbadv.progress")  # Hydra prints it and keeps it in the job's log


def model_entry(job: Job, record: dict[str, Any], model: torch.nn.Module) -> dict:
    """A stored model's record plus its clean accuracy on the whole test set, computed once per
    model (a balanced model serves every class's jobs; log "cleans")."""

    def clean() -> dict:
        preds = predict(model, torch.from_numpy(job.data.x_test).to(job.device))
        return model_summary(job.data.y_test, preds, job.data.num_classes)

    summary, _ = job.store.result(content_key({"clean": record["key"]}), clean, kind="cleans")
    entry = {k: v for k, v in record.items() if k != "trained_here"}
    return entry | {"clean": summary}


def compute(job: Job) -> tuple[dict[str, Any], dict[str, bool]]:
    """Models, clean metrics and attack rows for one (class, imbalance, seed), computed once.

    Returns the result (from the store when another run already computed it) and, per model
    role (target, balanced, each named source), whether this job trained it.
    """
    s = job.settings
    files = {  # checkpoint sources first: a file that does not load is refused before any training
        name: checkpoint_source(job, source)
        for name, source in s.named_sources.items()
        if isinstance(source, CheckpointSource)
    }
    with job.timed("models"):
        models, records, job = obtain_models(job, files)
    trained = {role: r["trained_here"] for role, r in records.items()}
    keys = {role: r["key"] for role, r in records.items()}
    key = result_key(job, keys)

    def evaluate() -> dict[str, Any]:
        with job.timed("clean_eval"):
            entries = {r: model_entry(job, records[r], models[r]) for r in records}
        with job.timed("attacks"):
            rows = attack_rows(job, models, keys)
        return {"key": key, "models": entries, "attacks": rows}

    result, computed = job.store.result(key, evaluate)
    if not computed:  # another job's result: no clean evaluation or attack ran here
        job.seconds.setdefault("clean_eval", 0.0), job.seconds.setdefault("attacks", 0.0)
    return result, trained


def obtain_models(job: Job, files: dict) -> tuple[dict, dict, Job]:
    """The attacked model, the balanced source and the named sources, with their records; the
    job (a balanced job's own gradient is the balanced gradient: its sources lose `balanced`)."""
    s = job.settings
    models, records = {}, {}
    models["target"], records["target"] = obtain_model(job, s.imbalance, job.target)
    if s.imbalance.name == Source.BALANCED:  # its own gradient is the balanced gradient: one row
        s = replace(
            s, sources=tuple(x for x in s.sources if x != Source.BALANCED) or (Source.SAME,)
        )
        job = job.using(s)
    elif Source.BALANCED in s.sources:
        profile = balanced_profile(s, job.data.train_counts())
        models["balanced"], records["balanced"] = obtain_model(job, profile, job.target)
    for name in s.named_sources:  # parse_sources keeps only those it lists
        found = files[name] if name in files else named_model(job, name)
        models[name], records[name] = found
    return models, records, job


def result_key(job: Job, keys: dict[str, str]) -> str:
    """The store key of a job's result: its models' keys, class, attacks and sources."""
    s = job.settings
    return content_key(
        {
            "models": keys,
            "class": job.target,
            "specs": [attack_identity(x) for x in s.specs],
            "sources": list(s.sources),
            "attack_batch_size": s.attack_batch_size,
            "rows": 2,  # images through the store, the balanced model's own rows (docs/transfer.md)
            **({} if s.attack_images == "target" else {"images": [s.attack_images, s.per_class]}),
        }
    )


def named_model(job: Job, name: str) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A named source's model (`under-3`, `balanced@seed+1`) as the job that trains it would:
    its profile, class, training mode and seed; another seed's `balanced` is the control of the
    job's profile, as the `balanced` source is, so its key is the one that seed's job stores."""
    source = job.settings.named_sources[name]
    ss = source_settings(job.settings, source)
    cls = job.target if source.target is None else resolve_class(source.target, job.data)
    profile = balanced_profile(ss, job.data.train_counts()) if source.control else source.profile
    return obtain_model(job.using(ss), profile, cls, name)


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
    started, begun = time.perf_counter(), time.time()
    if s.masking_twins:
        log.info(
            "attack.methods: an adversarially trained model is attacked, so the gradient-masking "
            "check (masking_gap) gets the margin twin of each cross-entropy PGD setting: added %s",
            ", ".join(s.masking_twins),
        )
    threads = set_threads(s.threads, concurrent_jobs)
    waiting = time.perf_counter()
    data = load_dataset(s.dataset, s.cache_dir)
    seconds = {"data": time.perf_counter() - waiting}
    target = resolve_class(s.target, data)
    s = replace(s, specs=with_target_class(s.specs, data.classes, target))  # names -> indices
    waiting, store = time.perf_counter(), Store(s.store_dir)
    with job_device(s.device, s.jobs_per_gpu, s.store_dir / "locks") as device:
        seconds["device_wait"] = time.perf_counter() - waiting  # a free GPU slot
        job = Job(data, s, target, device, store, watch, seconds)
        result, trained = compute(job)
    seconds["lock_wait"] = store.lock_wait_seconds  # inside models, clean_eval and attacks
    # models and results stored before the flag existed get it here, from their own history
    result = {**result, "models": {r: with_flag(e) for r, e in result["models"].items()}}
    meta = job_meta(data, s, target, device) | {
        "threads": threads,
        "trained_here": trained,
        "helped": job.helped,  # other jobs' models trained here while this job's was busy
        "wall_seconds": time.perf_counter() - started,
        "stage_seconds": {k: round(v, 4) for k, v in seconds.items()},
        "started_at": begun,
        "finished_at": time.time(),
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


def job_meta(data: Dataset, s: Settings, target: int, device: torch.device) -> dict[str, Any]:
    """What a job's results.json says it ran on: data, class, imbalance, seed, eps space."""
    return {
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
    }


def versions() -> dict[str, str]:
    """Code and library versions, so a number can be traced to what produced it."""
    import lightning

    return {
        "imbadv": __version__,
        "git": CODE_COMMIT,
        "torch": torch.__version__,
        "lightning": lightning.__version__,
    }


def git_commit(where: Path | None = None) -> str:
    """The short commit of the code that ran, `+dirty` when the package or the configs differ
    from it (changed or new files: the code is then not that commit's); "unknown" outside git."""

    def git(*args: str) -> str:
        cwd = where or Path(__file__).parent
        out = subprocess.run(["git", *args], capture_output=True, text=True, timeout=5, cwd=cwd)
        return out.stdout.strip() if out.returncode == 0 else ""

    try:
        commit = git("rev-parse", "--short", "HEAD")
        changed = commit and git("status", "--porcelain", "--", ":(top)imbadv", ":(top)conf")
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{commit}+dirty" if changed else commit or "unknown"


# Read once, when the code is imported: a sweep runs the code it loaded at its start, however
# the checkout moves while it runs (a commit made mid-sweep is not the code of its later jobs).
CODE_COMMIT = git_commit()
