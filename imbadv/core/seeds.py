"""The seed suffix of a gradient source: `<source>@seed=N` and `<source>@seed+K` (docs/transfer.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from imbadv.core.errors import ConfigError

FILE = "checkpoint:"  # a checkpoint source (imbadv.config.sources): one file, no seed
SUFFIX = re.compile(r"^(?P<base>[^@]+)@seed(?P<op>[=+])(?P<n>[0-9]+)$")
ON_FILE = re.compile(r"@seed[^/]*$")  # a path may hold `@`: only a trailing `@seed...` counts
MAX_SEED = 2**32 - 1  # the `seed` key's own bound (imbadv.config.settings)
SYNTAX = (
    "<source>@seed=N (the model of seed N) or <source>@seed+K (the job's seed + K, K >= 1), "
    "<source> one of same, balanced, <profile>[-<class>][+<mode>]"
)


@dataclass(frozen=True)
class SeedSuffix:
    """Which seed a source's model has: absolute (`@seed=N`) or the job's plus K (`@seed+K`)."""

    relative: bool
    n: int

    def seed(self, own: int) -> int:
        """The source model's seed in a job of seed `own`."""
        return own + self.n if self.relative else self.n

    def __str__(self) -> str:
        return f"@seed+{self.n}" if self.relative else f"@seed={self.n}"


def seeded(text: Any) -> bool:
    """Whether an entry names another seed's model, or tries to: any `@` but in a checkpoint's path."""
    if not isinstance(text, str) or "@" not in text:
        return False
    return not text.startswith(FILE) or ON_FILE.search(text) is not None


def split_seed(text: str, own: int) -> tuple[str, SeedSuffix]:
    """(the source before the suffix, the suffix) of `text`, for a job of seed `own`; a suffix on
    a file, malformed, K < 1, the job's own seed or past the largest seed is refused here."""
    if text.startswith(FILE):
        need = "a seed suffix on same, balanced or a model of the sweep (a file has no seed)"
        raise ConfigError("attack.sources", text, need)
    match = SUFFIX.match(text)
    if match is None:
        raise ConfigError("attack.sources", text, SYNTAX)
    suffix = SeedSuffix(match["op"] == "+", int(match["n"]))
    if suffix.relative and suffix.n < 1:
        raise ConfigError("attack.sources", text, "K >= 1 in <source>@seed+K (another seed)")
    if suffix.seed(own) == own:  # that model is the source without a suffix: same, balanced, ...
        raise ConfigError(
            "attack.sources", text, f"a seed other than the job's own ({own}) in <source>@seed=N"
        )
    if suffix.seed(own) > MAX_SEED:
        raise ConfigError("attack.sources", text, f"a resolved seed <= {MAX_SEED}")
    return match["base"], suffix
