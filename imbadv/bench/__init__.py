"""Bench stage: imbadv's training, attack and prediction speed against a raw PyTorch loop and torchattacks."""

from __future__ import annotations

import argparse
import copy
import importlib.metadata
import importlib.util
import json
import logging
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch
from torch import nn

from imbadv.bench.attacks import (
    ATTACK_NAMES,
    PAPER_ATTACKS,
    bench_attacks,
    differing,
    timed,
)
from imbadv.bench.formats import bench_formats, save_formats
from imbadv.bench.grouped import bench_grouped
from imbadv.bench.stacked import bench_stacked
from imbadv.bench.table import TARGETS, format_table, grouped_rates
from imbadv.bench.training import bench_augment, bench_compile, bench_training, make_data
from imbadv.data.base import DataCard
from imbadv.data.cifar10 import CIFAR10_MEAN, CIFAR10_STD
from imbadv.data.tensors import predict, to_unit
from imbadv.models import MODELS
from imbadv.training import TrainSettings

MACS_PER_IMAGE = 230.4e6  # the paper's VGG (width 1), one 32x32 forward; scales with width^2
MATMUL_KEY = {"cpu": "matmul_fp32_gflops", "cuda": "matmul_fp32_gflops"}  # the yardstick info holds
REQUIRED_KEYS = ("device", "train_vs_raw", "attack_vs_torchattacks")


def bench_predict(model: nn.Module, n: int, device: torch.device, repeats: int) -> dict:
    """Images/s of `data.tensors.predict` over `n` uint8 images (10,000 = CIFAR-10's test set)."""
    x, _ = make_data(n, device, seed=1)
    predict(model, x[:64])  # warm-up
    secs = [timed(lambda: predict(model, x), device) for _ in range(repeats)]
    return {"images": n, "images_per_s": n / statistics.median(secs)}


def matmul_gflops(device: torch.device, n: int = 1024, repeats: int = 8) -> float:
    """Best of 4 rounds of fp32 n x n matrix products, in GFLOP/s (the machine's reference)."""
    gen = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=gen).to(device) for _ in range(2))
    best = float("inf")
    for _ in range(4):  # the first round also warms up: the best of the four is reported
        best = min(best, timed(lambda: [a @ b for _ in range(repeats)], device))
    return 2 * n**3 * repeats / best / 1e9


def quick_job(
    data: str | None, device: torch.device, threads: int | None, extra: tuple = ()
) -> dict:
    """Peak memory of one `quick` job (`smoke` without data; `extra` overrides) via imbadv.run."""
    preset = (
        ["experiment=quick", "dataset=folder", f"dataset.root={data}"]
        if data
        else ["experiment=smoke"]
    )
    with tempfile.TemporaryDirectory() as tmp:
        args = [
            sys.executable,
            "-m",
            "imbadv.run",
            *preset,
            "class=3",
            "imbalance=under",
            f"device={device.type}",
            f"paths.store_dir={tmp}/store",
            f"hydra.run.dir={tmp}/run",
        ]
        args += ([f"threads={threads}"] if threads else []) + list(extra)
        start = time.perf_counter()
        proc = subprocess.run(
            args, capture_output=True, text=True, env={**os.environ, "WANDB_MODE": "disabled"}
        )
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    # GPU memory of the child is not measured: see the training section's max_memory_allocated.
    return {
        "command": " ".join(args[1:]),
        "wall_seconds": time.perf_counter() - start,
        # Linux reports ru_maxrss in KiB: the largest of this process's waited-for children.
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024,
    }


PARTS = ("data", "device_wait", "models", "clean_eval", "attacks")  # meta.stage_seconds


def sweep_totals(root: Path) -> dict:
    """Where a finished sweep's time went, from its results.json files.

    Sums over jobs: wall, training (models trained in the job, its own and, in `helping`, other
    jobs' while its own was busy), the stages each job times (`meta.stage_seconds`: data loading,
    waiting for a GPU slot, obtaining models (training included), clean evaluation, attacks; lock
    waits and helping inside them), and overhead = wall - stages.
    `elapsed` is the sweep's first start to last finish; `concurrency` = wall / elapsed. Jobs
    written before stages were timed count in `jobs_without_stages` and only in wall/training.
    """
    files = sorted(Path(root).rglob("results.json"))
    if not files:
        raise FileNotFoundError(f"no results.json under {root}")
    totals = {"jobs": len(files), "trainings": 0, "wall_seconds": 0.0, "train_seconds": 0.0}
    parts = dict.fromkeys(PARTS, 0.0) | {"lock_wait": 0.0, "helping": 0.0, "overhead": 0.0}
    spans, unsplit, reused = [], 0, 0
    for path in files:
        full = json.loads(path.read_text())  # meta and training seconds: any format since 1
        meta = full["meta"]
        totals["wall_seconds"] += meta["wall_seconds"]
        for role, here in meta["trained_here"].items():
            if here:  # a model loaded from the store carries the seconds of the job that trained it
                totals["trainings"] += 1
                totals["train_seconds"] += full["models"][role]["train_seconds"]
        stages = meta.get("stage_seconds")
        totals["trainings"] += len(meta.get("helped", []))  # other jobs' models, trained here
        totals["train_seconds"] += (stages or {}).get("helping", 0.0)
        if stages is None:
            unsplit += 1
            continue
        for part in (*PARTS, "lock_wait", "helping"):
            parts[part] += stages.get(part, 0.0)
        parts["overhead"] += meta["wall_seconds"] - sum(stages.get(p, 0.0) for p in PARTS)
        reused += stages.get("attacks", 0.0) == 0.0 and stages.get("clean_eval", 0.0) == 0.0
        spans.append((meta["started_at"], meta["finished_at"]))
    totals["other_seconds"] = totals["wall_seconds"] - totals["train_seconds"]
    if spans:
        elapsed = max(e for _, e in spans) - min(s for s, _ in spans)
        walls = totals["wall_seconds"]
        totals |= {f"{k}_seconds": round(v, 4) for k, v in parts.items()}
        totals |= {"results_reused": reused, "elapsed_seconds": round(elapsed, 4)}
        totals["concurrency"] = round(walls / elapsed, 3) if elapsed > 0 else math.nan
    if unsplit:
        totals["jobs_without_stages"] = unsplit
    return totals


# (flag, type, CPU default, GPU default, help); None = not set
OPTIONS = [
    ("--width", float, 0.25, 1.0, "model width (1.0 = the published network)"),
    ("--batch-size", int, 64, 32, "training and attack batch size"),
    ("--steps", int, 40, 200, "timed training steps per run"),
    ("--warmup", int, 3, 3, "untimed training steps per run"),
    ("--repeats", int, 5, 5, "runs per side, alternated; medians are reported"),
    ("--attack-images", int, 1024, 4096, "images per attack run"),
    ("--eval-images", int, 10_000, 10_000, "images per predict run (a test set)"),
    ("--eps", float, 0.01, 0.01, "attack eps, pixel units on [0, 1]"),
    ("--attack-steps", int, 5, 10, "steps of pgd, pgd_l2 and mifgsm"),
    ("--threads", int, None, None, "torch CPU threads (default: torch's own)"),
    ("--group", int, 10, 10, "members of the grouped-training row (0: no such row)"),
    ("--group-repeats", int, 1, 3, "runs per side of the grouped row (each trains K models)"),
    ("--stack", int, 4, 10, "sources of the stacked-attack row (0: no such row)"),
]


def installed(name: str) -> str | None:
    """A distribution's version, None when it is not installed."""
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def bench_model(name: str, width: float, seed: int = 0) -> nn.Module:
    """A registered model at `width` for CIFAR-10-shaped data (32x32 RGB, 10 classes), its
    initial weights drawn from a generator seeded `seed`: every run attacks the same weights."""
    card = DataCard(tuple(str(c) for c in range(10)), 3, 32, CIFAR10_MEAN, CIFAR10_STD)
    spec = MODELS.parse("model", name, {"width": width})
    model = MODELS.get("model", name).load()(card, spec.params)
    model.reset_parameters(torch.Generator().manual_seed(seed))
    return model


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m imbadv.bench", description=__doc__)
    p.add_argument("--device", choices=["cpu", "cuda"], default=None, help="default: cuda if seen")
    for flag, kind, cpu, gpu, text in OPTIONS:
        p.add_argument(flag, type=kind, default=None, help=f"{text} (CPU {cpu}, GPU {gpu})")
    p.add_argument("--model", default="vgg", help="a registered model (vgg, resnet18, ...)")
    p.add_argument("--seed", type=int, default=0, help="the model's initial weights (default 0)")
    p.add_argument("--strict", action="store_true", help="exit 1 if any attack's images differ")
    p.add_argument(
        "--compile",
        action="store_true",
        help="add the compile_vs_eager row: trainer.compile=on against off, and with --group the grouped compiled side (compiling takes minutes)",
    )
    p.add_argument(
        "--no-processes",
        action="store_true",
        help="leave the grouped row's K-processes side out (each process imports torch anew)",
    )
    p.add_argument(
        "--attacks",
        default=None,
        help=f"comma-separated subset of {','.join(ATTACK_NAMES)}, or none (default: all)",
    )
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p.add_argument("--with-quick-job", action="store_true", help="peak RSS of one quick job")
    p.add_argument("--data", default=None, help="class-folder .tar.gz for that job (else smoke)")
    p.add_argument("--sweep", type=Path, default=None, help="a finished sweep: its wall-time split")
    p.add_argument(
        "--formats",
        action="store_true",
        help="add the formats row (fp32/bf16 x NHWC/NCHW training steps) and save its choice for "
        "trainer.precision=auto and channels_last=auto to STORE/formats.json",
    )
    p.add_argument(
        "--store",
        type=Path,
        default=Path(os.environ.get("IMBADV_STORE_DIR", "store")),
        help="the store whose formats.json --formats writes (default: $IMBADV_STORE_DIR or store)",
    )
    args = p.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # what --formats saves it was run with
    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    for flag, _, cpu, gpu, _ in OPTIONS:
        key = flag[2:].replace("-", "_")
        if getattr(args, key) is None:
            setattr(args, key, gpu if args.device == "cuda" else cpu)
    args.attacks = attack_names(p, args.attacks)
    if min(args.warmup, args.steps, args.repeats) < 1:
        p.error("--warmup, --steps and --repeats must be >= 1 (the clock starts after warm-up)")
    return args


def attack_names(p: argparse.ArgumentParser, text: str | None) -> tuple[str, ...]:
    """--attacks as names, refused in one line before any work: unknown names, or attack rows
    without torchattacks (their reference; a GPU node may lack it: --attacks none)."""
    if text == "none":
        return ()
    names = tuple(text.split(",")) if text else ATTACK_NAMES
    unknown = [n for n in names if n not in ATTACK_NAMES]
    if unknown:
        p.error(
            f"--attacks={text}: unknown {','.join(unknown)}; allowed: {','.join(ATTACK_NAMES)} or none"
        )
    if importlib.util.find_spec("torchattacks") is None:
        p.error(
            f"--attacks={text or 'all'}: the attack rows compare against torchattacks, which is not "
            "installed; allowed: --attacks none, or pip install torchattacks (make wheelhouse)"
        )
    return names


def machine(device: torch.device) -> dict:
    """What the numbers were measured on, with the machine's own fp32 matmul speed as a yardstick."""
    import lightning

    gpu = device.type == "cuda"
    return {
        "device": torch.cuda.get_device_name(device)
        if gpu
        else f"cpu ({torch.get_num_threads()} threads)",
        "matmul_fp32_gflops": matmul_gflops(device, 4096 if gpu else 1024),
        "threads": torch.get_num_threads(),
        "cpu_count": os.cpu_count(),
        # Other processes' load: with it, 2 threads on 2 cores can run 10x slower than 1.
        "load_avg_1min": os.getloadavg()[0],
        "torch": torch.__version__,
        "lightning": lightning.__version__,
        "torchattacks": installed("torchattacks"),
        "python": sys.version.split()[0],
    }


def run_bench(args: argparse.Namespace) -> dict:
    """Every measurement of one bench, in one process on one device; returns the JSON report."""
    device = torch.device(args.device)
    info = machine(device)  # first: the load average should be other processes', not ours
    model = bench_model(args.model, args.width, args.seed).to(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    s = TrainSettings(batch_size=args.batch_size, max_epochs=1)
    train, at, augment, flop = training_rows(args, model, s, device)
    optional = optional_rows(args, model, s, device)  # grouped, compiled, stacked (or None)
    attack = {}
    if args.attacks:
        x, y = optional.pop("data")
        attack = bench_attacks(
            model.eval(), to_unit(x), y, args.eps, args.batch_size, args.repeats,
            args.attack_steps, args.attacks,
        )  # fmt: skip
    report = {
        "device": info.pop("device"),
        "train_vs_raw": train["ratio"],
        "at_train_vs_raw": at["ratio"],
        "crop_flip_step_vs_none": augment["ratio"],
        "attacks_identical": all(a["identical"] for a in attack.values()),
        "attack_vs_torchattacks": min(
            (a["ratio"] for k, a in attack.items() if k in PAPER_ATTACKS), default=float("nan")
        ),
        **{f"{name}_vs_torchattacks": a["ratio"] for name, a in attack.items()},
        "targets": TARGETS,
        "train": train,
        "at_train": at,
        "augment": augment,
        "attack": attack,
        "predict": bench_predict(model, args.eval_images, device, args.repeats),
        "machine": info,
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
    }
    return report | optional_report(args, optional, info, flop, device)


def training_rows(
    args: argparse.Namespace, model: torch.nn.Module, s: TrainSettings, device: torch.device
) -> tuple[dict, dict, dict, float]:
    """Plain, adversarial (fast FGSM at 8/255, the longtail_quick path) and crop-flip training
    steps against bare loops; and the FLOP per image a training step costs."""
    train = bench_training(model, s, args.warmup, args.steps, args.repeats, device)
    # forward + backward = 3 forwards, 2 FLOP per MAC; counted for the paper's VGG only
    flop = 6 * MACS_PER_IMAGE * args.width**2 if args.model == "vgg" else math.nan
    train |= {f"{k}_gflops": train[f"{k}_images_per_s"] * flop / 1e9 for k in ("imbadv", "raw")}
    if device.type == "cuda":
        train["max_memory_allocated_mib"] = torch.cuda.max_memory_allocated(device) / 2**20
    at = bench_training(
        copy.deepcopy(model), s, args.warmup, args.steps, args.repeats, device, at_eps=8 / 255
    )
    augment = bench_augment(copy.deepcopy(model), s, args.warmup, args.steps, args.repeats, device)
    return train, at, augment, flop


def optional_rows(
    args: argparse.Namespace, model: torch.nn.Module, s: TrainSettings, device: torch.device
) -> dict:
    """The measurements a flag asks for (None when not asked), and the attacks' images."""
    out: dict = {"grouped": None, "compiled": None, "stacked": None, "formats": None}
    if args.formats:  # the format `auto` trains in on this device (docs/training.md)
        row = bench_formats(copy.deepcopy(model), s, args.warmup, args.steps, args.repeats, device)
        where = save_formats(row, args, device)
        out["formats"] = row | where
    if args.group > 0:  # K members as one computation vs the same K in sequence (docs/grouped.md)
        out["grouped"] = bench_grouped(
            model, s, args.group, args.warmup, args.steps, args.group_repeats, device,
            processes=not args.no_processes, compiled=args.compile,
        )  # fmt: skip
    if args.compile:  # trainer.compile=on vs off (docs/training.md); before attacks set eval mode
        out["compiled"] = bench_compile(
            copy.deepcopy(model), s, args.warmup, args.steps, args.repeats, device
        )
    x, y = out["data"] = make_data(args.attack_images, device, seed=2)
    if args.stack > 0:  # K sources' FGSM + BIM images in one call vs one by one (docs/transfer.md)
        out["stacked"] = bench_stacked(
            model, args.stack, (x, y), args.eps, args.batch_size, args.repeats, device
        )
    return out


def optional_report(
    args: argparse.Namespace, optional: dict, info: dict, flop: float, device: torch.device
) -> dict:
    """The report's entries for the optional measurements, the quick job and the sweep."""
    report: dict = {}
    grouped, stacked, compiled = optional["grouped"], optional["stacked"], optional["compiled"]
    if grouped is not None:
        report |= grouped_rates(grouped, info.get(MATMUL_KEY[device.type], math.nan), flop)
    if stacked is not None:
        report |= {"stacked_vs_sequence": stacked["ratio"], "stacked": stacked}
    if compiled is not None:
        report |= {"compile_vs_eager": compiled["ratio"], "compile": compiled}
    if optional["formats"] is not None:
        report["formats"] = optional["formats"]
    if args.with_quick_job:
        report["quick_job"] = quick_job(args.data, device, args.threads)
    if args.sweep is not None:
        report["sweep"] = sweep_totals(args.sweep)
    return report


def main(argv: list[str] | None = None) -> dict:
    """Run the bench, print the table, write `--json`; returns the report.

    With `--strict`, exits 1 after printing and writing when any attack's images differ."""
    args = parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    # Lightning announces devices and hints at every Trainer: noise in a table printed per run.
    logging.getLogger("lightning.pytorch").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=".*(val_dataloader|LeafSpec)")
    report = run_bench(args)
    print(format_table(report))
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    problem = differing(report["attack"], args.attack_images)
    if problem and args.strict:
        print(f"bench --strict: {problem}", file=sys.stderr)
        sys.exit(1)
    if problem:
        print(f"  note: {problem} (recorded; --strict fails on it)")
    return report


if __name__ == "__main__":
    main()
