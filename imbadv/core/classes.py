"""A class named by index or by name, looked up in a data set's class names (torch-free)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from imbadv.core.errors import ConfigError


def class_choices(classes: Sequence[str] | None) -> str:
    """What a class may be, for a refusal: the index range and the names, where they are known."""
    if not classes:
        return "a class index or name"
    return f"an index 0..{len(classes) - 1} or a name ({', '.join(classes)})"


def class_index(value: Any, classes: Sequence[str] | None, key: str, allowed: str) -> int | str:
    """The class index `value` names: an index, a digit string or a name in `classes` (kept as a
    name while the classes are unknown, e.g. a folder not read yet); ConfigError(key, value,
    allowed) otherwise."""
    if isinstance(value, bool) or value is None:
        raise ConfigError(key, value, allowed)
    text = str(value)
    if isinstance(value, int) or text.lstrip("-").isdigit():
        index = int(text)
        if classes is not None and not 0 <= index < len(classes):
            raise ConfigError(key, value, allowed)
        return index
    if classes is None:
        return text
    if text not in classes:
        raise ConfigError(key, value, allowed)
    return list(classes).index(text)
