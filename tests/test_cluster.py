"""SLURM and Ray run the smoke sweep for real; `cluster` tests need `scripts/cluster.sh start` first.

`make test-cluster` installs, starts the cluster, runs them and stops it. The unmarked tests check
the presets and the up-front refusal without any cluster and run with the rest of the suite.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import ROOT, TINY, run_cli
from hydra import compose, initialize_config_dir

import imbadv.run  # noqa: F401  (registers the launcher resolvers)
from imbadv.store import Store

# The commands README.md and docs/cluster.md show, with the tests' tiny data.
SLURM = ["launcher=slurm_cpu", "cluster.cpus=1", "cluster.mem_gb=2"]
RAY = ["launcher=ray", "hydra.launcher.ray.init.address=auto", "logger=none"]
GRID = ["class=0..1", "imbalance=balanced,under,over"]
cluster = pytest.mark.cluster


def results(sweep: Path) -> dict[str, list]:
    runs = [json.loads(p.read_text()) for p in sweep.rglob("results.json")]
    return {r["key"]: r["attacks"] for r in runs}


def row_identities(sweep: Path) -> dict[str, list[tuple[str, str]]]:
    """Per job, which model was tested on which image set: what a sweep measures, not the values
    (a cluster job runs on 1 thread, the local sweep on torch's default)."""
    return {
        key: sorted((row["model_key"], row["images_key"]) for row in rows)
        for key, rows in results(sweep).items()
    }


def trained(store: Path) -> list[str]:
    return [t["key"] for t in Store(store).work_log()]


def sweep_args(engine: list[str], grid: list[str], base: Path, name: str) -> list[str]:
    return [
        "-m",
        *engine,
        *TINY,
        *grid,
        f"paths.store_dir={base}/store",
        f"hydra.sweep.dir={base}/{name}",
    ]


def slurm(*args: str) -> str:
    """A SLURM client command's output; fails the test (never skips) when SLURM is not up."""
    if shutil.which(args[0]) is None:
        pytest.fail(f"{args[0]} not found: run `scripts/cluster.sh install` and `start`")
    proc = subprocess.run(args, capture_output=True, text=True, timeout=30)
    assert proc.returncode == 0, f"{' '.join(args)}: {proc.stderr} (scripts/cluster.sh start?)"
    return proc.stdout


# The test cluster restarts its job ids from 1 (scripts/cluster.sh clears the controller's state),
# so sacct is asked only about jobs since this session began.
SINCE = time.strftime("%Y-%m-%dT%H:%M:%S")


def array_states(sweep: Path) -> dict[str, str]:
    """sacct's state of every task the sweep submitted, by `<array>_<index>`."""
    arrays = {p.name for p in (sweep / ".submitit").iterdir() if p.name.isdigit()}
    jobs = [f"-j{a}" for a in arrays]
    out = slurm("sacct", "-X", "-n", "-P", "-S", SINCE, "-o", "JobID,State", *jobs)
    return dict(line.split("|")[:2] for line in out.splitlines())


def submitted_count() -> int:
    return len(slurm("sacct", "-X", "-n", "-a", "-S", SINCE, "-o", "JobIDRaw").split())


@pytest.fixture(scope="module")
def slurm_sweep(tmp_path_factory) -> dict:
    """The uninterrupted smoke sweep through SLURM: the reference for the cancel-and-resume test."""
    slurm("sinfo")
    base = tmp_path_factory.mktemp("slurm")
    start = time.time()
    proc = run_cli(sweep_args(SLURM, GRID, base, "sweep"), cwd=base, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"base": base, "proc": proc, "seconds": time.time() - start}


@cluster
def test_slurm_smoke_sweep_every_result_each_model_once(slurm_sweep, smoke_sweep):
    base = slurm_sweep["base"]
    assert len(results(base / "sweep")) == 6
    # The same rows as the same sweep run locally (conftest's smoke_sweep), however many there are
    assert row_identities(base / "sweep") == row_identities(smoke_sweep["sweep"])
    keys = trained(base / "store")
    assert len(keys) == len(set(keys)) == 5  # 1 balanced + 2 under + 2 over
    deadline = time.time() + 60  # a task's result is on disk a moment before SLURM ends it
    while "RUNNING" in (states := array_states(base / "sweep")).values() and time.time() < deadline:
        time.sleep(1)
    assert len(states) == 6 and set(states.values()) == {"COMPLETED"}, states
    # Accounting works on this cluster, so submitit never falls back to guessing job states.
    assert "Bypassing sacct error" not in slurm_sweep["proc"].stderr
    print(f"SLURM smoke sweep: {slurm_sweep['seconds']:.0f} s")


def tasks(state: str) -> list[str]:
    """SLURM ids (`<array>_<index>`, arrays expanded) of this machine's tasks in `state` (R, PD)."""
    return slurm("squeue", "-h", "-r", "-t", state, "-o", "%i").split()


def model_key(store: Path, profile: str, target: int) -> str:
    """The store key of the (profile, class) model in a store that holds it."""
    for path in (store / "models").glob("*.json"):
        spec = json.loads(path.read_text())["spec"]
        if spec["imbalance"]["name"] == profile and spec["class"] == target:
            return path.stem
    raise AssertionError(f"no {profile}-{target} model in {store}")


@cluster
def test_slurm_cancelled_job_then_rerun_matches_uninterrupted(slurm_sweep, tmp_path):
    # Jobs run one at a time in order (cluster.parallel=1): #0 under-0, #1 over-0, #2 under-1,
    # #3 over-1. The test holds the store's lock on the under-1 model, so job #2 waits on it,
    # running, until it is cancelled: a cancellation that surely comes before the job's result.
    # (A pending array task is not cancelled: SLURM 22.05 keeps no sacct record of it, so
    # submitit would wait for it forever; docs/cluster.md.)
    grid = ["class=0..1", "imbalance=under,over", "cluster.parallel=1"]
    env = {**os.environ, "WANDB_MODE": "disabled"}
    held = Store(tmp_path / "store").lock(model_key(slurm_sweep["base"] / "store", "under", 1))
    held.acquire()
    try:
        first = subprocess.Popen(
            [sys.executable, "-m", "imbadv.run", *sweep_args(SLURM, grid, tmp_path, "a")],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        victim = None
        deadline = time.time() + 600
        while victim is None and time.time() < deadline and first.poll() is None:
            victim = next((t for t in tasks("R") if t.endswith("_2")), None)
            time.sleep(0.5)
        assert victim is not None, "job #2 never ran"
        assert len(trained(tmp_path / "store")) == 3  # mid-sweep: balanced, under-0, over-0
        slurm("scancel", victim)
        while victim in tasks("R") and time.time() < deadline:
            time.sleep(0.5)
    finally:
        held.release()
    _, err = first.communicate(timeout=600)
    assert first.returncode == 1, err[-2000:]  # reported after job #3 ended
    lines = [line for line in err.splitlines() if line.startswith("imbadv: error: job #")]
    assert len(lines) == 1 and f"(job {victim})" in lines[0] and "CANCELLED" in lines[0], err
    assert lines[0].startswith("imbadv: error: job #2 (class=1 imbalance=under) ended CANCELLED")
    assert "1 of 4 jobs unfinished" in err and "run the same command again" in err
    assert array_states(tmp_path / "a")[victim].startswith("CANCELLED")

    rerun = run_cli(sweep_args(SLURM, grid, tmp_path, "b"), cwd=tmp_path, timeout=900)
    assert rerun.returncode == 0, rerun.stderr[-3000:]
    keys = trained(tmp_path / "store")
    assert len(keys) == len(set(keys)) == 5  # nothing trained twice, before or after the cancel
    resumed = results(tmp_path / "b")
    reference = results(slurm_sweep["base"] / "sweep")
    assert len(resumed) == 4
    assert resumed == {key: reference[key] for key in resumed}  # identical rows


@cluster
def test_slurm_bad_value_submits_nothing(tmp_path):
    before = submitted_count()
    for bad, key in (
        ("imbalance=balanced,sideways", "imbalance"),
        ("cluster.cpus=0", "cluster.cpus"),
    ):
        args = [*sweep_args(SLURM, ["class=0..1", "imbalance=balanced,under"], tmp_path, "s"), bad]
        proc = run_cli(args, cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-2000:]
        assert proc.stderr.strip().count("\n") == 0 and key in proc.stderr
    assert submitted_count() == before
    assert not (tmp_path / "s").exists()


@cluster
def test_ray_smoke_sweep_every_result_each_model_once(tmp_path, smoke_sweep):
    start = time.time()
    proc = run_cli(sweep_args(RAY, GRID, tmp_path, "sweep"), cwd=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "Connected to Ray cluster" in proc.stderr  # the running head, not a private Ray
    assert len(results(tmp_path / "sweep")) == 6
    assert row_identities(tmp_path / "sweep") == row_identities(smoke_sweep["sweep"])
    keys = trained(tmp_path / "store")
    assert len(keys) == len(set(keys)) == 5
    print(f"Ray smoke sweep: {time.time() - start:.0f} s")


def compose_launcher(overrides: list[str]):
    with initialize_config_dir(str(ROOT / "conf"), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=True)


def test_slurm_presets_put_cluster_keys_into_the_launcher():
    gpu = compose_launcher(["launcher=slurm", "cluster.account=lab", "cluster.qos=high"]).hydra
    launcher = gpu.launcher
    assert (launcher.gpus_per_node, launcher.cpus_per_task, launcher.mem_gb) == (1, 4, 16)
    assert (launcher.account, launcher.qos, launcher.partition) == ("lab", "high", None)
    cfg = compose_launcher(["launcher=slurm_cpu", "cluster.cpus=3", "cluster.time_min=30"])
    launcher = cfg.hydra.launcher
    assert (launcher.gpus_per_node, launcher.cpus_per_task, launcher.timeout_min) == (0, 3, 30)
    assert cfg.threads == 3  # torch threads follow the CPUs SLURM grants


@pytest.mark.parametrize(
    ("bad", "key"),
    [
        ("cluster.gpus=-1", "cluster.gpus"),
        ("cluster.mem_gb=lots", "cluster.mem_gb"),
        ("cluster.partition='a b'", "cluster.partition"),
        ("+cluster.nodes=2", "cluster.nodes"),
    ],
)
def test_bad_cluster_value_is_refused_before_submission(bad, key, tmp_path):
    proc = run_cli(
        ["-m", "launcher=slurm_cpu", *TINY, "class=0..1", bad, f"hydra.sweep.dir={tmp_path}/s"],
        cwd=tmp_path,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.startswith(f"imbadv: error: {key}=") and proc.stderr.count("\n") == 1
    assert not (tmp_path / "s").exists()


class FakeJob:
    """A submitit job as the launcher sees it: a result, or none and a final SLURM state."""

    def __init__(self, job_id: str, state: str, result: object = None) -> None:
        self.job_id, self.state, self.result = job_id, state, result

    def results(self) -> list:
        from submitit.core.utils import UncompletedJobError

        if self.state != "COMPLETED":
            raise UncompletedJobError(f"job {self.job_id} has not produced any output")
        return [self.result]


def test_unfinished_jobs_are_named_after_every_job_ended(capsys):
    from hydra_plugins.imbadv_slurm.launcher import _Watched, report_unfinished

    jobs = [
        FakeJob("7_0", "COMPLETED", "r0"),
        FakeJob("7_1", "CANCELLED"),
        FakeJob("7_2", "TIMEOUT"),
    ]
    unfinished: list = []
    returns = [_Watched(job, unfinished).results()[0] for job in jobs]  # none raises
    assert returns == ["r0", None, None] and unfinished == jobs[1:]
    overrides = [["a=1", "class=0"], ["a=1", "class=1", "imbalance=over"], ["a=1", "class=2"]]
    with pytest.raises(SystemExit) as exit_:
        report_unfinished(unfinished, jobs, overrides, first=0)
    assert exit_.value.code == 1
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == (
        "imbadv: error: job #1 (class=1 imbalance=over) ended CANCELLED in SLURM (job 7_1) "
        "without a result"
    )
    assert "job #2 (class=2) ended TIMEOUT" in lines[1]
    assert lines[2].startswith("imbadv: error: 2 of 3 jobs unfinished (1 finished")
    assert "run the same command again" in lines[2]


def test_slurm_preset_uses_the_launcher_that_names_unfinished_jobs():
    from hydra.core.plugins import Plugins
    from hydra.plugins.launcher import Launcher

    target = compose_launcher(["launcher=slurm_cpu"]).hydra.launcher._target_
    assert target == "hydra_plugins.imbadv_slurm.launcher.SweepSlurmLauncher"
    found = {f"{c.__module__}.{c.__name__}" for c in Plugins.instance().discover(Launcher)}
    assert target in found  # Hydra's plugin scan sees it (a plugin elsewhere is refused)
