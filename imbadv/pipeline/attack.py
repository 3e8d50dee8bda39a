"""Transfer stage: adversarial images made once per (source model, attack, images), tested on every model.

Every image set, the white-box ones included, goes through the store: a source's images for one
class are made by the first job that needs them and read by all others, so the diagonal of the
transfer matrix is the white-box number exactly and the balanced model's own row for a class
comes with the images its transfer rows already need (docs/transfer.md).
"""

from __future__ import annotations

import hashlib
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any, NamedTuple

import numpy as np
import torch
from filelock import FileLock, Timeout
from torch import nn

from imbadv.attacks import ATTACKS, EPS_SPACE
from imbadv.config.settings import AttackSpec, Settings, with_names
from imbadv.config.sources import Source
from imbadv.data.base import Dataset
from imbadv.data.tensors import on_device, predict, predict_unit, to_unit
from imbadv.grouped.stacked import architecture
from imbadv.metrics import attack_summary, class_summary, flag_gradient_masking, stratified_subset
from imbadv.pipeline.craft import craft, craft_stacked
from imbadv.pipeline.job import Job
from imbadv.store import content_key


def role_of(source: str) -> str:
    """The model role a source's gradient comes from: target (same), balanced, or its name."""
    return "target" if source == Source.SAME else source


def attack_identity(spec: AttackSpec) -> dict[str, Any]:
    """What makes two attack settings the same for the store (component key, eps, direction)."""
    identity = {"method": spec.method.key(), "eps": spec.eps, "direction": spec.direction.value}
    if spec.target_class is not None:  # absent otherwise: existing store keys stay as they were
        identity["target_class"] = spec.target_class
    return identity


def attacked_indices(data: Dataset, s: Settings, target: int) -> np.ndarray:
    """The test images attacked: the target class's (the paper), or every class's (all of them
    or a seeded class-stratified subset of `per_class` each)."""
    if s.attack_images == "target":
        return np.flatnonzero(data.y_test == target)
    return stratified_subset(data.y_test, s.per_class, s.seed)


class Made(NamedTuple):
    """Where a source's images come from."""

    name: str
    model: nn.Module
    key: str  # the model's store key


class Member(NamedTuple):
    """A source crafted stacked: its sets' lock group and keys by spec name, and its model."""

    group: str
    keys: dict[str, str]
    name: str
    model: nn.Module


class Todo(NamedTuple):
    """A stacked member whose lock this job holds, and the spec names it still misses."""

    keys: dict[str, str]
    name: str
    model: nn.Module
    missing: list[str]


def image_sets(at: Attacked, source: Made) -> dict[str, dict[str, np.ndarray]]:
    """Per spec name, the images `source` (name, model, store key) makes from the attacked
    images, once."""
    (name, model, model_key), s, idx = source, at.job.settings, at.idx
    group, keys = set_keys(model_key, s, idx)
    specs = {spec.name: spec for spec in s.specs}
    # each set's random starts from its own generator, seeded by its key: the same set whichever
    # job makes it and whatever other sets are made with it
    seeds = {n: int(k[:8], 16) for n, k in keys.items()}

    def make(missing: list[str]) -> dict[str, dict[str, np.ndarray]]:
        callbacks = at.job.watch.attacks(f"{name} on {len(idx)} images")
        todo = [specs[n] for n in missing]
        batch = s.attack_batch_size
        return craft(name, model, todo, seeds, at.images, at.job.device, batch, callbacks)

    sets = at.job.store.images(group, keys, make)
    return {n: {**arrays, "key": keys[n]} for n, arrays in sets.items()}


def set_keys(model_key: str, s: Settings, idx: np.ndarray) -> tuple[str, dict[str, str]]:
    """The lock group of a source's image sets on `idx`, and each set's store key by spec name."""
    where = {"source": model_key, "indices": hashlib.sha256(idx.tobytes()).hexdigest()[:16]}
    keys = {
        spec.name: content_key(
            {
                **where,
                "attack": attack_identity(spec),
                "batch_size": s.attack_batch_size,  # random starts are drawn batch by batch
                "seed": s.seed,
            }
        )
        for spec in s.specs
    }
    return content_key(where), keys


def stacking(mode: str, device: torch.device) -> bool:
    """attack.stack: `on`, `off`, or `auto`: on a CUDA device only (slower on a CPU, docs/bench.md)."""
    return mode == "on" or (mode == "auto" and device.type == "cuda")


def stacked_sets(at: Attacked, made: list[Made]) -> None:
    """With stacking on, the missing sets of attacks that draw nothing (`AttackFacts.draws`) of
    the sources that share an architecture: crafted in one stacked call per architecture and
    stored as `image_sets` stores them (same keys, same arrays), which then finds them."""
    s = at.job.settings
    specs = [x for x in s.specs if not ATTACKS.get("attack.methods", x.method.name).facts.draws]
    if not specs or not len(at.idx) or not stacking(s.attack_stack, at.job.device):
        return
    alike: dict[tuple, list[Member]] = {}
    for name, model, key in {m.key: m for m in made}.values():  # a model once (same = its name)
        member = Member(*set_keys(key, s, at.idx), name, model)
        alike.setdefault(architecture(model), []).append(member)
    for members in alike.values():
        if len(members) > 1:
            stack_missing(at, sorted(members, key=lambda m: m.group), specs)


def stack_missing(at: Attacked, members: list[Member], specs: list[AttackSpec]) -> None:
    """The sets `members` still miss, crafted stacked under their
    groups' locks. Only locks free now are taken: a member whose lock another job holds is left
    to `image_sets` (which waits for it), so jobs stacking overlapping sources never deadlock
    and none waits while holding a lock."""
    store = at.job.store
    with ExitStack() as held:
        todo = []
        for group, keys, name, model in members:
            if not free(held, store.lock(f"images-{group}")):
                continue
            missing = [x.name for x in specs if store.load_images(keys[x.name]) is None]
            if missing:  # checked under the lock: another job may have just stored them
                todo.append(Todo(keys, name, model, missing))
        if len(todo) < 2:
            return  # one source alone: image_sets crafts it as it always has
        wanted = [x for x in specs if any(x.name in m.missing for m in todo)]
        label = f"{'+'.join(m.name for m in todo)} stacked on {len(at.idx)} images"
        made = craft_stacked(
            label, [m.model for m in todo], wanted, at.images, at.job.device,
            at.job.settings.attack_batch_size, at.job.watch.attacks(label),
        )  # fmt: skip
        for member, sets in zip(todo, made, strict=True):
            for name in member.missing:
                store.save_images(member.keys[name], sets[name], stacked=len(todo))


def free(held: ExitStack, lock: FileLock) -> bool:
    """Take `lock` into `held` if no one holds it now; never waits."""
    try:
        held.enter_context(lock.acquire(timeout=0))
        return True
    except Timeout:
        return False


class Tested(NamedTuple):
    """A model a source's images are tested on, and how its rows name the pair."""

    role: str  # the model tested: target (the job's) or balanced (its own rows, same images)
    source: str  # the rows' gradient source as that model sees it: the source itself, or same
    model: str  # the tested model's name


@dataclass(frozen=True)
class Attacked:
    """One job's attacked test images: on the device, in [0, 1] on the CPU, and their labels."""

    job: Job
    idx: np.ndarray
    images: tuple[torch.Tensor, torch.Tensor]
    x: np.ndarray  # what every adversarial set is compared with (max_abs_delta)
    labels: np.ndarray


def attack_rows(
    job: Job, models: dict[str, torch.nn.Module], keys: dict[str, str]
) -> list[dict[str, Any]]:
    """One row per (source, attack) on the attacked model, plus the balanced model's own rows.

    `models` and `keys` are by role (target, balanced, a named source). With `balanced` among the
    sources of an imbalanced job, the balanced model is tested on its own images too: its
    white-box row for this class, so a sweep without `imbalance=balanced` jobs still has it.
    """
    s, at = job.settings, attacked(job)
    names = with_names(s)
    rows: dict[str, list[dict[str, Any]]] = {"target": [], "balanced": []}
    clean = {who: predict(models[who], at.images[0]) for who in rows if who in models}
    made = {src: Made(names[src], models[role_of(src)], keys[role_of(src)]) for src in s.sources}
    stacked_sets(at, list(made.values()))  # with attack.stack: found here below
    for src in s.sources:
        sets = image_sets(at, made[src])
        seed = source_seed(s, src)
        for test in tested_on(src, s, names):
            model = (models[test.role], keys[test.role], clean[test.role])
            rows[test.role] += [r | seed for r in rows_on(at, test, names[src], model, sets)]
    return [r for group in rows.values() for r in flag_gradient_masking(group)]


def source_seed(s: Settings, src: str) -> dict[str, int]:
    """`source_seed` of another seed's model (`balanced@seed+1`); nothing else: rows as before."""
    seed = getattr(s.named_sources.get(src), "seed", None)
    return {} if seed is None else {"source_seed": seed}


def attacked(job: Job) -> Attacked:
    """The job's attacked test images, loaded once for every source and attack."""
    idx = attacked_indices(job.data, job.settings, job.target)
    images = on_device(job.data, idx, job.device, False)
    x = to_unit(images[0]).cpu().numpy()
    return Attacked(job, idx, images, x, images[1].cpu().numpy())


def tested_on(src: str, s: Settings, names: dict[str, str]) -> list[Tested]:
    """The models a source's images are tested on. Sources (same, balanced, a named one) say
    whose gradient makes the images; roles (target, balanced) which model is attacked: always
    the job's own, and for the balanced source of an imbalanced job the balanced model too."""
    tested = [Tested("target", src, names[Source.SAME])]
    if src == Source.BALANCED and s.imbalance.name != Source.BALANCED:
        tested.append(Tested("balanced", Source.SAME, names[Source.BALANCED]))
    return tested


def rows_on(
    at: Attacked,
    test: Tested,
    source_model: str,
    model: tuple[torch.nn.Module, str, np.ndarray],
    sets: dict[str, dict[str, np.ndarray]],
) -> list[dict[str, Any]]:
    """One row per attack: `model` (module, store key, clean predictions) on a source's sets."""
    module, model_key, clean = model
    out = []
    job = at.job
    for spec in job.settings.specs:
        adv, x = sets[spec.name]["adv"], at.x
        cell = {
            "role": test.role,
            "source": test.source,
            "model": test.model,
            "source_model": source_model,
            "model_key": model_key,
            "images_key": sets[spec.name]["key"],
            "max_abs_delta": float(np.abs(adv - x).max()) if len(x) else 0.0,
            "zero_grad_fraction": float(sets[spec.name]["zero_grads"]) / max(1, len(x)),
        }
        if test.role == "balanced":
            cell |= {"imbalance": Source.BALANCED, "profile": Source.BALANCED}
        preds = predict_unit(module, adv, job.device)
        out.append(row(job, spec, at.labels, clean, preds, cell))
    return out


def row(
    job: Job,
    spec: AttackSpec,
    labels: np.ndarray,
    clean: np.ndarray,
    adv: np.ndarray,
    cell: dict[str, Any],
) -> dict[str, Any]:
    """One results row: the paper's target-class numbers, and every class's with images=all."""
    data, s, target = job.data, job.settings, job.target
    on = labels == target  # the paper's row: the target class's images only
    return {
        "method": spec.method.name,
        "attack": spec.method.label(),
        "params": spec.method.params.resolved(spec.eps),
        "eps": spec.eps,
        "eps_space": EPS_SPACE,
        "direction": spec.direction.value,
        "target_class": spec.target_class,
        "seed": s.seed,
        "dataset": data.name,
        "class": target,
        "class_name": data.classes[target],
        "imbalance": s.imbalance.name,
        **attack_summary(labels[on], clean[on], adv[on], data.num_classes),
        **every_class(s, labels, clean, adv, data.num_classes),
        **cell,
    }


def every_class(
    s: Settings, labels: np.ndarray, clean: np.ndarray, adv: np.ndarray, num_classes: int
) -> dict[str, Any]:
    """With attack.images=all: the per-class numbers of one row (nothing for the paper's rows)."""
    if s.attack_images == "target":
        return {}
    scope = {"images": s.attack_images, "per_class": s.per_class, "n": int(len(labels))}
    return {"images": scope, "classes": class_summary(labels, clean, adv, num_classes)}
