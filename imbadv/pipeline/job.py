"""What one job carries through its stages (plan, obtain, craft, attack), in one object."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the Job is read by every stage; it imports none of them
    import torch

    from imbadv.config.settings import Settings
    from imbadv.data.base import Dataset
    from imbadv.store import Store
    from imbadv.telemetry.progress import Watch


@dataclass(frozen=True)
class Job:
    """A job's data, settings, attacked class, device, store and progress lines.

    `target` is the job's class as an index; `settings` may differ from the job's own for a
    model it obtains for someone else (a named source: `job.using(source_settings(...))`).
    """

    data: Dataset
    settings: Settings
    target: int
    device: torch.device
    store: Store
    watch: Watch = field(default=None)  # type: ignore[assignment]
    seconds: dict[str, float] = field(default_factory=dict)  # per stage; shared by `using`
    helped: list[str] = field(default_factory=list)  # models trained for other jobs (their keys)

    @contextmanager
    def timed(self, part: str) -> Iterator[None]:
        """Adds the block's wall seconds to `seconds[part]` (results.json meta.stage_seconds)."""
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[part] = self.seconds.get(part, 0.0) + time.perf_counter() - start

    def __post_init__(self) -> None:
        if self.watch is None:  # no lines (tests, the bench): a quiet Watch
            from imbadv.telemetry.progress import Watch

            object.__setattr__(self, "watch", Watch(lines=False))

    def using(self, settings: Settings) -> Job:
        """This job with other settings (another seed's model, a checkpoint's training)."""
        return replace(self, settings=settings)
