"""GPU check's parts: the toy sizes, a check's commands and outcomes, reading what they wrote."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

TOY = [
    "experiment=smoke",
    "dataset.train_per_class=60",
    "dataset.test_per_class=20",
    "counts.majority=60",
    "counts.minority=12",
    "trainer.max_epochs=2",
    "logger=none",
]
# SGD for the grouped-vs-alone comparison: rounding stays rounding (RMSprop turns it into steps)
SGD = ["optimizer=sgd", "optimizer.lr=0.01", "optimizer.momentum=0.9", "optimizer.weight_decay=0"]
# 4 jobs, 6 models in 3 same-size groups (balanced, under-0 and over-0 of seeds 0 and 1)
GRID = ["class=0", "imbalance=under,over", "seed=0,1"]
# float32 gradients in another summation order differ by ~1e-6 of the largest; TF32 convolutions
# (cuDNN's default on Ampere and later) by ~1e-3: the bound below scales with it
GRADIENT_RTOL = {"cpu": 1e-5, "cuda": 1e-3}


class CheckFailed(Exception):
    """A path ran but did not do what it must; the message says what."""


class Skipped(Exception):
    """A path that this device does not run; the message says why and what covers it."""


@dataclass
class Check:
    """One run of the check: where it writes, on what device, with which interpreter."""

    device: str
    out: Path
    python: str = sys.executable
    timeout: float = 300.0
    results: dict[str, dict] = field(default_factory=dict)

    def run(self, name: str, module: str, args: list[str]) -> subprocess.CompletedProcess:
        """`python -m module args` in `out`, its output in `out/name.log`; CheckFailed if it fails."""
        log = self.out / f"{name}.log"
        env = {**os.environ, "WANDB_MODE": "disabled", "PYTHONUNBUFFERED": "1"}
        with open(log, "a") as f:
            f.write(f"$ {self.python} -m {module} {' '.join(args)}\n")
            f.flush()
            proc = subprocess.run(
                [self.python, "-m", module, *args],
                cwd=self.out,
                env=env,
                stdout=f,
                stderr=subprocess.STDOUT,
                timeout=self.timeout,
            )
        if proc.returncode != 0:
            tail = log.read_text().strip().splitlines()[-1:] or ["(no output)"]
            raise CheckFailed(f"exit {proc.returncode}: {tail[0][:300]} (see {log.name})")
        return proc

    def job(self, name: str, args: list[str], multirun: bool = False) -> Path:
        """An imbadv.run job or sweep under `out/name` with its own store; returns its folder."""
        where = self.out / name
        dirs = [f"hydra.sweep.dir={where}"] if multirun else [f"hydra.run.dir={where}"]
        device = ["launcher=gpus"] if multirun else [f"device={self.device}"]
        threads = ["threads=1"] if self.device == "cpu" else []
        flags = ["-m"] if multirun else []
        store = [f"paths.store_dir={self.out / (name + '-store')}"]
        self.run(name, "imbadv.run", [*flags, *args, *store, *dirs, *device, *threads])
        return where


def results(folder: Path) -> list[dict]:
    """Every results.json under a job or sweep folder."""
    return [json.loads(p.read_text()) for p in sorted(folder.rglob("results.json"))]


def records(store: Path) -> dict[str, dict]:
    """The model records of a store, by key."""
    return {p.stem: json.loads(p.read_text()) for p in (store / "models").glob("*.json")}
