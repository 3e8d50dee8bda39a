"""Training objectives: functions of (logits, labels), made from their parameters and class counts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from imbadv.training import BalancedSoftmaxParams, CrossEntropyParams, WeightedCEParams

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Resident:
    """A small constant tensor (class weights, a log prior) copied to each device and dtype once:
    a per-step `.to(device)` is a host-to-device copy every step, and a captured step cannot
    hold one."""

    def __init__(self, values: torch.Tensor) -> None:
        self.values, self.copies = values, {}

    def on(self, like: torch.Tensor) -> torch.Tensor:
        key = (like.device, like.dtype)
        if key not in self.copies:
            self.copies[key] = self.values.to(like.device, like.dtype)
        return self.copies[key]


def cross_entropy(p: CrossEntropyParams, counts: Sequence[int]) -> Loss:
    """Mean cross-entropy of the true labels; the class counts play no part."""
    return F.cross_entropy


def class_weights(counts: Sequence[int], kind: str, beta: float = 0.9999) -> torch.Tensor:
    """Per-class weights summing to the number of classes.

    `inverse`: w_c ~ 1 / n_c. `effective` (Cui et al. 2019, "Class-balanced loss based on
    effective number of samples"): w_c ~ (1 - beta) / (1 - beta^n_c); beta 0 gives equal
    weights, beta -> 1 approaches inverse frequency.
    """
    n = torch.tensor([float(c) for c in counts], dtype=torch.float64)
    if kind == "inverse":
        raw = 1.0 / n
    else:
        raw = (1.0 - beta) / (1.0 - torch.pow(torch.tensor(beta, dtype=torch.float64), n))
    return (raw / raw.sum() * len(counts)).float()


def weighted_cross_entropy(p: WeightedCEParams, counts: Sequence[int]) -> Loss:
    """Cross-entropy with `class_weights`, averaged over the batch's weights (torch's convention)."""
    weights = Resident(class_weights(counts, p.weights, p.beta))

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, y, weight=weights.on(logits))

    return loss


def log_prior(counts: Sequence[int]) -> torch.Tensor:
    """log n_c (float32): the shift balanced softmax adds (any constant cancels in the softmax)."""
    return torch.tensor([float(c) for c in counts]).log()


def balanced_softmax(p: BalancedSoftmaxParams, counts: Sequence[int]) -> Loss:
    """Cross-entropy on logits + tau * log n_c: the model learns balanced logits (Ren et al. 2020)."""
    shift = Resident(p.tau * log_prior(counts))

    def loss(logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits + shift.on(logits), y)

    return loss


class LogitAdjusted(nn.Module):
    """Post-hoc logit adjustment (Menon et al. 2021): logits - tau * log n_c at inference.

    Wraps a trained model for evaluation and attacks alike, so the attacked classifier is the
    one whose accuracy is reported.
    """

    def __init__(self, model: nn.Module, counts: Sequence[int], tau: float) -> None:
        super().__init__()
        self.model, self.tau = model, tau
        self.register_buffer("shift", tau * log_prior(counts))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) - self.shift
