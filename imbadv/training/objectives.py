"""Training objectives: functions of (logits, labels), made from their parameters and class counts."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from imbadv.training import CrossEntropyParams

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def cross_entropy(p: CrossEntropyParams, counts: Sequence[int]) -> Loss:
    """Mean cross-entropy of the true labels; the class counts play no part."""
    return F.cross_entropy
