"""Models by name: `build(card, params) -> nn.Module` taking [0, 1] pixels, normalizing inside.

Normalization with the data card's own mean and std lives inside every model, so attacks and
eps stay in pixel space whatever the data set. Add one: docs/extending.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imbadv.registry import Params, Registry, bounds


@dataclass(frozen=True)
class VGGParams(Params):
    """The paper's adapted VGG; `width` scales every channel count and the FC size."""

    width: float = field(default=1.0, metadata=bounds(1e-3, 64.0))
    fc: int = field(default=512, metadata=bounds(1))


MODELS = Registry("model")
MODELS.add("vgg", VGGParams, "imbadv.models.vgg:build", "Possas & Zhou's VGG (4.0 M parameters)")
