"""K models of one architecture called as one module: one vmapped forward over their stacked weights."""

from __future__ import annotations

import copy
from collections.abc import Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap


class Stacked(nn.Module):
    """K same-shape models as one: x (K*B, ...) -> logits (K*B, classes), rows k*B..(k+1)*B
    through member k.

    A summed per-image loss of the output has, on member k's rows, the gradient of member k's own
    loss: so any attack that treats images independently (FGSM, BIM, PGD steps) crafts all K
    members' images in one call, each member's images from its own gradient. The tensors are
    the caller's (not registered here): GroupedClassifier passes its live slice, `of` copies.
    """

    def __init__(
        self,
        params: dict[str, torch.Tensor],
        buffers: dict[str, torch.Tensor],
        template: nn.Module,
        call: Callable[..., torch.Tensor] | None = None,
    ) -> None:
        super().__init__()
        self.params, self.stacked_buffers = params, buffers
        self.template = (template,)  # in a tuple: not a submodule, its meta tensors never move
        self.k = len(next(iter(params.values())))
        # (params, buffers, x (K, B, ...)) -> (K, B, classes): vmap of one member's call, or a
        # compiled equivalent (grouped training's compiled adversarial step passes one)
        self.call = call or vmap(self._call)

    @classmethod
    def of(cls, models: Sequence[nn.Module]) -> Stacked:
        """A stack of copies of `models`' weights (detached: attacks give the weights no gradient)."""
        params, buffers = stack_module_state(list(models))
        params = {n: p.detach() for n, p in params.items()}
        return cls(params, buffers, copy.deepcopy(models[0]).to("meta"))

    def _call(self, params: dict, buffers: dict, x: torch.Tensor) -> torch.Tensor:
        return functional_call(self.template[0], (params, buffers), (x,))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        template = self.template[0]
        if template.training != self.training:  # eval_mode sets this module's flag only
            template.train(self.training)
        if len(x) % self.k:
            raise ValueError(f"{len(x)} rows do not split into {self.k} members")
        xs = x.reshape(self.k, len(x) // self.k, *x.shape[1:])
        out = self.call(self.params, self.stacked_buffers, xs)
        return out.reshape(len(x), *out.shape[2:])


def stack_rows(parts: Sequence[torch.Tensor]) -> torch.Tensor:
    """Member batches (each (B, ...)) as the (K*B, ...) rows `Stacked` takes."""
    return torch.cat(list(parts))


def architecture(model: nn.Module) -> tuple:
    """What models stacked as one must share: class, structure (the repr names each layer's
    hyperparameters), and the names, shapes and dtypes of every parameter and buffer."""
    tensors = tuple((n, tuple(v.shape), v.dtype) for n, v in model.state_dict().items())
    return type(model), str(model), tensors
