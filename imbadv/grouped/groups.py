"""Group plan (torch-free): the sweep's models that may train together, written before jobs start.

Models group when they share data, architecture, objective, recipe, adversarial training and
validation fraction, and differ only in seed, class or imbalance profile (each job checks the
training-set sizes once the data is loaded). The plan lives in the store, `groups/<id>.json`,
so every launcher's jobs (local, GPUs, SLURM, Ray) find it where they find their models.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import tempfile
from dataclasses import replace
from pathlib import Path
from typing import Any

from imbadv.config.settings import Settings, source_settings
from imbadv.config.sources import CheckpointSource, Source
from imbadv.core.registry import Spec, params_key
from imbadv.models import CHECKPOINT

Member = dict[
    str, Any
]  # {"imbalance": {name, params}, "balanced": bool, "class": ..., "seed": int}


def identity(s: Settings) -> str:
    """What a group's members share, as a key (data by every option: two roots are two data sets)."""
    return _digest(
        {
            "dataset": [s.dataset.name, dataclasses.asdict(s.dataset.params)],
            "model": s.model.key(),
            "objective": s.objective.key(),
            "train": params_key(s.train),
            "recipe": {axis: part.key() for axis, part in vars(s.recipe).items()},
            "adversarial": params_key(s.adversarial),
            "val_fraction": s.val_fraction,
        }
    )


def _digest(spec: dict[str, Any]) -> str:
    # not imbadv.store.content_key: that module imports torch, and this one runs before any job
    blob = json.dumps({"group": 1, **spec}, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def spec_json(spec: Spec) -> dict[str, Any]:
    return {"name": spec.name, "params": dataclasses.asdict(spec.params)}


def member(s: Settings, profile: Spec, target: int | str | None, balanced: bool) -> Member:
    """One model request; `balanced`: the balanced control of `profile` (its count needs data)."""
    return {"imbalance": spec_json(profile), "balanced": balanced, "class": target, "seed": s.seed}


def requests(s: Settings) -> list[tuple[Settings, Member]]:
    """Every model a job trains or loads, as (settings it trains with, request), as `compute` asks."""
    out = [(s, member(s, s.imbalance, s.target, False))]
    if s.imbalance.name != Source.BALANCED and Source.BALANCED in s.sources:
        out.append((s, member(s, s.imbalance, s.target, True)))
    for source in s.named_sources.values():
        if isinstance(source, CheckpointSource):  # a file: loaded, never trained
            continue
        ss = source_settings(s, source)
        target = s.target if source.target is None else source.target
        # another seed's `balanced` (control) is asked for as that seed's job asks for it
        request = member(ss, source.profile, target, source.control)
        out.append((replace(ss, target=target), request))
    return out


def may_group(s: Settings) -> bool:
    """Whether a job may train grouped: not with `off`, nor `auto` on a CPU, nor checkpoints."""
    if s.model.name == CHECKPOINT or s.train.group == "off":
        return False
    return s.train.group == "on" or s.device != "cpu"


def plan(jobs: list[Settings], grouping: bool = True) -> dict[tuple[Path, str], list[Member]]:
    """(store folder, group id) -> the distinct members the sweep needs, in first-asked order;
    `grouping`: only of jobs that may train grouped, else of every job that trains models."""
    groups: dict[tuple[Path, str], list[Member]] = {}
    for s in jobs:
        if not may_group(s) if grouping else s.model.name == CHECKPOINT:
            continue
        for ss, m in requests(s):
            found = groups.setdefault((Path(s.store_dir), identity(ss)), [])
            if m not in found:
                found.append(m)
    return {k: v for k, v in groups.items() if len(v) > 1}


def write_plan(jobs: list[Settings]) -> int:
    """Write each group of two or more members to its store (`groups/`), and every set of models
    that could group (`sweeps/`: what a job trains while its own model is another job's,
    imbadv.pipeline.obtain); returns how many groups."""
    for (root, gid), members in plan(jobs, grouping=False).items():
        write_members(plan_path(root, gid, "sweeps"), gid, members)
    groups = plan(jobs)
    for (root, gid), members in groups.items():
        write_members(plan_path(root, gid), gid, members)
    return len(groups)


def write_members(path: Path, gid: str, members: list[Member]) -> None:
    """One plan file, written whole or not at all."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump({"group": gid, "members": members}, f, indent=1, default=str)
    os.replace(tmp, path)  # a job never reads half a plan


def plan_path(root: Path, gid: str, kind: str = "groups") -> Path:
    return Path(root) / kind / f"{gid}.json"


def read_plan(root: Path, gid: str, kind: str = "groups") -> list[Member]:
    """The members a sweep planned for group `gid` (none when no sweep planned one); `kind`
    "sweeps": every model of the sweep with that identity, grouped or not."""
    path = plan_path(root, gid, kind)
    try:
        return list(json.loads(path.read_text())["members"])
    except (OSError, ValueError, KeyError):
        return []
