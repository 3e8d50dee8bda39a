"""Bench, formats: imbadv's training step in each precision and layout the device runs, and the
choice that `trainer.precision=auto` and `trainer.channels_last=auto` read (training/formats.py)."""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from dataclasses import replace

import torch
from torch import nn

from imbadv.bench.attacks import alternated
from imbadv.bench.training import imbadv_train, laid_out, make_data
from imbadv.devices import this_cpu_has_bf16
from imbadv.models.layout import choose_layout
from imbadv.training import TrainSettings, formats


def format_sides(device: torch.device) -> dict[str, tuple[str, bool]]:
    """The formats to time: fp32 in both layouts, bf16-mixed too where the device computes in
    bf16 (a CPU without bf16 units emulates it, ~17x slower: not a candidate)."""
    bf16 = torch.cuda.is_bf16_supported() if device.type == "cuda" else this_cpu_has_bf16()
    precisions = ["32-true", *(["bf16-mixed"] if bf16 else [])]
    return {formats.side_name(p, c): (p, c) for p in precisions for c in (True, False)}


def bench_formats(
    model: nn.Module, s: TrainSettings, warmup: int, steps: int, repeats: int, device: torch.device
) -> dict:
    """Images/s of imbadv's training step in each format, alternated from the same weights on the
    same data, and the choice `formats.choose` makes from the medians."""
    x, y = make_data((warmup + steps) * s.batch_size, device)
    sides = {
        n: replace(s, precision=p, channels_last=c) for n, (p, c) in format_sides(device).items()
    }
    seconds: dict[str, list[float]] = {n: [] for n in sides}
    for name in alternated(list(sides), repeats):
        m = copy.deepcopy(model)
        xs = laid_out(m, x, sides[name], device)  # NCHW where a CPU kernel would crash
        seconds[name].append(imbadv_train(m, xs, y, sides[name], warmup, device))
    ips = {n: [steps * s.batch_size / t for t in ts] for n, ts in seconds.items()}
    medians = {n: statistics.median(v) for n, v in ips.items()}
    layouts = {
        n: choose_layout(model, device, c).name for n, (_, c) in format_sides(device).items()
    }
    return {
        "images_per_s": medians,
        "runs_images_per_s": ips,
        "layouts": layouts,  # what each side really ran in
        "choice": formats.choose(medians),
    }


def bench_device_name(device: torch.device) -> str:
    """The device's name as jobs look it up (nvidia-smi's, else CUDA's; `cpu: <model>`)."""
    if device.type != "cuda":
        return formats.cpu_name()
    return formats.device_name("cuda") or torch.cuda.get_device_name(device)


def save_formats(row: dict, args: argparse.Namespace, device: torch.device) -> dict:
    """Write the row's choice to the bench's `--store`/formats.json for this device and the
    bench's model, width and batch; returns where and under which names."""
    name = bench_device_name(device)
    key = formats.entry_key(args.model, args.width, args.batch_size)
    entry = {
        **row["choice"],
        "images_per_s": row["images_per_s"],
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "when": time.strftime("%Y-%m-%d"),
        "command": " ".join(["python -m imbadv.bench", *args.argv]),
    }
    path = args.store / formats.FILE
    formats.save_choice(path, name, key, entry)
    return {"file": str(path), "device": name, "key": key}
