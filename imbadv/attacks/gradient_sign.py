"""The paper's attacks: fast and iterative gradient sign methods (L-inf, pixel space [0, 1])."""

from __future__ import annotations

import torch
from torch import nn

from imbadv.attacks import BIMParams, Direction, FGSMParams, bim_defaults
from imbadv.attacks.core import input_gradient, sign_step


def fgsm_from_gradient(
    x: torch.Tensor, grad: torch.Tensor, eps: float, direction: Direction = Direction.ASCENT
) -> torch.Tensor:
    """One fast-gradient-sign step from a precomputed input gradient (one gradient serves many eps)."""
    return sign_step(x, grad, eps, direction).clamp(0.0, 1.0).detach()


def fgsm(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 0.01,
    direction: Direction = Direction.ASCENT,
) -> torch.Tensor:
    """Fast gradient sign method (Goodfellow et al. 2015, "Explaining and harnessing adversarial
    examples"), L-infinity, inputs in [0, 1].

    x_adv = clip_[0,1](x +/- eps * sign(grad_x CE(model(x), y))), `+` for ascent. Default eps 0.01
    (Possas & Zhou). Shapes: x (N, C, H, W), y (N,); returns a detached tensor shaped like x.
    """
    return fgsm_from_gradient(x, input_gradient(model, x, y), eps, direction)


def bim(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 0.01,
    alpha: float | None = None,
    steps: int | None = None,
    direction: Direction = Direction.ASCENT,
) -> torch.Tensor:
    """Basic iterative method / iterative gradient sign (Kurakin, Goodfellow & Bengio 2016,
    "Adversarial examples in the physical world"), L-infinity, inputs in [0, 1].

    `steps` gradient-sign steps of size `alpha`, each followed by a clip to the eps-ball around x
    and to [0, 1]. Defaults from `bim_defaults` (alpha 1/255, 3 steps at eps 0.01).
    Shapes: x (N, C, H, W), y (N,); returns a detached tensor shaped like x.
    """
    default_alpha, default_steps = bim_defaults(eps)
    alpha = default_alpha if alpha is None else alpha
    steps = default_steps if steps is None else steps
    lower, upper = x - eps, x + eps
    x_adv = x.detach()
    for _ in range(steps):
        x_adv = sign_step(x_adv, input_gradient(model, x_adv, y), alpha, direction)
        x_adv = torch.minimum(torch.maximum(x_adv, lower), upper).clamp(0.0, 1.0).detach()
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
) -> torch.Tensor:
    """The registry's FGSM (see `fgsm`); deterministic, so `generator` is unused."""
    return fgsm(model, x, y, eps, direction)


def bim_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    p: BIMParams,
    *,
    direction: Direction = Direction.ASCENT,
    generator: torch.Generator | None = None,
) -> torch.Tensor:
    """The registry's BIM (see `bim`); deterministic, so `generator` is unused."""
    return bim(model, x, y, eps, p.alpha, p.steps, direction)
