"""Adversarial weight perturbation (Wu, Xia, Wang 2020): the layer-wise weight ascent step.

As the authors' AdvWeightPerturb computes it (csdongxian/AWP, utils_awp.py): for every weight
tensor with more than one dimension whose name holds "weight" (conv and linear kernels, not
biases or BatchNorm), v_l = gamma ||w_l|| g_l / (||g_l|| + 1e-20), g_l the gradient of the
training loss at the current weights. Their proxy model takes one plain SGD step and rescales
the difference per layer, which cancels the proxy's learning rate: the same v_l. The proxy runs
in training mode with its own BatchNorm buffers; here the model's buffers are saved and put back.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn


def perturbed(model: nn.Module) -> dict[str, nn.Parameter]:
    """The parameters AWP moves: kernels of more than one dimension named `...weight`."""
    return {n: p for n, p in model.named_parameters() if p.dim() > 1 and "weight" in n}


def weight_ascent(
    model: nn.Module, gamma: float, loss_of: Callable[[nn.Module], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """AWP's perturbation v (name -> tensor) for the loss `loss_of(model)`; no weight moves."""
    params = perturbed(model)
    saved = {n: b.detach().clone() for n, b in model.named_buffers()}
    with torch.enable_grad():
        grads = torch.autograd.grad(loss_of(model), list(params.values()), allow_unused=True)
    with torch.no_grad():
        for name, buffer in model.named_buffers():  # the proxy's forward never touched them
            buffer.copy_(saved[name])
    steps = {}
    for (name, w), g in zip(params.items(), grads, strict=True):
        if g is None:
            continue
        g = g.detach()
        steps[name] = gamma * w.detach().norm() / (g.norm() + 1e-20) * g
    return steps


def shift(model: nn.Module, steps: dict[str, torch.Tensor], sign: float) -> None:
    """Add `sign` x the perturbation to the model's weights, in place."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name in steps:
                p.add_(steps[name], alpha=sign)


def perturb_weights(
    model: nn.Module, gamma: float, loss_of: Callable[[nn.Module], torch.Tensor]
) -> dict[str, torch.Tensor]:
    """Move the model's weights by AWP's v; returns v, to take back after the optimizer's step."""
    steps = weight_ascent(model, gamma, loss_of)
    shift(model, steps, 1.0)
    return steps
