"""AutoAttack (Croce & Hein 2020) through the optional package pyautoattack, and its APGD pair.

`apgd_pair` runs only APGD-CE + APGD-T: the subset long-tail papers have reported as
"AutoAttack" (RoBal). It is named apart on purpose, so no result calls it AutoAttack.
"""

from __future__ import annotations

import logging

import torch
from torch import nn

from imbadv.attacks import AutoAttackParams, Direction
from imbadv.attacks.core import eval_mode

STANDARD = ("apgd-ce", "apgd-t", "fab-t", "square")
PAIR = ("apgd-ce", "apgd-t")


def autoattack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float = 8 / 255,
    attacks: tuple[str, ...] = STANDARD,
    norm: str = "Linf",
    seed: int = 0,
) -> torch.Tensor:
    """pyautoattack's AutoAttack with the `standard` settings, on [0, 1] images, in eval mode.

    `attacks` STANDARD: APGD-CE (100 iterations), APGD-T (9 targets), FAB-T (9 targets) and
    Square (5,000 queries), each on the images the previous ones left correctly classified;
    PAIR: APGD-CE + APGD-T with the same settings. With fewer than 10 classes the targeted
    attacks use every other class (C - 1 targets). eps in pixel units for `norm` (Linf or L2).
    pyautoattack seeds torch's global generators: they are put back afterwards.
    Shapes: x (N, C, H, W), y (N,); returns a detached tensor shaped like x.
    """
    from pyautoattack import AutoAttack  # the optional extra: imported only when asked for

    if eps == 0 or len(x) == 0:
        return x.detach().clone()
    with eval_mode(model):
        classes = int(model(x[:1]).shape[1])
    version = "standard" if tuple(attacks) == STANDARD else "custom"
    kwargs = {} if version == "standard" else {"attacks": list(attacks)}
    adversary = AutoAttack(
        model, norm=norm, eps=eps, seed=seed, version=version, device=x.device, **kwargs
    )
    adversary.logger.setLevel(logging.WARNING)  # its per-attack progress is debug noise here
    targets = min(9, classes - 1)
    adversary.apgd.n_restarts = 1
    adversary.apgd_targeted.n_target_classes = targets
    adversary.apgd_targeted.n_restarts = 1
    adversary.fab.n_target_classes, adversary.fab.n_restarts = targets, 1
    devices = [x.device] if x.device.type == "cuda" else []
    with torch.random.fork_rng(devices=devices), eval_mode(model):
        x_adv, _ = adversary.run_standard_evaluation(x, y, batch_size=len(x))
    return x_adv.detach()


def _seed(generator: torch.Generator | None) -> int:
    # one draw per call: repeatable for a seeded job, different across batches
    gen = generator if generator is not None else torch.Generator().manual_seed(0)
    return int(torch.randint(0, 2**31 - 1, (1,), generator=gen))


def autoattack_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    p: AutoAttackParams,
    *,
    direction: Direction = Direction.ASCENT,
    generator: torch.Generator | None = None,
    target: int | None = None,
) -> torch.Tensor:
    """The registry's `autoattack` (standard version, see `autoattack`); untargeted ascent only."""
    return autoattack(model, x, y, eps, STANDARD, p.norm, _seed(generator))


def apgd_pair_attack(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    p: AutoAttackParams,
    *,
    direction: Direction = Direction.ASCENT,
    generator: torch.Generator | None = None,
    target: int | None = None,
) -> torch.Tensor:
    """The registry's `apgd_pair`: APGD-CE + APGD-T only (see `autoattack`); never AutoAttack."""
    return autoattack(model, x, y, eps, PAIR, p.norm, _seed(generator))
