"""Optimizers by name (torch-free registry): `make(params, named_parameters, stacked)` -> optimizer.

Each optimizer owns its learning rate (`optimizer.lr`); the schedule (`schedule=`) multiplies
it step by step. Add one: a Params dataclass, a function in a module, a line below and a YAML
in conf/optimizer/ (docs/extending.md).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imbadv.core.registry import Params, Registry, bounds


@dataclass(frozen=True)
class OptimizerParams(Params):
    """Base of every optimizer's parameters: its learning rate, which the schedule multiplies."""

    lr: float = field(default=1e-3, metadata=bounds(0.0, open_low=True))


@dataclass(frozen=True)
class RMSpropKerasParams(OptimizerParams):
    """The paper's optimizer: Keras RMSprop (rho 0.9, eps 1e-7; torch's defaults are 0.99, 1e-8)."""

    lr: float = field(default=1e-4, metadata=bounds(0.0, open_low=True))
    rho: float = field(default=0.9, metadata=bounds(0.0, 1.0))
    eps: float = field(default=1e-7, metadata=bounds(0.0, 1.0, open_low=True))


@dataclass(frozen=True)
class SGDParams(OptimizerParams):
    """SGD with (Nesterov) momentum and L2 weight decay: the field's recipe (AT-BSL: lr 0.1,
    momentum 0.9, weight decay 5e-4). `decay_norm_bias: false` exempts BatchNorm weights and
    biases (every parameter with one dimension) from weight decay."""

    lr: float = field(default=0.1, metadata=bounds(0.0, open_low=True))
    momentum: float = field(default=0.9, metadata=bounds(0.0, 1.0, open_high=True))
    nesterov: bool = False
    weight_decay: float = field(default=5e-4, metadata=bounds(0.0))
    decay_norm_bias: bool = True

    def check(self, key: str) -> None:
        super().check(key)
        if self.nesterov and self.momentum == 0:
            from imbadv.core.errors import ConfigError

            raise ConfigError(f"{key}.nesterov", self.nesterov, "false when momentum is 0")


@dataclass(frozen=True)
class AdamParams(OptimizerParams):
    """Adam (Kingma & Ba 2015); `weight_decay` is L2 added to the gradient (torch's Adam)."""

    lr: float = field(default=1e-3, metadata=bounds(0.0, open_low=True))
    beta1: float = field(default=0.9, metadata=bounds(0.0, 1.0, open_high=True))
    beta2: float = field(default=0.999, metadata=bounds(0.0, 1.0, open_high=True))
    eps: float = field(default=1e-8, metadata=bounds(0.0, 1.0, open_low=True))
    weight_decay: float = field(default=0.0, metadata=bounds(0.0))
    decay_norm_bias: bool = True


@dataclass(frozen=True)
class AdamWParams(AdamParams):
    """AdamW (Loshchilov & Hutter 2019): decoupled weight decay, torch's default 1e-2."""

    weight_decay: float = field(default=1e-2, metadata=bounds(0.0))


OPTIMIZERS = Registry("optimizer", base=OptimizerParams)
OPTIMIZERS.add(
    "rmsprop_keras",
    RMSpropKerasParams,
    "imbadv.optimizers.torch_optim:rmsprop_keras",
    "Keras RMSprop (the paper's)",
)
OPTIMIZERS.add("sgd", SGDParams, "imbadv.optimizers.torch_optim:sgd", "SGD with momentum")
OPTIMIZERS.add("adam", AdamParams, "imbadv.optimizers.torch_optim:adam", "Adam")
OPTIMIZERS.add("adamw", AdamWParams, "imbadv.optimizers.torch_optim:adamw", "AdamW")

DEFAULT = "rmsprop_keras"  # the paper's: enters no store key (docs/training.md)
