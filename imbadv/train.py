"""Train stage: the Lightning module, in-memory batches and the Trainer set-up for one model."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import nn

from imbadv.errors import TrainingError
from imbadv.settings import TrainSettings


def keras_decay(decay: float) -> Callable[[int], float]:
    """Keras' `decay`: lr_t = lr / (1 + decay * t), t = optimizer steps taken (a LambdaLR factor)."""
    return lambda step: 1.0 / (1.0 + decay * step)


class TensorBatches:
    """Batches sliced from uint8 tensors already on the training device: no DataLoader, no copies.

    Each pass is a fresh permutation drawn from (seed, pass number), so a run is repeatable and
    every epoch is shuffled differently.
    """

    def __init__(
        self, x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle: bool, seed: int = 0
    ) -> None:
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.passes = 0

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = None
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.passes)
            order = torch.randperm(len(self.y), generator=gen).to(self.y.device)
        self.passes += 1
        for start in range(0, len(self.y), self.batch_size):
            if order is None:
                yield (
                    self.x[start : start + self.batch_size],
                    self.y[start : start + self.batch_size],
                )
            else:
                idx = order[start : start + self.batch_size]
                yield self.x[idx], self.y[idx]


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] (the model's and the attacks' input space)."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


class Classifier(L.LightningModule):
    """Trains a classifier with Keras-style RMSprop and logs `train/*` and `val/*` per epoch."""

    def __init__(self, model: nn.Module, settings: TrainSettings) -> None:
        super().__init__()
        self.model, self.settings = model, settings
        self.loss_sum, self.seen = torch.zeros(()), 0

    def on_train_epoch_start(self) -> None:
        self.loss_sum, self.seen = torch.zeros((), device=self.device), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(to_unit(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = F.cross_entropy(self(x), y)
        # Summed on the device and checked once per epoch: a per-step self.log or isfinite()
        # costs ~1 ms of host time, a quarter of a GPU step at batch 32 (docs/bench.md).
        self.loss_sum += loss.detach() * len(y)
        self.seen += len(y)
        return loss

    def on_validation_epoch_end(self) -> None:
        # Runs after the epoch's last training batch and before KeepBest reads the metrics.
        if self.trainer.sanity_checking or not self.seen:
            return
        loss = float(self.loss_sum) / self.seen
        if not math.isfinite(loss):
            raise TrainingError(
                f"training diverged: mean loss={loss} in epoch {self.current_epoch}; "
                f"lower trainer.lr (now {self.settings.lr})"
            )
        self.log("train/loss", loss)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y), batch_size=len(y))
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), batch_size=len(y))

    def configure_optimizers(self) -> dict:
        s = self.settings
        optimizer = torch.optim.RMSprop(self.parameters(), lr=s.lr, alpha=s.rho, eps=s.eps)
        schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, keras_decay(s.decay))
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


class KeepBest(Callback):
    """Remembers the weights of the epoch with the lowest validation loss (Keras' restore_best_weights)."""

    def __init__(self) -> None:
        self.best_loss, self.best_epoch, self.state = math.inf, -1, None
        self.history: list[dict[str, float]] = []

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Runs after the epoch's validation, when both train/* and val/* metrics are in.
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        loss = metrics.get("val/loss", math.inf)
        if loss < self.best_loss:
            self.best_loss, self.best_epoch = loss, trainer.current_epoch
            self.state = copy.deepcopy(module.model.state_dict())


def one_device(device: torch.device) -> dict[str, Any]:
    """Trainer arguments for exactly `device` (never "auto": that would start DDP on every GPU)."""
    if device.type == "cuda":
        return {"accelerator": "gpu", "devices": [device.index or 0]}
    return {"accelerator": "cpu", "devices": 1}


def make_trainer(
    settings: TrainSettings, device: torch.device, callbacks: list[Callback], logger=False
) -> L.Trainer:
    """A Trainer on exactly one device, lean: no checkpoints, progress bar or per-step logging."""
    return L.Trainer(
        **one_device(device),
        max_epochs=settings.max_epochs,
        precision=settings.precision,
        logger=logger,
        callbacks=callbacks,
        deterministic=True,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        num_sanity_val_steps=0,
        log_every_n_steps=1,
    )


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor],
    val: tuple[torch.Tensor, torch.Tensor],
    settings: TrainSettings,
    device: torch.device,
    seed: int,
    logger=False,
    callbacks: Sequence[Callback] = (),
) -> dict:
    """Train until validation loss stops improving for `patience` epochs; keep the best weights.

    `train` and `val` are (uint8 images, int64 labels) already on `device`. Returns the
    training record (epochs run, best epoch and loss, per-epoch history); `model` ends with the
    best weights, in eval mode. `callbacks` run after early stopping's check (progress, W&B).
    """
    L.seed_everything(seed, workers=True, verbose=False)
    if settings.channels_last:  # batches sliced from NHWC tensors stay NHWC: no per-step copies
        model.to(memory_format=torch.channels_last)
        train, val = [(x.contiguous(memory_format=torch.channels_last), y) for x, y in (train, val)]
    keep = KeepBest()
    stop = EarlyStopping(monitor="val/loss", patience=settings.patience, mode="min")
    trainer = make_trainer(settings, device, [keep, stop, *callbacks], logger)
    trainer.fit(
        Classifier(model, settings),
        train_dataloaders=TensorBatches(*train, settings.batch_size, shuffle=True, seed=seed),
        val_dataloaders=TensorBatches(*val, 512, shuffle=False),
    )
    if keep.state is None:
        raise TrainingError("training ended before any validation epoch; check trainer.max_epochs")
    model.load_state_dict(keep.state)
    model.eval()
    return {
        "epochs": trainer.current_epoch,
        "best_epoch": keep.best_epoch,
        "best_val_loss": keep.best_loss,
        "history": keep.history,
    }
