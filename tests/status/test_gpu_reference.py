"""scripts/gpu_reference.sh on CPU at smoke size: chunks archived, the page's GPU sections written,
a second call redoes nothing, a lease too short starts nothing, and a chunk the budget cuts is
archived as partial and finished by the next call on a bare machine."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY

from imbadv.report.archive import read_archive
from imbadv.status.chunks import chunk_plan, product_blocks

ROOT = Path(__file__).resolve().parents[2]
SMALL = " ".join(TINY)  # the chunks' bookkeeping is under test, not what the models learn


def gpu_reference(tmp: Path, budget: int = 900, **extra: str) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PY": sys.executable,
        "BUDGET": str(budget),
        "DEST": str(tmp / "results"),
        "PAGE": str(tmp / "results.md"),
        "WORK": str(tmp / "work"),
        "PAPER": f"{SMALL}",
        "PAPER_GRID": "class=0 imbalance=under",
        "PAPER_SEEDS": "0",
        "PAPER_MIN": "1",
        "LONGTAIL": f"{SMALL} imbalance=exp attack.methods=[pgd]",
        "LONGTAIL_GRID": "class=0",
        "LONGTAIL_SEEDS": "0 1",
        "LONGTAIL_MIN": "1",
        "LAUNCH": "launcher=local",
        **extra,
    }
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_reference.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def trainings(tmp: Path) -> int:
    log = tmp / "work" / "store" / "trainings.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


@pytest.mark.slow
def test_chunks_are_archived_sections_written_and_a_rerun_redoes_nothing(tmp_path):
    first = gpu_reference(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    archives = sorted(p.name for p in (tmp_path / "results").glob("*.tar.gz"))
    assert archives == [
        "gpu-longtail-seed0.tar.gz",
        "gpu-longtail-seed1.tar.gz",
        "gpu-paper-seed0.tar.gz",
    ]
    page = (tmp_path / "results.md").read_text()
    assert "<!-- imbadv section gpu-paper -->" in page
    assert "<!-- imbadv section gpu-longtail -->" in page
    assert "gpu-longtail-seed1.tar.gz" in page  # the section reads every seed's archive
    tail = first.stdout.strip().splitlines()
    assert any(line.startswith("  paper: 1 seed(s) archived") for line in tail)
    assert any(line.startswith("  longtail: 2 seed(s) archived") for line in tail)
    trained = trainings(tmp_path)
    assert trained >= 3

    again = gpu_reference(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done before") == 3
    assert trainings(tmp_path) == trained  # nothing trained twice
    assert (tmp_path / "results.md").read_text() == page


def test_a_lease_too_short_starts_nothing(tmp_path):
    run = gpu_reference(tmp_path, budget=0)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "not started" in run.stdout
    assert not list((tmp_path / "results").glob("*.tar.gz"))
    assert not (tmp_path / "work" / "timings.tsv").exists()


def test_the_jobs_left_run_as_few_sweeps_named_as_hydra_names_them(tmp_path):
    args = ["experiment=smoke", "class=0..2", "imbalance=balanced,under", "logger=none"]
    full = chunk_plan(tmp_path, [*args, f"hydra.sweep.dir={tmp_path}"])
    assert (full.planned, full.done, len(full.todo)) == (6, 0, 6)
    assert full.blocks == [
        [*args[:1], "class=range(0,3)", *args[2:], f"hydra.sweep.dir={tmp_path}"]
    ]
    # balanced (every class), balanced control of under (the same model), under x 3 classes
    assert full.models == 4
    for done in (
        "class=0,experiment=smoke,imbalance=balanced",
        "class=1,experiment=smoke,imbalance=under",
    ):
        (tmp_path / done).mkdir()
        (tmp_path / done / "results.json").write_text("{}")
    left = chunk_plan(tmp_path, [*args, f"hydra.sweep.dir={tmp_path}"])
    assert (left.planned, left.done, len(left.todo)) == (6, 2, 4)
    ran = {
        tuple(sorted(job))
        for block in left.blocks
        for job in itertools.product(*[a.split("=", 1)[1].split(",") for a in block[1:3]])
    }
    assert ran == {("0", "under"), ("1", "balanced"), ("2", "balanced"), ("2", "under")}
    assert left.models == 3  # under 0 and 2, and balanced: class 1 and 2 and under's control


def test_product_blocks_cover_exactly_the_jobs_given():
    jobs = [(f"c={c}", f"i={i}", "s=0") for c in range(10) for i in "abcd"]
    for todo in (jobs[6:], jobs[::3], jobs[:1], []):
        blocks = product_blocks(todo)
        covered = [job for block in blocks for job in itertools.product(*block)]
        assert sorted(covered) == sorted(todo)
    assert len(product_blocks(jobs[6:])) == 2  # class 1's last two profiles, classes 2-9 whole


FREEZE = '''#!{python}
"""Stands in for python. Once an imbadv.run sweep has a finished job, the budget ends: SIGALRM
to `timeout` is its own timer running out, so it sends SIGINT to the sweep and exits 124."""
import os, signal, subprocess, sys, time
from pathlib import Path

args = sys.argv[1:]
if args[:2] != ["-m", "imbadv.run"]:
    os.execv(sys.executable, [sys.executable, *args])
sweep = Path(next(a.split("=", 1)[1] for a in args if a.startswith("hydra.sweep.dir=")))
had = set(sweep.rglob("results.json"))
proc = subprocess.Popen([sys.executable, *args])
signal.signal(signal.SIGINT, signal.SIG_IGN)  # timeout's SIGINT is for the sweep
parent = os.getppid()
assert Path(f"/proc/{{parent}}/comm").read_text().strip() == "timeout"
while proc.poll() is None and not set(sweep.rglob("results.json")) - had:
    time.sleep(0.1)
if proc.poll() is None:
    os.kill(parent, signal.SIGALRM)
sys.exit(proc.wait())
'''

# Two jobs, one model each (no balanced control), one epoch: the cheapest chunk to cut in two.
CUT = {
    "PAPER": "experiment=smoke trainer.max_epochs=1 attack.sources=[same]",
    "PAPER_GRID": "class=0,1 imbalance=under",
    "LONGTAIL_SEEDS": "",
    "RESERVE": "5",
}


def keys_trained(tmp: Path) -> list[str]:
    log = tmp / "work" / "store" / "trainings.jsonl"
    return [json.loads(line)["key"] for line in log.read_text().splitlines()]


@pytest.mark.slow
def test_a_chunk_the_budget_cuts_is_archived_partial_and_the_next_lease_finishes_it(tmp_path):
    freeze = tmp_path / "python"
    freeze.write_text(FREEZE.format(python=sys.executable))
    freeze.chmod(0o755)
    out, first = tmp_path / "out", tmp_path / "first"
    cut = gpu_reference(first, PY=str(freeze), OUT=str(out), PAPER_MODEL_S="1000", **CUT)
    assert cut.returncode == 0, cut.stderr[-3000:]
    assert "2 jobs (0 done before), 1 sweep(s), 2 models to train, estimate 2000 s" in cut.stdout
    assert "longer, started anyway" in cut.stdout
    partial = first / "results" / "gpu-paper-seed0.partial.tar.gz"
    assert sorted((first / "results").glob("*.tar.gz")) == [partial]
    manifest, results = read_archive(partial)
    assert manifest["partial"] and (manifest["planned"], manifest["jobs"]) == (2, 1)
    (done,) = results
    assert "class=0," in done and manifest["pending"] == [done.replace("class=0,", "class=1,")]
    assert "  paper: 0 seed(s) archived" in cut.stdout
    assert "partial, not in the page" in cut.stdout
    assert not (first / "results.md").exists()  # a partial archive is no seed of the page

    # the next lease, on a bare machine: the checkout plus what came back through $OUT
    second = tmp_path / "second"
    (second / "work").mkdir(parents=True)
    shutil.copytree(Path(f"{out}{first}") / "results", second / "results")
    shutil.copy(out / "timings.tsv", second / "work")
    rerun = gpu_reference(second, **CUT)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    assert "2 jobs (1 done before, restored from gpu-paper-seed0.partial.tar.gz)" in rerun.stdout
    assert "1 models to train" in rerun.stdout and "from 1 earlier paper chunk(s)" in rerun.stdout
    # only the missing job's model trained: not the finished job's
    assert keys_trained(first)[0] == results[done]["models"]["target"]["key"]
    assert len(keys_trained(second)) == 1
    assert keys_trained(second) != keys_trained(first)
    complete = second / "results" / "gpu-paper-seed0.tar.gz"
    assert sorted((second / "results").glob("*.tar.gz")) == [complete]  # the partial replaced
    whole, _ = read_archive(complete)
    assert not whole["partial"] and (whole["jobs"], whole["pending"]) == (2, [])
    member = f"jobs/{done}/results.json"
    assert whole["sha256"][member] == manifest["sha256"][member]  # the first lease's bytes
    assert whole["command"] == manifest["command"]
    assert "<!-- imbadv section gpu-paper -->" in (second / "results.md").read_text()
