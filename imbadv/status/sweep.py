"""Status stage: `python -m imbadv.status [SWEEP]`: how far a running, finished or killed sweep is.

Torch-free and read-only: it never takes a lock. Jobs leave `job.json` (pid, host, heartbeat)
in their folder; a model being trained leaves `<key>.training.json` next to its store lock.
Which lock files are held right now comes from the kernel's table, /proc/locks.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from imbadv.results import describe, never_learned

JOB_FILE = "job.json"  # written by the job at start, `ended` added at its end (imbadv.progress)
MARKER_SUFFIX = ".training.json"  # in the store's locks/ folder while a model trains
HEARTBEAT_S = 30.0  # how often a live job touches its files
STALE_S = 120.0  # a job on another host with no heartbeat for this long is taken for dead
STARTING_S = 120.0  # a fresh job folder without job.json yet: the job is still importing


def proc_start(pid: int) -> str | None:
    """The process's start time in clock ticks (tells a live pid from a reused one), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return stat.rsplit(")", 1)[1].split()[19]


def pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def alive(record: dict[str, Any], path: Path, now: float | None = None) -> bool:
    """Whether the process that wrote `record` (into `path`) still runs.

    Same host: its pid exists and started when the record says. Another host: the file's
    heartbeat (mtime) is younger than STALE_S.
    """
    if record.get("host") != socket.gethostname():
        try:
            return (now or time.time()) - path.stat().st_mtime < STALE_S
        except OSError:
            return False
    pid = int(record.get("pid", -1))
    if pid <= 0 or not pid_alive(pid):
        return False
    started = record.get("proc_start")
    return started is None or proc_start(pid) in (None, started)


def read(path: Path) -> dict[str, Any] | None:
    """A JSON file, or None when it is missing or half-written."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def held_locks(lock_dir: Path) -> dict[str, int]:
    """Lock files under `lock_dir` that some process holds right now: name -> holder's pid.

    Reads the kernel's lock table (never takes a lock); empty where /proc/locks does not exist.
    On NFS only this client's locks are listed.
    """
    try:
        table = Path("/proc/locks").read_text().splitlines()
    except OSError:
        return {}
    holders: dict[tuple[int, int, int], int] = {}
    for line in table:
        parts = line.replace("->", " ").split()
        if len(parts) < 6 or parts[1] not in ("FLOCK", "POSIX", "OFDLCK"):
            continue
        try:
            major, minor, inode = parts[5].split(":")
            holders[(int(major, 16), int(minor, 16), int(inode))] = int(parts[4])
        except ValueError:
            continue
    out = {}
    for lock in sorted(lock_dir.glob("*.lock")) if lock_dir.is_dir() else []:
        try:
            st = lock.stat()
        except OSError:
            continue
        pid = holders.get((os.major(st.st_dev), os.minor(st.st_dev), st.st_ino))
        if pid is not None:
            out[lock.name] = pid
    return out


def planned_jobs(sweep_dir: Path) -> int | None:
    """How many jobs the sweep's command line (and `hydra.sweeper.params`) describes."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(sweep_dir / "multirun.yaml")
        params = cfg.hydra.sweeper.get("params")
        params = OmegaConf.to_container(params) if params else {}
        lines = [f"{k}={v}" for k, v in params.items()] + list(cfg.hydra.overrides.task)
        overrides = OverridesParser.create().parse_overrides(lines)
        return sum(len(batch) for batch in BasicSweeper.split_arguments(overrides, None))
    except Exception:  # an unusual sweeper or a damaged file: counts come from folders only
        return None


@dataclass
class Job:
    """One job folder and what it is doing: done, failed, running or interrupted."""

    name: str
    state: str
    error: str = ""
    last_line: str = ""
    record: dict[str, Any] = field(default_factory=dict)


def job_state(folder: Path, now: float) -> Job:
    """The state of one started job, from the files it leaves."""
    name = folder.name
    if (folder / "results.json").exists():
        return Job(name, "done")
    record = read(folder / JOB_FILE) or {}
    if record and "ended" not in record and alive(record, folder / JOB_FILE, now):
        return Job(name, "running", last_line=last_log_line(folder), record=record)
    failed = read(folder / "failed.json")
    if failed is not None:
        error = f"{failed.get('type', 'error')}: {failed.get('error', '')}"
        return Job(name, "failed", one_line(error), record=record)
    if record.get("error"):  # an error the job could not turn into failed.json
        return Job(name, "failed", one_line(record["error"]), record=record)
    if not record and now - folder.joinpath(".hydra").stat().st_mtime < STARTING_S:
        return Job(name, "running", last_line="starting", record=record)
    return Job(name, "interrupted", record=record)


def one_line(text: str) -> str:
    return " ".join(str(text).split())[:300]


def last_log_line(folder: Path) -> str:
    """The job's newest log line (Hydra's `<job>.log`): its latest epoch or attack progress."""
    for log in folder.glob("*.log"):
        try:
            with log.open("rb") as f:
                f.seek(max(0, log.stat().st_size - 4096))
                lines = f.read().decode(errors="replace").strip().splitlines()
        except OSError:
            continue
        if lines:
            return one_line(lines[-1].split(" - ", 1)[-1])
    return ""


@dataclass
class SweepStatus:
    """Everything `python -m imbadv.status` prints, gathered without taking any lock."""

    root: Path
    jobs: list[Job]
    planned: int | None
    started: float
    last_activity: float
    store: Path | None = None
    trained: list[dict[str, Any]] = field(default_factory=list)
    training: list[dict[str, Any]] = field(default_factory=list)
    reused: set[str] = field(default_factory=set)
    locks: dict[str, int] = field(default_factory=dict)
    unlearned: dict[str, str] = field(default_factory=dict)  # model key -> what and where

    def count(self, state: str) -> int:
        return sum(j.state == state for j in self.jobs)

    @property
    def pending(self) -> int:
        """Jobs not finished and not running: interrupted ones plus those never started."""
        total = max(self.planned or 0, len(self.jobs))
        return total - self.count("done") - self.count("failed") - self.count("running")


def collect(root: Path, store: Path | None = None, now: float | None = None) -> SweepStatus:
    """Read the sweep folder (and its model store) as it is now."""
    now = time.time() if now is None else now
    folders = sorted(h.parent for h in root.rglob(".hydra") if h.is_dir())
    jobs = [job_state(f, now) for f in folders]
    started = _mtime(root / "multirun.yaml") or min(
        (_mtime(f / ".hydra") for f in folders), default=now
    )
    outputs = [_mtime(f / n) for f in folders for n in ("results.json", "failed.json", JOB_FILE)]
    st = SweepStatus(root, jobs, planned_jobs(root), started, max([started, *outputs]))
    st.store = store or store_dir(folders)
    for folder in folders:
        _read_result(folder / "results.json", st)
    if st.store is not None:
        _read_store(st.store, st, now)
    return st


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


def _read_result(path: Path, st: SweepStatus) -> None:
    full = read(path) if path.exists() else None
    if not full:
        return
    for role, trained_here in full.get("meta", {}).get("trained_here", {}).items():
        if not trained_here:
            st.reused.add(str(full.get("models", {}).get(role, {}).get("key", role)))
    for role, entry in full.get("models", {}).items():
        if isinstance(entry, dict) and never_learned(entry):
            st.unlearned.setdefault(
                str(entry.get("key")), f"{role} model of {path.parent.name}: {describe(entry)}"
            )


def read_log(store: Path, kind: str = "trainings") -> list[dict[str, Any]]:
    """The store's work log (`trainings.jsonl`); a line still being written is skipped."""
    try:
        lines = (store / f"{kind}.jsonl").read_text().splitlines()
    except OSError:
        return []
    out = []
    for line in lines:
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return out


def _read_store(store: Path, st: SweepStatus, now: float) -> None:
    # The store is shared: trainings since this sweep began (another sweep's would count too).
    st.trained = [e for e in read_log(store) if e.get("time", 0) >= st.started]
    st.reused -= {e["key"] for e in st.trained}  # trained by one job here, loaded by the others
    st.locks = held_locks(store / "locks")
    for marker in sorted((store / "locks").glob(f"*{MARKER_SUFFIX}")):
        record = read(marker)
        if record and alive(record, marker, now):
            st.training.append(record)


def store_dir(folders: list[Path]) -> Path | None:
    """The model store the jobs use: from a job.json (absolute), else a job's resolved config."""
    from omegaconf import OmegaConf

    for folder in folders:
        record = read(folder / JOB_FILE)
        if record and record.get("store_dir"):
            return Path(record["store_dir"])
    for folder in folders:
        try:
            cfg = OmegaConf.load(folder / ".hydra" / "config.yaml")
            return Path(str(OmegaConf.select(cfg, "paths.store_dir"))).absolute()
        except Exception:  # an unresolvable interpolation: try the next job
            continue
    return None


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    h, rest = divmod(seconds, 3600)
    return f"{h}h{rest // 60:02d}m" if h else f"{rest // 60}m{rest % 60:02d}s"


def estimate(st: SweepStatus, now: float) -> str:
    """Time left at the pace so far: finished jobs per elapsed second, at this sweep's parallelism."""
    finished = st.count("done") + st.count("failed")
    left = st.pending + st.count("running")
    if not left:
        return "nothing left"
    if not finished:
        return "unknown until a job finishes"
    pace = (st.last_activity - st.started) / finished
    return f"about {duration(pace * left)} ({left} jobs at {duration(pace)} per finished job)"


def state_word(st: SweepStatus) -> str:
    if st.count("running"):
        return "running"
    if st.pending:
        return "stopped (no live job; run the same sweep command again to finish it)"
    return "finished"


def format_status(st: SweepStatus, now: float | None = None) -> str:
    """The status as a few lines of text, the most useful first."""
    now = time.time() if now is None else now
    end = now if st.count("running") else st.last_activity
    planned = f"{st.planned} planned" if st.planned is not None else "planned: unknown"
    lines = [
        f"sweep {st.root}: {state_word(st)}",
        f"  elapsed {duration(end - st.started)}; left: {estimate(st, now)}",
        f"  jobs: {planned}, {st.count('done')} done, {st.count('failed')} failed, "
        f"{st.count('running')} running, {st.pending} pending "
        f"({st.count('interrupted')} interrupted, {st.pending - st.count('interrupted')} not started)",
    ]
    lines += model_lines(st)
    if st.unlearned:
        lines.append(
            f"models that never learned (left out of the report's findings): {len(st.unlearned)}"
        )
        lines += [f"  {key} {what}" for key, what in sorted(st.unlearned.items())]
    for state, title in (
        ("running", "running"),
        ("failed", "failed"),
        ("interrupted", "interrupted (started, process gone)"),
    ):
        chosen = [j for j in st.jobs if j.state == state]
        if chosen:
            lines.append(f"{title}:")
            lines += [
                f"  {j.name}" + (f": {j.error or j.last_line}" if j.error or j.last_line else "")
                for j in chosen
            ]
    return "\n".join(lines)


def lock_kind(name: str) -> str:
    """store.py's `<key>.lock` (a model) and `result-<key>.lock`, devices.py's `gpu<i>-slot<j>.lock`."""
    return (
        "result"
        if name.startswith("result-")
        else "GPU slot"
        if name.startswith("gpu")
        else "model"
    )


def model_lines(st: SweepStatus) -> list[str]:
    if st.store is None:
        return ["  models: store unknown (no job config readable)"]
    kinds = {"model": 0, "result": 0, "GPU slot": 0}
    for name in st.locks:
        kinds[lock_kind(name)] += 1
    held = ", ".join(f"{n} {k}{'s' if n != 1 else ''}" for k, n in kinds.items() if n) or "none"
    lines = [
        f"  models (store {st.store}): {len(st.trained)} trained in this sweep, "
        f"{len(st.training)} being trained, {len(st.reused)} reused from before it",
        f"  locks held now: {held}",
    ]
    for m in st.training:
        where = f"(pid {m.get('pid')} on {m.get('host')})"
        if "epoch" not in m:
            since = duration(time.time() - m.get("started", time.time()))
            lines.append(
                f"    training {m.get('label')}: started {since} ago, no epoch done {where}"
            )
            continue
        lines.append(
            f"    training {m.get('label')}: epoch {m['epoch']}/{m.get('max_epochs')}, "
            f"{m.get('seconds_per_epoch', 0):.1f} s/epoch {where}"
        )
    return lines


def newest_sweep(base: Path = Path("multirun")) -> Path | None:
    """The most recently started sweep (by its multirun.yaml) under `base`."""
    found = list(base.rglob("multirun.yaml")) if base.is_dir() else []
    return max(found, key=lambda p: p.stat().st_mtime).parent if found else None


def main(argv: list[str] | None = None) -> int:
    """The command line; 2 when there is no sweep to read."""
    parser = argparse.ArgumentParser(prog="python -m imbadv.status", description=__doc__)
    parser.add_argument("sweep", nargs="?", type=Path, help="default: the newest under multirun/")
    parser.add_argument("--store", type=Path, default=None, help="default: from the jobs' config")
    args = parser.parse_args(argv)
    root = args.sweep if args.sweep is not None else newest_sweep()
    if root is None or not root.is_dir():
        where = root if root is not None else "multirun/"
        print(f"imbadv.status: error: {where}: no sweep folder found", file=sys.stderr)
        return 2
    print(format_status(collect(root, args.store)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
