"""What every attack shares: eval mode, losses, the input gradient, the goal labels, steps."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from imbadv.attacks import Direction
from imbadv.data.tensors import eval_mode


def margin_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """Carlini-Wagner margin per image, max_{j != label} z_j - z_label, shape (N,).

    Positive once the image is misclassified; linear in the logits, so multiplying the logits by
    a constant scales its gradient without changing the gradient's sign (no softmax saturation).
    """
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.masked_fill(F.one_hot(labels, logits.shape[1]).bool(), float("-inf"))
    return others.amax(1) - true


def per_image_loss(logits: torch.Tensor, labels: torch.Tensor, loss: str = "ce") -> torch.Tensor:
    """`ce` (cross-entropy) or `margin` (see margin_loss) of each image, shape (N,)."""
    if loss == "ce":
        return F.cross_entropy(logits, labels, reduction="none")
    if loss == "margin":
        return margin_loss(logits, labels)
    raise ValueError(f"unknown attack loss {loss!r}: ce or margin")


def input_gradient(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss: str = "ce"
) -> torch.Tensor:
    """Gradient of the summed `loss` of the labels `y` with respect to `x` only.

    Summed, not averaged, so small per-image gradients do not underflow by a factor of the batch
    size; the sign, which is all the attacks use, is the same. The weights get no gradient.
    Shapes: x (N, C, H, W) float in [0, 1], y (N,) int64; returns (N, C, H, W).
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "input gradients are impossible under torch.inference_mode(); "
            "run attacks outside it (Lightning: Trainer(inference_mode=False))"
        )
    # detach() makes a new leaf sharing x's memory: autograd never writes into it, so no copy
    x = x.detach().requires_grad_(True)
    with torch.enable_grad(), eval_mode(model):
        logits = model(x)
        if loss == "ce":  # one fused reduction, as torchattacks' (mean) cross-entropy
            total = F.cross_entropy(logits, y, reduction="sum")
        else:
            total = per_image_loss(logits, y, loss).sum()
        (grad,) = torch.autograd.grad(total, x)
    return grad


def goal(
    model: nn.Module, x: torch.Tensor, y: torch.Tensor, direction: Direction, target: int | None
) -> tuple[torch.Tensor, float]:
    """The labels whose loss an attack moves, and +1 to raise it or -1 to lower it.

    ascent: (y, +1); descent: (y, -1); least_likely: (the class other than y with the lowest
    clean logit, as torchattacks' least-likely mode, -1); toward: (`target` for every image, -1). Shapes: x (N, C, H, W), y (N,).
    """
    direction = Direction(direction)
    if direction is Direction.ASCENT:
        return y, 1.0
    if direction is Direction.DESCENT:
        return y, -1.0
    if direction is Direction.LEAST_LIKELY:
        with torch.no_grad(), eval_mode(model):
            logits = model(x)
            own = F.one_hot(y, logits.shape[1]).bool()
            return logits.masked_fill(own, float("inf")).argmin(1), -1.0
    if target is None:
        raise ValueError("direction 'toward' needs a target class")
    return torch.full_like(y, int(target)), -1.0


def sign_step(
    x: torch.Tensor, grad: torch.Tensor, size: float, direction: Direction
) -> torch.Tensor:
    """x +/- size * sign(grad): `+` for ascent, `-` for descent (the gradient of the true label)."""
    direction = Direction(direction)
    if direction not in (Direction.ASCENT, Direction.DESCENT):
        raise ValueError(f"sign_step takes the true label's gradient: not for {direction}")
    sign = 1.0 if direction is Direction.ASCENT else -1.0
    return x + sign * size * grad.sign()


def clip_linf(x_adv: torch.Tensor, x: torch.Tensor, eps: float) -> torch.Tensor:
    """Into the L-inf eps-ball around x and [0, 1], detached (torchattacks' order of operations)."""
    delta = torch.clamp(x_adv - x, min=-eps, max=eps)
    return torch.clamp(x + delta, min=0.0, max=1.0).detach()
