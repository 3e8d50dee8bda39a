"""Training loop: the Lightning module, in-memory batches and the Trainer set-up for one model."""

from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import nn

from imbadv.config.errors import TrainingError
from imbadv.data.tensors import TensorBatches, one_device, to_unit
from imbadv.training import AdversarialSettings, TrainSettings
from imbadv.training.adversarial import AdversarialStep, robust_accuracy
from imbadv.training.objectives import Loss


def keras_decay(decay: float) -> Callable[[int], float]:
    """Keras' `decay`: lr_t = lr / (1 + decay * t), t = optimizer steps taken (a LambdaLR factor)."""
    return lambda step: 1.0 / (1.0 + decay * step)


class Classifier(L.LightningModule):
    """Trains a classifier with Keras-style RMSprop and logs `train/*` and `val/*` per epoch."""

    def __init__(
        self,
        model: nn.Module,
        settings: TrainSettings,
        loss: Loss = F.cross_entropy,
        step: AdversarialStep | None = None,
    ) -> None:
        super().__init__()
        self.model, self.settings, self.loss = model, settings, loss
        self.step = step  # adversarial training's batch loss; None = loss(model(x), y)
        self.loss_sum, self.seen = torch.zeros(()), 0

    def on_train_epoch_start(self) -> None:
        self.loss_sum, self.seen = torch.zeros((), device=self.device), 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(to_unit(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = (
            self.loss(self(x), y)
            if self.step is None
            else self.step(self.model, to_unit(x), y, self.loss)
        )
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
        steps = self.trainer.num_training_batches if self._trainer is not None else 0
        optimizer, schedule = optimization(self.named_parameters(), self.settings, steps)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


# --- shared with grouped training (imbadv/training/grouped.py): one definition of the recipe ---


def optimization(
    named_parameters: Iterable[tuple[str, torch.Tensor]],
    settings: TrainSettings,
    steps_per_epoch: int,
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LRScheduler]:
    """The optimizer and its per-step LR scheduler for these parameters (Keras RMSprop + decay).

    Grouped training passes stacked (K, ...) parameters: every optimizer here is elementwise, so
    one over the stack is exactly K optimizers. `steps_per_epoch` is for epoch-based schedules.
    """
    s = settings
    params = [p for _, p in named_parameters]
    optimizer = torch.optim.RMSprop(params, lr=s.lr, alpha=s.rho, eps=s.eps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, keras_decay(s.decay))


def channels_last(
    model: nn.Module, data: Sequence[tuple[torch.Tensor, torch.Tensor]], settings: TrainSettings
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """With `settings.channels_last`, the model and the images NHWC (batches sliced stay NHWC)."""
    if not settings.channels_last:
        return list(data)
    model.to(memory_format=torch.channels_last)
    return [(x.contiguous(memory_format=torch.channels_last), y) for x, y in data]


def train_batches(
    train: tuple[torch.Tensor, torch.Tensor], settings: TrainSettings, seed: int
) -> TensorBatches:
    """The seeded training batches `fit` draws for a model (grouped members draw the same)."""
    return TensorBatches(*train, settings.batch_size, True, seed, settings.sampler)


def val_batches(val: tuple[torch.Tensor, torch.Tensor]) -> TensorBatches:
    """The validation batches, in order."""
    return TensorBatches(*val, 512, shuffle=False)


class KeepBest(Callback):
    """Keeps the weights of the epoch the selection rule picks, judged on validation data only.

    `val_loss`: the lowest clean validation loss (Keras' restore_best_weights); `robust_val_acc`:
    the highest accuracy under PGD on the validation split (stopping after `patience` epochs
    without a higher one); `last`: the last epoch. `robust`, when given, measures the robust
    validation accuracy after every epoch, logged in the history as `val/robust_acc`.
    """

    def __init__(
        self,
        rule: str = "val_loss",
        robust: Callable[[nn.Module], float] | None = None,
        patience: int | None = None,
    ) -> None:
        self.rule, self.robust, self.patience = rule, robust, patience
        self.best_loss, self.best_epoch, self.state = math.inf, -1, None
        self.best_score, self.waiting = -math.inf, 0
        self.history: list[dict[str, float]] = []

    def score(self, metrics: dict[str, float]) -> float:
        """Higher is better; -inf when the rule's metric is missing."""
        if self.rule == "robust_val_acc":
            return metrics.get("val/robust_acc", -math.inf)
        return -metrics.get("val/loss", math.inf)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Runs after the epoch's validation, when both train/* and val/* metrics are in.
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if self.robust is not None:
            metrics["val/robust_acc"] = self.robust(module.model)
        self.history.append({"epoch": trainer.current_epoch, **metrics})
        score = self.score(metrics)
        if score > self.best_score or (self.rule == "last" and math.isfinite(score)):
            self.best_score, self.best_epoch, self.waiting = score, trainer.current_epoch, 0
            self.best_loss = metrics.get("val/loss", math.inf)
            self.state = copy.deepcopy(module.model.state_dict())
            return
        self.waiting += 1
        if self.patience is not None and self.waiting >= self.patience:
            trainer.should_stop = True


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
    loss: Loss = F.cross_entropy,
    adversarial: AdversarialSettings | None = None,
    callbacks: Sequence[Callback] = (),
) -> dict:
    """Train, selecting the epoch by `settings.selection` on the validation split; keep its weights.

    `train` and `val` are (uint8 images, int64 labels) already on `device`: the test set never
    enters. `adversarial` switches on adversarial training; `callbacks` (progress lines, W&B
    curves) run after the selection and early-stopping callbacks. Returns the training record
    (epochs run, chosen epoch and its validation loss, per-epoch history); `model` ends with the
    chosen weights, in eval mode.
    """
    adversarial = adversarial or AdversarialSettings()
    L.seed_everything(seed, workers=True, verbose=False)
    train, val = channels_last(model, (train, val), settings)  # NHWC: no per-step copies
    keep = selection(settings, adversarial, val, seed)
    chosen: list[Callback] = [keep]
    if settings.selection == "val_loss":
        chosen.append(EarlyStopping(monitor="val/loss", patience=settings.patience, mode="min"))
    trainer = make_trainer(settings, device, [*chosen, *callbacks], logger)
    step = None if adversarial.mode == "none" else AdversarialStep(adversarial, seed)
    trainer.fit(
        Classifier(model, settings, loss, step),
        train_dataloaders=train_batches(train, settings, seed),
        val_dataloaders=val_batches(val),
    )
    if keep.state is None:
        raise TrainingError("training ended before any validation epoch; check trainer.max_epochs")
    model.load_state_dict(keep.state)
    model.eval()
    return {
        "epochs": trainer.current_epoch,
        "selection_rule": settings.selection,
        "best_epoch": keep.best_epoch,
        "best_val_loss": keep.best_loss,
        "history": keep.history,
    }


def selection(
    settings: TrainSettings,
    adversarial: AdversarialSettings,
    val: tuple[torch.Tensor, torch.Tensor],
    seed: int,
) -> KeepBest:
    """The epoch-selection callback; robust validation runs under robust selection or any AT."""
    robust = None
    if settings.selection == "robust_val_acc" or adversarial.mode != "none":
        x, y = val
        eps, steps = adversarial.eps, settings.robust_val_steps

        def robust(model: nn.Module) -> float:
            return robust_accuracy(model, x, y, eps, steps, seed)

    patience = settings.patience if settings.selection == "robust_val_acc" else None
    return KeepBest(settings.selection, robust, patience)
