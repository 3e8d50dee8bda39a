"""Attack stage: fast and iterative gradient sign methods as pure PyTorch functions."""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from imbadv.settings import Direction, Method

# eps, alpha and every image here live in pixel space [0, 1]: the model normalizes inside.
EPS_SPACE = "pixel [0, 1]"


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode (dropout/BatchNorm frozen) and restore each submodule's mode after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training  # per module: a recursive .train() here costs ~4x the attack step's overhead


def input_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Gradient of the summed cross-entropy of the true labels `y` with respect to `x` only.

    Summed, not averaged, so small per-image gradients do not underflow by a factor of the batch
    size; the sign, which is all the attacks use, is the same. The weights get no gradient.
    Shapes: x (N, C, H, W) float in [0, 1], y (N,) int64; returns (N, C, H, W).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "input gradients are impossible under torch.inference_mode(); "
            "run attacks outside it (Lightning: Trainer(inference_mode=False))"
        )
    x = x.detach().clone().requires_grad_(True)
    with torch.enable_grad(), eval_mode(model):
        loss = F.cross_entropy(model(x), y, reduction="sum")
        (grad,) = torch.autograd.grad(loss, x)
    return grad


def _step(x: torch.Tensor, grad: torch.Tensor, size: float, direction: Direction) -> torch.Tensor:
    sign = 1.0 if Direction(direction) is Direction.ASCENT else -1.0
    return x + sign * size * grad.sign()


def fgsm_from_gradient(
    x: torch.Tensor, grad: torch.Tensor, eps: float, direction: Direction = Direction.ASCENT
) -> torch.Tensor:
    """One fast-gradient-sign step from a precomputed input gradient (one gradient serves many eps)."""
    return _step(x, grad, eps, direction).clamp(0.0, 1.0).detach()


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


def bim_defaults(eps: float) -> tuple[float, int]:
    """Kurakin et al. (2016): alpha = 1/255 and steps = floor(min(255 eps + 4, 1.25 * 255 eps))."""
    return 1.0 / 255.0, int(math.floor(min(eps * 255 + 4, 1.25 * eps * 255)))


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
        x_adv = _step(x_adv, input_gradient(model, x_adv, y), alpha, direction)
        x_adv = torch.minimum(torch.maximum(x_adv, lower), upper).clamp(0.0, 1.0).detach()
    return x_adv


def run_attack(
    method: Method | str,
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    direction: Direction | str = Direction.ASCENT,
    alpha: float | None = None,
    steps: int | None = None,
) -> torch.Tensor:
    """Dispatch to `fgsm` or `bim` by name; `alpha`/`steps` apply to BIM only."""
    if Method(method) is Method.FGSM:
        return fgsm(model, x, y, eps, Direction(direction))
    return bim(model, x, y, eps, alpha, steps, Direction(direction))
