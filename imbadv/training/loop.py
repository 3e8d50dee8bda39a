"""Training loop: the Lightning module, in-memory batches and the Trainer set-up for one model."""

from __future__ import annotations

import copy
import logging
import math
from collections.abc import Callable, Sequence

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, EarlyStopping
from torch import nn

from imbadv.adversarial import AdversarialSettings
from imbadv.augment import AUGMENTS
from imbadv.core.errors import TrainingError
from imbadv.data.tensors import TensorBatches, one_device, to_unit
from imbadv.models.layout import Layout, choose_layout
from imbadv.optimizers import OPTIMIZERS
from imbadv.schedules import SCHEDULES
from imbadv.training import Recipe, TrainSettings
from imbadv.training.adversarial import AdversarialStep, robust_accuracy
from imbadv.training.compiled import CompiledForward, wanted
from imbadv.training.objectives import Loss

log = logging.getLogger("imbadv.progress")  # the job's progress lines (telemetry/progress.py)
AUGMENT_STREAM = 0xA06  # the augmentation's generator: seed + this, apart from the data order's


def optimization(
    named: Sequence[tuple[str, torch.Tensor]],
    recipe: Recipe,
    steps_per_epoch: int,
    max_epochs: int,
    stacked: bool = False,
) -> dict:
    """The recipe's optimizer over `named` parameters and its schedule as a per-step LambdaLR
    (Lightning's configure_optimizers format). Step t of the optimizer runs at lr * factor(t)."""
    optimizer = OPTIMIZERS.get("optimizer", recipe.optimizer.name).load()(
        recipe.optimizer.params, named, stacked
    )
    factor = SCHEDULES.get("schedule", recipe.schedule.name).load()(
        recipe.schedule.params, steps_per_epoch, max_epochs
    )
    schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, factor)
    return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}


def train_batches(
    train: tuple[torch.Tensor, torch.Tensor], settings: TrainSettings, recipe: Recipe, seed: int
) -> TensorBatches:
    """The seeded training batches, augmented per image per step on the data's device."""
    augment = AUGMENTS.get("augment", recipe.augment.name).load()(recipe.augment.params)
    return TensorBatches(
        *train, settings.batch_size, True, seed, settings.sampler, augment, seed + AUGMENT_STREAM
    )


def val_batches(val: tuple[torch.Tensor, torch.Tensor]) -> TensorBatches:
    """The validation batches, in order."""
    return TensorBatches(*val, 512, shuffle=False)


def channels_last(
    model: nn.Module,
    data: Sequence[tuple[torch.Tensor, torch.Tensor]],
    settings: TrainSettings,
    device: torch.device,
) -> tuple[list[tuple[torch.Tensor, torch.Tensor]], Layout]:
    """The model and the images in the layout `choose_layout` picks for `device` (NHWC with
    `settings.channels_last`, unless a CPU kernel would crash: said once in the log), and it."""
    layout = choose_layout(model, device, settings.channels_last)
    if layout.reason:
        log.warning("trainer.channels_last: %s", layout.reason)
    model.to(memory_format=layout.format)
    return [(x.contiguous(memory_format=layout.format), y) for x, y in data], layout


class Recalls:
    """One validation pass's hits and images per class, summed on the device: its balanced
    accuracy (the mean recall over the classes present) is read once, at the epoch's end."""

    def __init__(self) -> None:
        self.tally: torch.Tensor | None = None  # (2, classes): hits, images

    def add(self, logits: torch.Tensor, y: torch.Tensor) -> None:
        if self.tally is None:
            self.tally = torch.zeros(2, logits.shape[1], device=logits.device)
        self.tally[0].index_add_(0, y, (logits.argmax(1) == y).float())
        self.tally[1].index_add_(0, y, torch.ones_like(y, dtype=torch.float32))

    def balanced(self) -> float:
        """The pass's balanced accuracy (nan without images); starts the next pass."""
        if self.tally is None:
            return math.nan
        hits, images = self.tally
        self.tally = None
        present = images > 0
        return float((hits[present] / images[present]).mean())


class Classifier(L.LightningModule):
    """Trains a classifier with the recipe's optimizer and schedule; logs `train/*`, `val/*`."""

    def __init__(
        self,
        model: nn.Module,
        settings: TrainSettings,
        loss: Loss = F.cross_entropy,
        step: AdversarialStep | None = None,
        recipe: Recipe | None = None,
        steps_per_epoch: int = 1,
    ) -> None:
        super().__init__()
        self.model, self.settings, self.loss = model, settings, loss
        self.step = step  # adversarial training's batch loss; None = loss(model(x), y)
        self.recipe, self.steps_per_epoch = recipe or Recipe(), steps_per_epoch
        self.loss_sum, self.seen = torch.zeros(()), 0
        self.compiled = CompiledForward(model, False, torch.device("cpu"))  # set at fit start
        self.recalls = Recalls()  # val/balanced_acc: the never-learned rule reads it

    def on_fit_start(self) -> None:
        # Here, not in __init__: the mode depends on the device Lightning has moved the model to.
        self.compiled = CompiledForward(self.model, wanted(self.settings.compile), self.device)

    def on_train_epoch_start(self) -> None:
        self.loss_sum, self.seen = torch.zeros((), device=self.device), 0
        # the lr of the epoch's first step: the history shows the schedule (train/lr)
        self.epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])
        if self.step is not None:  # class-wise eps ramps and AWP's warm-up read the epoch
            self.step.epoch, self.step.max_epochs = self.current_epoch, self.trainer.max_epochs

    def on_train_batch_end(self, *_) -> None:
        # after the optimizer's step: AWP takes its weight perturbation back here
        if self.step is not None:
            self.step.after_step(self.model)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(to_unit(x))

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> torch.Tensor:
        x, y = batch
        loss = (
            self.loss(self.compiled(to_unit(x)), y)  # trainer.compile: compiled or eager
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
        balanced = self.recalls.balanced()
        if self.trainer.sanity_checking or not self.seen:
            return
        self.log("val/balanced_acc", balanced)
        loss = float(self.loss_sum) / self.seen
        if not math.isfinite(loss):
            raise TrainingError(
                f"training diverged: mean loss={loss} in epoch {self.current_epoch}; "
                f"lower optimizer.lr (now {self.recipe.optimizer.params.lr})"
            )
        self.log("train/loss", loss)
        self.log("train/lr", self.epoch_lr)

    def validation_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = batch
        logits = self(x)
        self.log("val/loss", F.cross_entropy(logits, y), batch_size=len(y))
        self.log("val/acc", (logits.argmax(1) == y).float().mean(), batch_size=len(y))
        self.recalls.add(logits, y)

    def configure_optimizers(self) -> dict:
        named = list(self.model.named_parameters())
        return optimization(named, self.recipe, self.steps_per_epoch, self.settings.max_epochs)


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
        sibling: str | None = None,
    ) -> None:
        self.rule, self.robust, self.patience = rule, robust, patience
        self.best_loss, self.best_epoch, self.state = math.inf, -1, None
        self.best_score, self.waiting = -math.inf, 0
        self.history: list[dict[str, float]] = []
        # A second rule judged on the same run (a fixed-length run serves `last` and
        # `robust_val_acc` alike): its epoch, validation loss and weights, never its patience.
        self.sibling = sibling
        self.other: dict = {"score": -math.inf, "epoch": -1, "loss": math.inf, "state": None}

    def score(self, metrics: dict[str, float], rule: str | None = None) -> float:
        """Higher is better; -inf when the rule's metric is missing."""
        if (rule or self.rule) == "robust_val_acc":
            return metrics.get("val/robust_acc", -math.inf)
        return -metrics.get("val/loss", math.inf)

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Runs after the epoch's validation, when both train/* and val/* metrics are in.
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        if self.robust is not None:
            metrics["val/robust_acc"] = self.robust(module.model)
        epoch = trainer.current_epoch
        self.history.append({"epoch": epoch, **metrics})
        if self.sibling is not None:
            other = self.score(metrics, self.sibling)
            if picks(self.sibling, other, self.other["score"]):
                state = copy.deepcopy(module.model.state_dict())
                loss = metrics.get("val/loss", math.inf)
                self.other = {"score": other, "epoch": epoch, "loss": loss, "state": state}
        score = self.score(metrics)
        if picks(self.rule, score, self.best_score):
            self.best_score, self.best_epoch, self.waiting = score, epoch, 0
            self.best_loss = metrics.get("val/loss", math.inf)
            self.state = copy.deepcopy(module.model.state_dict())
            return
        self.waiting += 1
        if self.patience is not None and self.waiting >= self.patience:
            trainer.should_stop = True


def picks(rule: str, score: float, best: float) -> bool:
    """Whether this epoch replaces the kept one: a higher score, or any finite one for `last`."""
    return score > best or (rule == "last" and math.isfinite(score))


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
    recipe: Recipe | None = None,
    sibling: str | None = None,
    counts: Sequence[int] | None = None,
) -> dict:
    """Train, selecting the epoch by `settings.selection` on the validation split; keep its weights.

    `train` and `val` are (uint8 images, int64 labels) already on `device`: the test set never
    enters. `adversarial` switches on adversarial training; `recipe` is the optimizer, schedule
    and augmentation (default: the paper's); `callbacks` (progress lines, W&B curves) run after
    the selection and early-stopping callbacks. `sibling` names a second selection rule judged on
    the same run (its weights in the record's "sibling" entry); `counts` (training images per
    class) feed the adversarial methods that need them (class-wise eps, AT-BSL). Returns the training record
    (epochs run, chosen epoch and its validation loss, per-epoch history); `model` ends with the
    chosen weights, in eval mode.
    """
    adversarial, recipe = adversarial or AdversarialSettings(), recipe or Recipe()
    L.seed_everything(seed, workers=True, verbose=False)
    (train, val), layout = channels_last(model, (train, val), settings, device)
    keep = selection(settings, adversarial, val, seed, sibling)
    chosen: list[Callback] = [keep]
    if settings.selection == "val_loss" and settings.early_stopping:
        chosen.append(EarlyStopping(monitor="val/loss", patience=settings.patience, mode="min"))
    trainer = make_trainer(settings, device, [*chosen, *callbacks], logger)
    step = AdversarialStep(adversarial, seed, counts) if adversarial.on else None
    batches = train_batches(train, settings, recipe, seed)
    module = Classifier(model, settings, loss, step, recipe, len(batches))
    trainer.fit(module, train_dataloaders=batches, val_dataloaders=val_batches(val))
    if keep.state is None:
        raise TrainingError("training ended before any validation epoch; check trainer.max_epochs")
    model.load_state_dict(keep.state)
    model.eval()
    if step is not None:  # the method's test-time output (RoBal-N), on every kept model
        with torch.no_grad():
            step.finish(model)
        if keep.other["state"] is not None:
            step.finish(model, keep.other["state"])
    facts = {**module.compiled.record(), **layout.record()}  # compiled or why not; the layout
    return training_record(trainer.current_epoch, settings.selection, keep, facts, sibling)


def training_record(
    epochs: int, rule: str, keep: KeepBest, facts: dict, sibling: str | None
) -> dict:
    """What `fit` returns: epochs run, the chosen epoch by `rule` and the sibling rule's."""
    record = {
        "epochs": epochs,
        "selection_rule": rule,
        "best_epoch": keep.best_epoch,
        "best_val_loss": keep.best_loss,
        "history": keep.history,
        **facts,
    }
    if keep.other["state"] is not None:
        record["sibling"] = {
            "selection_rule": sibling,
            "best_epoch": keep.other["epoch"],
            "best_val_loss": keep.other["loss"],
            "state": keep.other["state"],
        }
    return record


def selection(
    settings: TrainSettings,
    adversarial: AdversarialSettings,
    val: tuple[torch.Tensor, torch.Tensor],
    seed: int,
    sibling: str | None = None,
) -> KeepBest:
    """The epoch-selection callback; robust validation runs under robust selection or any AT."""
    robust = None
    rules = {settings.selection, sibling}
    if "robust_val_acc" in rules or adversarial.on:
        x, y = val
        eps, steps = adversarial.eps, settings.robust_val_steps

        def robust(model: nn.Module) -> float:
            return robust_accuracy(model, x, y, eps, steps, seed)

    stops = settings.selection == "robust_val_acc" and settings.early_stopping
    return KeepBest(settings.selection, robust, settings.patience if stops else None, sibling)
