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

from imbadv.adversarial import (
    ATBSLParams,
    MARTParams,
    REATParams,
    RoBalParams,
    TAETParams,
    TradesParams,
)
from imbadv.training import BalancedSoftmaxParams
from imbadv.training.objectives import Resident, balanced_softmax

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


def robal(p: RoBalParams, counts: Sequence[int] | None = None) -> Outer:
    """RoBal (wutong16/Adversarial_Long-Tail, `MultiMarginLoss` + `add_reg_train`):
    CE(s (adv - m_y [k = y]) + tau_b log pi, y) + beta mean_i KL(clean_i || adv_i), on the raw
    cosine outputs, m_c = m + tau_m log(n_c / n_min) / s, KL of log(p_adv + 1e-12) as theirs."""
    if counts is None:
        raise ValueError("adversarial=robal needs the training counts per class")
    n = torch.tensor([max(c, 1) for c in counts], dtype=torch.float64)
    margin = Resident((p.m + p.tau_m * torch.log(n / n.min()) / p.s).float())
    prior = Resident((p.tau_b * torch.log(n / n.sum())).float())

    def outer(clean, adv, y, loss):
        m, b = margin.on(adv), prior.on(adv)
        shifted = p.s * (adv - F.one_hot(y, adv.shape[1]) * m[y, None]) + b
        p_clean, p_adv = F.softmax(clean, 1), F.softmax(adv, 1)
        kl = (torch.xlogy(p_clean, p_clean) - p_clean * torch.log(p_adv + 1e-12)).sum(1)
        return F.cross_entropy(shifted, y) + p.beta * kl.mean()

    return outer


def tail_term(
    features: torch.Tensor, y: torch.Tensor, tail: torch.Tensor, omega: torch.Tensor
) -> torch.Tensor:
    """REAT's TAIL term as their code computes it (loss_functions.py, `REAT`): for each anchor i
    of a tail class, KL_i = the mean over the batch's rows j and feature dims d of
    q_id (log q_id - log softmax(f_j)_d), q_i = softmax(f_i) detached (their KLDivLoss with
    size_average='none' reduces to that mean); c_i = mean_j s_ij (omega_yi + omega_yj), s_ij = -1
    for the same class, +1 otherwise; TAIL = sum_i KL_i c_i / (number of anchors), 0 without."""
    anchors = torch.isin(y, tail).nonzero().squeeze(1)
    if len(anchors) == 0:
        return features.sum() * 0.0
    logp = F.log_softmax(features, 1)
    logq = F.log_softmax(features[anchors].detach(), 1)
    q = logq.exp()
    kl = (q[:, None, :] * (logq[:, None, :] - logp[None, :, :])).mean((1, 2))
    sign = torch.where(y[anchors, None] == y[None, :], -1.0, 1.0)
    weight = omega[y[anchors], None] + omega[y][None, :]
    return (kl * (sign * weight).mean(1)).sum() / len(anchors)


def reat(p: REATParams, counts: Sequence[int] | None = None) -> Outer:
    """REAT (GuanlinLee/REAT): balanced softmax CE(adv + log n_c, y) + TAIL on the adversarial
    example's penultimate features, omega_c = sqrt(N / n_c). Their attack ascends a CE whose
    per-class weights come from last epoch's predictions: a positive per-row factor, so the
    sign steps, and the examples, are plain CE's (test): imbadv attacks with plain CE."""
    if counts is None:
        raise ValueError("adversarial=reat needs the training counts per class")
    ones = [max(c, 1) for c in counts]  # their code: an empty class counts 1
    balanced = balanced_softmax(BalancedSoftmaxParams(tau=1.0), ones)
    n = torch.tensor(ones, dtype=torch.float32)
    omega, tail = Resident(torch.sqrt(n.sum() / n)), Resident(torch.tensor(p.tail_classes(counts)))

    def outer(clean, adv, y, loss, features):
        term = tail_term(features, y, tail.on(y), omega.on(features))
        return balanced(adv, y) + term

    return outer
