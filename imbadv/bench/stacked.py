"""Bench, stacked attacks: K sources' FGSM and BIM images crafted in one Stacked call vs one by one."""

from __future__ import annotations

import copy
import logging
import statistics

import torch
from torch import nn

from imbadv.attacks import ATTACKS
from imbadv.bench.attacks import alternated, timed
from imbadv.config.settings import AttackSpec
from imbadv.pipeline.craft import craft, craft_stacked

STACKED_ATTACKS = ("fgsm", "bim")  # the paper's pair; both draw nothing, so both stack


def bench_stacked(
    model: nn.Module,
    k: int,
    images: tuple[torch.Tensor, torch.Tensor],
    eps: float,
    batch_size: int,
    repeats: int,
    device: torch.device,
) -> dict:
    """Images/s per source of K sources (`model` re-initialized from seeds 0..K-1) crafted
    stacked against the same K crafted one after the other, alternated, on the same uint8
    `images`; both through the Lightning path a job takes (`craft_stacked`, `craft`)."""
    sources = []
    for i in range(k):
        member = copy.deepcopy(model)
        member.reset_parameters(torch.Generator().manual_seed(i))
        sources.append(member.to(device).eval())
    specs = [AttackSpec(ATTACKS.parse("attack.methods", m, {}), eps) for m in STACKED_ATTACKS]
    seeds = {x.name: 0 for x in specs}
    sides = {
        "stacked": lambda: craft_stacked("bench", sources, specs, images, device, batch_size),
        "sequence": lambda: [craft("b", m, specs, seeds, images, device, batch_size) for m in sources],
    }  # fmt: skip
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)  # a Trainer per call
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    made = {}
    for side in alternated(list(sides), repeats):
        seconds[side].append(timed(lambda s=side: made.__setitem__(s, sides[s]()), device))
    n = len(images[0])
    per_source = {side: [n / t for t in ts] for side, ts in seconds.items()}
    ratios = [a / b for a, b in zip(per_source["stacked"], per_source["sequence"], strict=True)]
    return {
        "sources": k,
        "attacks": list(STACKED_ATTACKS),
        "images": n,
        "ratio": statistics.median(ratios),
        "ratios": ratios,
        "stacked_images_per_s_per_source": statistics.median(per_source["stacked"]),
        "sequence_images_per_s_per_source": statistics.median(per_source["sequence"]),
        # sign flips where the input gradient is ~0 (docs/transfer.md): a tiny fraction
        "differing_pixel_fraction": max(
            float((made["stacked"][i][x.name]["adv"] != made["sequence"][i][x.name]["adv"]).mean())
            for i in range(k)
            for x in specs
        ),
    }
