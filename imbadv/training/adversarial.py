"""Adversarial training: the loss of one training batch under PGD-AT, fast FGSM or TRADES.

The inner attack always runs with the model in eval mode (BatchNorm statistics and dropout
frozen, as AT-BSL does) and every submodule's mode is restored after it; only the outer loss
sees the model in training mode. Images are float in [0, 1]; eps and steps are pixel units.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import fields

import torch
import torch.nn.functional as F
from torch import nn

from imbadv.attacks import ATTACKS, Direction
from imbadv.attacks.core import eval_mode
from imbadv.training import AdversarialSettings
from imbadv.training.objectives import Loss

# (model, x in [0, 1], y, per-example divergence of (logits_adv, logits_clean, y)) -> ascended
Divergence = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def ce_divergence(adv: torch.Tensor, clean: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PGD-AT's inner objective: the cross-entropy of the true label, summed."""
    return F.cross_entropy(adv, y, reduction="sum")


def kl_divergence(adv: torch.Tensor, clean: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """TRADES' inner objective and regularizer: KL(softmax(clean) || softmax(adv)), summed."""
    return F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="sum")


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Into the L-inf eps-ball around x and into [0, 1]."""
    return torch.minimum(torch.maximum(x_adv, x - eps), x + eps).clamp(0.0, 1.0)


def ascend(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    start: torch.Tensor,
    eps: float,
    alpha: float,
    steps: int,
    divergence: Divergence = ce_divergence,
) -> torch.Tensor:
    """`steps` signed-gradient ascent steps of `divergence` from `start`, projected after each.

    Runs in eval mode with grad enabled; the weights get no gradient. Returns a detached tensor.
    """
    x_adv = project(start, x, eps).detach()
    with torch.enable_grad(), eval_mode(model):
        clean = model(x).detach() if divergence is not ce_divergence else None
        for _ in range(steps):
            x_adv.requires_grad_(True)
            (grad,) = torch.autograd.grad(divergence(model(x_adv), clean, y), x_adv)
            x_adv = project(x_adv.detach() + alpha * grad.sign(), x, eps).detach()
    return x_adv


class AdversarialStep:
    """The training loss of one batch for `settings.mode`, with its own seeded random starts."""

    def __init__(self, settings: AdversarialSettings, seed: int = 0) -> None:
        self.s, self.seed = settings, seed
        self.generators: dict[str, torch.Generator] = {}
        self.inner = None
        if settings.attack is not None:
            self.inner = inner_attack(settings)

    def generator(self, device: torch.device) -> torch.Generator:
        """One generator per device, seeded once: the random starts repeat with the seed."""
        if str(device) not in self.generators:
            self.generators[str(device)] = torch.Generator(device=device).manual_seed(self.seed)
        return self.generators[str(device)]

    def uniform(self, x: torch.Tensor, scale: float) -> torch.Tensor:
        gen = self.generator(x.device)
        return (torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1) * scale

    def start(self, x: torch.Tensor) -> torch.Tensor:
        """The inner attack's random start for batch `x`, drawn from this step's own generator."""
        if self.s.mode == "trades":  # TRADES starts at x + 0.001 N(0, 1)
            noise = torch.randn(x.shape, generator=self.generator(x.device), device=x.device)
            return x + 0.001 * noise
        return x + self.uniform(x, self.s.eps)

    def ascend(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor
    ) -> torch.Tensor:
        """The mode's ascent from `start` (no random draw): grouped training runs it on `Stacked`."""
        s = self.s
        steps = 1 if s.mode == "fast_fgsm" else s.steps
        divergence = kl_divergence if s.mode == "trades" else ce_divergence
        return ascend(model, x, y, start, s.eps, s.step_size(), steps, divergence)

    def examples(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The inner maximization's examples for this batch (within eps of x, in [0, 1])."""
        if self.inner is not None:  # a registered attack draws its own starts
            fn, params = self.inner
            x_adv = fn(
                model,
                x,
                y,
                self.s.eps,
                params,
                direction=Direction.ASCENT,
                generator=self.generator(x.device),
            )
            return project(x_adv, x, self.s.eps).detach()
        return self.ascend(model, x, y, self.start(x))

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss):
        """The batch's training loss; `x` float in [0, 1], `model` in training mode."""
        if self.s.mode == "none":
            return loss(model(x), y)
        x_adv = self.examples(model, x, y)
        if self.s.mode != "trades":
            return loss(model(x_adv), y)
        clean = model(x)  # before the adversarial forward: BatchNorm statistics see it first
        return self.outer(clean, model(x_adv), y, loss)

    def outer(
        self, clean: torch.Tensor | None, adv: torch.Tensor, y: torch.Tensor, loss: Loss
    ) -> torch.Tensor:
        """The training loss from the logits: loss(adv), or TRADES' loss(clean) + beta * KL."""
        if self.s.mode != "trades":
            return loss(adv, y)
        robust = kl_divergence(adv, clean, y) / len(y)  # TRADES' batchmean KL
        return loss(clean, y) + self.s.beta * robust


def inner_attack(settings: AdversarialSettings) -> tuple[Callable, object]:
    """A registered attack with the settings' alpha and steps where it has those parameters."""
    entry = ATTACKS.get("adversarial.attack", settings.attack)
    known = {f.name for f in fields(entry.params)}
    options = {"alpha": settings.step_size(), "steps": settings.steps}
    params = ATTACKS.parse(
        "adversarial.attack", settings.attack, {k: v for k, v in options.items() if k in known}
    )
    return entry.load(), params.params


def robust_accuracy(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    steps: int,
    seed: int = 0,
    batch_size: int = 512,
) -> float:
    """Accuracy under PGD (random start, step eps/4) on uint8 or [0, 1] images: robust validation."""
    step = AdversarialStep(AdversarialSettings(mode="pgd_at", eps=eps, steps=steps), seed)
    correct = 0
    for start in range(0, len(y), batch_size):
        xb = x[start : start + batch_size]
        xb = xb.float().div(255.0) if xb.dtype == torch.uint8 else xb
        yb = y[start : start + batch_size]
        x_adv = step.examples(model, xb, yb)
        with torch.no_grad(), eval_mode(model):
            correct += int((model(x_adv).argmax(1) == yb).sum())
    return correct / max(1, len(y))
