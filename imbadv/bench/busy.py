"""Bench: the share of a run's timed steps its device spent computing, from torch's profiler."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable

import lightning as L
import torch
from torch.autograd import DeviceType

from imbadv.bench.training import StepClock, sync

WHAT = {
    "cuda": "CUDA kernels and copies (union of their intervals) / wall",
    "cpu": "torch operators on the CPU (union of their intervals) / wall",
}


def union_seconds(spans: Iterable[tuple[float, float]]) -> float:
    """Length of the union of (start, end) intervals in microseconds, in seconds: overlapping
    work (nested operators, kernels on two streams) counts once."""
    total, reached = 0.0, -math.inf
    for start, end in sorted(spans):
        if end > reached:
            total += end - max(start, reached)
            reached = end
    return total / 1e6


def work_spans(events: Iterable, device: torch.device) -> list[tuple[float, float]]:
    """The intervals a device worked: on CUDA every kernel and copy; on a CPU every torch
    operator (`aten::`) and compiled region (inductor's kernels run inside it)."""
    if device.type == "cuda":
        picked = [e for e in events if e.device_type == DeviceType.CUDA]
    else:
        picked = [e for e in events if e.name.startswith(("aten::", "Torch-Compiled Region"))]
    return [(e.time_range.start, e.time_range.end) for e in picked]


class BusyClock(StepClock):
    """A `StepClock` that profiles the timed steps: `share` = the device's busy time / wall."""

    def __init__(self, warmup: int, device: torch.device) -> None:
        super().__init__(warmup, device)
        self.profiler: torch.profiler.profile | None = None
        self.share = math.nan

    def on_train_batch_end(self, trainer: L.Trainer, *args) -> None:
        super().on_train_batch_end(trainer, *args)
        if len(self.reads) == 1 and self.profiler is None:  # the warm-up ended: profile from here
            activities = [torch.profiler.ProfilerActivity.CPU]
            if self.device.type == "cuda":
                activities.append(torch.profiler.ProfilerActivity.CUDA)
            self.profiler = torch.profiler.profile(activities=activities)
            self.profiler.start()
            self.began = time.perf_counter()
        elif len(self.reads) == 2 and self.profiler is not None and math.isnan(self.share):
            sync(self.device)
            wall = time.perf_counter() - self.began
            self.profiler.stop()
            busy = union_seconds(work_spans(self.profiler.events(), self.device))
            self.share = busy / wall if wall > 0 else math.nan
