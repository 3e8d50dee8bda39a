"""Errors shared by every stage: one-line messages a user can act on."""

from __future__ import annotations

from collections.abc import Iterable


class ImbadvError(Exception):
    """An error whose message is complete on one line and needs no traceback."""


class ConfigError(ImbadvError):
    """A configuration value that is not allowed; names the key, the value and what is allowed."""

    def __init__(self, key: str, value: object, allowed: str | Iterable[object]) -> None:
        if not isinstance(allowed, str):
            allowed = "one of " + ", ".join(str(a) for a in allowed)
        super().__init__(f"{key}={value!s} is not allowed: expected {allowed}")
        self.key, self.value, self.allowed = key, value, allowed


class DataError(ImbadvError):
    """A data set that cannot be found, read or trusted."""


class TrainingError(ImbadvError):
    """Training that cannot produce a usable model (for example a NaN loss)."""
