"""Bench, the transfer matrix: the quick preset's whole class-by-class matrix from stored models, timed.

`python -m imbadv.bench.matrix --store STORE --data CIFAR10.tar.gz` runs, as a user would,
`python -m imbadv.run -m experiment=quick dataset=folder class=0..9 imbalance=balanced,under,over
attack=matrix launcher=gpus` against a store that already holds the sweep's 21 models (a
finished quick sweep's), and reports its wall time against the 15-minute target, how many
models it trained (must be 0) and how many image sets it made (docs/transfer.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TARGET_SECONDS = 15 * 60  # the whole quick matrix on 2 cores


def lines(path: Path) -> int:
    return len(path.read_text().splitlines()) if path.exists() else 0


def bench_matrix(
    store: Path, data: str, seed: int, extra: list[str], keep: Path | None = None
) -> dict:
    """Run the matrix sweep on `store`'s models; its wall time and the work it did.

    The sweep folder is temporary unless `keep` names where it should stay (for a report)."""
    before = {k: lines(store / f"{k}.jsonl") for k in ("trainings", "craftings", "evaluations")}
    with tempfile.TemporaryDirectory() as tmp:
        sweep = keep or Path(tmp) / "sweep"
        args = [
            sys.executable,
            "-m",
            "imbadv.run",
            "-m",
            "experiment=quick",
            "dataset=folder",
            f"dataset.root={data}",
            "class=0..9",
            "imbalance=balanced,under,over",
            "attack=matrix",
            f"seed={seed}",
            "launcher=gpus",
            "logger=none",
            f"paths.store_dir={store}",
            f"hydra.sweep.dir={sweep}",
            *extra,
        ]
        start = time.perf_counter()
        proc = subprocess.run(args, capture_output=True, text=True, env={**os.environ})
        seconds = time.perf_counter() - start
        jobs = len(list(sweep.rglob("results.json")))
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed:\n{proc.stderr[-3000:]}")
    done = {k: lines(store / f"{k}.jsonl") - v for k, v in before.items()}
    return {
        "command": " ".join(args[1:]),
        "jobs": jobs,
        "wall_seconds": seconds,
        "target_seconds": TARGET_SECONDS,
        "within_target": seconds <= TARGET_SECONDS,
        **{f"new_{k}": v for k, v in done.items()},
        "load_avg_1min_after": os.getloadavg()[0],
        "cpu_count": os.cpu_count(),
    }


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(prog="python -m imbadv.bench.matrix", description=__doc__)
    p.add_argument(
        "--store", type=Path, required=True, help="a store with the quick sweep's models"
    )
    p.add_argument("--data", required=True, help="the CIFAR-10 copy the models were trained on")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", type=Path, default=None, help="also write the numbers here")
    p.add_argument("--keep", type=Path, default=None, help="keep the sweep folder here")
    p.add_argument("overrides", nargs="*", help="more overrides for the sweep (e.g. device=cpu)")
    args = p.parse_args(argv)
    report = bench_matrix(args.store, args.data, args.seed, args.overrides, args.keep)
    print(
        f"quick transfer matrix: {report['jobs']} jobs in {report['wall_seconds']:.0f} s "
        f"(target <= {TARGET_SECONDS} s: {'met' if report['within_target'] else 'MISSED'}); "
        f"models trained {report['new_trainings']}, image sets made {report['new_craftings']}"
    )
    if args.json is not None:
        args.json.write_text(json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
