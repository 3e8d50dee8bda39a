"""GPU check: every GPU code path of imbadv at toy size, a PASS/FAIL line each (`make gpu-check`).

    python -m imbadv.bench.gpucheck [--device cuda|cpu] [--out DIR] [--workers N]

What anyone with a GPU runs first (docs/gpu.md): each path is a real command (`imbadv.run`,
`imbadv.report`, `imbadv.status`, `imbadv.bench`) on synthetic data, run as a user would, its
output in DIR/<path>.log, its outcome one line `PASS|FAIL|SKIP path seconds what`, all of them
in DIR/gpu_check.json. Exit 1 when any path fails. Independent paths run at once (`--workers`); the
ones that read the first sweep's store wait for it. `--device cpu` runs the same paths on a CPU
(CI does, at this size), with the bf16 preset at 32-true and the compiled paths skipped (inductor
compiles for minutes on a CPU).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
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


def sweep(check: Check, name: str, group: str) -> str:
    check.job(name, [*TOY, *SGD, *GRID, f"trainer.group={group}"], multirun=True)
    models = records(check.out / f"{name}-store")
    grouped = sum(bool(r.get("grouped")) for r in models.values())
    return f"4 jobs, {len(models)} models ({grouped} grouped), trainer.group={group}"


def sweep_on_vs_off(check: Check) -> str:
    """trainer.group=on gives the models group=off gives: same keys, weights within rounding."""
    return same_models(check, STORES)


def same_models(check: Check, stores: tuple[str, str]) -> str:
    """The second store's grouped models are the first's: same keys, weights within rounding."""
    from safetensors.torch import load_file

    off, on = (records(check.out / store) for store in stores)
    if set(off) != set(on):
        raise CheckFailed(f"other store keys grouped: {sorted(set(off) ^ set(on))}")
    if not any(r.get("grouped") for r in on.values()):
        raise CheckFailed("no model was trained grouped with trainer.group=on")
    worst = (0.0, 0.0, 0.0)  # (bulk, largest, bound) of the model with the largest bulk
    for key, record in on.items():
        a, b = (load_file(check.out / s / "models" / f"{key}.safetensors") for s in stores)
        steps = record["epochs"] * -(-sum(record["train_counts"]) // 64)  # smoke: batch 64
        bound = 0.01 * steps * GRADIENT_RTOL[check.device] * 10 / (1 - 0.9)
        bulk, largest = weight_gap(a, b)
        if bulk > bound or largest > FLIP_FACTOR * bound:
            raise CheckFailed(
                f"grouped weights differ from alone: 99.9% within {bulk:.3g}, largest "
                f"{largest:.3g} (allowed {bound:.3g} and {FLIP_FACTOR * bound:.3g})"
            )
        worst = max(worst, (bulk, largest, bound))
    return f"{len(on)} models: same keys, 99.9% of weights within {worst[0]:.2g} (bound {worst[2]:.2g}), largest {worst[1]:.2g}"  # fmt: skip


# Rounding can flip a ReLU whose input is within rounding of 0: that unit's few weights then move
# by one sample's share of a step (measured: 4 of 63,234 weights by 1.4 bounds, threads=1 against
# threads=2 alone, the same as grouped against alone). A real divergence (a missed step, another
# batch) moves all weights by lr x a gradient: so the bound holds for 99.9% of the weights, and
# the few flipped ones may reach FLIP_FACTOR times it.
FLIP_FACTOR = 10.0


def weight_gap(a: dict, b: dict) -> tuple[float, float]:
    """The 99.9th percentile and the largest |a - b| over all weights of two state dicts."""
    import torch

    gap = torch.cat([(a[n].float() - b[n].float()).abs().flatten() for n in a])
    k = max(1, int(round(0.999 * gap.numel())))
    return float(gap.kthvalue(k).values), float(gap.max())


STORES = ("sweep-off-store", "sweep-on-store")


def grouped_at(check: Check) -> str:
    args = [*TOY, "class=0..1", "imbalance=under", "attack.sources=[same]"]
    check.job("grouped-at", [*args, "adversarial=pgd_at", "adversarial.steps=2", "trainer.group=on"], True)  # fmt: skip
    models = records(check.out / "grouped-at-store")
    if not any(r.get("grouped") for r in models.values()):
        raise CheckFailed("pgd_at members were not trained grouped")
    return f"pgd_at, {len(models)} members trained as one group"


def compiled(check: Check) -> str:
    if check.device == "cpu":
        raise Skipped(
            "inductor compiles for minutes on a CPU; tests/training/test_compiled.py runs it"
        )
    check.job("compile", [*TOY, "class=0", "imbalance=balanced", "attack.sources=[same]", "trainer.compile=on"])  # fmt: skip
    (record,) = records(check.out / "compile-store").values()
    if not record.get("compiled"):
        raise CheckFailed(f"fell back to eager: {record.get('compile_fallback')}")
    return "trainer.compile=on: compiled"


def compiled_grouped(check: Check) -> str:
    """trainer.compile=on with trainer.group=on: the static-shape compiled step (captured on
    CUDA), its models the first sweep's within rounding."""
    if check.device == "cpu":
        raise Skipped("inductor on a CPU: tests/grouped/test_grouped_compiled.py runs it")
    args = [*TOY, *SGD, *GRID, "trainer.group=on", "trainer.compile=on"]
    check.job("compile-grouped", args, multirun=True)
    models = records(check.out / "compile-grouped-store").values()
    fallen = [r.get("compile_fallback") for r in models if r.get("grouped") and not r["compiled"]]
    if fallen:
        raise CheckFailed(f"grouped training fell back to eager: {fallen[0]}")
    return "compiled: " + same_models(check, ("sweep-off-store", "compile-grouped-store"))


def longtail(check: Check, preset: str) -> str:
    """A GPU or CPU long-tail preset for one epoch on a few synthetic images per class."""
    args = [f"experiment={preset}", "dataset=synthetic", "dataset.train_per_class=100"]
    args += ["dataset.test_per_class=20", "counts.majority=100", "imbalance.ratio=10", "class=0"]
    args += ["model.width=0.125", "trainer.max_epochs=1", "schedule.warmup_epochs=0"]
    args += ["schedule.milestones=[]"]  # the presets' steps lie past the one epoch
    args += ["attack.images=all", "attack.per_class=5", "logger=none"]
    skipped = ""
    if preset == "longtail":
        if check.device == "cpu":
            args.append("trainer.precision=32-true")  # bf16 is refused on a CPU without bf16
        if importlib.util.find_spec("pyautoattack") is None:
            args.append("attack.methods=" + PGD_ONLY)
            skipped = " (autoattack left out: pyautoattack not installed)"
    folder = check.job(preset, args)
    (done,) = results(folder)
    return f"{len(done['attacks'])} rows, {done['attacks'][0]['images']['n']} images{skipped}"


PGD = "{name:pgd,steps:20,alpha:0.00784313725490196}"
PGD_ONLY = f"[{PGD},{PGD[:-1]},loss:margin}},{PGD[:-1]},logit_scale:10.0}}]"


def matrix(check: Check, stack: str) -> str:
    """A transfer-matrix job on the first sweep's models (a copy of its store for `on`)."""
    name = f"matrix-stack-{stack}"
    store = check.out / f"{name}-store"
    shutil.copytree(check.out / "sweep-off-store" / "models", store / "models")
    args = [*TOY, *SGD, "attack=matrix", "class=0", "imbalance=under,over", "seed=0"]
    check.job(name, [*args, f"attack.stack={stack}"], multirun=True)
    crafted = (store / "craftings.jsonl").read_text().splitlines()
    stacked = sum('"stacked"' in line for line in crafted)
    if stack == "on" and not stacked:
        raise CheckFailed("attack.stack=on crafted no set stacked")
    return f"{len(crafted)} image sets crafted, {stacked} stacked"


def matrix_rows_agree(check: Check) -> str:
    rows = [[r for job in results(check.out / f"matrix-stack-{s}") for r in job["attacks"]] for s in ("on", "off")]  # fmt: skip
    worst = max(abs(a["adv_acc"] - b["adv_acc"]) * a["n"] for a, b in zip(*rows, strict=True))
    if worst > 1:
        raise CheckFailed(f"stacked and one-by-one rows differ by {worst:.0f} images")
    return f"{len(rows[0])} rows equal within {worst:.0f} image"


def checkpoint(check: Check) -> str:
    """The first sweep's under-0 model of seed 0 as `model=checkpoint`: the stored model's rows."""
    (stored,) = [r for r in results(check.out / "sweep-off") if r["meta"]["imbalance"] == "under" and r["meta"]["seed"] == 0]  # fmt: skip
    key = stored["models"]["target"]["key"]
    path = check.out / "sweep-off-store" / "models" / f"{key}.safetensors"
    args = [*TOY, *SGD, "class=0", "imbalance=under", "seed=0", "attack.sources=[same]"]
    args += ["model=checkpoint", "model.arch=vgg"]
    folder = check.job("checkpoint", [*args, "model.width=0.125", f"model.path={path}"])
    (found,) = results(folder)
    mine = {(r["source"], r["attack"]): r["adv_acc"] for r in found["attacks"]}
    theirs = {(r["source"], r["attack"]): r["adv_acc"] for r in stored["attacks"]}
    if mine != {k: v for k, v in theirs.items() if k in mine} or not mine:
        raise CheckFailed(f"rows differ from the stored model's: {mine} vs {theirs}")
    return f"{len(mine)} rows equal the stored model's"


def bench(check: Check) -> str:
    args = ["--device", check.device, "--width", "0.125", "--batch-size", "32", "--steps", "2"]
    args += ["--warmup", "1", "--repeats", "1", "--attack-images", "64", "--eval-images", "512"]
    args += ["--attack-steps", "3", "--group", "2", "--stack", "2", "--strict"]
    args += ["--json", str(check.out / "bench.json")]
    args += ["--compile"] if check.device == "cuda" else ["--threads", "1", "--no-processes"]
    left_out = ""
    if importlib.util.find_spec("torchattacks") is None:  # the attack rows' reference
        args += ["--attacks", "none"]
        left_out = " (attack rows left out: torchattacks not installed)"
    check.run("bench", "imbadv.bench", args)
    report = json.loads((check.out / "bench.json").read_text())
    rate = report.get("grouped_vs_sequence", 0)
    return f"every row, identical images; grouped {rate:.2f}x{left_out}"


def report(check: Check) -> str:
    check.run("report", "imbadv.report", [str(check.out / "sweep-off"), "--out", "report"])
    check.run("report", "imbadv.status", [str(check.out / "sweep-off")])
    return "report and status of the first sweep"


# name -> (what it checks, the paths it needs first, the check)
PATHS: dict[str, tuple[str, tuple[str, ...], Callable[[Check], str]]] = {
    "sweep-off": (
        "smoke sweep, launcher=gpus, group off",
        (),
        lambda c: sweep(c, "sweep-off", "off"),
    ),  # fmt: skip
    "sweep-on": ("smoke sweep, launcher=gpus, group on", (), lambda c: sweep(c, "sweep-on", "on")),
    "group-on-vs-off": ("grouped = alone", ("sweep-off", "sweep-on"), sweep_on_vs_off),
    "grouped-at": ("grouped adversarial training", (), grouped_at),
    "compile": ("trainer.compile=on", (), compiled),
    "compile-grouped": ("trainer.compile=on, grouped", ("sweep-off",), compiled_grouped),
    "longtail": ("experiment=longtail, 1 epoch", (), lambda c: longtail(c, "longtail")),
    "longtail_quick": ("experiment=longtail_quick", (), lambda c: longtail(c, "longtail_quick")),
    "matrix-stack-off": ("transfer matrix job", ("sweep-off",), lambda c: matrix(c, "off")),
    "matrix-stack-on": ("attack.stack=on", ("sweep-off",), lambda c: matrix(c, "on")),
    "stack-rows": (
        "stacked = one by one",
        ("matrix-stack-off", "matrix-stack-on"),
        matrix_rows_agree,
    ),  # fmt: skip
    "checkpoint": ("model=checkpoint of a stored model", ("sweep-off",), checkpoint),
    "report": ("imbadv.report, imbadv.status", ("sweep-off",), report),
    "bench": ("every bench row, --strict", (), bench),
}


def attempt(check: Check, name: str, failed: list[str]) -> dict:
    """One path (FAIL at once when a path it needs failed); its result row."""
    started = time.perf_counter()
    what, _, fn = PATHS[name]
    try:
        if failed:
            raise CheckFailed(f"needs {', '.join(failed)}, which failed")
        detail, status = fn(check), "PASS"
    except CheckFailed as err:
        detail, status = str(err), "FAIL"
    except Skipped as err:
        detail, status = str(err), "SKIP"
    except Exception as err:  # noqa: BLE001 - a broken path is a FAIL line, never a traceback
        detail, status = f"{type(err).__name__}: {err}"[:300], "FAIL"
    row = {"path": name, "status": status, "seconds": time.perf_counter() - started}
    row |= {"what": what, "detail": detail}
    print(f"{status} {name} {row['seconds']:.1f} {what}: {detail}", flush=True)
    return row


def needed(names: list[str]) -> list[str]:
    """`names` and every path they need, in PATHS order (an unknown name is kept, for the error)."""
    found, todo = set(), list(names)
    while todo:
        name = todo.pop()
        found.add(name)
        todo += [d for d in PATHS.get(name, ("", ()))[1] if d not in found]
    return [n for n in PATHS if n in found] + [n for n in names if n not in PATHS]


def run_all(check: Check, workers: int, names: list[str]) -> list[dict]:
    """The paths `names`, each once the paths it needs are done, at most `workers` commands at
    once; rows in PATHS order."""
    futures: dict[str, Future] = {}
    with ThreadPoolExecutor(workers) as gate, ThreadPoolExecutor(len(PATHS)) as waiting:

        def start(name: str) -> dict:
            done = [futures[d].result() for d in PATHS[name][1]]
            failed = [r["path"] for r in done if r["status"] == "FAIL"]
            return gate.submit(attempt, check, name, failed).result()

        for name in names:  # a path's needs come before it: their futures exist when it waits
            futures[name] = waiting.submit(start, name)
        return [futures[n].result() for n in names]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m imbadv.bench.gpucheck", description=__doc__)
    p.add_argument("--device", choices=["cuda", "cpu"], default=None, help="default: cuda if seen")
    p.add_argument("--out", type=Path, default=Path("gpu-check"), help="folder (emptied first)")
    p.add_argument("--workers", type=int, default=None, help="commands at once (GPU 4, CPU 2)")
    p.add_argument("--timeout", type=float, default=300.0, help="seconds a command may take")
    p.add_argument("--only", default=None, help="comma-separated paths (and what they need)")
    args = p.parse_args(argv)
    wanted = needed(args.only.split(",")) if args.only else list(PATHS)
    if unknown := [n for n in wanted if n not in PATHS]:
        p.error(f"--only {','.join(unknown)}: not a path (paths: {', '.join(PATHS)})")
    device = args.device or ("cuda" if _cuda() else "cpu")
    shutil.rmtree(args.out, ignore_errors=True)
    args.out.mkdir(parents=True)
    check = Check(device, args.out.resolve(), timeout=args.timeout)
    started = time.perf_counter()
    rows = run_all(check, args.workers or (4 if device == "cuda" else 2), wanted)
    summary = {"device": device, "seconds": time.perf_counter() - started, "paths": rows}
    summary["passed"] = all(r["status"] != "FAIL" for r in rows)
    (args.out / "gpu_check.json").write_text(json.dumps(summary, indent=1) + "\n")
    counts = {k: sum(r["status"] == k for r in rows) for k in ("PASS", "FAIL", "SKIP")}
    print(f"gpu-check on {device}: {counts['PASS']} passed, {counts['FAIL']} failed, "
          f"{counts['SKIP']} skipped in {summary['seconds']:.0f} s ({args.out / 'gpu_check.json'})")  # fmt: skip
    return 0 if summary["passed"] else 1


def _cuda() -> bool:
    import torch

    return torch.cuda.is_available()


if __name__ == "__main__":
    sys.exit(main())
