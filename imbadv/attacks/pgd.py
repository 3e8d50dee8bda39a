"""Projected gradient descent (Madry et al. 2018) in the L-inf and L2 balls, pixel space [0, 1]."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from imbadv.attacks import Direction, PGDL2Params, PGDParams
from imbadv.attacks.core import clip_linf, eval_mode, goal, input_gradient, per_image_loss

DIVISION_EPS = 1e-10  # torchattacks' guard when normalizing an L2 gradient
PGD_DEFAULTS, PGD_L2_DEFAULTS = PGDParams(), PGDL2Params()


def _uniform(x: torch.Tensor, low: float, high: float, gen: torch.Generator) -> torch.Tensor:
    # drawn on the CPU generator and moved: the same noise on every device for one seed
    return torch.empty(x.shape, dtype=x.dtype).uniform_(low, high, generator=gen).to(x.device)


def linf_start(x: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    """A uniform point of the eps-ball around x, clipped to [0, 1] (Madry et al.'s random start)."""
    return torch.clamp(x + _uniform(x, -eps, eps, gen), min=0.0, max=1.0).detach()


def l2_start(x: torch.Tensor, eps: float, gen: torch.Generator) -> torch.Tensor:
    """A random direction scaled to a uniform radius in [0, eps], clipped (torchattacks' PGDL2)."""
    delta = torch.empty(x.shape, dtype=x.dtype).normal_(generator=gen).to(x.device)
    n = delta.reshape(len(x), -1).norm(p=2, dim=1).view(len(x), 1, 1, 1)
    r = _uniform(n, 0.0, 1.0, gen)
    delta *= r / n * eps
    return torch.clamp(x + delta, min=0.0, max=1.0).detach()


def linf_step(
    x_adv: torch.Tensor, x: torch.Tensor, grad: torch.Tensor, alpha: float, eps: float
) -> torch.Tensor:
    """One signed step of size alpha, projected into the L-inf ball and [0, 1]."""
    return clip_linf(x_adv + alpha * grad.sign(), x, eps)


def l2_step(
    x_adv: torch.Tensor, x: torch.Tensor, grad: torch.Tensor, alpha: float, eps: float
) -> torch.Tensor:
    """One step of L2 length alpha along the gradient, projected into the L2 ball and [0, 1]."""
    n = len(x)
    grad = grad / (torch.norm(grad.reshape(n, -1), p=2, dim=1) + DIVISION_EPS).view(n, 1, 1, 1)
    delta = x_adv + alpha * grad - x
    norms = torch.norm(delta.reshape(n, -1), p=2, dim=1)
    # torchattacks divides eps by the norm unguarded: 0 / 0 at eps 0 would give NaN images
    factor = torch.where(norms > 0, eps / norms, 1.0).clamp(max=1.0)
    return torch.clamp(x + delta * factor.view(-1, 1, 1, 1), min=0.0, max=1.0).detach()


def projected(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    p: PGDParams,
    norm: str,
    direction: Direction,
    generator: torch.Generator | None,
    target: int | None,
    start: torch.Tensor | None,
) -> torch.Tensor:
    """The PGD loop for either norm; with restarts, each image keeps its run of highest objective."""
    alpha = p.resolved(eps)["alpha"]
    labels, sign = goal(model, x, y, direction, target)
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    begin = linf_start if norm == "Linf" else l2_start
    step: Callable = linf_step if norm == "Linf" else l2_step
    best, best_score = x.detach(), None
    for restart in range(p.restarts):
        if start is not None and restart == 0:
            x_adv = start.detach()
        else:
            x_adv = begin(x, eps, gen) if p.random_start else x.detach()
        for _ in range(p.steps):
            grad = input_gradient(model, x_adv, labels, p.loss)
            x_adv = step(x_adv, x, grad if sign > 0 else -grad, alpha, eps)
        if p.restarts == 1:
            return x_adv
        with torch.no_grad(), eval_mode(model):
            score = sign * per_image_loss(model(x_adv), labels, p.loss)
        better = score > best_score if best_score is not None else torch.ones_like(score).bool()
        best = torch.where(better.view(-1, 1, 1, 1), x_adv, best)
        best_score = score if best_score is None else torch.maximum(score, best_score)
    return best


def pgd(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 8 / 255,
    params: PGDParams = PGD_DEFAULTS,
    direction: Direction = Direction.ASCENT,
    generator: torch.Generator | None = None,
    target: int | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Projected gradient descent, L-infinity (Madry et al. 2018, "Towards deep learning models
    resistant to adversarial attacks"), inputs in [0, 1].

    From a uniform random point of the eps-ball (drawn from `generator`; a generator seeded 0 when
    None; `start` replaces the first restart's point), `steps` steps x <- Proj(x + s * alpha *
    sign(grad loss)) into the eps-ball and [0, 1]. Defaults: 10 steps, alpha 2.5 eps / steps
    (2/255 at eps 8/255), 1 restart, loss `ce` (`margin`: Carlini-Wagner), s and the labels from
    `core.goal`. With restarts, each image keeps the run whose objective ended highest.
    Shapes: x (N, C, H, W), y (N,), start like x; returns a detached tensor shaped like x.
    """
    return projected(model, x, y, eps, params, "Linf", direction, generator, target, start)


def pgd_l2(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 0.5,
    params: PGDL2Params = PGD_L2_DEFAULTS,
    direction: Direction = Direction.ASCENT,
    generator: torch.Generator | None = None,
    target: int | None = None,
    start: torch.Tensor | None = None,
) -> torch.Tensor:
    """Projected gradient descent, L2 (Madry et al. 2018), inputs in [0, 1]; eps the L2 radius.

    Random start: a Gaussian direction scaled to a uniform radius in [0, eps] (as torchattacks'
    PGDL2). Each step moves alpha along the L2-normalized gradient, then rescales the perturbation
    into the eps-ball and clips to [0, 1]. Defaults and shapes as `pgd` (alpha 2.5 eps / steps).
    """
    return projected(model, x, y, eps, params, "L2", direction, generator, target, start)


class Scaled(nn.Module):
    """`model`'s logits times `scale` (the attack's loss only; argmax is unchanged)."""

    def __init__(self, model: nn.Module, scale: float) -> None:
        super().__init__()
        self.model, self.scale = model, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(x) * self.scale


def pgd_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    p: PGDParams,
    *,
    direction: Direction = Direction.ASCENT,
    generator: torch.Generator | None = None,
    target: int | None = None,
) -> torch.Tensor:
    """The registry's PGD (see `pgd`): the random starts come from `generator`."""
    return pgd(model, x, y, eps, p, direction, generator, target)


def pgd_l2_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    p: PGDL2Params,
    *,
    direction: Direction = Direction.ASCENT,
    generator: torch.Generator | None = None,
    target: int | None = None,
) -> torch.Tensor:
    """The registry's L2 PGD (see `pgd_l2`): the random starts come from `generator`."""
    return pgd_l2(model, x, y, eps, p, direction, generator, target)
