"""The registered optimizers as torch.optim instances over a model's named parameters."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from imbadv.optimizers import AdamParams, RMSpropKerasParams, SGDParams

Named = Sequence[tuple[str, torch.Tensor]]


def param_groups(
    named: Named, weight_decay: float, decay_norm_bias: bool, stacked: bool = False
) -> list[dict]:
    """One group, or two when BatchNorm weights and biases (1-D per model) get no weight decay.

    `stacked`: parameters carry a leading member dimension (grouped training), not counted.
    """
    if decay_norm_bias or weight_decay == 0:
        return [{"params": [p for _, p in named], "weight_decay": weight_decay}]
    flat = [p for _, p in named if p.dim() - int(stacked) <= 1]
    ids = {id(p) for p in flat}
    rest = [p for _, p in named if id(p) not in ids]
    return [{"params": rest, "weight_decay": weight_decay}, {"params": flat, "weight_decay": 0.0}]


def rmsprop_keras(
    p: RMSpropKerasParams, named: Named, stacked: bool = False
) -> torch.optim.Optimizer:
    """Keras' RMSprop: torch's RMSprop with Keras' rho and eps."""
    return torch.optim.RMSprop([t for _, t in named], lr=p.lr, alpha=p.rho, eps=p.eps)


def sgd(p: SGDParams, named: Named, stacked: bool = False) -> torch.optim.Optimizer:
    """SGD with momentum; weight decay as L2 on the gradient (torch's, AT-BSL's and RoBal's)."""
    groups = param_groups(named, p.weight_decay, p.decay_norm_bias, stacked)
    return torch.optim.SGD(groups, lr=p.lr, momentum=p.momentum, nesterov=p.nesterov)


def adam(p: AdamParams, named: Named, stacked: bool = False) -> torch.optim.Optimizer:
    """Adam with L2 weight decay on the gradient."""
    groups = param_groups(named, p.weight_decay, p.decay_norm_bias, stacked)
    return torch.optim.Adam(groups, lr=p.lr, betas=(p.beta1, p.beta2), eps=p.eps)


def adamw(p: AdamParams, named: Named, stacked: bool = False) -> torch.optim.Optimizer:
    """AdamW: weight decay decoupled from the gradient."""
    groups = param_groups(named, p.weight_decay, p.decay_norm_bias, stacked)
    return torch.optim.AdamW(groups, lr=p.lr, betas=(p.beta1, p.beta2), eps=p.eps)
