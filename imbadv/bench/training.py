"""Bench, training: imbadv's training path (plain and adversarial) against a bare PyTorch loop."""

from __future__ import annotations

import copy
import statistics
import time
from contextlib import contextmanager
from dataclasses import replace

import lightning as L
import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback
from torch import nn

from imbadv.adversarial import AdversarialSettings
from imbadv.augment import AUGMENTS
from imbadv.bench.attacks import alternated, sync
from imbadv.models.layout import choose_layout
from imbadv.training import Recipe, TrainSettings
from imbadv.training.adversarial import AdversarialStep
from imbadv.training.loop import Classifier, make_trainer, train_batches


def make_data(n: int, device: torch.device, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """`n` random uint8 32x32 RGB images and labels of 10 classes, on `device` (speed only)."""
    gen = torch.Generator().manual_seed(seed)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return x.to(device), torch.randint(0, 10, (n,), generator=gen).to(device)


def laid_out(
    model: nn.Module, x: torch.Tensor, s: TrainSettings, device: torch.device
) -> torch.Tensor:
    """`model` in the layout fit would train it in on `device` (imbadv.models.layout), and `x` too."""
    layout = choose_layout(model, device, s.channels_last)
    model.to(memory_format=layout.format)
    return x.contiguous(memory_format=layout.format)


@contextmanager
def torch_flags_kept():
    """Undo the process-wide flags Trainer(deterministic=True) sets, so the raw side runs on defaults."""
    cudnn = torch.backends.cudnn
    kept = (
        torch.are_deterministic_algorithms_enabled(),
        torch.is_deterministic_algorithms_warn_only_enabled(),
        cudnn.benchmark,
    )
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(kept[0], warn_only=kept[1])
        cudnn.benchmark = kept[2]


def raw_fast_fgsm(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, gen: torch.Generator
) -> torch.Tensor:
    """A bare fast-FGSM inner step (Wong et al. 2020): uniform start, one signed step of 1.25 eps."""
    noise = (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * eps
    x_adv = torch.minimum(torch.maximum(x + noise, x - eps), x + eps).clamp(0, 1)
    model.eval()
    x_adv.requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x_adv), y, reduction="sum"), x_adv)
    model.train()
    x_adv = x_adv.detach() + 1.25 * eps * grad.sign()
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0, 1).detach()


def raw_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    s: TrainSettings,
    warmup: int,
    seed: int = 0,
    at_eps: float | None = None,
) -> float:
    """Seconds for the steps after `warmup` of a bare loop doing Lightning's optimizer steps
    (with `at_eps`, on fast-FGSM adversarial examples drawn from the same seeded generator)."""
    p, decay = Recipe().optimizer.params, Recipe().schedule.params.decay  # the paper's recipe
    opt = torch.optim.RMSprop(model.parameters(), lr=p.lr, alpha=p.rho, eps=p.eps)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1.0 / (1.0 + decay * t))
    gen = torch.Generator().manual_seed(seed * 100_003)  # TensorBatches' first pass: same batches
    order = torch.randperm(len(y), generator=gen).to(y.device)
    at_gen = torch.Generator(device=y.device).manual_seed(seed)  # AdversarialStep's generator
    model.train()
    start = 0.0
    for i, first in enumerate(range(0, len(y), s.batch_size)):
        if i == warmup:
            sync(y.device)
            start = time.perf_counter()
        idx = order[first : first + s.batch_size]
        xb = x[idx].float().div_(255.0)
        if at_eps is not None:
            xb = raw_fast_fgsm(model, xb, y[idx], at_eps, at_gen)
        loss = F.cross_entropy(model(xb), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
    sync(y.device)
    return time.perf_counter() - start


class StepClock(Callback):
    """Clock reads at the end of the last warm-up step and of the last step of a fit."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        self.warmup, self.device, self.reads = warmup, device, []

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        if args[-1] in (self.warmup - 1, trainer.num_training_batches - 1):  # args[-1]: batch_idx
            sync(self.device)
            self.reads.append(time.perf_counter())


def imbadv_train(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    s: TrainSettings,
    warmup: int,
    device: torch.device,
    seed: int = 0,
    at_eps: float | None = None,
    recipe: Recipe | None = None,
    clock: StepClock | None = None,
    modules: list | None = None,
) -> float:
    """Seconds for the steps after `warmup` of imbadv's training path, as `train.fit` builds it
    (with `at_eps`, fast-FGSM adversarial training's `AdversarialStep`, as `fit` passes it;
    `recipe`'s optimizer, schedule and augmentation, default the paper's; `clock` another
    clock, e.g. one that waits on other processes after warm-up; `modules` gets the
    `Classifier`, whose `compiled` says whether trainer.compile compiled).

    Without fit's validation and its epoch-end callbacks: once-an-epoch work the raw loop lacks.
    """
    L.seed_everything(seed, workers=True, verbose=False)
    clock = clock or StepClock(warmup, device)
    step = None
    if at_eps is not None:
        step = AdversarialStep(AdversarialSettings.of("fast_fgsm", eps=at_eps), seed)
    with torch_flags_kept():
        trainer = make_trainer(s, device, [clock])
        batches = train_batches((x, y), s, recipe or Recipe(), seed)
        module = Classifier(model, s, step=step, recipe=recipe, steps_per_epoch=len(batches))
        trainer.fit(module, train_dataloaders=batches)
    if modules is not None:
        modules.append(module)
    return clock.reads[-1] - clock.reads[0]


def bench_training(
    model: nn.Module,
    s: TrainSettings,
    warmup: int,
    steps: int,
    repeats: int,
    device: torch.device,
    at_eps: float | None = None,
) -> dict:
    """Images/s of both sides, alternated (raw, imbadv, imbadv, raw, ...) from the same weights;
    with `at_eps`, both sides train on fast-FGSM examples (adversarial training)."""
    x, y = make_data((warmup + steps) * s.batch_size, device)
    x = laid_out(model, x, s, device)  # as fit does: NHWC model and data where safe
    sides = {
        "raw": lambda m: raw_train(m, x, y, s, warmup, at_eps=at_eps),
        "imbadv": lambda m: imbadv_train(m, x, y, s, warmup, device, at_eps=at_eps),
    }
    seconds: dict[str, list[float]] = {"raw": [], "imbadv": []}
    final = {}
    for side in alternated(list(sides), repeats):
        final[side] = copy.deepcopy(model)
        seconds[side].append(sides[side](final[side]))
    images = steps * s.batch_size
    ips = {side: [images / t for t in ts] for side, ts in seconds.items()}
    ratios = [i / r for i, r in zip(ips["imbadv"], ips["raw"], strict=True)]
    raw_w, imb_w = (final[k].cpu().state_dict() for k in ("raw", "imbadv"))
    return {
        "ratio": statistics.median(ratios),  # median of paired runs: load drifts between pairs
        "ratios": ratios,
        "imbadv_images_per_s": statistics.median(ips["imbadv"]),
        "raw_images_per_s": statistics.median(ips["raw"]),
        "runs_images_per_s": ips,
        # Same batches and optimizer from the same start: the two sides must end alike.
        "weights_max_abs_diff": max(float((raw_w[k] - imb_w[k]).abs().max()) for k in raw_w),
    }


def bench_augment(
    model: nn.Module, s: TrainSettings, warmup: int, steps: int, repeats: int, device: torch.device
) -> dict:
    """imbadv's training step with `crop_flip` against the same step without augmentation:
    seconds per step, alternated from the same weights; the ratio is crop_flip / none."""
    x, y = make_data((warmup + steps) * s.batch_size, device)
    x = laid_out(model, x, s, device)
    crop_flip = Recipe(augment=AUGMENTS.parse("augment", "crop_flip", {}))
    sides = {"none": Recipe(), "crop_flip": crop_flip}
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    for side in alternated(list(sides), repeats):
        recipe = sides[side]
        seconds[side].append(
            imbadv_train(copy.deepcopy(model), x, y, s, warmup, device, recipe=recipe)
        )
    ratios = [a / n for a, n in zip(seconds["crop_flip"], seconds["none"], strict=True)]
    return {
        "ratio": statistics.median(ratios),  # step-time ratio: lower is cheaper augmentation
        "ratios": ratios,
        "ms_per_step": {k: 1e3 * statistics.median(v) / steps for k, v in seconds.items()},
    }


def bench_compile(
    model: nn.Module, s: TrainSettings, warmup: int, steps: int, repeats: int, device: torch.device
) -> dict:
    """imbadv's training path with trainer.compile=on against off, alternated from the same
    weights: steady-state images/s after warm-up (compiling happens in the first warm-up step),
    and compiling's cost apart: the compiled fit's wall time minus the eager fit's."""
    x, y = make_data((warmup + steps) * s.batch_size, device)
    x = laid_out(model, x, s, device)
    sides = {"eager": replace(s, compile="off"), "compiled": replace(s, compile="on")}
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    walls: dict[str, list[float]] = {side: [] for side in sides}
    final, modules = {}, []
    for side in alternated(list(sides), repeats):
        torch._dynamo.reset()  # every compiled run compiles anew: its cost is in each run
        final[side] = copy.deepcopy(model)
        start = time.perf_counter()
        seconds[side].append(
            imbadv_train(final[side], x, y, sides[side], warmup, device, modules=modules)
        )
        walls[side].append(time.perf_counter() - start)
    ips = {side: [steps * s.batch_size / t for t in ts] for side, ts in seconds.items()}
    ratios = [c / e for c, e in zip(ips["compiled"], ips["eager"], strict=True)]
    done = [m.compiled.record() for m in modules if m.settings.compile == "on"]
    a, b = (final[k].cpu().state_dict() for k in ("eager", "compiled"))
    return {
        "ratio": statistics.median(ratios),  # compiled / eager steady-state images/s
        "ratios": ratios,
        "compiled_images_per_s": statistics.median(ips["compiled"]),
        "eager_images_per_s": statistics.median(ips["eager"]),
        "compile_seconds": statistics.median(walls["compiled"]) - statistics.median(walls["eager"]),
        "compiled": all(r["compiled"] for r in done),  # false: it fell back to eager (reason)
        "compile_fallback": next((r["compile_fallback"] for r in done if not r["compiled"]), None),
        "weights_max_abs_diff": max(float((a[k] - b[k]).abs().max()) for k in a),
    }
