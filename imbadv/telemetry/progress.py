"""Progress stage: a line per training epoch and per ~30 s of attacks, W&B curves, status files.

Lines go to the `imbadv.progress` logger: Hydra prints them and keeps them in the job's log.
The files read by `python -m imbadv.status` (job.json, the store's training markers) are
written here, each refreshed by a heartbeat so another host can tell a live job from a dead one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import socket
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import Callback, EarlyStopping

from imbadv.status.sweep import HEARTBEAT_S, JOB_FILE, MARKER_SUFFIX, proc_start
from imbadv.store import atomic_write_json

log = logging.getLogger("imbadv.progress")
Sink = Callable[[dict[str, Any]], None]


def epoch_line(label: str, row: dict[str, Any]) -> str:
    """`train <label>: epoch 3/15  loss ...  val loss ... acc ...  s/epoch  patience left`."""
    return (
        f"train {label}: epoch {row['epoch'] + 1}/{row['max_epochs']}  "
        f"loss {row.get('train/loss', float('nan')):.4f}  "
        f"val loss {row.get('val/loss', float('nan')):.4f} acc {row.get('val/acc', float('nan')):.3f}  "
        f"{row['seconds']:.1f} s/epoch  "
        + (
            f"patience {row['patience_left']}/{row['patience']} left"
            if row.get("early_stopping", True)
            else "no early stopping"
        )
    )


class EpochReport(Callback):
    """After each epoch, hands one row of numbers to every sink.

    Lightning runs EarlyStopping's epoch-end check after every other callback, so the patience
    left is counted here the way it counts (a strictly lower validation loss resets it).
    """

    def __init__(self, label: str, sinks: list[Sink]) -> None:
        self.label, self.sinks = label, sinks
        self.epoch_started = self.fit_started = time.perf_counter()
        self.best, self.wait = math.inf, 0

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.fit_started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.epoch_started = time.perf_counter()

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        stop = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
        patience = stop.patience if stop else 0
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        loss = metrics.get(stop.monitor if stop else "val/loss", math.nan)
        self.best, self.wait = (loss, 0) if loss < self.best else (self.best, self.wait + 1)
        now = time.perf_counter()
        row = {
            "epoch": trainer.current_epoch,
            "max_epochs": trainer.max_epochs,
            **metrics,
            "seconds": now - self.epoch_started,
            "elapsed": now - self.fit_started,
            "patience": patience,
            "patience_left": max(0, patience - self.wait),
            "early_stopping": stop is not None,
        }
        for sink in self.sinks:
            sink(row)


def spread(values: list[float], digits: int) -> str:
    """`0.51` for one value or equal values, `0.51-0.93` for several."""
    if not values:
        return "-"
    low, high = min(values), max(values)
    return (
        f"{low:.{digits}f}"
        if f"{low:.{digits}f}" == f"{high:.{digits}f}"
        else (f"{low:.{digits}f}-{high:.{digits}f}")
    )


def group_line(label: str, row: dict[str, Any]) -> str:
    """`train <label>: epoch 3/15  7/10 members training  loss ..  val loss .. acc ..  s/epoch  left`."""
    live = row["live"]
    left = row["seconds"] * (row["max_epochs"] - row["epoch"] - 1) if live else 0.0
    return (
        f"train {label}: epoch {row['epoch'] + 1}/{row['max_epochs']}  "
        f"{len(live)}/{row['members']} members training  "
        f"loss {spread(row['ranges']['train/loss'], 4)}  "
        f"val loss {spread(row['ranges']['val/loss'], 4)} "
        f"acc {spread(row['ranges']['val/acc'], 3)}  "
        f"{row['seconds']:.1f} s/epoch  "
        f"{'at most' if row['early_stopping'] else 'about'} {left:.0f} s left"
    )


class GroupEpochReport(Callback):
    """After each epoch of grouped training, one row for every sink: the members still training,
    the range of their losses and accuracies, the job's own member's numbers (member 0).

    Runs after the group's selection (imbadv.grouped.select.GroupSelection), so the
    members that stopped at this epoch are no longer counted as training."""

    NAMES = ("train/loss", "val/loss", "val/acc")

    def __init__(self, label: str, sinks: list[Sink], early_stopping: bool) -> None:
        self.label, self.sinks, self.early_stopping = label, sinks, early_stopping
        self.epoch_started = self.fit_started = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.fit_started = time.perf_counter()

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.epoch_started = time.perf_counter()
        self.started_with = list(getattr(module, "active", []))  # this epoch's members

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items()}
        ranges = {
            n: [metrics[f"m{k}/{n}"] for k in self.started_with if f"m{k}/{n}" in metrics]
            for n in self.NAMES
        }
        own = {n: metrics[f"m0/{n}"] for n in self.NAMES if f"m0/{n}" in metrics}
        now = time.perf_counter()
        row = {
            "epoch": trainer.current_epoch,
            "max_epochs": trainer.max_epochs,
            **own,
            "members": getattr(module, "k", 0),
            "live": list(getattr(module, "active", [])),
            "ranges": ranges,
            "seconds": now - self.epoch_started,
            "elapsed": now - self.fit_started,
            "early_stopping": self.early_stopping,
        }
        for sink in self.sinks:
            sink(row)


class ConsoleQuiet(logging.Filter):
    """Drops progress lines from console handlers (progress=quiet); the job's log file keeps them."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.name.startswith(log.name)


def quiet_console() -> None:
    """progress=quiet: the progress lines reach the job's log file (Hydra's run.log), not the
    console: a filter on the root logger's plain stream handlers (Hydra's console handler; not
    file handlers, nor other tools' handler subclasses), installed once."""
    for handler in logging.getLogger().handlers:
        if type(handler) is logging.StreamHandler and not any(
            isinstance(f, ConsoleQuiet) for f in handler.filters
        ):
            handler.addFilter(ConsoleQuiet())


class TrainingPulse(Callback):
    """A line when training starts and at most every `every_s` s within an epoch: slow epochs
    (a loaded CPU, the paper's full-size model) never leave the user without news for long."""

    def __init__(self, label: str, every_s: float = 30.0, patience: int | None = None) -> None:
        self.label, self.every_s, self.patience = label, every_s, patience
        self.last = self.epoch_started = time.perf_counter()

    def on_train_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.last = time.perf_counter()
        stop = next((c for c in trainer.callbacks if isinstance(c, EarlyStopping)), None)
        patience = stop.patience if stop else self.patience  # a group's: each member's own
        log.info(
            "train %s: up to %d epochs of %d batches, early stopping patience %s",
            self.label,
            trainer.max_epochs,
            trainer.num_training_batches,
            "none" if patience is None else patience,
        )

    def on_train_epoch_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.epoch_started = time.perf_counter()

    def on_train_batch_end(
        self, trainer: L.Trainer, module: L.LightningModule, out: Any, batch: Any, index: int
    ) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s:
            return
        self.last, done, total = now, index + 1, trainer.num_training_batches
        spent = now - self.epoch_started
        log.info(
            "train %s: epoch %d/%d, batch %d/%d, %.0f s into the epoch, about %.0f s to its end",
            self.label,
            trainer.current_epoch + 1,
            trainer.max_epochs,
            done,
            total,
            spent,
            spent / max(done, 1) * (total - done),
        )

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.last = time.perf_counter()  # the epoch's own line has just been printed


class AttackProgress(Callback):
    """A line when an attack evaluation starts, at most every `every_s` seconds, and per result.

    Reads imbadv.pipeline.craft.AttackEvaluation's `sources`, `specs` and `crafted()` where they
    exist; progress is a best effort and never fails a job.
    """

    def __init__(self, label: str, every_s: float = 30.0) -> None:
        self.label, self.every_s = label, every_s
        self.started = self.last = time.perf_counter()

    def on_test_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        self.started = self.last = time.perf_counter()
        sources = ",".join(getattr(module, "sources", {}))
        attacks = ",".join(getattr(s, "name", str(s)) for s in getattr(module, "specs", []))
        log.info(
            "attack %s: %s batches, sources %s, attacks %s",
            self.label,
            sum(trainer.num_test_batches),
            sources,
            attacks,
        )

    def on_test_batch_end(
        self,
        trainer: L.Trainer,
        module: L.LightningModule,
        out: Any,
        batch: Any,
        index: int,
        *_: Any,
    ) -> None:
        now = time.perf_counter()
        if now - self.last < self.every_s:
            return
        self.last, done, total = now, index + 1, sum(trainer.num_test_batches)
        elapsed = now - self.started
        log.info(
            "attack %s: batch %d/%d, %.0f s elapsed, about %.0f s left",
            self.label,
            done,
            total,
            elapsed,
            elapsed / done * (total - done),
        )

    def on_test_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        elapsed = time.perf_counter() - self.started
        if not hasattr(module, "crafted"):
            log.info("attack %s: done in %.1f s", self.label, elapsed)
            return
        source = ",".join(getattr(module, "sources", {}))
        for name, arrays in module.crafted().items():
            log.info(
                "attack %s: %s|%s  %d images made  (%.1f s elapsed)",
                self.label,
                source,
                name,
                len(arrays["adv"]),
                elapsed,
            )


class Heartbeat:
    """Touches the files a live job owns every HEARTBEAT_S seconds (one daemon thread per process)."""

    files: set[Path] = set()
    lock = threading.Lock()
    thread: threading.Thread | None = None

    @classmethod
    def add(cls, path: Path) -> None:
        with cls.lock:
            cls.files.add(path)
            if cls.thread is None:
                cls.thread = threading.Thread(
                    target=cls._beat, name="imbadv-heartbeat", daemon=True
                )
                cls.thread.start()

    @classmethod
    def remove(cls, path: Path) -> None:
        with cls.lock:
            cls.files.discard(path)

    @classmethod
    def _beat(cls) -> None:
        while True:
            time.sleep(HEARTBEAT_S)
            with cls.lock:
                paths = list(cls.files)
            for path in paths:
                # Removed meanwhile, or a full disk: the status is a best effort.
                with contextlib.suppress(OSError):
                    os.utime(path)


def owner() -> dict[str, Any]:
    """Who is working: enough for `imbadv.status` to tell whether the process still lives."""
    pid = os.getpid()
    return {"pid": pid, "host": socket.gethostname(), "proc_start": proc_start(pid)}


@contextmanager
def job_record(output_dir: Path, store_dir: Path) -> Iterator[None]:
    """`job.json` in the job folder for the job's duration; `ended` (and any error) added at the end."""
    path = Path(output_dir) / JOB_FILE
    record = {
        **owner(),
        "started": time.time(),
        "cwd": os.getcwd(),
        "store_dir": str(Path(store_dir).absolute()),
    }
    _write(path, record)
    Heartbeat.add(path)
    try:
        yield
    except BaseException as err:
        record["error"] = f"{type(err).__name__}: {err}"
        raise
    finally:
        Heartbeat.remove(path)
        _write(path, {**record, "ended": time.time()})


def _write(path: Path, record: dict[str, Any]) -> None:
    try:
        atomic_write_json(path, record)
    except OSError as err:  # status files must never fail a job
        log.warning("could not write %s: %s", path, err)


@dataclass(frozen=True)
class GroupFacts:
    """What the progress lines of grouped training need to know beyond the Trainer's numbers."""

    patience: int | None  # each member's early-stopping patience, None without early stopping
    early_stopping: bool


@dataclass
class Watch:
    """What one job shows while it works: lines (unless quiet), W&B curves, training markers."""

    lines: bool = (
        True  # False (progress=quiet): imbadv.pipeline.experiment keeps them off the console
    )
    tracker: Any = None  # tracking.JobRun or None: gets `epoch(role, row)`
    lock_dir: Path | None = None  # the store's locks/: where training markers go

    @contextmanager
    def training(
        self, key: str, role: str, label: str, group: GroupFacts | None = None
    ) -> Iterator[list[Callback]]:
        """Callbacks for `fit` (or, with `group`, `fit_group`) while the model `key` trains, and
        its marker for `imbadv.status`. Lines go to the log: the console too unless quiet."""
        line = epoch_line if group is None else group_line
        sinks: list[Sink] = [lambda row: log.info(line(label, row))]
        if self.tracker is not None:
            sinks.append(lambda row: self.tracker.epoch(role, row))
        marker = None
        if self.lock_dir is not None:
            marker = Path(self.lock_dir) / f"{key}{MARKER_SUFFIX}"
            info = {**owner(), "key": key, "role": role, "label": label, "started": time.time()}
            _write(marker, info)
            Heartbeat.add(marker)
            sinks.append(lambda row: _write(marker, marker_update(info, row)))
        report = (
            EpochReport(label, sinks)
            if group is None
            else GroupEpochReport(label, sinks, group.early_stopping)
        )
        pulse = TrainingPulse(label, patience=None if group is None else group.patience)
        try:
            yield [report, pulse]
        finally:
            if marker is not None:
                Heartbeat.remove(marker)
                marker.unlink(missing_ok=True)

    def attacks(self, label: str) -> list[Callback]:
        return [AttackProgress(label)]


def marker_update(info: dict[str, Any], row: dict[str, Any]) -> dict[str, Any]:
    """The marker after an epoch: how far the model is and how fast it goes."""
    done = row["epoch"] + 1
    return {
        **info,
        "epoch": done,
        "max_epochs": row["max_epochs"],
        "seconds_per_epoch": row["elapsed"] / done,
        "val/loss": row.get("val/loss"),
    }
