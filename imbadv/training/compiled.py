"""`trainer.compile`: the training forward through torch.compile, eager after a failure, recorded."""

from __future__ import annotations

import logging
from collections.abc import Callable

import torch
from torch import nn

log = logging.getLogger(__name__)


def compile_mode(device: torch.device) -> str:
    """torch.compile's mode: on CUDA "reduce-overhead" (CUDA graphs: a small model at batch 32 is
    launch-bound, docs/bench.md, and graphs remove the launches; "max-autotune*" would spend
    minutes tuning kernels a launch-bound step does not wait on); elsewhere "default"."""
    return "reduce-overhead" if device.type == "cuda" else "default"


def wanted(setting: str) -> bool:
    """Whether `trainer.compile` asks for compilation: `on` only. `auto` is off everywhere until
    a bench row measures `on` faster on a kind of device (docs/training.md)."""
    return setting == "on"


class CompiledForward:
    """`model`'s forward (a module, or a method of one) through torch.compile when `enabled`; if
    compiling or running it raises (compilation is lazy: the first call compiles; inductor needs a
    C compiler on CPU, triton on GPU), the rest of the run is eager, with one warning and the
    reason kept in `fallback`.

    Static shapes (`dynamic=False`): each batch shape gets its own graph, so an epoch's last
    partial batch runs its own exact graph (a single model never pads it: padding would enter
    BatchNorm's batch statistics; the grouped step pads where no layer mixes rows), and on CUDA
    each graph is captured at its own shape.
    """

    def __init__(
        self, model: nn.Module | Callable[..., torch.Tensor], enabled: bool, device: torch.device
    ) -> None:
        self.eager: Callable[..., torch.Tensor] = model
        self.asked = enabled
        # A plain attribute, not a submodule: the compiled wrapper shares the model's parameters
        # and must not add `_orig_mod.*` keys to any state_dict.
        mode = compile_mode(device)
        self.call = torch.compile(model, mode=mode, dynamic=False) if enabled else model
        self.fallback: str | None = None

    def __call__(self, *args: torch.Tensor | dict) -> torch.Tensor:
        if self.call is self.eager:
            return self.eager(*args)
        try:
            return self.call(*args)
        except Exception as error:  # noqa: BLE001 - any failure of compiled code: eager from here on
            first = (str(error).strip().splitlines() or [""])[0]
            self.fallback, self.call = f"{type(error).__name__}: {first}"[:300], self.eager
            log.warning("trainer.compile=on: compiling failed, training eager (%s)", self.fallback)
            return self.eager(*args)

    def record(self) -> dict:
        """What the model record says: whether training ran compiled, and why not if asked."""
        out: dict = {"compiled": self.asked and self.fallback is None}
        if self.fallback is not None:
            out["compile_fallback"] = self.fallback
        return out
