"""Learning-rate schedules by name (torch-free registry): a factor of `optimizer.lr` per step.

`make(params, steps_per_epoch, max_epochs)` returns step -> factor (a LambdaLR function), so a
schedule is a pure function tested without Lightning. Every schedule takes an optional linear
warm-up (`warmup_epochs`, fractions allowed) that multiplies its factor.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from imbadv.core.errors import ConfigError
from imbadv.core.registry import Params, Registry, bounds, number


@dataclass(frozen=True)
class ScheduleParams(Params):
    """What every schedule has: a linear warm-up over the first `warmup_epochs` (0: none)."""

    warmup_epochs: float = field(default=0.0, metadata=bounds(0.0))

    def check_epochs(self, key: str, max_epochs: int) -> None:
        """Checks that need `trainer.max_epochs`; raise ConfigError naming the key."""
        if self.warmup_epochs > max_epochs:
            raise ConfigError(
                f"{key}.warmup_epochs",
                self.warmup_epochs,
                f"a number <= trainer.max_epochs ({max_epochs})",
            )


@dataclass(frozen=True)
class KerasDecayParams(ScheduleParams):
    """Keras' `decay` (the paper's): lr_t = lr / (1 + decay * t), t = optimizer steps taken."""

    decay: float = field(default=1e-5, metadata=bounds(0.0))


@dataclass(frozen=True)
class ConstantParams(ScheduleParams):
    """The optimizer's lr throughout (after the warm-up)."""


@dataclass(frozen=True)
class StepParams(ScheduleParams):
    """lr x `factor` after each milestone: `milestones` are epochs completed (torch's MultiStepLR;
    AT-BSL's "x0.1 at epochs 75 and 90" of 1-based epochs is milestones [74, 89])."""

    milestones: tuple[int, ...] = ()
    factor: float = field(default=0.1, metadata=bounds(0.0, 1.0, open_low=True))

    def check_epochs(self, key: str, max_epochs: int) -> None:
        super().check_epochs(key, max_epochs)
        ms = list(self.milestones)
        ok = all(isinstance(m, int) and not isinstance(m, bool) for m in ms)
        if not ok or ms != sorted(set(ms)) or any(m < 1 or m >= max_epochs for m in ms):
            allowed = f"increasing integers in 1..{number(max_epochs - 1)} (trainer.max_epochs - 1)"
            raise ConfigError(f"{key}.milestones", ms, allowed)


@dataclass(frozen=True)
class CosineParams(ScheduleParams):
    """Cosine annealing (Loshchilov & Hutter 2017, no restarts) from 1 to `min_factor` over the
    steps after the warm-up."""

    min_factor: float = field(default=0.0, metadata=bounds(0.0, 1.0))


@dataclass(frozen=True)
class OneCycleParams(ScheduleParams):
    """One cycle (Smith 2018; torch's OneCycleLR, cosine): from 1/`div_factor` up to 1 over
    `pct_start` of training, then down to 1/(`div_factor` * `final_div_factor`)."""

    pct_start: float = field(default=0.3, metadata=bounds(0.0, 1.0, open_low=True, open_high=True))
    div_factor: float = field(default=25.0, metadata=bounds(1.0))
    final_div_factor: float = field(default=1e4, metadata=bounds(1.0))


SCHEDULES = Registry("schedule", base=ScheduleParams)
SCHEDULES.add(
    "keras_decay",
    KerasDecayParams,
    "imbadv.schedules.factors:keras_decay",
    "lr / (1 + decay * step), the paper's",
)
SCHEDULES.add("constant", ConstantParams, "imbadv.schedules.factors:constant", "constant lr")
SCHEDULES.add("step", StepParams, "imbadv.schedules.factors:step", "x factor at milestones")
SCHEDULES.add("cosine", CosineParams, "imbadv.schedules.factors:cosine", "cosine annealing")
SCHEDULES.add("onecycle", OneCycleParams, "imbadv.schedules.factors:onecycle", "one cycle")

DEFAULT = "keras_decay"  # the paper's: enters no store key (docs/training.md)
