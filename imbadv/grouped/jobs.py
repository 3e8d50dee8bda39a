"""Grouped training in a job: its planned group trained once, together, each member stored under
its own key as if trained alone; the per-model path where grouping is off, slower or not exact."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import replace
from typing import NamedTuple

import torch
from filelock import Timeout

from imbadv.config.settings import Settings
from imbadv.core.errors import ImbadvError
from imbadv.data.base import Dataset
from imbadv.grouped.groups import Member, identity, read_plan
from imbadv.grouped.train import Member as Inputs
from imbadv.grouped.train import fit_group, ungroupable
from imbadv.imbalance import PROFILES
from imbadv.pipeline.job import Job
from imbadv.pipeline.plan import (
    SIBLINGS,
    Planned,
    balanced_profile,
    build_model,
    model_facts,
    plan_model,
    resolve_class,
    training_inputs,
)
from imbadv.results import judge
from imbadv.store import Store, content_key
from imbadv.telemetry.progress import GroupFacts


class Resolved(NamedTuple):
    """A planned member as its own job would make it."""

    settings: Settings
    plan: Planned  # its spec, key and split


def obtain(
    job: Job, plan: Planned, model: torch.nn.Module, alone: Callable[[torch.nn.Module], dict]
) -> tuple[dict, bool]:
    """The model `plan.key` from the store, else trained (grouped when on): (record, trained).

    `alone(model)` trains one model by itself and returns its record
    (imbadv.pipeline.obtain.train_model)."""
    s = job.settings
    members = planned(job.data, s, plan)
    fields = {"group": s.train.group, "group_members": [m.plan.key for m in members]}
    if len(members) > 1 and grouping_on(s, model, job.device):
        found = obtain_grouped(job, members, model, alone, fields)
        if found is not None:
            return found
    return job.store.model(plan.key, model, lambda m: {**alone(m), **fields, "grouped": False})


def grouping_on(s: Settings, model: torch.nn.Module, device: torch.device) -> bool:
    """`on`; `auto` only on a GPU (on 2 CPU threads grouped ran at 0.50x: docs/grouped.md);
    never where grouping would not be exact (`ungroupable`), nor for an adversarial run that
    alone also yields its sibling rule's model (grouped, that model would be trained again)."""
    asked = s.train.group == "on" or (s.train.group == "auto" and device.type == "cuda")
    pair = SIBLINGS.get(s.train.selection) is not None and (
        not s.train.early_stopping or s.train.selection == "last"
    )
    if pair and s.adversarial.on:
        return False
    return asked and ungroupable(model, s.train, s.adversarial) is None


def planned(data: Dataset, s: Settings, plan: Planned) -> list[Resolved]:
    """This model's group as the sweep planned it, itself first: the listed members this data
    makes with the same training-set size. Only itself when no plan lists it."""
    found: dict[str, Resolved] = {plan.key: Resolved(s, plan)}
    listed = False
    for request in read_plan(s.store_dir, identity(s)):
        try:
            member = resolve(data, s, request)
        except ImbadvError:  # a member another data set or sweep asked for: not this group's
            continue
        listed = listed or member.plan.key == plan.key
        if len(member.plan.split.train) == len(plan.split.train):
            found.setdefault(member.plan.key, member)
    return list(found.values()) if listed else [Resolved(s, plan)]


def sweep_models(data: Dataset, s: Settings) -> Iterator[Resolved]:
    """Every model the sweep planned with this job's identity (grouped or not), in first-asked
    order, made as its own job would make it."""
    for request in read_plan(s.store_dir, identity(s), "sweeps"):
        try:
            yield resolve(data, s, request)
        except ImbadvError:  # a member another data set asked for
            continue


def resolve(data: Dataset, s: Settings, request: Member) -> Resolved:
    """A planned member's settings and plan, made as its own job would make them."""
    imbalance = request["imbalance"]
    profile = PROFILES.parse("imbalance", imbalance["name"], imbalance["params"])
    ms = replace(s, imbalance=profile, seed=int(request["seed"]), target=request["class"])
    if request["balanced"]:
        profile = balanced_profile(ms, data.train_counts())
    target = 0 if request["class"] is None else resolve_class(request["class"], data)
    role = "balanced" if request["balanced"] else "member"
    return Resolved(ms, plan_model(data, ms, profile, target, role))


def obtain_grouped(
    job: Job,
    members: list[Resolved],
    model: torch.nn.Module,
    alone: Callable[[torch.nn.Module], dict],
    fields: dict,
) -> tuple[dict, bool] | None:
    """Train the group's missing members together under the group's lock; None: train alone
    (another job is training this model by itself)."""
    own, store = members[0].plan.key, job.store
    record = store.load_model(own, model)
    if record is not None:
        return record, False
    with store.lock(f"group-{content_key({'members': sorted(fields['group_members'])})}"):
        record = store.load_model(own, model)  # the job that trained the group stored it
        if record is not None:
            return record, False
        with claimed(job.data, members, store) as mine:
            if not mine or mine[0].plan.key != own:
                return None
            records = train_group(job, mine, model, alone, fields)
    return records[own], True


@contextmanager
def claimed(data: Dataset, members: list[Resolved], store: Store) -> Iterator[list[Resolved]]:
    """The members not stored yet whose lock this job gets at once, locked until training ends.

    A member another job trains alone holds its lock: it is left to that job, never trained twice.
    """
    with ExitStack() as held:
        mine = []
        for ms, mp in members:
            if store.load_model(mp.key, build_model(data, ms)) is not None:
                continue  # stored already, e.g. before the group's last run was killed
            lock = store.lock(mp.key)
            try:
                lock.acquire(timeout=0)
            except Timeout:
                continue
            held.callback(lock.release)
            mine.append(Resolved(ms, mp))
        yield mine


def train_group(
    job: Job,
    mine: list[Resolved],
    model: torch.nn.Module,
    alone: Callable[[torch.nn.Module], dict],
    fields: dict,
) -> dict[str, dict]:
    """Train `mine` (this job's own model first, as `model`) and store each; key -> record."""
    (s, plan), data, device, store = mine[0], job.data, job.device, job.store
    if len(mine) == 1:  # the others stored or taken: nothing to stack, train it as alone
        record = {**alone(model), **fields, "grouped": False}
        return {plan.key: store.save_model(plan.key, model, record)}
    models = [model, *(build_model(data, ms) for ms, _ in mine[1:])]
    started = time.perf_counter()
    inputs = []
    for m, (ms, mp) in zip(models, mine, strict=True):
        train_xy, val_xy, loss = training_inputs(m, data, ms, mp, device)
        inputs.append(Inputs(train_xy, val_xy, ms.seed, loss, mp.split.train_counts))
    label = f"group of {len(mine)}: {plan.label} and {len(mine) - 1} more"
    stops = s.train.selection == "val_loss" and s.train.early_stopping
    facts = GroupFacts(s.train.patience if stops else None, stops)
    with job.watch.training(plan.key, plan.role, label, facts) as callbacks:
        fits = fit_group(
            models,
            inputs,
            s.train,
            device,
            recipe=s.recipe,
            adversarial=s.adversarial,
            callbacks=callbacks,
        )
    share = (time.perf_counter() - started) / len(mine)  # the group's time, split evenly
    out = {}
    for m, (ms, mp), fitted in zip(models, mine, fits, strict=True):
        facts = model_facts(ms, mp, mp.split, share)
        judged = judge(fitted["history"], mp.split.val_counts)
        record = {**facts, **fitted, **judged, **fields, "grouped": True}
        out[mp.key] = store.save_model(mp.key, m, record)
    return out
