"""Training: the trainer settings, the recipe and the training objectives by name (torch-free).

The recipe names an optimizer (imbadv/optimizers), a schedule (imbadv/schedules) and an
augmentation (imbadv/augment). An objective is `make(params, counts) -> loss(logits, y)`, where `counts` are the training
images per class (long-tail losses need them). Add one: docs/extending.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from imbadv.augment import AUGMENTS
from imbadv.core.registry import AUTO_DEFAULT, UNKEYED, Params, Registry, Spec, bounds
from imbadv.optimizers import OPTIMIZERS
from imbadv.schedules import SCHEDULES


@dataclass(frozen=True)
class TrainSettings(Params):
    """Paper defaults: batch 32 (Keras'); the optimizer and schedule are the recipe's (`Recipe`).

    "Until convergence" made explicit: early stopping on validation loss with `patience`,
    at most `max_epochs`, the best epoch's weights kept. `early_stopping: false` trains
    `max_epochs` whatever the rule (the field's fixed schedules), still keeping the rule's epoch.
    """

    batch_size: int = field(default=32, metadata=bounds(1))
    max_epochs: int = field(default=100, metadata=bounds(1))
    patience: int = field(default=5, metadata=bounds(0))
    early_stopping: bool = True  # false: always max_epochs (step/cosine schedules need it)
    # Lightning's precisions that need no extra package; checked here, not after the data loads.
    # auto (both): the bench's measured choice for the device, model and batch, fp32 and NHWC
    # without one (imbadv/training/formats.py); replaced before any key is made.
    precision: Literal[
        "auto", "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true"
    ] = field(default="32-true", metadata=AUTO_DEFAULT)
    channels_last: Literal[True, False, "auto"] = field(default=True, metadata=AUTO_DEFAULT)
    # Long-tail options; their defaults keep the paper's behaviour and the stored keys.
    sampler: Literal["uniform", "class_balanced"] = "uniform"  # class_balanced: p(i) ~ 1/n_{y_i}
    selection: Literal["val_loss", "robust_val_acc", "last"] = "val_loss"
    robust_val_steps: int = field(default=10, metadata=bounds(1))  # PGD steps, robust validation
    posthoc_tau: float = field(default=0.0, metadata=bounds(0.0))  # logits - tau log n_c at test
    # Grouped training (docs/grouped.md): how a model is trained, never what it is, so no store
    # key holds it. auto = grouped only where it measured faster (not on CPU: 0.50x there).
    group: Literal["auto", "on", "off"] = field(default="auto", metadata=UNKEYED)
    # torch.compile of the training forward (docs/training.md): the same math up to float
    # rounding, so, like `group`, not in any key. auto = off everywhere until a bench row
    # measures `on` faster; `on` falls back to eager if compiling fails (recorded).
    compile: Literal["auto", "on", "off"] = field(default="auto", metadata=UNKEYED)


def paper_spec(registry: Registry, name: str, **options) -> Spec:
    """A component by name with options, checked: the paper's recipe when none are given."""
    return registry.parse(registry.axis, name, options)


@dataclass(frozen=True)
class Recipe:
    """How the weights move: optimizer (owns `lr`), lr schedule, training-batch augmentation.

    The default is the paper's: Keras RMSprop at lr 1e-4, Keras decay 1e-5, no augmentation.
    """

    optimizer: Spec = field(default_factory=lambda: paper_spec(OPTIMIZERS, "rmsprop_keras"))
    schedule: Spec = field(default_factory=lambda: paper_spec(SCHEDULES, "keras_decay"))
    augment: Spec = field(default_factory=lambda: paper_spec(AUGMENTS, "none"))

    @classmethod
    def paper(cls, lr: float = 1e-4, decay: float = 1e-5) -> Recipe:
        """The paper's recipe at another lr or decay (the quick and smoke presets' 1e-3)."""
        return cls(
            paper_spec(OPTIMIZERS, "rmsprop_keras", lr=lr),
            paper_spec(SCHEDULES, "keras_decay", decay=decay),
        )


@dataclass(frozen=True)
class ObjectiveParams(Params):
    """Base of every training objective's parameters (`make(params, counts)` gets them)."""


@dataclass(frozen=True)
class CrossEntropyParams(ObjectiveParams):
    """Plain cross-entropy (the paper's loss) has no parameter."""


@dataclass(frozen=True)
class WeightedCEParams(ObjectiveParams):
    """Class-weighted cross-entropy: `inverse` frequency 1/n_c, or Cui et al. (2019)'s `effective`
    number (1 - beta) / (1 - beta^n_c); either normalized to sum to the number of classes."""

    weights: Literal["inverse", "effective"] = "effective"
    beta: float = field(default=0.9999, metadata=bounds(0.0, 1.0))

    def check(self, key: str) -> None:
        super().check(key)
        if self.weights == "effective" and self.beta >= 1.0:
            from imbadv.core.errors import ConfigError

            raise ConfigError(f"{key}.beta", self.beta, "a number in [0, 1) for effective weights")


@dataclass(frozen=True)
class BalancedSoftmaxParams(ObjectiveParams):
    """Balanced softmax (Ren et al. 2020; AT-BSL) at tau 1, Menon et al.'s logit-adjusted loss
    otherwise: cross-entropy on logits + tau * log n_c."""

    tau: float = field(default=1.0, metadata=bounds(0.0))


OBJECTIVES = Registry("objective", base=ObjectiveParams)
OBJECTIVES.add(
    "ce", CrossEntropyParams, "imbadv.training.objectives:cross_entropy", "cross-entropy"
)
OBJECTIVES.add(
    "weighted_ce",
    WeightedCEParams,
    "imbadv.training.objectives:weighted_cross_entropy",
    "class-weighted cross-entropy (inverse frequency or effective number)",
)
OBJECTIVES.add(
    "balanced_softmax",
    BalancedSoftmaxParams,
    "imbadv.training.objectives:balanced_softmax",
    "cross-entropy on logits + tau log n_c (balanced softmax, logit adjustment)",
)
