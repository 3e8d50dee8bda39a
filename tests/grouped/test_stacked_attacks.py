"""Stacked attack crafting: K sources' images from one Stacked call equal each source's own.

Tolerance, and why: the stacked forward and backward run the K members' convolutions as one
batched call, so the input gradient is summed in another order (~1e-7 relative). Where a pixel's
gradient is ~0 its sign can flip, moving that pixel by 2 alpha in BIM; the flip can carry to the
later steps of that one image. Measured (width-0.125 VGGs, 40 images): 0 pixels differ for FGSM
and MI-FGSM, 6 to 17 pixels of one image (about 1e-4 of the set's pixels) for one BIM set in
four. Required: at most 1e-3 of each set's pixel values differ (members' images swapped or
mixed up would differ in about half of them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from imbadv.attacks import ATTACKS, Direction
from imbadv.config.settings import AttackSpec
from imbadv.pipeline.craft import craft, craft_stacked

CPU = torch.device("cpu")
TOLERANCE = 1e-3  # fraction of a set's pixel values allowed to differ (sign flips, see above)


def attacked(n: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    x = torch.randint(0, 256, (n, 3, 32, 32), generator=gen, dtype=torch.uint8)
    return x, torch.randint(0, 10, (n,), generator=gen)


def spec(method: str, direction: Direction = Direction.ASCENT, **params) -> AttackSpec:
    return AttackSpec(ATTACKS.parse("attack.methods", method, params), 0.01, direction)


SPECS = [
    spec("fgsm"),
    spec("bim"),
    spec("mifgsm", steps=3),
    spec("bim", Direction.LEAST_LIKELY),  # labels chosen from the stacked model's own logits
]


def differing(a: np.ndarray, b: np.ndarray) -> float:
    return float((a != b).mean())


@pytest.mark.slow
def test_stacked_images_are_each_members_own(vgg_members):
    models, images = vgg_members(), attacked()
    # batch 8 over 20 images: a last, smaller batch, stacked as the others
    stacked = craft_stacked("3 members", models, SPECS, images, CPU, batch_size=8)
    assert len(stacked) == 3
    alone = [craft("m", m, SPECS, {x.name: 0 for x in SPECS}, images, CPU, 8) for m in models]
    for k in range(3):
        for x in SPECS:
            mine, own = stacked[k][x.name], alone[k][x.name]
            assert mine["adv"].shape == own["adv"].shape == (20, 3, 32, 32)
            assert mine["adv"].dtype == own["adv"].dtype == np.float32
            assert differing(mine["adv"], own["adv"]) <= TOLERANCE, (k, x.name)
            assert int(mine["zero_grads"]) == int(own["zero_grads"])
            other = alone[(k + 1) % 3][x.name]["adv"]  # another member's: far apart
            assert differing(mine["adv"], other) > 0.1, (k, x.name)


def test_an_attack_that_draws_is_never_crafted_stacked(vgg_members):
    with pytest.raises(ValueError, match="draw no random numbers"):
        craft_stacked("2", vgg_members(2), [spec("pgd", steps=2)], attacked(4), CPU, 4)
