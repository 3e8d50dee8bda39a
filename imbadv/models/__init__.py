"""Models by name: `build(card, params) -> nn.Module` taking [0, 1] pixels, normalizing inside.

Normalization with the data card's own mean and std lives inside every model, so attacks and
eps stay in pixel space whatever the data set. Every model has `reset_parameters(generator)`:
its initial weights come from the job's seeded generator. Add one: docs/models.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

from imbadv.core.errors import ConfigError
from imbadv.core.registry import UNKEYED, Facts, Params, Registry, RegistryError, Spec, bounds
from imbadv.models.files import WEIGHTS, checkpoint_format


@dataclass(frozen=True)
class ModelParams(Params):
    """Base of every model's parameters (`build(card, params)` gets them)."""


@dataclass(frozen=True)
class HeadParams(ModelParams):
    """A trainable architecture's output layer: `linear`, or RoBal's `cosine` classifier
    (normalized features and weights; imbadv.models.common.CosineHead)."""

    head: str = "linear"

    def check(self, key: str) -> None:
        super().check(key)
        if self.head not in ("linear", "cosine"):
            raise ConfigError(f"{key}.head", self.head, "one of linear, cosine")


@dataclass(frozen=True)
class VGGParams(HeadParams):
    """The paper's adapted VGG; `width` scales every channel count and the FC size."""

    width: float = field(default=1.0, metadata=bounds(1e-3, 64.0))
    fc: int = field(default=512, metadata=bounds(1))


@dataclass(frozen=True)
class ResNetParams(HeadParams):
    """ResNet-18 / PreActResNet-18; `width` scales every channel count (1.0 = published)."""

    width: float = field(default=1.0, metadata=bounds(1e-3, 64.0))


@dataclass(frozen=True)
class WRNParams(HeadParams):
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
class CheckpointParams(ModelParams):
    """A model trained elsewhere (docs/models.md): its file, the registered architecture its
    weights fit (`arch`, `arch_params`, `width`), the normalization it expects, whether to trust it.
    The file is checked here without torch; it is keyed by its sha256, not its path."""

    path: str = field(default="", metadata=UNKEYED)
    arch: str | None = None  # needed for weights (safetensors, state dict); None for a program
    arch_params: dict | None = None  # the architecture's options besides width ({depth: 16})
    width: float = field(default=1.0, metadata=bounds(1e-3, 64.0))  # passed to `arch`
    normalize: dict | None = None  # {mean: [...], std: [...]} the model expects; None: [0, 1]
    trust: bool = field(default=False, metadata=UNKEYED)  # allow unpickling code (trusted files)

    def check(self, key: str) -> None:
        super().check(key)
        fmt = checkpoint_format(self.path)
        if self.arch is not None:
            self.arch_spec(key)
        elif fmt in WEIGHTS and not (self.trust and fmt != "safetensors"):
            raise ConfigError(
                f"{key}.arch", None, f"the architecture of the weights in {self.path} "
                f"({fmt} holds weights only): one of {', '.join(_archs())}"
            )  # fmt: skip
        elif self.arch_params:
            raise ConfigError(f"{key}.arch_params", self.arch_params, "null without model.arch")
        _check_normalize(f"{key}.normalize", self.normalize)

    def arch_spec(self, key: str = "model") -> Spec:
        """The registered architecture with its options (model.width where it takes one)."""
        if self.arch not in _archs():
            raise ConfigError(f"{key}.arch", self.arch, f"one of {', '.join(_archs())}")
        if not isinstance(self.arch_params or {}, dict) or "width" in (self.arch_params or {}):
            need = "a mapping of the architecture's options besides width (model.width)"
            raise ConfigError(f"{key}.arch_params", self.arch_params, need)
        takes = MODELS.get(f"{key}.arch", self.arch).facts.takes_width
        options = {**({"width": self.width} if takes else {}), **(self.arch_params or {})}
        return MODELS.parse(f"{key}.arch_params", self.arch, options)


def _archs() -> list[str]:
    return [n for n in MODELS.names() if n != CHECKPOINT]


def _check_normalize(key: str, value: Any) -> None:
    """None, or {mean: [...], std: [...]} of one value or one per channel each, std > 0."""
    need = "null or {mean: [m, ...], std: [s, ...]} (one value per channel, std > 0)"
    if value is None:
        return
    if not isinstance(value, dict) or set(value) != {"mean", "std"}:
        raise ConfigError(key, value, need)
    mean, std = value["mean"], value["std"]
    numbers = all(
        isinstance(v, list) and v and all(isinstance(x, int | float) for x in v)
        for v in (mean, std)
    )
    if not numbers or len(mean) != len(std) or min(std) <= 0:
        raise ConfigError(key, value, need)


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


MODELS = Registry("model", ModelFacts, ModelParams)
CHECKPOINT = "checkpoint"  # the model loaded from a file, never trained (docs/models.md)
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
MODELS.add(
    "checkpoint",
    CheckpointParams,
    "imbadv.models.checkpoint:build",
    "a model trained elsewhere: weights of a registered arch, TorchScript or torch.export",
    takes_width=True,
)
