"""Where an attack aims: directions each method supports and the named target class (torch-free)."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any

from imbadv.attacks import ATTACKS, Direction
from imbadv.core.classes import class_choices, class_index
from imbadv.core.errors import ConfigError


def check_direction(method: str, direction: Direction, target_class: Any) -> None:
    """Refuse a direction `method` does not support, and a target class without `toward`."""
    allowed = ATTACKS.get("attack.methods", method).facts.directions
    if direction not in allowed:
        names = ", ".join(str(d) for d in allowed)
        raise ConfigError("attack.direction", direction, f"one of {names} for {method}")
    if direction is Direction.TOWARD and target_class is None:
        raise ConfigError(
            "attack.target_class", None, "a class index or name with direction toward"
        )
    if direction is not Direction.TOWARD and target_class is not None:
        raise ConfigError(
            "attack.target_class", target_class, "null unless attack.direction=toward"
        )


def parse_target_class(value: Any, classes: Sequence[str] | None, true_class: Any) -> int | str:
    """The class index `value` names (kept as a name while the classes are unknown).

    Refused when it equals the attacked images' true class (`class`): pushing images toward
    their own class is the paper's `descent`, asked for by that name.
    """
    allowed = f"a class other than class={true_class}"
    if classes:
        allowed += f": {class_choices(classes)}"
    if not str(value):  # an empty name is no class, even while the classes are unknown
        raise ConfigError("attack.target_class", value, allowed)
    index = class_index(value, classes, "attack.target_class", allowed)
    if _same_class(index, true_class, classes):
        raise ConfigError("attack.target_class", value, allowed)
    return index


def _same_class(index: int | str, true_class: Any, classes: Sequence[str] | None) -> bool:
    # compared by name where the classes are known, so `class=3 target_class=cat` is caught too
    names = list(classes or [])

    def name(c: Any) -> str:
        return names[c] if isinstance(c, int) and 0 <= c < len(names) else str(c)

    return name(index) == name(true_class)


def with_target_class(specs: tuple, classes: Sequence[str] | None, true_class: Any) -> tuple:
    """`specs` (settings.AttackSpec) with their target class checked and resolved to an index."""
    return tuple(
        spec
        if spec.target_class is None
        else dataclasses.replace(
            spec, target_class=parse_target_class(spec.target_class, classes, true_class)
        )
        for spec in specs
    )
