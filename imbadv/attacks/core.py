"""What every attack shares: eval mode during the attack, the input gradient, a sign step."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
import torch.nn.functional as F
from torch import nn

from imbadv.attacks import Direction


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


def sign_step(
    x: torch.Tensor, grad: torch.Tensor, size: float, direction: Direction
) -> torch.Tensor:
    sign = 1.0 if Direction(direction) is Direction.ASCENT else -1.0
    return x + sign * size * grad.sign()
