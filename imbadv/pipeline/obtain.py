"""Obtain stage: each model a job needs, from the store, trained once (alone, or grouped with the
sweep's same-shape models: imbadv/grouped/jobs.py), or loaded from a checkpoint file."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import torch

from imbadv.config.sources import CheckpointSource, as_source_error
from imbadv.core.errors import ConfigError
from imbadv.core.registry import Spec
from imbadv.grouped import jobs as grouping
from imbadv.models import CHECKPOINT
from imbadv.pipeline.job import Job
from imbadv.pipeline.plan import (
    Planned,
    balanced_profile,
    build_model,
    data_identity,
    model_facts,
    plan_model,
    posthoc,
    resolve_class,
    sibling_plan,
    training_inputs,
)
from imbadv.results import judge
from imbadv.store import content_key, file_sha256
from imbadv.training.loop import fit


def obtain_model(
    job: Job, profile: Spec, target: int, role: str | None = None, helps: bool = True
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The model for (profile, target) under `job.settings` from the store, trained here first
    if no job has yet; while another job trains it, this one trains (`helps`) the sweep's other
    models that nobody has started, then waits for it."""
    s, data = job.settings, job.data
    if s.model.name == CHECKPOINT:  # it stands in for the job's own model; others train with arch
        from imbadv.models import checkpoint

        if profile == s.imbalance and role in (None, "target"):
            return checkpoint_model(job)
        job = job.using(checkpoint.trained_settings(s))
        s = job.settings
    plan = plan_model(data, s, profile, target, role)
    model = build_model(data, s)
    sibling = sibling_plan(data, s, profile, target, role)
    if helps:
        help_while_busy(job, plan.key)

    def alone(m: torch.nn.Module) -> dict[str, Any]:
        record = train_model(job, m, plan, sibling)
        if "sibling" in record:  # the same run under the other rule: stored for its own jobs
            other = record.pop("sibling")
            job.store.offer(sibling[1].key, build_model(data, s), other.pop("state"), other)
        return record

    record, trained = grouping.obtain(job, plan, model, alone)
    model = posthoc(model.to(job.device).eval(), record, s, job.device)
    return model, {**record, "trained_here": trained}


def help_while_busy(job: Job, key: str) -> None:
    """While another job trains model `key`, obtain the sweep's planned models of the same
    identity that are neither stored nor being trained, each as its own job would (the same
    function, its own settings): models first, so no job waits on a lock while one is left."""
    store = job.store
    if store.recorded(key) or not store.busy(key):
        return
    for ms, mp in grouping.sweep_models(job.data, job.settings):
        if store.recorded(key) or not store.busy(key):
            return
        if mp.key == key or store.recorded(mp.key) or store.busy(mp.key):
            continue
        profile = balanced_profile(ms, job.data.train_counts()) if mp.role == "balanced" else None
        target = 0 if ms.target is None else resolve_class(ms.target, job.data)
        with job.timed("helping"):  # inside `models`, as lock_wait is
            _, record = obtain_model(job.using(ms), profile or ms.imbalance, target, helps=False)
        if record["trained_here"]:
            job.helped.append(mp.key)


def train_model(
    job: Job,
    model: torch.nn.Module,
    plan: Planned,
    sibling: tuple[str, Planned] | None = None,
) -> dict[str, Any]:
    """Train `model` from its seed on the planned split; returns the record the store keeps
    (with `sibling`, the other rule's weights and record under "sibling", for the store)."""
    started = time.perf_counter()
    s, split = job.settings, plan.split
    train_xy, val_xy, loss = training_inputs(model, job.data, s, plan, job.device)
    with job.watch.training(plan.key, plan.role, plan.label) as callbacks:
        record = fit(
            model,
            train_xy,
            val_xy,
            s.train,
            job.device,
            s.seed,
            loss=loss,
            adversarial=s.adversarial,
            callbacks=callbacks,
            recipe=s.recipe,
            sibling=None if sibling is None else sibling[0],
            counts=split.train_counts,
        )
    facts = model_facts(s, plan, split, time.perf_counter() - started)
    if "sibling" in record:
        other = record.pop("sibling")
        rule, other_plan = sibling
        shared = {k: v for k, v in record.items() if k not in other}
        record["sibling"] = {
            **model_facts(s, other_plan, split, facts["train_seconds"], rule),
            **shared,
            **other,
            **judge(record["history"], split.val_counts),
        }
    return {**facts, **record, **judge(record["history"], split.val_counts)}


def checkpoint_model(job: Job, p: Any = None) -> tuple[torch.nn.Module, dict[str, Any]]:
    """`model=checkpoint` (or a checkpoint source's params `p`): the file as a model of the job
    (never trained), keyed by its sha256."""
    from imbadv.models import checkpoint

    p = job.settings.model.params if p is None else p
    model, fmt = checkpoint.obtain(job.data, p, job.device)
    sha256 = file_sha256(Path(p.path))
    spec = checkpoint.spec_of(p, fmt, sha256, data_identity(job.data, job.settings))
    key = content_key(spec)
    return model, {**checkpoint.record(p, fmt, sha256, key, spec), "trained_here": False}


def checkpoint_source(job: Job, source: CheckpointSource) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A checkpoint file named in `attack.sources`: loaded like `model=checkpoint`, its refusals
    (weights that do not fit, a wrong output shape, a pickle that needs code) on its entry."""
    try:
        return checkpoint_model(job, source.params)
    except ConfigError as err:
        raise as_source_error(err, source.text) from None
