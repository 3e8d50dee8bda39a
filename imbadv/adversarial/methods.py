"""The outer losses of the adversarial-training methods: pure functions of the logits.

Each registered function is `make(params, counts) -> outer`, `outer(clean, adv, y, loss)` the
batch's training loss: `clean` the clean logits (None unless the method declares
`clean_forward`), `adv` the adversarial logits, `y` the labels, `loss` the job's objective
(mean over the batch). Formulas are the papers' (and their code's, read where it differs).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F

from imbadv.adversarial import ATBSLParams, MARTParams, TAETParams, TradesParams
from imbadv.training import BalancedSoftmaxParams
from imbadv.training.objectives import balanced_softmax

Loss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Outer = Callable[[torch.Tensor | None, torch.Tensor, torch.Tensor, Loss], torch.Tensor]


def standard(params: object, counts: Sequence[int] | None = None) -> Outer:
    """Standard training: the objective on the (clean) logits the machinery passes as `adv`."""
    return lambda clean, adv, y, loss: loss(adv, y)


def adversarial_loss(params: object, counts: Sequence[int] | None = None) -> Outer:
    """PGD-AT, fast FGSM, AWP: the objective on the adversarial logits."""
    return lambda clean, adv, y, loss: loss(adv, y)


def kl_rows(adv: torch.Tensor, clean: torch.Tensor) -> torch.Tensor:
    """KL(softmax(clean) || softmax(adv)) of each row: shape (N,)."""
    return F.kl_div(F.log_softmax(adv, 1), F.softmax(clean, 1), reduction="none").sum(1)


def trades(params: TradesParams, counts: Sequence[int] | None = None) -> Outer:
    """TRADES: loss(clean) + beta * KL(clean || adv), the KL averaged over the batch."""

    def outer(clean, adv, y, loss):
        return loss(clean, y) + params.beta * kl_rows(adv, clean).mean()

    return outer


def mart(params: MARTParams, counts: Sequence[int] | None = None) -> Outer:
    """MART: BCE(adv) + beta * mean_i KL(clean_i || adv_i) (1 - p_y(clean_i)).

    BCE = loss(adv, y) - log(1 - max_{k != y} p_k(adv)): the objective on the adversarial
    example plus the margin term that pushes the strongest wrong class down. Constants as in
    the authors' mart_loss: log(1.0001 - p + 1e-12), KL of log(p_adv + 1e-12), 1.0000001 - p_y.
    """

    def outer(clean, adv, y, loss):
        p_adv = F.softmax(adv, 1)
        top2 = torch.argsort(p_adv, 1)[:, -2:]
        wrong = torch.where(top2[:, -1] == y, top2[:, -2], top2[:, -1])
        boosted = loss(adv, y) + F.nll_loss(torch.log(1.0001 - p_adv + 1e-12), wrong)
        p_clean = F.softmax(clean, 1)
        kl = (torch.xlogy(p_clean, p_clean) - p_clean * torch.log(p_adv + 1e-12)).sum(1)
        true = p_clean.gather(1, y[:, None]).squeeze(1)
        return boosted + params.beta * (kl * (1.0000001 - true)).mean()

    return outer


def at_bsl(params: ATBSLParams, counts: Sequence[int] | None = None) -> Outer:
    """AT-BSL: balanced softmax on the adversarial logits, CE(adv + tau log n_c, y).

    The method brings its loss: the job's objective must be `ce` (checked with the settings)."""
    if counts is None:
        raise ValueError("adversarial=at_bsl needs the training counts per class")
    balanced = balanced_softmax(BalancedSoftmaxParams(tau=params.tau), counts)
    return lambda clean, adv, y, loss: balanced(adv, y)


def harl(p: TAETParams, classes: int) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """TAET's hierarchical adversarial robust loss of (adversarial logits, labels).

    As the authors' HARL (code/HARL.py): l_i the CE of row i, L_c = sum_{y_i = c} l_i /
    (n_c + 1e-10) over the batch's n_c rows of class c (0 for a class absent from the batch,
    which still counts among the C classes), Lbar = mean_c L_c, q_c = L_c / (sum_k L_k + 1e-10);
    loss = alpha Lbar + beta mean_c (L_c - Lbar)^2 + gamma sum_c q_c^2.
    """

    def loss(adv: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        rows = F.cross_entropy(adv, y, reduction="none")
        sums = torch.zeros(classes, device=adv.device, dtype=rows.dtype).index_add(0, y, rows)
        n = torch.bincount(y, minlength=classes).to(rows.dtype)
        per_class = sums / (n + 1e-10)
        mean = per_class.mean()
        share = per_class / (per_class.sum() + 1e-10)
        spread = ((per_class - mean) ** 2).mean()
        return p.harl_alpha * mean + p.harl_beta * spread + p.harl_gamma * (share**2).sum()

    return loss


def taet(p: TAETParams, counts: Sequence[int] | None = None) -> Outer:
    """TAET's second stage: HARL on the adversarial logits (the first stage, plain CE on clean
    images for `clean_epochs`, is the machinery's: imbadv/training/adversarial.py)."""
    if counts is None:
        raise ValueError("adversarial=taet needs the number of classes (the training counts)")
    stage_two = harl(p, len(counts))
    return lambda clean, adv, y, loss: stage_two(adv, y)
