"""The registered augmentations as batch functions on the training device."""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from imbadv.augment import CropFlipParams, NoAugmentParams

Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


def identity(p: NoAugmentParams) -> Augment | None:
    """No augmentation: None, so the batch path does nothing at all."""
    return None


def crop_flip(p: CropFlipParams) -> Augment:
    """Pad, crop at a per-image offset and flip per image, as one gather on the batch's device."""

    def apply(x: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = x.shape
        k = p.padding
        offsets = torch.randint(0, 2 * k + 1, (2, n), generator=gen, device=x.device)
        mirror = torch.rand(n, generator=gen, device=x.device) < 0.5
        if not p.flip:
            mirror = torch.zeros_like(mirror)
        return crop_at(x, offsets[0], offsets[1], mirror, k)

    return apply


def crop_at(
    x: torch.Tensor, top: torch.Tensor, left: torch.Tensor, mirror: torch.Tensor, padding: int
) -> torch.Tensor:
    """Image i: zero-pad by `padding`, crop (H, W) at (top_i, left_i), mirrored where mirror_i.

    The flip is folded into the column index, so crop and flip are one indexed read.
    """
    n, _, h, w = x.shape
    padded = F.pad(x, (padding,) * 4) if padding else x
    rows = top[:, None] + torch.arange(h, device=x.device)  # (N, H)
    cols = torch.arange(w, device=x.device).expand(n, w)
    cols = left[:, None] + torch.where(mirror[:, None], w - 1 - cols, cols)  # (N, W)
    picked = padded[
        torch.arange(n, device=x.device)[:, None, None], :, rows[:, :, None], cols[:, None, :]
    ]
    out = picked.permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W): NHWC memory, channels_last
    if x.is_contiguous(memory_format=torch.channels_last):
        return out
    return out.contiguous()
