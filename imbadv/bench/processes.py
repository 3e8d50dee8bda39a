"""Bench, grouped training's third side: the same K members, each trained by its own OS process."""

from __future__ import annotations

import copy
import io
import pickle
import queue as queues
import time
import traceback

import torch
import torch.multiprocessing as mp
from torch import nn

from imbadv.bench.attacks import sync
from imbadv.bench.training import StepClock, imbadv_train, make_data
from imbadv.models.layout import choose_layout
from imbadv.training import TrainSettings

WAIT_SECONDS = 600  # a child that neither reports nor exits by then has hung (a broken barrier)


def threads_per_process(threads: int, k: int) -> int:
    """The bench's CPU threads shared out: max(1, threads // K), so K processes together use no
    more threads than the other sides (fewer cores than processes: one thread each)."""
    return max(1, threads // k)


class BarrierClock(StepClock):
    """A StepClock that, after the last warm-up step, waits until every process has warmed up."""

    def __init__(self, warmup: int, device: torch.device, barrier) -> None:
        super().__init__(warmup, device)
        self.barrier = barrier

    def on_train_batch_end(self, trainer, *args) -> None:
        if args[-1] == self.warmup - 1:  # args[-1]: batch_idx
            sync(self.device)
            self.barrier.wait(WAIT_SECONDS)
        super().on_train_batch_end(trainer, *args)


def member_process(rank: int, job: dict, barrier, out) -> None:
    """One child: member `rank` (the template re-initialized from seed `rank`), trained on the
    bench's data through `fit`'s path; reports its clock reads, weights and peak GPU memory."""
    try:
        torch.set_num_threads(job["threads"])
        device, s = torch.device(job["device"]), job["settings"]
        x, y = make_data(job["images"], device)  # seed 0, as every side: the same batches
        model = pickle.loads(job["model"])
        model.reset_parameters(torch.Generator().manual_seed(rank))
        layout = choose_layout(model, device, s.channels_last).format
        model.to(device, memory_format=layout)
        x = x.contiguous(memory_format=layout)
        clock = BarrierClock(job["warmup"], device, barrier)
        imbadv_train(model, x, y, s, job["warmup"], device, seed=rank, clock=clock)
        buffer = io.BytesIO()  # plain bytes: nothing shared with a process about to exit
        torch.save({k: v.cpu() for k, v in model.state_dict().items()}, buffer)
        peak = torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None
        out.put((rank, clock.reads[0], clock.reads[-1], buffer.getvalue(), peak, None))
    except BaseException:  # noqa: BLE001 - the parent must hear of any failure, not hang
        barrier.abort()  # the others stop waiting for this one
        out.put((rank, 0.0, 0.0, b"", None, traceback.format_exc()))


def processes_train(
    template: nn.Module,
    models: list[nn.Module],
    images: int,
    s: TrainSettings,
    warmup: int,
    device: torch.device,
    threads: int,
) -> tuple[float, list[float | None]]:
    """K spawned processes train the K members at once (on a GPU, sharing it); the side's seconds
    run from the barrier after warm-up to the last process's last step. Member i is `template`
    re-initialized from seed i in its process, as the other sides make it (its memory format
    kept: an in-place init draws in memory order, so NHWC weights get other values than NCHW).
    `models` (K) end with the trained weights; also returns each process's peak GPU memory (MiB;
    None on a CPU)."""
    ctx = mp.get_context("spawn")  # fork would copy this process's torch threads and CUDA state
    barrier, out = ctx.Barrier(len(models)), ctx.Queue()
    job = {
        "settings": s,
        "warmup": warmup,
        "images": images,
        "device": str(device),
        "threads": threads,
        # Plain bytes: torch's pickler would put the weights in memory the children share.
        "model": pickle.dumps(copy.deepcopy(template).cpu()),
    }
    children = [
        ctx.Process(target=member_process, args=(i, job, barrier, out)) for i in range(len(models))
    ]
    for child in children:
        child.start()
    try:
        reports = collect(out, children)
    except BaseException:
        for child in children:  # after one failed, the others may still train: stop them
            child.terminate()
        raise
    finally:
        for child in children:
            child.join()
    # perf_counter is CLOCK_MONOTONIC on Linux: one clock for every process on the machine
    seconds = max(r[2] for r in reports) - min(r[1] for r in reports)
    for rank, *_, weights, _peak, _ in reports:
        models[rank].load_state_dict(torch.load(io.BytesIO(weights)))
    return seconds, [r[4] for r in sorted(reports)]


def collect(out, children: list) -> list[tuple]:
    """Every child's report; raises with a child's traceback, or when one died without one."""
    reports, deadline = [], time.monotonic() + WAIT_SECONDS
    while len(reports) < len(children):
        try:
            report = out.get(timeout=1.0)
        except queues.Empty:
            dead = [c.exitcode for c in children if c.exitcode not in (None, 0)]
            if dead or time.monotonic() > deadline:
                raise RuntimeError(
                    f"bench processes side: a child died or hung (exit {dead})"
                ) from None
            continue
        if report[-1] is not None:
            raise RuntimeError(f"bench processes side, member {report[0]} failed:\n{report[-1]}")
        reports.append(report)
    return reports
