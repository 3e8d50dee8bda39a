"""The sweep: rows and trainings counted, nothing trained twice, resume after a kill, launcher presets."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, run_cli
from hydra import compose, initialize_config_dir

import imbadv.run  # noqa: F401  (registers the launcher resolvers)
from imbadv.store import Store


def results(sweep: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted(sweep.rglob("results.json"))]


def trained_keys(store: Path) -> list[str]:
    return [t["key"] for t in Store(store).work_log()]


def test_sweep_rows_and_trainings(smoke_sweep):
    runs = results(smoke_sweep["sweep"])
    assert len(runs) == 6  # classes 0, 1 x balanced, under, over
    rows = [r for run in runs for r in run["attacks"]]
    # per class and attack: balanced 1 row, under 2 (same, balanced gradient), over 2, and
    # under and over each the balanced model's own row again (from the same images)
    assert len(rows) == 2 * 5 * 2 + 2 * 2 * 2
    again = [r for r in rows if r.get("role") == "balanced"]
    own = {
        (r["class"], r["attack"]): r
        for r in rows
        if r["imbalance"] == "balanced" and r["role"] == "target"
    }
    assert len(again) == 8 and all(
        r["adv_row"] == own[(r["class"], r["attack"])]["adv_row"] for r in again
    )
    keys = trained_keys(smoke_sweep["store"])
    assert len(keys) == len(set(keys)) == 5  # 1 balanced + 2 under + 2 over
    folders = {p.parent.name for p in smoke_sweep["sweep"].rglob("results.json")}
    assert any(f.startswith("class=0,") and "imbalance=under" in f for f in folders)


@pytest.mark.slow
def test_second_sweep_trains_nothing_and_reuses_results(smoke_sweep, tmp_path):
    before = trained_keys(smoke_sweep["store"])
    proc = run_cli(
        [
            "-m",
            *TINY,
            "class=0..1",
            "imbalance=balanced,under,over",
            f"paths.store_dir={smoke_sweep['store']}",
            f"hydra.sweep.dir={tmp_path}/again",
        ],
        cwd=smoke_sweep["base"],
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert trained_keys(smoke_sweep["store"]) == before
    again = {r["key"]: r["attacks"] for r in results(tmp_path / "again")}
    first = {r["key"]: r["attacks"] for r in results(smoke_sweep["sweep"])}
    assert again == first
    assert all(not any(r["meta"]["trained_here"].values()) for r in results(tmp_path / "again"))
    # the sweep split: the first sweep trained and attacked; the second only read the store
    from imbadv.bench import sweep_totals

    first, second = sweep_totals(smoke_sweep["sweep"]), sweep_totals(tmp_path / "again")
    assert first["attacks_seconds"] > 0 and first["models_seconds"] >= first["train_seconds"] > 0
    assert first["results_reused"] < first["jobs"] and 0 < first["concurrency"] <= 1.05
    assert second["trainings"] == 0 and second["attacks_seconds"] == 0.0
    assert second["results_reused"] == second["jobs"] == 6
    parts = ("data", "device_wait", "models", "clean_eval", "attacks", "overhead")
    assert sum(first[f"{p}_seconds"] for p in parts) == pytest.approx(
        first["wall_seconds"], abs=1e-3
    )


@pytest.mark.slow
def test_killed_sweep_resumes_without_training_twice(smoke_sweep, tmp_path):
    store = tmp_path / "store"
    args = ["-m", *TINY, "class=0..1", "imbalance=under,over", f"paths.store_dir={store}"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "imbadv.run", *args, f"hydra.sweep.dir={tmp_path}/a"],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.time() + 240
    while len(trained_keys(store)) < 2 and time.time() < deadline and proc.poll() is None:
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # the whole sweep dies mid-way, as on a lost node
    proc.wait()
    done_before = len(trained_keys(store))
    assert 2 <= done_before < 5
    rerun = run_cli([*args, f"hydra.sweep.dir={tmp_path}/b"], cwd=tmp_path)
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    keys = trained_keys(store)
    assert len(keys) == len(set(keys)) == 5  # 1 balanced + 2 under + 2 over, none twice
    assert len(results(tmp_path / "b")) == 4
    reference = {r["key"]: r["attacks"] for r in results(smoke_sweep["sweep"])}
    for r in results(tmp_path / "b"):  # identical to the uninterrupted sweep's numbers
        assert r["attacks"] == reference[r["key"]]
    assert not list((store / "models").glob(".*.tmp"))


@pytest.mark.parametrize(
    ("launcher", "target"),
    [
        ("local", "BasicLauncher"),
        ("gpus", "JoblibLauncher"),
        ("slurm", "SlurmLauncher"),
    ],
)
def test_launcher_presets_compose(launcher, target):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        cfg = compose("config", overrides=[f"launcher={launcher}"], return_hydra_config=True)
    assert cfg.hydra.launcher._target_.endswith(target)
    if launcher == "gpus":
        assert cfg.hydra.launcher.n_jobs == (os.cpu_count() or 1)  # no GPU here: one job per core
