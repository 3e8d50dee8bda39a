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
import shutil
import sys
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from imbadv.bench.checks import SGD, TOY, Check, CheckFailed, Skipped, records, results
from imbadv.bench.gpugroup import (  # re-exported: the check's API
    FLIP_FACTOR,
    compiled,
    compiled_grouped,
    compiled_grouped_at,
    grouped_at,
    sweep,
    sweep_on_vs_off,
    weight_gap,
)

__all__ = ["FLIP_FACTOR", "Check", "CheckFailed", "Skipped", "main", "records", "results"]
__all__ += ["weight_gap"]


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


def measured_formats(check: Check) -> str:
    """bench --formats on this device for the smoke model, then a smoke job with `auto` formats
    on that store: it trains in the measured format and its record says so."""
    store = check.out / "formats-store"
    args = ["--device", check.device, "--width", "0.125", "--batch-size", "64", "--steps", "4"]
    args += ["--warmup", "2", "--repeats", "1", "--group", "0", "--stack", "0", "--attacks", "none"]
    check.run("formats", "imbadv.bench", [*args, "--formats", "--store", str(store)])
    table = json.loads((store / "formats.json").read_text())
    (entry,) = (e for device in table.values() for e in device.values())
    check.job("formats", [*TOY, "attack.methods=[fgsm]"])
    (record,) = records(store).values()
    got = record["formats"]
    if (got["precision"], got["channels_last"]) != (entry["precision"], entry["channels_last"]):
        raise CheckFailed(f"the job trained in {got}, the bench chose {entry}")
    if not got["chosen"].startswith("measured"):
        raise CheckFailed(f"the job's format was not the measured one: {got['chosen']}")
    sides = ", ".join(f"{k} {v:.0f}" for k, v in entry["images_per_s"].items())
    return f"chose {entry['precision']} channels_last {entry['channels_last']} ({sides} images/s)"


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
    "compile-grouped-at": ("trainer.compile=on, grouped TRADES", (), compiled_grouped_at),
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
    "formats": ("bench --formats, then auto trains in it", (), measured_formats),
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
