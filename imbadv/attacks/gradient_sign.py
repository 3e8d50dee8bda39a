"""Gradient sign attacks (L-inf, pixel space [0, 1]): the paper's FGSM and BIM, and MI-FGSM."""

from __future__ import annotations

import torch
from torch import nn

from imbadv.attacks import BIMParams, Direction, FGSMParams, MIFGSMParams, bim_defaults
from imbadv.attacks.core import clip_linf, goal, input_gradient, sign_step


def fgsm_from_gradient(
    x: torch.Tensor, grad: torch.Tensor, eps: float, direction: Direction = Direction.ASCENT
) -> torch.Tensor:
    """One fast-gradient-sign step from a precomputed true-label gradient (one serves many eps).

    Ascent or descent only: a targeted direction needs the gradient of other labels.
    """
    return sign_step(x, grad, eps, direction).clamp(0.0, 1.0).detach()


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 0.01,
    direction: Direction = Direction.ASCENT,
    target: int | None = None,
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015, "Explaining and harnessing adversarial
    examples"), L-infinity, inputs in [0, 1].

    x_adv = clip_[0,1](x + s * eps * sign(grad_x CE(model(x), labels))) with (labels, s) from
    `core.goal`: the true labels and +1 for ascent, -1 for descent; the least-likely or `target`
    class and -1 for the targeted directions. Default eps 0.01 (Possas & Zhou).
    Shapes: x (N, C, H, W), y (N,); returns a detached tensor shaped like x.
    """
    labels, sign = goal(model, x, y, direction, target)
    grad = input_gradient(model, x, labels)
    return (x + sign * eps * grad.sign()).clamp(0.0, 1.0).detach()


def bim(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 0.01,
    alpha: float | None = None,
    steps: int | None = None,
    direction: Direction = Direction.ASCENT,
    target: int | None = None,
) -> torch.Tensor:
    """Basic iterative method / iterative gradient sign (Kurakin, Goodfellow & Bengio 2016,
    "Adversarial examples in the physical world"), L-infinity, inputs in [0, 1].

    `steps` gradient-sign steps of size `alpha`, each followed by a clip to the eps-ball around x
    and to [0, 1]. Defaults from `bim_defaults` (alpha 1/255, 3 steps at eps 0.01). Directions
    as in `fgsm`; the least-likely class is chosen once, on the clean images.
    Shapes: x (N, C, H, W), y (N,); returns a detached tensor shaped like x.
    """
    default_alpha, default_steps = bim_defaults(eps)
    alpha = default_alpha if alpha is None else alpha
    steps = default_steps if steps is None else steps
    labels, sign = goal(model, x, y, direction, target)
    lower, upper = x - eps, x + eps
    x_adv = x.detach()
    for _ in range(steps):
        x_adv = x_adv + sign * alpha * input_gradient(model, x_adv, labels).sign()
        x_adv = torch.minimum(torch.maximum(x_adv, lower), upper).clamp(0.0, 1.0).detach()
    return x_adv


def mifgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 8 / 255,
    alpha: float | None = None,
    steps: int = 10,
    decay: float = 1.0,
    direction: Direction = Direction.ASCENT,
    target: int | None = None,
) -> torch.Tensor:
    """Momentum iterative FGSM (Dong et al. 2018, "Boosting adversarial attacks with momentum"),
    L-infinity, inputs in [0, 1].

    g <- decay * g + grad / mean|grad| (per image), x_adv <- clip(x_adv + s * alpha * sign(g)) into
    the eps-ball and [0, 1]. Defaults: alpha = eps / steps (the paper), 10 steps, decay 1.0.
    Directions as in `fgsm`. An all-zero gradient leaves its image in place (torchattacks would
    divide 0 by 0). Shapes: x (N, C, H, W), y (N,); returns a detached tensor shaped like x.
    """
    alpha = eps / steps if alpha is None else alpha
    labels, sign = goal(model, x, y, direction, target)
    momentum = torch.zeros_like(x)
    x_adv = x.detach()
    for _ in range(steps):
        grad = input_gradient(model, x_adv, labels)
        scale = grad.abs().mean(dim=(1, 2, 3), keepdim=True)
        momentum = grad / torch.where(scale > 0, scale, 1.0) + momentum * decay
        x_adv = clip_linf(x_adv + sign * alpha * momentum.sign(), x, eps)
    return x_adv


def fgsm_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    p: FGSMParams,
    *,
    direction: Direction = Direction.ASCENT,
    generator: torch.Generator | None = None,
    target: int | None = None,
) -> torch.Tensor:
    """The registry's FGSM (see `fgsm`); deterministic, so `generator` is unused."""
    return fgsm(model, x, y, eps, direction, target)


def bim_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    p: BIMParams,
    *,
    direction: Direction = Direction.ASCENT,
    generator: torch.Generator | None = None,
    target: int | None = None,
) -> torch.Tensor:
    """The registry's BIM (see `bim`); deterministic, so `generator` is unused."""
    return bim(model, x, y, eps, p.alpha, p.steps, direction, target)


def mifgsm_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    p: MIFGSMParams,
    *,
    direction: Direction = Direction.ASCENT,
    generator: torch.Generator | None = None,
    target: int | None = None,
) -> torch.Tensor:
    """The registry's MI-FGSM (see `mifgsm`); deterministic, so `generator` is unused."""
    return mifgsm(model, x, y, eps, p.alpha, p.steps, p.decay, direction, target)
