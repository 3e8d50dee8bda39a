"""Bench, grouped training: K members as one vmapped computation, in sequence and as K processes."""

from __future__ import annotations

import copy
import statistics
import time
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn

from imbadv.bench.attacks import alternated
from imbadv.bench.busy import WHAT, BusyClock
from imbadv.bench.processes import processes_train, threads_per_process
from imbadv.bench.training import StepClock, imbadv_train, make_data, torch_flags_kept
from imbadv.grouped.train import GroupedClassifier, Zipped, unstack_into
from imbadv.models.layout import choose_layout
from imbadv.training import Recipe, TrainSettings
from imbadv.training.loop import make_trainer, train_batches


def grouped_train(
    models: list[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    s: TrainSettings,
    warmup: int,
    device: torch.device,
    compiled: bool = False,
    clock: StepClock | None = None,
) -> float:
    """Seconds for the steps after `warmup` of grouped training's path (member i seeded i), as
    `fit_group` builds it, without its validation (as `imbadv_train` leaves out fit's);
    `compiled`: its trainer.compile=on step (compiling falls in the warm-up steps)."""
    clock = clock or StepClock(warmup, device)
    module = GroupedClassifier(models, s, [F.cross_entropy] * len(models))
    if compiled:
        module.compile(device)
    with torch_flags_kept():
        trainer = make_trainer(s, device, [clock])
        streams = [train_batches((x, y), s, Recipe(), seed) for seed in range(len(models))]
        trainer.fit(module, train_dataloaders=Zipped(streams))
    for k, model in enumerate(models):  # the members' weights, to compare with the sequence's
        unstack_into(model, *module.member(k))
    return clock.reads[-1] - clock.reads[0]


def sequence_train(
    models: list[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    s: TrainSettings,
    warmup: int,
    device: torch.device,
) -> float:
    """Seconds for the same K trained one after the other through `fit`'s path (member i seed i)."""
    return sum(imbadv_train(m, x, y, s, warmup, device, seed=i) for i, m in enumerate(models))


def peak_mib(device: torch.device) -> float | None:
    """Peak GPU memory since the last reset, MiB; None on a CPU (no per-phase peak there)."""
    return torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None


def bench_grouped(
    model: nn.Module,
    s: TrainSettings,
    k: int,
    warmup: int,
    steps: int,
    repeats: int,
    device: torch.device,
    processes: bool = True,
    compiled: bool = False,
) -> dict:
    """Images/s per member of K grouped against the same K in sequence, (with `processes`) K
    processes at once and (with `compiled`) K grouped through trainer.compile=on's step,
    alternated, from the same initial weights (member i: `model` re-initialized from seed i) and
    batches."""
    x, y = make_data((warmup + steps) * s.batch_size, device)
    layout = choose_layout(model, device, s.channels_last).format
    x = x.contiguous(memory_format=layout)
    start = members(model, k, device, layout)
    threads = threads_per_process(torch.get_num_threads(), k)
    sides = make_sides(model, len(y), s, warmup, device, threads if processes else 0, compiled)
    seconds: dict[str, list[float]] = {side: [] for side in sides}
    final, peaks = {}, {}
    walls: dict[str, list[float]] = {side: [] for side in sides}
    for side in alternated(list(sides), repeats):
        final[side] = [copy.deepcopy(m) for m in start]
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        began = time.perf_counter()
        took = sides[side](final[side], x, y, s, warmup, device)
        walls[side].append(time.perf_counter() - began)  # set-up and warm-up (compiling) in
        if side == "processes":  # each process's own peak; the largest is reported
            took, each = took
            peaks[side] = None if None in each else max(each)
        else:
            peak = peak_mib(device)
            peaks[side] = None if peak is None else peak / (k if side == "grouped" else 1)
        seconds[side].append(took)
    per_member = {side: [steps * s.batch_size / t for t in ts] for side, ts in seconds.items()}
    row = {
        "members": k,
        **paired(per_member, "grouped", "sequence", "ratio", "ratios"),
        **{
            f"{side}_images_per_s_per_member": statistics.median(v)
            for side, v in per_member.items()
        },
        # GPU only: the grouped peak over K; the sequence's is one model's (they run one by one);
        # the processes' is the largest of the K processes' own peaks
        "peak_memory_mib_per_member": peaks,
        "weights_max_abs_diff": weights_diff(final["sequence"], final["grouped"]),
    }
    if compiled:
        row |= compiled_side(per_member, walls, final)
    row |= busy(start, x, y, s, warmup, device, compiled)
    if processes:  # K processes run the same code as the sequence: rounding apart, the same weights
        row |= paired(per_member, "grouped", "processes", "vs_processes", "vs_processes_ratios")
        row["threads_per_process"] = threads
        row["processes_weights_max_abs_diff"] = weights_diff(final["sequence"], final["processes"])
    return row


def make_sides(
    model: nn.Module,
    n: int,
    s: TrainSettings,
    warmup: int,
    device: torch.device,
    threads: int,
    compiled: bool,
) -> dict:
    """The row's sides: sequence, grouped, (`compiled`) compiled, (`threads` > 0) processes."""
    sides = {"sequence": sequence_train, "grouped": grouped_train}
    if compiled:
        sides["compiled"] = partial(grouped_train, compiled=True)
    if threads:
        template = copy.deepcopy(model)
        sides["processes"] = lambda ms, *_: processes_train(
            template, ms, n, s, warmup, device, threads
        )
    return sides


def compiled_side(per_member: dict, walls: dict, final: dict) -> dict:
    """The compiled step against the eager grouped one, and its weights; each run's whole wall:
    the first compiles, a later one in this process reuses the graphs (or not)."""
    row = paired(per_member, "compiled", "grouped", "compiled_vs_grouped", "compiled_ratios")
    row |= {"compiled_run_seconds": walls["compiled"], "grouped_run_seconds": walls["grouped"]}
    row["compiled_weights_max_abs_diff"] = weights_diff(final["grouped"], final["compiled"])
    return row


def busy(
    start: list[nn.Module],
    x: torch.Tensor,
    y: torch.Tensor,
    s: TrainSettings,
    warmup: int,
    device: torch.device,
    compiled: bool,
) -> dict:
    """How busy the device was in the timed steps of one more, profiled, run of each side: one
    member alone (`fit`'s path), the group, and the compiled group (the profiler slows the host,
    so these runs are not in the images/s)."""
    shares = {}
    for side in ("alone", "grouped", *(["compiled"] if compiled else [])):
        clock = BusyClock(warmup, device)
        if side == "alone":
            imbadv_train(copy.deepcopy(start[0]), x, y, s, warmup, device, clock=clock)
        else:
            ms = [copy.deepcopy(m) for m in start]
            grouped_train(ms, x, y, s, warmup, device, side == "compiled", clock)
        shares[side] = clock.share
    return {"busy_share": shares, "busy_what": WHAT[device.type]}


def members(
    model: nn.Module, k: int, device: torch.device, layout: torch.memory_format
) -> list[nn.Module]:
    """K copies of `model`, member i initialized from seed i on the CPU (whatever `model`'s
    device: the CPU generator), then moved to `device` in `layout`."""
    start = []
    for i in range(k):
        member = copy.deepcopy(model)
        member.reset_parameters(torch.Generator().manual_seed(i))
        start.append(member.to(device, memory_format=layout))
    return start


def paired(per_member: dict[str, list[float]], a: str, b: str, name: str, runs: str) -> dict:
    """The median of the per-pair ratios a / b (load drifts between pairs) and the ratios."""
    ratios = [p / q for p, q in zip(per_member[a], per_member[b], strict=True)]
    return {name: statistics.median(ratios), runs: ratios}


def weights_diff(a: list[nn.Module], b: list[nn.Module]) -> float:
    """Largest difference between the two sides' members (float rounding only, if they agree)."""
    return max(
        float((p.detach().cpu() - q.detach().cpu()).abs().max())
        for ma, mb in zip(a, b, strict=True)
        for p, q in zip(ma.state_dict().values(), mb.state_dict().values(), strict=True)
    )
