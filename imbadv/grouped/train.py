"""Grouped training: K same-shape models trained as one stacked computation (torch.func vmap)."""

from __future__ import annotations

import copy
import math
from collections.abc import Sequence
from functools import partial

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from imbadv.adversarial import AdversarialSettings
from imbadv.core.errors import TrainingError
from imbadv.data.tensors import to_unit
from imbadv.grouped.adversarial import GroupAdversary, stacked_view
from imbadv.grouped.members import Member, Zipped, check_members, ungroupable
from imbadv.grouped.select import (  # re-exported: grouped training's API
    GroupSelection,
    MemberRun,
    Patience,
    freeze,
    member_record,
    unstack_into,
)
from imbadv.training import Recipe, TrainSettings
from imbadv.training.compiled import CompiledForward, wanted
from imbadv.training.loop import (
    Recalls,
    channels_last,
    make_trainer,
    optimization,
    selection,
    train_batches,
    val_batches,
)
from imbadv.training.objectives import Loss

__all__ = ["GroupedClassifier", "GroupSelection", "Member", "MemberRun", "Patience", "Zipped"]
__all__ += ["fit_group", "freeze", "ungroupable", "unstack_into"]


class GroupedClassifier(L.LightningModule):
    """K members' parameters stacked (K, ...), trained with one vmapped forward and backward.

    The loss is the sum of the members' losses, so each member's gradient is its own loss's;
    BatchNorm running statistics are stacked buffers, updated in place per member.
    """

    def __init__(
        self,
        models: Sequence[nn.Module],
        settings: TrainSettings,
        losses: list[Loss],
        recipe: Recipe | None = None,
        adversary: GroupAdversary | None = None,
        compiled: CompiledForward | None = None,
    ):
        super().__init__()
        self.settings, self.losses, self.k = settings, losses, len(models)
        self.adversary = adversary  # adversarial training's per-member steps; None: standard
        self.recipe, self.steps_per_epoch, self.epoch_lr = recipe or Recipe(), 1, math.nan
        params, buffers = stack_module_state(list(models))
        self.names = list(params)
        self.stacked = nn.ParameterList([nn.Parameter(params[n].detach()) for n in self.names])
        self.buffer_names = list(buffers)
        for i, name in enumerate(self.buffer_names):
            self.register_buffer(f"stacked_buffer{i}", buffers[name].clone())
        # The template is not a submodule: its meta tensors are never trained or moved.
        self.template = (copy.deepcopy(models[0]).to("meta"),)
        self.runs: list[MemberRun] = []
        self.active = list(range(self.k))
        self.loss_sum, self.seen = torch.zeros(self.k), 0
        # trainer.compile=on: every member's forward as one static-shape compiled call, and
        # under adversarial training the inner attack's eval-mode forward as another
        self.compiled, self.inner = compiled, None
        self.pad = False  # the compiled step pads the last partial batch (no BatchNorm, no AT)
        self.recalls = [Recalls() for _ in range(self.k)]  # m{k}/val/balanced_acc

    def compile(self, device: torch.device) -> CompiledForward:
        """The stacked forward of all K members compiled (one graph per batch shape and mode; on
        CUDA captured), with adversarial training the inner attack's too: used by every step
        from here on, recorded in each member's record."""
        self.compiled = CompiledForward(self.all_logits, True, device)
        self.pad = self.adversary is None and not mixes_rows(self.template[0])
        if self.adversary is not None:
            self.inner = CompiledForward(self.stacked_logits, True, device)
        return self.compiled

    def all_logits(self, x: torch.Tensor) -> torch.Tensor:
        """Every member's logits (K, B, classes) for its inputs `x` (K, B, C, H, W), train mode."""
        return self.stacked_logits(*self.tensors(), x)

    def stacked_logits(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        """(K, B, classes) logits of stacked `params` and `buffers` for `x` (K, B, C, H, W), in
        the template's mode."""
        return vmap(self._call)(params, buffers, x)

    def tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """Stacked parameters and buffers by the model's own names."""
        buffers = [getattr(self, f"stacked_buffer{i}") for i in range(len(self.buffer_names))]
        return dict(zip(self.names, self.stacked, strict=True)), dict(
            zip(self.buffer_names, buffers, strict=True)
        )

    def member(self, k: int) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        params, buffers = self.tensors()
        return {n: t[k] for n, t in params.items()}, {n: t[k] for n, t in buffers.items()}

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template[0], (params, buffers), (x,))

    def on_train_epoch_start(self) -> None:
        self.loss_sum, self.seen = torch.zeros(self.k, device=self.device), 0
        self.index = torch.tensor(self.active, device=self.device)
        if self._trainer is not None:  # the lr of the epoch's first step, as fit logs it
            self.epoch_lr = float(self.trainer.optimizers[0].param_groups[0]["lr"])

    def training_step(self, batch: tuple, _: int) -> torch.Tensor:
        if self.compiled is not None:
            return self.static_step(batch)
        params, buffers = self.live_tensors()
        x = to_unit(torch.stack([batch[k][0] for k in self.active]))  # (live K, B, C, H, W)
        ys = [batch[k][1] for k in self.active]
        if self.adversary is None:
            self.template[0].train()
            logits = vmap(self._call)(params, buffers, x)
            live = zip(self.active, logits, ys, strict=True)
            losses = torch.stack([self.losses[k](z, y) for k, z, y in live])
        else:
            view = stacked_view(params, buffers, self.template[0])
            x_adv = self.adversary.examples(view, x, ys, self.active)
            self.template[0].train()  # the attack ran in eval mode; the outer loss trains
            forward = partial(vmap(self._call), params, buffers)
            live_losses = [self.losses[k] for k in self.active]
            losses = self.adversary.losses(forward, x, x_adv, ys, live_losses, self.active)
            losses = torch.stack(losses)
        if len(self.active) < self.k:  # BatchNorm statistics were updated in the slice
            with torch.no_grad():
                for name, t in self.tensors()[1].items():
                    t.index_copy_(0, self.index, buffers[name])
        n = len(batch[0][1])
        self.loss_sum.index_add_(0, self.index, losses.detach() * n)  # checked once an epoch
        self.seen += n
        return losses.sum()

    def static_step(self, batch: tuple) -> torch.Tensor:
        """The compiled step: all K members every step (static shapes: a stopped member does not
        change the graph), the stopped ones' losses left out of the sum, so their gradient is
        exactly zero; `on_train_batch_end` puts back what momentum and BatchNorm moved."""
        x, ys = to_unit(torch.stack([b[0] for b in batch])), [b[1] for b in batch]
        n = len(ys[0])
        if self.adversary is None:
            self.template[0].train()
            logits = self.compiled(self.padded(x))[:, :n]  # the loss sees the real rows only
            losses = torch.stack([self.losses[k](logits[k], ys[k]) for k in self.active])
        else:
            losses = torch.stack(self.static_adversarial(x, ys))
        self.loss_sum.index_add_(0, self.index, losses.detach() * n)  # checked once an epoch
        self.seen += n
        return losses.sum()

    def padded(self, x: torch.Tensor) -> torch.Tensor:
        """`x` (K, n, ...) with zero rows up to the full batch where the step pads, so the last
        partial batch replays the full batch's graph. Exact without BatchNorm: no layer mixes
        rows, so the real rows' logits are the unpadded batch's, and the padded rows, cut off
        before the loss, get no gradient. With BatchNorm they would enter the batch statistics:
        there the partial batch has its own graph."""
        full = self.settings.batch_size
        if not self.pad or x.shape[1] >= full:
            return x
        return torch.cat([x, x.new_zeros((x.shape[0], full - x.shape[1], *x.shape[2:]))], 1)

    def static_adversarial(self, x: torch.Tensor, ys: list[torch.Tensor]) -> list[torch.Tensor]:
        """The active members' outer losses: every member's inner attack through the compiled
        eval-mode forward (each from its own seeded start, as alone), then the compiled training
        forward of all K; a stopped member's examples and loss are computed and left out."""
        every = list(range(self.k))
        view = stacked_view(*self.tensors(), self.template[0], self.inner_logits)
        x_adv = self.adversary.examples(view, x, ys, every)
        self.template[0].train()  # the attack ran in eval mode; the outer loss trains
        out = self.adversary.losses(self.compiled, x, x_adv, ys, self.losses, every)
        return [out[k] for k in self.active]

    def inner_logits(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        """The compiled eval-mode stacked forward, its output copied out: on CUDA a graph's
        outputs live in its memory pool until a later replay reuses it, and TRADES holds the
        clean logits over all the ascent steps."""
        return self.inner(params, buffers, x).clone()

    def live_tensors(self) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor]]:
        """The members still training: all stacked tensors, or (once some stopped) a slice, so
        stopped members cost no compute and get exactly zero gradient."""
        params, buffers = self.tensors()
        if len(self.active) == self.k:
            return params, buffers
        pick = {n: t.index_select(0, self.index) for n, t in {**params, **buffers}.items()}
        return {n: pick[n] for n in params}, {n: pick[n] for n in buffers}

    def on_train_batch_end(self, *_) -> None:
        # A stopped member stops changing: undo what momentum or BatchNorm statistics moved.
        if len(self.active) == self.k:
            return
        params, buffers = self.tensors()
        with torch.no_grad():
            for k, run in enumerate(self.runs):
                for name, value in run.frozen.items():
                    {**params, **buffers}[name][k].copy_(value)

    def validation_step(self, batch: tuple, _: int, dataloader_idx: int = 0) -> None:
        k = dataloader_idx
        if k not in self.active:
            return
        self.template[0].eval()
        x, y = batch
        logits = self._call(*self.member(k), to_unit(x))
        self.log(f"m{k}/val/loss", F.cross_entropy(logits, y), batch_size=len(y), **LOG)
        self.log(f"m{k}/val/acc", (logits.argmax(1) == y).float().mean(), batch_size=len(y), **LOG)
        self.recalls[k].add(logits, y)

    def on_validation_epoch_end(self) -> None:
        balanced = [r.balanced() for r in self.recalls]
        if self.trainer.sanity_checking or not self.seen:
            return
        means = (self.loss_sum / self.seen).tolist()
        for k in self.active:
            self.log(f"m{k}/val/balanced_acc", balanced[k], **LOG)
            if not math.isfinite(means[k]):
                raise TrainingError(
                    f"training diverged: member {k} mean loss={means[k]} in epoch "
                    f"{self.current_epoch}; lower optimizer.lr (now {self.recipe.optimizer.params.lr})"
                )
            self.log(f"m{k}/train/loss", means[k], **LOG)
            self.log(f"m{k}/train/lr", self.epoch_lr, **LOG)

    def configure_optimizers(self) -> dict:
        named = list(zip(self.names, self.stacked, strict=True))
        # every member has the same training-set size: the same batches per epoch
        return optimization(
            named, self.recipe, self.steps_per_epoch, self.settings.max_epochs, stacked=True
        )


LOG = {"add_dataloader_idx": False}


def mixes_rows(model: nn.Module) -> bool:
    """Whether a layer computes across a batch's rows (BatchNorm's batch statistics in training)."""
    return any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in model.modules())


def fit_group(
    models: Sequence[nn.Module],
    members: Sequence[Member],
    settings: TrainSettings,
    device: torch.device,
    logger=False,
    recipe: Recipe | None = None,
    adversarial: AdversarialSettings | None = None,
    callbacks: Sequence[Callback] = (),
) -> list[dict]:
    """Train each model on its member's split as `fit` would alone, all K as one computation.

    Each model comes initialized (as for `fit`) and ends with its chosen weights, in eval mode;
    returns one `fit` record per member. Members must share architecture and training-set size;
    `adversarial` (shared) switches on adversarial training, each member's seeded as alone;
    `callbacks` (progress lines) run after the members' selection.
    """
    adversarial = adversarial or AdversarialSettings()
    check_members(models, members, settings, adversarial)
    runs, trains, vals = [], [], []
    for model, m in zip(models, members, strict=True):
        model.to(device)
        (train, val), layout = channels_last(model, (m.train, m.val), settings, device)
        trains.append(train_batches(train, settings, recipe, m.seed))
        vals.append(val_batches(val))
        keep = selection(settings, adversarial, val, m.seed)  # robust validation per member
        stops = settings.selection == "val_loss" and settings.early_stopping
        patience = Patience(settings.patience) if stops else None
        runs.append(MemberRun(model, keep, patience, layout))
    L.seed_everything(members[0].seed, workers=True, verbose=False)
    seeds = [m.seed for m in members]
    counts = [m.counts for m in members]
    adversary = GroupAdversary(adversarial, seeds, counts) if adversarial.on else None
    module = GroupedClassifier(models, settings, [m.loss for m in members], recipe, adversary)
    module.runs, module.steps_per_epoch = runs, len(trains[0])
    if wanted(settings.compile):
        module.compile(device)
    trainer = make_trainer(settings, device, [GroupSelection(), *callbacks], logger)
    trainer.fit(module, train_dataloaders=Zipped(trains), val_dataloaders=vals)
    facts = compile_facts(module)
    return [member_record(run, trainer.current_epoch, settings, facts) for run in runs]


def compile_facts(module: GroupedClassifier) -> dict:
    """What each member's record says of trainer.compile: compiled (every compiled forward of
    the step), or why not when asked."""
    parts = [c.record() for c in (module.compiled, module.inner) if c is not None]
    reasons = [p["compile_fallback"] for p in parts if "compile_fallback" in p]
    out = {"compiled": bool(parts) and all(p["compiled"] for p in parts)}
    if module.compiled is not None:  # how the last partial batch ran (GroupedClassifier.padded)
        out["last_batch"] = "padded" if module.pad else "own graph"
    return out | ({"compile_fallback": reasons[0]} if reasons else {})
