"""`python -m imbadv.status`: counts on a finished, a running, a killed and a failed sweep; no lock taken."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

from conftest import TINY, run_cli
from filelock import FileLock

from imbadv.status import sweep as status


def status_cli(args: list[str], cwd: Path, timeout: int = 60) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imbadv.status", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_finished_sweep_counts_and_newest_is_the_default(smoke_sweep):
    st = status.collect(smoke_sweep["sweep"])
    assert st.planned == 6 and st.count("done") == 6 and st.pending == 0
    assert st.count("failed") == st.count("running") == 0
    assert (
        len(st.trained) == 5 and not st.training and not st.locks
    )  # 1 balanced + 2 under + 2 over
    assert st.store == smoke_sweep["store"] and status.state_word(st) == "finished"
    proc = status_cli([], cwd=smoke_sweep["base"])  # default: the newest sweep under multirun/
    assert proc.returncode == 0, proc.stderr
    assert "6 planned, 6 done, 0 failed, 0 running, 0 pending" in proc.stdout
    assert "5 trained in this sweep" in proc.stdout and "left: nothing left" in proc.stdout


def test_no_sweep_is_one_line_and_exit_2(tmp_path):
    proc = status_cli([], cwd=tmp_path)
    assert proc.returncode == 2 and "no sweep folder found" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1


def wait_for(check, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.time() + timeout
    while not check():
        assert proc.poll() is None and time.time() < deadline, "the sweep ended too early"
        time.sleep(0.02)


def markers(store: Path) -> list[dict]:
    found = [status.read(p) for p in (store / "locks").glob(f"*{status.MARKER_SUFFIX}")]
    return [m for m in found if m]


def test_running_then_killed_sweep(smoke_sweep, tmp_path):
    # Class 0's models and result are in the copied store; classes 2 and 3 need a training each.
    store, sweep = tmp_path / "store", tmp_path / "sweep"
    shutil.copytree(smoke_sweep["store"], store)
    before = len(status.read_log(store))
    args = [
        "-m",
        *TINY,
        "class=0,2,3",
        "imbalance=under",
        f"paths.store_dir={store}",
        f"hydra.sweep.dir={sweep}",
    ]
    proc = subprocess.Popen(
        [sys.executable, "-m", "imbadv.run", *args],
        cwd=tmp_path,
        env={**os.environ, "WANDB_MODE": "disabled"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        wait_for(lambda: any(m.get("epoch", 0) >= 1 for m in markers(store)), proc)
        os.killpg(proc.pid, signal.SIGSTOP)  # frozen mid-training: the status cannot race it
        st = status.collect(sweep)
        assert (st.count("done"), st.count("running"), st.pending) == (1, 1, 1)
        (training,) = st.training
        assert training["label"] == "target under class 2 (class2)" and training["pid"] == proc.pid
        assert st.locks == {f"{training['key']}.lock": proc.pid}  # held by the frozen job
        assert "running" in status.state_word(st)
        os.killpg(proc.pid, signal.SIGCONT)
        wait_for(lambda: len(status.read_log(store)) > before, proc)
        os.killpg(proc.pid, signal.SIGKILL)  # the first training is stored; the job dies after it
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    st = status.collect(sweep)
    assert (st.planned, st.count("done"), st.count("failed"), st.count("running")) == (3, 1, 0, 0)
    assert st.pending == 2 and st.count("interrupted") == 1  # class 2 killed, class 3 never started
    assert len(st.trained) == 1 and not st.training and not st.locks
    assert st.trained[0]["key"] == training["key"]
    assert status.state_word(st).startswith("stopped")
    text = status.format_status(st)
    assert "2 pending (1 interrupted, 1 not started)" in text and "class=2" in text


def test_failed_job_is_listed_with_its_error(smoke_sweep, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(smoke_sweep["store"], store)  # lr 2e-3 (the preset's): nothing to train
    proc = run_cli(
        [
            "-m",
            *TINY,
            "class=0",
            "imbalance=under",
            "optimizer.lr=2e-3,1e6",
            f"paths.store_dir={store}",
            f"hydra.sweep.dir={tmp_path / 'sweep'}",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode != 0  # Hydra runs every job, then reports the failed one
    st = status.collect(tmp_path / "sweep")
    assert (st.count("done"), st.count("failed"), st.pending) == (1, 1, 0)
    (failed,) = [j for j in st.jobs if j.state == "failed"]
    assert "optimizer.lr=1000000.0" in failed.name and failed.error.startswith("TrainingError: ")
    assert "diverged" in status.format_status(st)


def test_status_does_not_wait_for_a_held_store_lock(smoke_sweep):
    key = status.read_log(smoke_sweep["store"])[0]["key"]
    lock = FileLock(smoke_sweep["store"] / "locks" / f"{key}.lock")
    with lock.acquire(timeout=5):
        started = time.monotonic()
        proc = status_cli([str(smoke_sweep["sweep"])], cwd=smoke_sweep["base"], timeout=60)
        assert proc.returncode == 0, proc.stderr
        assert time.monotonic() - started < 30
        assert "locks held now: 1 model" in proc.stdout
        assert status.held_locks(smoke_sweep["store"] / "locks") == {f"{key}.lock": os.getpid()}
        assert lock.is_locked


def test_held_locks_and_liveness(tmp_path):
    (tmp_path / "a.lock").touch()
    (tmp_path / "b.lock").touch()
    with open(tmp_path / "a.lock") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        assert status.held_locks(tmp_path) == {"a.lock": os.getpid()}
    assert status.held_locks(tmp_path) == {}
    me = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "proc_start": status.proc_start(os.getpid()),
    }
    path = tmp_path / "job.json"
    path.write_text(json.dumps(me))
    assert status.alive(me, path)
    assert not status.alive(
        {**me, "proc_start": "1"}, path
    )  # the pid was reused by another process
    dead = subprocess.run(
        [sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True
    ).stdout
    assert not status.alive({**me, "pid": int(dead)}, path)
    elsewhere = {**me, "host": "another-host"}
    assert status.alive(elsewhere, path)  # fresh heartbeat
    old = time.time() - status.STALE_S - 1
    os.utime(path, (old, old))
    assert not status.alive(elsewhere, path)


def test_status_needs_no_torch():
    code = "import sys, imbadv.status.sweep; assert 'torch' not in sys.modules and 'lightning' not in sys.modules"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
