"""Adversarial training: the loss of one training batch under PGD-AT, fast FGSM or TRADES.

The inner attack always runs with the model in eval mode (BatchNorm statistics and dropout
frozen, as AT-BSL does) and every submodule's mode is restored after it; only the outer loss
sees the model in training mode. Images are float in [0, 1]; eps and steps are pixel units.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextlib import contextmanager
from dataclasses import fields

import torch
import torch.nn.functional as F
from torch import nn

from imbadv.adversarial import ADVERSARIAL, AdversarialSettings
from imbadv.adversarial.classwise import class_eps
from imbadv.attacks import ATTACKS, Direction
from imbadv.attacks.core import eval_mode
from imbadv.models.common import output_layer
from imbadv.training.awp import perturb_weights, shift
from imbadv.training.objectives import Loss

# (model, x in [0, 1], y, per-example divergence of (logits_adv, logits_clean, y)) -> ascended
Divergence = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def ce_divergence(adv: torch.Tensor, clean: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """PGD-AT's inner objective: the cross-entropy of the true label, summed."""
    return F.cross_entropy(adv, y, reduction="sum")


def kl_divergence(adv: torch.Tensor, clean: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """TRADES' inner objective and regularizer: KL(softmax(clean) || softmax(adv)), summed."""
    return F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="sum")


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: float | torch.Tensor) -> torch.Tensor:
    """Into the L-inf eps-ball around x (eps a number or per row) and into [0, 1]."""
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
    """The training loss of one batch under `settings`' method, with its own seeded random starts.

    The method's facts choose the start, what the inner attack ascends, whether the clean forward
    runs and whether weights are perturbed; its registered function gives the outer loss.
    `counts` (training images per class) feed class-wise eps and count-aware losses (AT-BSL).
    """

    def __init__(
        self, settings: AdversarialSettings, seed: int = 0, counts: Sequence[int] | None = None
    ) -> None:
        self.s, self.p, self.facts, self.seed = settings, settings.params, settings.facts, seed
        self.outer_loss = ADVERSARIAL.get("adversarial", settings.mode).load()(self.p, counts)
        self.counts = None if counts is None else tuple(counts)
        self.epoch, self.max_epochs = 0, 1  # the training module sets them each epoch
        self.generators: dict[str, torch.Generator] = {}
        self.inner = None if settings.attack is None else inner_attack(settings)
        self.pending: dict[str, torch.Tensor] | None = None  # AWP's perturbation, until restored
        self.table: tuple | None = None  # class-wise eps of this epoch, on the batch's device

    def generator(self, device: torch.device) -> torch.Generator:
        """One generator per device, seeded once: the random starts repeat with the seed."""
        if str(device) not in self.generators:
            self.generators[str(device)] = torch.Generator(device=device).manual_seed(self.seed)
        return self.generators[str(device)]

    def eps(self, y: torch.Tensor) -> float | torch.Tensor:
        """The batch's eps: the method's, or each row's class eps (N, 1, 1, 1) when class-wise."""
        if not getattr(self.p, "classwise", False):
            return self.p.eps
        key = (self.epoch, self.max_epochs, y.device)  # the table changes once an epoch
        if self.table is None or self.table[0] != key:
            table = class_eps(self.p, self.counts, self.epoch, self.max_epochs)
            self.table = key, torch.tensor(table, device=y.device)
        return self.table[1][y].view(-1, 1, 1, 1)

    def start(self, x: torch.Tensor, eps: float) -> torch.Tensor:
        """The inner attack's random start for batch `x`, drawn from this step's own generator."""
        gen = self.generator(x.device)
        if self.facts.start == "normal":  # TRADES and MART start at x + 0.001 N(0, 1)
            return x + 0.001 * torch.randn(x.shape, generator=gen, device=x.device)
        if self.facts.start == "shifted":  # RoBal's one-sided start, x + eps U[0, 1)
            return x + torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * eps
        uniform = torch.rand(x.shape, generator=gen, device=x.device, dtype=x.dtype) * 2 - 1
        return x + uniform * eps

    def ascend(
        self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, start: torch.Tensor, eps=None
    ) -> torch.Tensor:
        """The method's ascent from `start` (no random draw): grouped training runs it on `Stacked`."""
        eps, alpha = (self.p.eps if eps is None else eps), self.p.step_size()
        if isinstance(eps, torch.Tensor) and self.p.alpha is None:  # the default step follows eps
            alpha = alpha * eps / max(self.p.eps, 1e-12)
        divergence = kl_divergence if self.facts.divergence == "kl" else ce_divergence
        return ascend(model, x, y, start, eps, alpha, self.p.inner_steps(), divergence)

    def examples(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The inner maximization's examples for this batch (within eps of x, in [0, 1])."""
        eps = self.eps(y)
        if self.inner is not None:  # a registered attack draws its own starts
            fn, params = self.inner
            gen = self.generator(x.device)
            x_adv = fn(model, x, y, eps, params, direction=Direction.ASCENT, generator=gen)
            return project(x_adv, x, eps).detach()
        return self.ascend(model, x, y, self.start(x, self.p.eps), eps)  # start: global eps

    def __call__(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: Loss):
        """The batch's training loss; `x` float in [0, 1], `model` in training mode."""
        if not self.s.on or self.epoch < getattr(self.p, "clean_epochs", 0):
            return loss(model(x), y)  # standard training; TAET's first stage
        x_adv = self.examples(model, x, y)
        if self.facts.perturbs_weights and self.epoch >= self.p.warmup:
            self.pending = perturb_weights(model, self.p.gamma, self.closure(x, x_adv, y, loss))
        return self.closure(x, x_adv, y, loss)(model)

    def closure(self, x, x_adv, y, loss) -> Callable[[nn.Module], torch.Tensor]:
        """The outer loss as a function of the model (AWP ascends it in the weights)."""

        def of(model: nn.Module) -> torch.Tensor:
            clean = model(x) if self.facts.clean_forward else None  # first: BatchNorm sees it first
            if not self.facts.features:
                return self.outer(clean, model(x_adv), y, loss)
            with penultimate(model) as seen:
                adv = model(x_adv)
            return self.outer_loss(clean, adv, y, loss, features=seen[0])

        return of

    def finish(self, model: nn.Module, state: dict | None = None) -> None:
        """After training: the method's test-time output (RoBal-N's scale and bias) written into
        the output layer's buffers, of `model` or of its state dict `state` (a sibling's)."""
        adjust = None if self.counts is None else self.p.posthoc(self.counts)
        if adjust is None:
            return
        scale, bias = adjust
        if state is None:
            layer = output_layer(model)
            layer.scale.fill_(scale)
            layer.bias.copy_(torch.tensor(bias))
            return
        name = model.head_name
        state[f"{name}.scale"] = torch.full_like(state[f"{name}.scale"], scale)
        state[f"{name}.bias"] = torch.tensor(bias).to(state[f"{name}.bias"])

    def after_step(self, model: nn.Module) -> None:
        """After the optimizer's step: take back the weight perturbation (AWP's restore)."""
        if self.pending is not None:
            shift(model, self.pending, -1.0)
            self.pending = None

    def outer(
        self, clean: torch.Tensor | None, adv: torch.Tensor, y: torch.Tensor, loss: Loss
    ) -> torch.Tensor:
        """The method's training loss from the logits (`clean` None unless it needs them)."""
        return self.outer_loss(clean, adv, y, loss)


@contextmanager
def penultimate(model: nn.Module):
    """Collects the input of the model's output layer (its penultimate features) while open."""
    seen: list[torch.Tensor] = []
    hook = output_layer(model).register_forward_hook(lambda m, args, out: seen.append(args[0]))
    try:
        yield seen
    finally:
        hook.remove()


def inner_attack(settings: AdversarialSettings) -> tuple[Callable, object]:
    """A registered attack with the settings' alpha and steps where it has those parameters."""
    entry = ATTACKS.get("adversarial.attack", settings.attack)
    known = {f.name for f in fields(entry.params)}
    options = {"alpha": settings.params.step_size(), "steps": settings.params.inner_steps()}
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
    step = AdversarialStep(AdversarialSettings.of("pgd_at", eps=eps, steps=steps), seed)
    correct = 0
    for start in range(0, len(y), batch_size):
        xb = x[start : start + batch_size]
        xb = xb.float().div(255.0) if xb.dtype == torch.uint8 else xb
        yb = y[start : start + batch_size]
        x_adv = step.examples(model, xb, yb)
        with torch.no_grad(), eval_mode(model):
            correct += int((model(x_adv).argmax(1) == yb).sum())
    return correct / max(1, len(y))
