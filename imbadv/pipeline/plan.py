"""Plan stage: the models a job needs, each as the store knows it: its spec (component by
component), store key, split and label; built, and (post-hoc) adjusted for evaluation."""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch

from imbadv.augment import DEFAULT as AUGMENT
from imbadv.config.settings import Settings, parse_target
from imbadv.config.sources import Source
from imbadv.core.registry import Spec, params_key
from imbadv.data import DATASETS
from imbadv.data.base import Dataset
from imbadv.data.tensors import on_device
from imbadv.imbalance import PROFILES, targeted
from imbadv.imbalance.split import Split, class_counts, select
from imbadv.models import MODELS
from imbadv.optimizers import DEFAULT as OPTIMIZER
from imbadv.schedules import DEFAULT as SCHEDULE
from imbadv.store import content_key
from imbadv.training import OBJECTIVES
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
        **({"adversarial": s.adversarial.key()} if s.adversarial.on else {}),
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


@dataclass(frozen=True)
class Planned:
    """One model as the store knows it: its spec and key, its split, how progress names it."""

    spec: dict[str, Any]
    key: str
    split: Split
    role: str  # target, balanced or a named source
    label: str


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
    if other == "robust_val_acc" and not s.adversarial.on:
        return None  # a standard `last` run measures no robust validation accuracy
    s_other = replace(s, train=replace(s.train, selection=other, early_stopping=False))
    return other, plan_model(data, s_other, profile, target, role)


def training_inputs(
    model: torch.nn.Module, data: Dataset, s: Settings, plan: Planned, device: torch.device
) -> tuple[tuple[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor], Any]:
    """`model` initialized from its seed on `device`, its split's (train, val) there, its loss.

    Checks the augmentation's padding against the image side first (a folder's side is known
    only once loaded): before any training."""
    s.recipe.augment.params.check_image("augment", data.card.image_size)
    model.reset_parameters(torch.Generator().manual_seed(s.seed))
    model.to(device)
    split = plan.split
    train_xy, val_xy = on_device(data, split.train, device), on_device(data, split.val, device)
    loss = OBJECTIVES.get("objective", s.objective.name).load()(
        s.objective.params, split.train_counts
    )
    return train_xy, val_xy, loss


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
        "adversarial": s.adversarial.key(),
        **(
            {"adversarial_used": s.adversarial.resolved(split.train_counts)}
            if s.adversarial.on
            else {}
        ),
        "recipe": {part.axis: part.key() for part in vars(s.recipe).values()},
        "posthoc_tau": s.train.posthoc_tau,
        "formats": s.formats,  # precision and layout as asked, as trained, and who chose them
        "train_seconds": seconds,
    }


def posthoc(
    model: torch.nn.Module, record: dict[str, Any], s: Settings, device: torch.device
) -> torch.nn.Module:
    """With post-hoc logit adjustment the model is evaluated and attacked as adjusted."""
    if s.train.posthoc_tau > 0:
        return LogitAdjusted(model, record["train_counts"], s.train.posthoc_tau).to(device).eval()
    return model


def balanced_profile(s: Settings, available: list[int] | None = None) -> Spec:
    """The balanced profile with the job's counts: the model whose gradient transfer rows use."""
    count = s.imbalance.params.balanced_count(available)
    return PROFILES.parse("imbalance", Source.BALANCED, {"majority": count})


def resolve_class(target: int | str, data: Dataset) -> int:
    """The class index for an index or name, checked against the data set's classes."""
    return int(parse_target(target, data.classes))
