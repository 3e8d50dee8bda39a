"""Models by name: `build(card, params) -> nn.Module` taking [0, 1] pixels, normalizing inside.

Normalization with the data card's own mean and std lives inside every model, so attacks and
eps stay in pixel space whatever the data set. Every model has `reset_parameters(generator)`:
its initial weights come from the job's seeded generator. Add one: docs/models.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields

from imbadv.config.errors import ConfigError
from imbadv.config.registry import Facts, Params, Registry, RegistryError, bounds


@dataclass(frozen=True)
class VGGParams(Params):
    """The paper's adapted VGG; `width` scales every channel count and the FC size."""

    width: float = field(default=1.0, metadata=bounds(1e-3, 64.0))
    fc: int = field(default=512, metadata=bounds(1))


@dataclass(frozen=True)
class ResNetParams(Params):
    """ResNet-18 / PreActResNet-18; `width` scales every channel count (1.0 = published)."""

    width: float = field(default=1.0, metadata=bounds(1e-3, 64.0))


@dataclass(frozen=True)
class WRNParams(Params):
    """WideResNet-depth-widen (default WRN-28-10; RoBal uses 34); `width` scales every channel."""

    depth: int = field(default=28, metadata=bounds(10, 1000))
    widen: int = field(default=10, metadata=bounds(1, 64))
    width: float = field(default=1.0, metadata=bounds(1e-3, 64.0))
    dropout: float = field(default=0.0, metadata=bounds(0.0, 0.9))

    def check(self, key: str) -> None:
        super().check(key)
        if (self.depth - 4) % 6:
            raise ConfigError(f"{key}.depth", self.depth, "6n + 4 (16, 22, 28, 34, 40, ...)")


@dataclass(frozen=True)
class ModelFacts(Facts):
    """`takes_width`: the model has a `width` channel multiplier, which the CPU presets
    (`experiment=smoke`, `quick`) set; held against the parameters at registration."""

    takes_width: bool

    def check(self, where: str, params: type[Params]) -> None:
        has = "width" in {f.name for f in fields(params)}
        if has != self.takes_width:
            raise RegistryError(
                f"{where}: fact takes_width={self.takes_width} but {params.__name__} "
                f"{'has' if has else 'has no'} field width"
            )


MODELS = Registry("model", ModelFacts)
MODELS.add(
    "vgg",
    VGGParams,
    "imbadv.models.vgg:build",
    "Possas & Zhou's VGG (4.0 M parameters)",
    takes_width=True,
)
MODELS.add(
    "resnet18",
    ResNetParams,
    "imbadv.models.resnet:build",
    "CIFAR ResNet-18, 3x3 stem (11.2 M parameters)",
    takes_width=True,
)
MODELS.add(
    "preact_resnet18",
    ResNetParams,
    "imbadv.models.resnet:build_preact",
    "PreActResNet-18 with final BN-ReLU (Wong et al. 2020; 11.2 M parameters)",
    takes_width=True,
)
MODELS.add(
    "wrn",
    WRNParams,
    "imbadv.models.wrn:build",
    "WideResNet depth-widen (Zagoruyko & Komodakis 2016; WRN-28-10 36.5 M)",
    takes_width=True,
)
