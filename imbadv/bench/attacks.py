"""Bench helpers and the attack bench: imbadv's attacks against torchattacks, same images checked."""

from __future__ import annotations

import copy
import math
import statistics
import time
from collections.abc import Callable
from functools import partial

import torch
from torch import nn

from imbadv.attacks import PGDL2Params, PGDParams
from imbadv.attacks.gradient_sign import bim, fgsm, mifgsm
from imbadv.attacks.pgd import DIVISION_EPS, pgd, pgd_l2

ATTACK_NAMES = ("fgsm", "bim", "pgd", "pgd_l2", "mifgsm")  # the rows, in this order
PAPER_ATTACKS = ("fgsm", "bim")  # attack_vs_torchattacks: the slower of the paper's two
L2_EPS = 0.5  # pgd_l2's radius (pixel units): the L-inf eps would be a negligible L2 ball
IDENTICAL_TOL = 1e-6


def sync(device: torch.device) -> None:
    if device.type == "cuda":  # GPU work is asynchronous: a clock read without this times launches
        torch.cuda.synchronize(device)


def alternated(sides: list[str], repeats: int) -> list[str]:
    """A, B, B, A, A, B, ...: on a noisy machine neither side always runs first or in one stretch."""
    return [side for r in range(repeats) for side in (sides if r % 2 == 0 else sides[::-1])]


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def compare_images(ours: torch.Tensor, theirs: torch.Tensor, tol: float = IDENTICAL_TOL) -> dict:
    """`identical`, `max_abs_diff` and `differing_images` (images whose max |diff| > tol or NaN)."""
    if ours.shape != theirs.shape:
        return {"identical": False, "max_abs_diff": math.inf, "differing_images": len(theirs)}
    if not ours.numel():
        return {"identical": True, "max_abs_diff": 0.0, "differing_images": 0}
    per_image = (ours - theirs).abs().flatten(1).amax(1)  # amax propagates NaN
    differing = int((~(per_image <= tol)).sum())  # `not <=` also counts NaN
    return {
        "identical": differing == 0,
        "max_abs_diff": float(per_image.max()),
        "differing_images": differing,
    }


def matched_pgdl2(
    model: nn.Module, eps: float, alpha: float, steps: int, guard: float = DIVISION_EPS
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """torchattacks' PGDL2 with imbadv's division guard, for a batch of any size.

    imbadv's gradient is of the summed loss, N times torchattacks' (mean): `guard` added to the
    norm of the sum is `guard / N` added to the norm of the mean. For N a power of 2 both scalings
    are exact, so the two sides divide by the same numbers and their images are bit-identical;
    with torchattacks' own 1e-10 the quotients differ in the last bit, enough to flip a ReLU.
    """
    import torchattacks

    class MatchedPGDL2(torchattacks.PGDL2):
        def forward(self, images: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
            self.eps_for_division = guard / len(images)  # per call: the last batch may be smaller
            return super().forward(images, labels)

    return MatchedPGDL2(model, eps=eps, alpha=alpha, steps=steps)


def attack_pairs(model: nn.Module, eps: float, steps: int) -> dict[str, tuple]:
    """Per attack: imbadv's function (x, y, seed) and torchattacks' equivalent object.

    The random starts: imbadv draws from a generator seeded `seed`, torchattacks from the global
    generator; on the CPU the two draw the same numbers for one seed, and the identity check passes
    the reference's start explicitly, so the check holds on any device. The sign attacks need no
    matching (sign(N g) = sign(g)), nor MI-FGSM's g / mean|g|, except after an image's gradient
    turns exactly 0: torchattacks' momentum becomes 0 / 0 = NaN and the image stops (sign(NaN) is
    0), imbadv's keeps its momentum. PGD-L2's guard is matched (`matched_pgdl2`).
    """

    import torchattacks  # a dev dependency: imported only when the attack bench runs

    a_inf, a_l2, a_mi = eps / 4, L2_EPS / 5, eps / steps
    # torchattacks' PGDL2 calls .view on the gradient, which a channels-last model makes
    # non-contiguous: both sides of that row attack a contiguous copy.
    flat = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    linf, l2 = PGDParams(alpha=a_inf, steps=steps), PGDL2Params(alpha=a_l2, steps=steps)

    def seeded(seed: int) -> torch.Generator:
        return torch.Generator().manual_seed(seed)

    return {
        "fgsm": (lambda x, y, i, s=None: fgsm(model, x, y, eps), torchattacks.FGSM(model, eps=eps)),
        "bim": (
            lambda x, y, i, s=None: bim(model, x, y, eps, alpha=1 / 255, steps=3),
            torchattacks.BIM(model, eps=eps, alpha=1 / 255, steps=3),
        ),
        "pgd": (
            lambda x, y, i, s=None: pgd(model, x, y, eps, linf, generator=seeded(i), start=s),
            torchattacks.PGD(model, eps=eps, alpha=a_inf, steps=steps),
        ),
        "pgd_l2": (
            lambda x, y, i, s=None: pgd_l2(flat, x, y, L2_EPS, l2, generator=seeded(i), start=s),
            matched_pgdl2(flat, L2_EPS, a_l2, steps),
        ),
        "mifgsm": (
            lambda x, y, i, s=None: mifgsm(model, x, y, eps, a_mi, steps),
            torchattacks.MIFGSM(model, eps=eps, alpha=a_mi, steps=steps),
        ),
    }


def reference_start(x: torch.Tensor, eps: float, seed: int, name: str) -> torch.Tensor | None:
    """The random start torchattacks' PGD or PGDL2 draws under `seed` on x's device (else None)."""
    if name not in ("pgd", "pgd_l2"):
        return None
    with forked_rng(x.device):
        torch.manual_seed(seed)
        if name == "pgd":
            return torch.clamp(x + torch.empty_like(x).uniform_(-eps, eps), min=0, max=1)
        delta = torch.empty_like(x).normal_()  # torchattacks' PGDL2, operation by operation
        n = delta.view(len(x), -1).norm(p=2, dim=1).view(len(x), 1, 1, 1)
        r = torch.zeros_like(n).uniform_(0, 1)
        delta *= r / n * L2_EPS
        return torch.clamp(x + delta, min=0, max=1)


def forked_rng(device: torch.device):
    """torch's global generators (CPU, and `device` if a GPU) restored on exit."""
    return torch.random.fork_rng(devices=[device] if device.type == "cuda" else [])


def batched(attack: Callable, x: torch.Tensor, y: torch.Tensor, batch: int) -> torch.Tensor:
    """`attack(xb, yb, first)` over batches of x, concatenated; `first` (the batch's first index)
    seeds the batch's random start on both sides."""
    return torch.cat(
        [attack(x[i : i + batch], y[i : i + batch], i) for i in range(0, len(y), batch)]
    )


def seeded_reference(attack: Callable, x: torch.Tensor, y: torch.Tensor, seed: int) -> torch.Tensor:
    """torchattacks' attack with the global generators seeded `seed` (callers fork them)."""
    torch.manual_seed(seed)
    return attack(x, y)


def bench_attacks(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    eps: float,
    batch: int,
    repeats: int,
    steps: int = 10,
    names: tuple[str, ...] | None = None,
) -> dict:
    """Images/s of imbadv's attacks and torchattacks' equivalents, and whether their images are
    identical (`compare_images`): a difference is reported, not raised (`--strict` fails on it)."""
    # torchattacks averages the loss, imbadv sums it: the gradients differ by the factor 1/N,
    # exact when N is a power of 2. For other N the two backward passes round differently, and
    # a flipped sign or ReLU can make some images differ.
    pairs = attack_pairs(model, eps, steps)
    out: dict = {}
    for name in names or tuple(pairs):
        ours, theirs = pairs[name]
        runs = {
            "imbadv": partial(batched, ours, x, y, batch),
            "torchattacks": partial(batched, partial(seeded_reference, theirs), x, y, batch),
        }

        def same_start(xb, yb, i, ours=ours, name=name):
            return ours(xb, yb, i, reference_start(xb, eps, i, name))

        secs: dict[str, list[float]] = {"torchattacks": [], "imbadv": []}
        with forked_rng(x.device):  # torchattacks draws from the global generators
            same = compare_images(batched(same_start, x, y, batch), runs["torchattacks"]())
            for side in alternated(list(secs), repeats):
                secs[side].append(timed(runs[side], x.device))
        ratios = [t / i for t, i in zip(secs["torchattacks"], secs["imbadv"], strict=True)]
        out[name] = {"ratio": statistics.median(ratios), "ratios": ratios, **same}
        out[name] |= {f"{s}_images_per_s": len(y) / statistics.median(t) for s, t in secs.items()}
    return out


def differing(attack: dict, images: int) -> str | None:
    """One line naming each attack whose images differ from torchattacks' (None if all agree)."""
    bad = [
        f"{k} (max |diff| {v['max_abs_diff']:.3g}, {v['differing_images']} of {images} images)"
        for k, v in attack.items()
        if not v["identical"]
    ]
    return f"imbadv and torchattacks images differ: {'; '.join(bad)}" if bad else None
