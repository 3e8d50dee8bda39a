"""Progress: a line per epoch for every model a job trains, attack lines, quiet mode, status marker."""

from __future__ import annotations

import io
import json
import logging
import math
import re

import pytest
import torch
from conftest import TINY, run_cli

from imbadv.attacks import ATTACKS
from imbadv.config.settings import AttackSpec
from imbadv.models.vgg import VGG
from imbadv.pipeline.craft import craft
from imbadv.status import sweep as status
from imbadv.telemetry import progress
from imbadv.training import Recipe, TrainSettings
from imbadv.training.loop import fit

LINE = re.compile(
    r"\[imbadv\.progress\]\[INFO\] - train (?P<label>.+?): epoch (?P<epoch>\d+)/(?P<cap>\d+)  "
    r"loss (?P<loss>\S+)  val loss (?P<val_loss>\S+) acc (?P<acc>\S+)  (?P<s>\S+) s/epoch  "
    r"patience (?P<left>\d+)/(?P<patience>\d+) left$"
)


def label_of(spec: dict) -> str:
    if spec["class"] is None:
        return "balanced"
    return f"target {spec['imbalance']['name']} class {spec['class']} (class{spec['class']})"


def test_sweep_prints_a_line_per_epoch_of_every_model_it_trains(smoke_sweep):
    out = smoke_sweep["stdout"]
    lines = [m.groupdict() for m in map(LINE.search, out.splitlines()) if m]
    records = [json.loads(p.read_text()) for p in (smoke_sweep["store"] / "models").glob("*.json")]
    assert len(records) == 5
    for record in records:  # each model's lines are its training history, epoch by epoch
        mine = [m for m in lines if m["label"] == label_of(record["spec"])]
        assert [int(m["epoch"]) - 1 for m in mine] == [h["epoch"] for h in record["history"]]
        assert all(m["cap"] == "3" for m in mine)
        got = [float(m["val_loss"]) for m in mine]
        assert got == pytest.approx([h["val/loss"] for h in record["history"]], abs=1e-4)
    assert len(lines) == sum(len(r["history"]) for r in records)
    # per job, the results table comes after every progress line
    for job in out.split("[HYDRA] \t#")[1:]:
        table = job.index("imbadv  synthetic")
        assert "[imbadv.progress]" not in job[table:]


def toy(n: int = 64, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (torch.rand(n, 3, 32, 32, generator=gen) * 100 + y.view(-1, 1, 1, 1) * 120).to(torch.uint8)
    return x, y


class Recorder:
    """Stands where the job's W&B run goes; also notes whether the status marker was there."""

    def __init__(self, marker) -> None:
        self.marker, self.rows, self.seen = marker, [], []

    def epoch(self, role: str, row: dict) -> None:
        self.rows.append((role, row))
        self.seen.append(status.read(self.marker))


@pytest.mark.parametrize("lines", [True, False])
def test_watch_feeds_lines_tracker_and_marker_every_epoch(tmp_path, caplog, lines):
    marker = tmp_path / f"k1{status.MARKER_SUFFIX}"
    tracker = Recorder(marker)
    watch = progress.Watch(lines=lines, tracker=tracker, lock_dir=tmp_path)
    model = VGG(num_classes=2, width=0.125)
    settings = TrainSettings(batch_size=32, max_epochs=3, patience=1)
    caplog.set_level(logging.INFO, logger="imbadv.progress")
    with watch.training("k1", "target", "target under class 1 (cat)") as callbacks:
        record = fit(
            model,
            toy(),
            toy(32, 1),
            settings,
            torch.device("cpu"),
            0,
            callbacks=callbacks,
            recipe=Recipe.paper(lr=1e-3),
        )
    history = record["history"]
    assert [r["epoch"] for _, r in tracker.rows] == [h["epoch"] for h in history]
    assert [r["val/loss"] for _, r in tracker.rows] == [h["val/loss"] for h in history]
    assert all(role == "target" for role, _ in tracker.rows)
    # the marker is rewritten after the sinks before it: during epoch e it shows epoch e - 1 done
    assert [m.get("epoch", 0) for m in tracker.seen] == list(range(len(history)))
    assert all(m["key"] == "k1" and m["pid"] > 0 for m in tracker.seen)
    assert not marker.exists()  # removed once the model is trained
    # quiet or not, the lines are logged: quiet keeps them off the console (test below)
    texts = [r.getMessage() for r in caplog.records if r.name == "imbadv.progress"]
    assert len(texts) == len(history) + 1
    start, *texts = texts
    assert start == (
        "train target under class 1 (cat): up to 3 epochs of 2 batches, early stopping patience 1"
    )
    assert texts[0].startswith("train target under class 1 (cat): epoch 1/3  loss ")


def test_patience_left_is_what_early_stopping_counts(caplog):
    # Labels unrelated to the images: the validation loss soon stops improving.
    gen = torch.Generator().manual_seed(0)
    noise = [
        ((torch.rand(n, 3, 32, 32, generator=gen) * 255).to(torch.uint8), torch.arange(n) % 2)
        for n in (64, 32)
    ]
    caplog.set_level(logging.INFO, logger="imbadv.progress")
    settings = TrainSettings(batch_size=32, max_epochs=12, patience=2)
    with progress.Watch(lines=True).training("k", "target", "t") as callbacks:
        record = fit(
            VGG(num_classes=2, width=0.125),
            *noise,
            settings,
            torch.device("cpu"),
            0,
            callbacks=callbacks,
            recipe=Recipe.paper(lr=3e-3),
        )
    texts = [f"[imbadv.progress][INFO] - {r.getMessage()}" for r in caplog.records]
    left = [int(m["left"]) for m in map(LINE.search, texts) if m]
    losses, expected, best, wait = [h["val/loss"] for h in record["history"]], [], math.inf, 0
    for loss in losses:
        best, wait = (loss, 0) if loss < best else (best, wait + 1)
        expected.append(2 - wait)
    assert left == expected and record["epochs"] < 12  # stopped early...
    assert (
        left[-1] == 0 and 0 not in left[:-1]
    )  # ...exactly when the line said no patience was left


def test_a_line_within_a_slow_epoch(caplog):
    caplog.set_level(logging.INFO, logger="imbadv.progress")
    settings = TrainSettings(batch_size=32, max_epochs=2, patience=5)
    pulse = progress.TrainingPulse("balanced", every_s=0)  # every batch counts as slow here
    model = VGG(num_classes=2, width=0.125)
    fit(
        model,
        toy(),
        toy(32, 1),
        settings,
        torch.device("cpu"),
        0,
        callbacks=[pulse],
        recipe=Recipe.paper(lr=1e-3),
    )
    texts = [r.getMessage() for r in caplog.records if r.name == "imbadv.progress"]
    assert [t.split(", ")[:2] for t in texts[1:]] == [
        ["train balanced: epoch 1/2", "batch 1/2"],
        ["train balanced: epoch 1/2", "batch 2/2"],
        ["train balanced: epoch 2/2", "batch 1/2"],
        ["train balanced: epoch 2/2", "batch 2/2"],
    ]
    assert texts[1].endswith("s to its end")


def test_epoch_line_format():
    row = {
        "epoch": 3,
        "max_epochs": 100,
        "train/loss": 1.23456,
        "val/loss": 1.5,
        "val/acc": 0.4567,
        "seconds": 12.345,
        "patience": 5,
        "patience_left": 4,
    }
    assert progress.epoch_line("balanced", row) == (
        "train balanced: epoch 4/100  loss 1.2346  val loss 1.5000 acc 0.457  12.3 s/epoch  "
        "patience 4/5 left"
    )


def test_attack_progress_lines(caplog):
    model = VGG(num_classes=2, width=0.125).eval()
    specs = [AttackSpec(ATTACKS.parse("attack.methods", m, {}), 0.01) for m in ("fgsm", "bim")]
    caplog.set_level(logging.INFO, logger="imbadv.progress")
    craft(
        "same",
        model,
        specs,
        {spec.name: 0 for spec in specs},
        toy(40),
        torch.device("cpu"),
        16,
        callbacks=[progress.AttackProgress("class 1", every_s=0)],
    )
    texts = [r.getMessage() for r in caplog.records if r.name == "imbadv.progress"]
    assert texts[0] == (
        "attack class 1: 3 batches, sources same, attacks fgsm/eps=0.01/ascent,bim/eps=0.01/ascent"
    )
    assert [t.split(",")[0] for t in texts[1:4]] == [
        f"attack class 1: batch {i}/3" for i in (1, 2, 3)
    ]
    assert texts[4].startswith("attack class 1: same|fgsm/eps=0.01/ascent  40 images made  (")
    assert texts[5].startswith("attack class 1: same|bim/eps=0.01/ascent  40 images made  (")
    assert len(texts) == 6


def test_bad_progress_value_is_one_line_and_exit_2(tmp_path):
    proc = run_cli([*TINY, "progress=loud"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines()[-1] == (
        "imbadv: error: progress=loud is not allowed: expected one of lines, quiet"
    )


def test_quiet_keeps_the_lines_in_the_log_file_and_off_the_console(tmp_path):
    root = logging.getLogger()
    console, file = logging.StreamHandler(io.StringIO()), logging.FileHandler(tmp_path / "run.log")
    root.addHandler(console)
    root.addHandler(file)
    level, root.level = root.level, logging.INFO  # as Hydra's job logging sets it
    try:
        progress.log.info("train before quiet")
        progress.quiet_console()
        progress.quiet_console()  # idempotent: one filter
        progress.log.info("train after quiet")
        logging.getLogger("imbadv.other").warning("not a progress line")
    finally:
        root.removeHandler(console)
        root.removeHandler(file)
        root.level = level
        file.close()
    assert console.stream.getvalue().splitlines() == ["train before quiet", "not a progress line"]
    assert len(console.filters) == 1
    logged = (tmp_path / "run.log").read_text().splitlines()
    assert logged == ["train before quiet", "train after quiet", "not a progress line"]


def test_a_grouped_run_prints_a_line_per_epoch_with_its_members(caplog):
    from imbadv.grouped.train import Member, fit_group

    group = [Member(toy(64, 10 + k), toy(32, 20 + k), seed=k) for k in range(3)]
    models = [VGG(num_classes=2, width=0.125) for _ in group]
    settings = TrainSettings(batch_size=32, max_epochs=2, patience=1)
    caplog.set_level(logging.INFO, logger="imbadv.progress")
    watch = progress.Watch(lines=True)
    facts = progress.GroupFacts(patience=1, early_stopping=True)
    with watch.training("k1", "target", "group of 3: under", facts) as callbacks:
        fit_group(models, group, settings, torch.device("cpu"), recipe=Recipe.paper(lr=1e-3), callbacks=callbacks)  # fmt: skip
    start, *epochs = [r.getMessage() for r in caplog.records if r.name == "imbadv.progress"]
    assert (
        start == "train group of 3: under: up to 2 epochs of 2 batches, early stopping patience 1"
    )
    assert len(epochs) == 2
    assert epochs[0].startswith("train group of 3: under: epoch 1/2  ")
    assert "/3 members training  loss " in epochs[0] and " val loss " in epochs[0]
    assert " s/epoch  at most " in epochs[0] and epochs[-1].endswith(" 0 s left")


def test_group_line_format():
    row = {
        "epoch": 2, "max_epochs": 10, "members": 10, "live": [0, 1, 3], "seconds": 2.0,
        "early_stopping": True,
        "ranges": {"train/loss": [0.5, 0.7], "val/loss": [0.61, 0.61], "val/acc": [0.4, 0.8]},
    }  # fmt: skip
    assert progress.group_line("group of 10: under", row) == (
        "train group of 10: under: epoch 3/10  3/10 members training  loss 0.5000-0.7000  "
        "val loss 0.6100 acc 0.400-0.800  2.0 s/epoch  at most 14 s left"
    )
