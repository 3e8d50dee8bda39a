"""Memory layout: channels_last (NHWC) where asked and safe, NCHW where a CPU kernel is known to crash.

oneDNN's AVX2 convolution backward (`jit_avx2_1x1_convolution_bwd_weights_t`) in channels_last
segfaults, aborts or spins forever on a strided convolution with fewer than 8 input channels:
measured with torch 2.14.1 on an AMD EPYC (AVX2 only, and on an AVX-512 one under
`ONEDNN_MAX_CPU_ISA=AVX2`), 1x1 stride 2 with 1-7 input channels crashed at any output width, 8
and more did not; 3x3 kernels and strides 1 and 3 did not. A ResNet narrowed to width 0.0625 has
such a shortcut (4 -> 8 channels, stride 2). On a CPU, a model with any strided convolution of
fewer than `MIN_CPU_CHANNELS` input channels therefore runs NCHW: the same function, another
memory order. GPUs (cuDNN) keep channels_last. The choice depends on the model and the device
kind, never on the CPU's flags, so one config trains the same way on every CPU.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

MIN_CPU_CHANNELS = 8
CHANNELS_LAST, CONTIGUOUS = "channels_last", "contiguous"


@dataclass(frozen=True)
class Layout:
    """The memory format a model trains in, and why it is not the one asked for (None: it is)."""

    name: str
    reason: str | None = None

    @property
    def format(self) -> torch.memory_format:
        return torch.channels_last if self.name == CHANNELS_LAST else torch.contiguous_format

    def record(self) -> dict[str, str]:
        """What a model record says of it."""
        return {"layout": self.name, **({"layout_reason": self.reason} if self.reason else {})}


def unsafe_convolutions(model: nn.Module) -> list[str]:
    """The strided convolutions with fewer than `MIN_CPU_CHANNELS` inputs (crash in NHWC on a CPU)."""
    return [
        name
        for name, m in model.named_modules()
        if isinstance(m, nn.Conv2d)
        and m.in_channels < MIN_CPU_CHANNELS
        and any(s > 1 for s in m.stride)
    ]


def choose_layout(model: nn.Module, device: torch.device, channels_last: bool) -> Layout:
    """channels_last when asked, except on a CPU for a model with an unsafe convolution."""
    if not channels_last:
        return Layout(CONTIGUOUS)
    unsafe = unsafe_convolutions(model) if device.type == "cpu" else []
    if not unsafe:
        return Layout(CHANNELS_LAST)
    first = dict(model.named_modules())[unsafe[0]]
    more = f", and {len(unsafe) - 1} more like it" if len(unsafe) > 1 else ""
    reason = (
        f"NCHW instead of channels_last on the CPU: convolution {unsafe[0]!r} has stride "
        f"{first.stride[0]} and {first.in_channels} input channels{more}; oneDNN's channels_last "
        f"kernel crashes on strided convolutions with fewer than {MIN_CPU_CHANNELS} (docs/training.md)"
    )
    return Layout(CONTIGUOUS, reason)
