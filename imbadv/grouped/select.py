"""Grouped training's per-member selection: each member's KeepBest and patience, as `fit` judges."""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from types import SimpleNamespace

import lightning as L
import torch
from lightning.pytorch.callbacks import Callback
from torch import nn

from imbadv.core.errors import TrainingError
from imbadv.models.layout import CHANNELS_LAST, Layout
from imbadv.training import TrainSettings
from imbadv.training.loop import KeepBest

# The grouped module (imbadv.grouped.train.GroupedClassifier) is typed by what is read here,
# not imported: grouped.py imports this module.
GroupedModule = L.LightningModule


class Patience:
    """Lightning's EarlyStopping(monitor, mode="min", min_delta=0) decision, for one member."""

    def __init__(self, patience: int) -> None:
        self.patience, self.best, self.wait = patience, math.inf, 0

    def stop(self, value: float) -> bool:
        """Whether this epoch's value ends training (not finite, or `patience` epochs no lower)."""
        if not math.isfinite(value):
            return True
        if value < self.best:
            self.best, self.wait = value, 0
            return False
        self.wait += 1
        return self.wait >= self.patience


@dataclass
class MemberRun:
    """A member's selection state: its KeepBest, its patience, and when it stopped."""

    model: nn.Module
    keep: KeepBest
    patience: Patience | None
    layout: Layout = Layout(CHANNELS_LAST)
    stopped_at: int | None = None  # the last epoch it trained
    frozen: dict[str, torch.Tensor] = field(default_factory=dict)  # its tensors once stopped


class GroupSelection(Callback):
    """Each member's epoch selection and early stopping, exactly as `fit`'s callbacks judge it."""

    def on_train_epoch_end(self, trainer: L.Trainer, module: GroupedModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        for k in list(module.active):
            run = module.runs[k]
            unstack_into(run.model, *module.member(k))
            prefix = f"m{k}/"
            own = {n[len(prefix) :]: v for n, v in metrics.items() if n.startswith(prefix)}
            alone = SimpleNamespace(
                callback_metrics=own, current_epoch=trainer.current_epoch, should_stop=False
            )
            run.keep.on_train_epoch_end(alone, SimpleNamespace(model=run.model))
            stop = alone.should_stop
            if run.patience is not None:
                stop = run.patience.stop(own.get("val/loss", math.nan)) or stop
            if stop:
                freeze(module, k, trainer.current_epoch)
        trainer.should_stop = trainer.should_stop or not module.active


def freeze(module: GroupedModule, k: int, epoch: int) -> None:
    """Member k trains no more: keep a copy of its tensors to restore after every later step."""
    params, buffers = module.member(k)
    run = module.runs[k]
    run.stopped_at, run.frozen = (
        epoch,
        {n: t.detach().clone() for n, t in {**params, **buffers}.items()},
    )
    module.active = [i for i in module.active if i != k]
    if module.active:
        module.index = torch.tensor(module.active, device=module.device)


def unstack_into(model: nn.Module, params: dict, buffers: dict) -> None:
    """Copy one member's slice of the stacked tensors into its own module."""
    with torch.no_grad():
        for name, t in model.named_parameters():
            t.copy_(params[name])
        for name, t in model.named_buffers():
            t.copy_(buffers[name])


def member_record(run: MemberRun, epochs: int, settings: TrainSettings, compiled: dict) -> dict:
    """The member's `fit` record (`compiled`: what trainer.compile did, shared by the group); its
    model gets the chosen weights, in eval mode."""
    if run.keep.state is None:
        raise TrainingError("training ended before any validation epoch; check trainer.max_epochs")
    run.model.load_state_dict(run.keep.state)
    run.model.eval()
    return {
        "epochs": epochs if run.stopped_at is None else run.stopped_at + 1,
        "selection_rule": settings.selection,
        "best_epoch": run.keep.best_epoch,
        "best_val_loss": run.keep.best_loss,
        "history": run.keep.history,
        **compiled,
        **run.layout.record(),
    }
