"""GPU reference chunks: what a sweep command has left to run in its folder, as few sweeps, and how many models that needs.

scripts/gpu_reference.sh's planner (`chunk_main`): a chunk cut short by its budget is archived
partial (imbadv.report.archive); the next call restores its results and runs only the jobs
without results, as few Cartesian sweeps as their grid allows.
"""

from __future__ import annotations

import json
import shlex
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imbadv.report.archive import Job, restore, sweep_jobs
from imbadv.report.errors import ReportError


def product_blocks(jobs: list[tuple[str, ...]]) -> list[list[list[str]]]:
    """`jobs` (overrides with the same keys in the same order) as few Cartesian products, each a
    list of value lists by position: the first override's values that share the same rest merge."""
    if not jobs:
        return []
    if not jobs[0]:
        return [[]]
    rests: dict[str, list[tuple[str, ...]]] = {}
    for job in jobs:
        rests.setdefault(job[0], []).append(job[1:])
    merged: dict[str, tuple[list[str], list[list[list[str]]]]] = {}
    for head, rest in rests.items():
        sub = product_blocks(rest)
        merged.setdefault(json.dumps(sub), ([], sub))[0].append(head)
    return [[heads, *block] for heads, sub in merged.values() for block in sub]


def block_args(block: list[list[str]]) -> list[str]:
    """One product as overrides: `key=a,b` where a position has several values."""
    out = []
    for values in block:
        key = values[0].split("=", 1)[0]
        out.append(
            values[0]
            if len(values) == 1
            else f"{key}=" + ",".join(v.split("=", 1)[1] for v in values)
        )
    return out


def split_jobs(task: list[str]) -> list[Job]:
    """Each job's overrides, as Hydra's basic sweeper expands the task overrides."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    overrides = OverridesParser.create().parse_overrides(task)
    return BasicSweeper.split_arguments(overrides, None)[0]


@dataclass
class ChunkPlan:
    """A sweep command against its folder: its jobs, those finished, and what is left to run."""

    planned: int
    done: int
    blocks: list[list[str]]  # overrides for `python -m imbadv.run -m`, one list per sweep
    models: int  # distinct models the jobs left to run need
    todo: list[Job] = field(default_factory=list)


def chunk_plan(sweep_dir: Path, args: list[str]) -> ChunkPlan:
    """What running `args` (imbadv.run's overrides, hydra.* ones too) into `sweep_dir` has left to
    do: the jobs whose folder has no results.json, as few sweeps as their grid allows (the command
    itself when none finished), and the distinct models those jobs need."""
    from hydra import compose, initialize_config_dir

    from imbadv.config.settings import CONF_DIR
    from imbadv.run import expand_ranges, expand_selection

    args = expand_selection(expand_ranges(["-m", *args]))[1:]
    task = [a for a in args if not a.startswith("hydra.")]
    extra = [a for a in args if a.startswith("hydra.")]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        hydra = compose("config", [*split_jobs(task)[0], *extra], return_hydra_config=True).hydra
    jobs = sweep_jobs(task, hydra)
    todo = [job for name, job in jobs.items() if not (sweep_dir / name / "results.json").exists()]
    if len(todo) == len(jobs):
        blocks = [args]
    else:
        blocks = [block_args(b) + extra for b in product_blocks([tuple(j) for j in todo])]
    return ChunkPlan(len(jobs), len(jobs) - len(todo), blocks, models_needed(todo), todo)


def models_needed(jobs: list[Job]) -> int:
    """How many distinct models `jobs` train or load, from their configs alone (no data read):
    the requests the group plan makes (imbadv.grouped.groups), an untargeted profile's model
    counted once for every class, as its store key is."""
    from hydra import compose, initialize_config_dir

    from imbadv.config.settings import CONF_DIR, from_config
    from imbadv.grouped.groups import requests

    seen = set()
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for job in jobs:
            s = from_config(compose("config", overrides=job))
            seen |= {model_id(s, ss, member) for ss, member in requests(s)}
    return len(seen)


def model_id(s: Any, ss: Any, member: dict[str, Any]) -> str:
    """One model request as the store tells models apart, as far as the config says."""
    from imbadv.core.errors import ImbadvError
    from imbadv.grouped.groups import identity, spec_json
    from imbadv.imbalance import PROFILES, targeted

    profile = member["imbalance"]
    if member["balanced"]:  # the balanced control's count; some profiles need the data for it
        try:
            count = s.imbalance.params.balanced_count(None)
            profile = spec_json(PROFILES.parse("imbalance", "balanced", {"majority": count}))
        except ImbadvError:
            profile = {"control of": profile}
    name = profile.get("name")
    cls = member["class"] if name is not None and targeted(name) else None
    return json.dumps([identity(ss), profile, cls, member["seed"]], sort_keys=True, default=str)


def chunk_main(argv: list[str]) -> int:
    """scripts/gpu_reference.sh's planner: `SWEEP ARCHIVE ARGS...` restores ARCHIVE (a partial
    one, or '' for none) into SWEEP, then prints `planned done models sweeps restored` and each
    sweep's overrides, shell-quoted, one line each; 2 (and one line on stderr) when it cannot."""
    sweep_dir, archive, args = Path(argv[0]), argv[1], argv[2:]
    restored = 0
    try:
        restored = restore(Path(archive), sweep_dir) if archive else 0
    except ReportError as err:  # a damaged partial archive: its jobs run again
        print(f"imbadv.status.chunks: not restored: {err}", file=sys.stderr)
    try:
        plan = chunk_plan(sweep_dir, args)
    except Exception as err:  # the caller runs its command as it is; imbadv.run names the problem
        print(f"imbadv.status.chunks: cannot plan {sweep_dir}: {err}", file=sys.stderr)
        return 2
    print(plan.planned, plan.done, plan.models, len(plan.blocks), restored)
    for block in plan.blocks:
        print(shlex.join(block))
    return 0
