"""Models stage: each model a job needs, planned (spec, store key, split), then found in the store,
trained once (with the sibling a fixed-length run also yields) or loaded from a file."""

from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from imbadv.augment import DEFAULT as AUGMENT
from imbadv.config.errors import ConfigError
from imbadv.config.registry import Spec, params_key
from imbadv.config.settings import Settings
from imbadv.config.sources import CheckpointSource, as_source_error
from imbadv.data import DATASETS
from imbadv.data.base import Dataset
from imbadv.data.tensors import on_device
from imbadv.imbalance import targeted
from imbadv.imbalance.split import Split, class_counts, select
from imbadv.models import CHECKPOINT, MODELS
from imbadv.optimizers import DEFAULT as OPTIMIZER
from imbadv.results import judge
from imbadv.schedules import DEFAULT as SCHEDULE
from imbadv.status.progress import Watch
from imbadv.store import Store, content_key, file_sha256
from imbadv.training import OBJECTIVES
from imbadv.training.loop import fit
from imbadv.training.objectives import LogitAdjusted

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
        "train": train_key(s),
        **recipe_key(s),
        "seed": s.seed,
        # only when on, so standard training keeps its stored keys
        **({"adversarial": params_key(s.adversarial)} if s.adversarial.mode != "none" else {}),
    }


def train_key(s: Settings) -> dict[str, Any]:
    """The trainer's changed settings, as every stored model has them. The paper's optimizer and
    schedule lived in `trainer` before they were components: their changed parameters (lr, rho,
    eps, decay) stay here, so every model trained before keeps its key."""
    key = params_key(s.train)
    if s.train.selection == "last":  # `last` never stops early: the switch changes nothing
        key.pop("early_stopping", None)
    for spec, default in ((s.recipe.optimizer, OPTIMIZER), (s.recipe.schedule, SCHEDULE)):
        if spec.name == default:
            key |= params_key(spec.params)
    return key


def recipe_key(s: Settings) -> dict[str, Any]:
    """The recipe's components that differ from the paper's (by name and changed parameters)."""
    r = s.recipe
    return {
        **({} if r.optimizer.name == OPTIMIZER else {"optimizer": r.optimizer.key()}),
        **({} if r.schedule.name == SCHEDULE else {"schedule": r.schedule.key()}),
        **({} if r.augment.name == AUGMENT else {"augment": r.augment.key()}),
    }


def build_model(data: Dataset, s: Settings) -> torch.nn.Module:
    """The configured model for this data set's card (classes, shape, mean and std)."""
    return MODELS.get("model", s.model.name).load()(data.card, s.model.params)


def checkpoint_model(
    data: Dataset, s: Settings, device: torch.device, p: Any = None
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """`model=checkpoint` (or a checkpoint source's params `p`): the file as a model of the job
    (never trained), keyed by its sha256."""
    from imbadv.models import checkpoint

    p = s.model.params if p is None else p
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


def checkpoint_source(
    data: Dataset, s: Settings, source: CheckpointSource, device: torch.device
) -> tuple[torch.nn.Module, dict[str, Any]]:
    """A checkpoint file named in `attack.sources`: loaded like `model=checkpoint`, its refusals
    (weights that do not fit, a wrong output shape, a pickle that needs code) on its entry."""
    try:
        return checkpoint_model(data, s, device, source.params)
    except ConfigError as err:
        raise as_source_error(err, source.text) from None


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
    sibling = sibling_plan(data, s, profile, target, role)

    def train(m: torch.nn.Module) -> dict[str, Any]:
        record = train_model(m, data, s, plan, device, watch, sibling)
        if "sibling" in record:  # the same run under the other rule: stored for its own jobs
            other = record.pop("sibling")
            store.offer(sibling[1].key, build_model(data, s), other.pop("state"), other)
        return record

    record, trained = store.model(plan.key, model, train)
    return posthoc(model.to(device).eval(), record, s, device), {**record, "trained_here": trained}


# With early stopping off a run is the same whichever epoch is kept, so one run serves both of
# the field's reports: the last epoch and the best robust-validation epoch (trainer.selection=both).
SIBLINGS = {"last": "robust_val_acc", "robust_val_acc": "last"}


def sibling_plan(
    data: Dataset, s: Settings, profile: Spec, target: int, role: str | None
) -> tuple[str, Planned] | None:
    """The other rule's model that this model's run also yields, or None."""
    other = SIBLINGS.get(s.train.selection)
    if other is None or s.train.early_stopping and s.train.selection != "last":
        return None
    if other == "robust_val_acc" and s.adversarial.mode == "none":
        return None  # a standard `last` run measures no robust validation accuracy
    s_other = replace(s, train=replace(s.train, selection=other, early_stopping=False))
    return other, plan_model(data, s_other, profile, target, role)


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
    sibling: tuple[str, Planned] | None = None,
) -> dict[str, Any]:
    """Train `model` from its seed on the planned split; returns the record the store keeps
    (with `sibling`, the other rule's weights and record under "sibling", for the store)."""
    # A folder's image side is known only now: the padding is checked before any training.
    s.recipe.augment.params.check_image("augment", data.card.image_size)
    model.reset_parameters(torch.Generator().manual_seed(s.seed))
    model.to(device)
    started = time.perf_counter()
    split = plan.split
    train_xy, val_xy = on_device(data, split.train, device), on_device(data, split.val, device)
    loss = OBJECTIVES.get("objective", s.objective.name).load()(
        s.objective.params, split.train_counts
    )
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
            recipe=s.recipe,
            sibling=None if sibling is None else sibling[0],
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


def model_facts(
    s: Settings, plan: Planned, split: Split, seconds: float, rule: str | None = None
) -> dict[str, Any]:
    """What a model record says besides its training history: spec, counts, rule, recipe."""
    return {
        "spec": plan.spec,
        "train_counts": split.train_counts,
        "val_counts": split.val_counts,
        "split_sha256": split.digest(),
        "selection": SELECTION_RULES[rule or s.train.selection],
        "adversarial": {"mode": s.adversarial.mode, **params_key(s.adversarial)},
        "recipe": {part.axis: part.key() for part in vars(s.recipe).values()},
        "posthoc_tau": s.train.posthoc_tau,
        "train_seconds": seconds,
    }


def posthoc(
    model: torch.nn.Module, record: dict[str, Any], s: Settings, device: torch.device
) -> torch.nn.Module:
    """With post-hoc logit adjustment the model is evaluated and attacked as adjusted."""
    if s.train.posthoc_tau > 0:
        return LogitAdjusted(model, record["train_counts"], s.train.posthoc_tau).to(device).eval()
    return model
