"""W&B tracking: what an offline run really holds, and that W&B can never fail or hang a job."""

from __future__ import annotations

import csv
import json
import os
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run_cli
from omegaconf import OmegaConf

from imbadv.table import job_rows, read
from imbadv.telemetry import tracking


def wandb_records(path: Path) -> list:
    """Records of an offline run's binary `run-*.wandb` file (LevelDB-style log of protobufs).

    wandb 0.31 keeps the summary, config and history only here, so reading them back proves what
    `wandb sync` would upload. Layout: a 7-byte header, then 32 KiB blocks of chunks, each with a
    7-byte header (crc32, length, type: 1 full, 2 first, 3 middle, 4 last).
    """
    from wandb.proto import wandb_internal_pb2 as pb

    data, pos, block, parts, out = path.read_bytes(), 7, 32768, b"", []
    assert data[:4] == b":W&B"
    while pos + 7 <= len(data):
        if block - pos % block < 7:  # too little room left for a chunk header: padding
            pos += block - pos % block
            continue
        _, length, kind = struct.unpack("<IHB", data[pos : pos + 7])
        if kind == 0:
            break
        parts += data[pos + 7 : pos + 7 + length]
        pos += 7 + length
        if kind in (1, 4):
            record = pb.Record()
            record.ParseFromString(parts)
            out.append(record)
            parts = b""
    return out


def read_offline_run(job_dir: Path) -> dict:
    """Group, name, config, summary and logged history rows of the one W&B run in a job folder."""
    (run_dir,) = (job_dir / "wandb").glob("offline-run-*")
    (binary,) = run_dir.glob("run-*.wandb")
    run = {"dir": run_dir, "summary": {}, "history": [], "config": {}, "artifacts": []}
    for record in wandb_records(binary):
        kind = record.WhichOneof("record_type")
        if kind == "artifact":  # what `wandb sync` would create: name, type, metadata, files
            a = record.artifact
            files = {e.path: e.digest for e in a.manifest.contents}
            meta = json.loads(a.metadata) if a.metadata else {}
            run["artifacts"].append({"name": a.name, "type": a.type, "meta": meta, "files": files})
        elif kind == "run":
            run["group"], run["name"] = record.run.run_group, record.run.display_name
            run["config"] |= {u.key: json.loads(u.value_json) for u in record.run.config.update}
        elif kind == "config":  # config.update() after init (the job's meta, known at its end)
            run["config"] |= {u.key: json.loads(u.value_json) for u in record.config.update}
        elif kind == "summary":
            run["summary"] |= {
                u.key: json.loads(u.value_json) for u in record.summary.update if u.key
            }
        elif kind == "history":
            run["history"].append(
                {"/".join(i.nested_key) or i.key: i.value_json for i in record.history.item}
            )
    return run


def wandb_home(base: Path) -> dict[str, str]:
    return {
        k: str(base / "home") for k in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")
    }


@pytest.fixture(scope="module")
def offline_sweep(tmp_path_factory) -> Path:
    """Two jobs (class 0 and 1, under) logged offline on a fresh store: the first trains the
    balanced and its under-sampled model, the second only its own and loads the balanced one."""
    base = tmp_path_factory.mktemp("wandb")
    sweep = base / "wb-sweep"
    proc = run_cli(
        [
            "-m",
            *TINY,
            "class=0,1",
            "imbalance=under",
            "logger=wandb",
            f"paths.store_dir={base / 'store'}",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=base,
        env={"WANDB_MODE": "offline", **wandb_home(base)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B logging failed" not in proc.stdout + proc.stderr
    return sweep


@pytest.mark.slow
def test_offline_run_holds_confusion_matrix_summary_and_curves(offline_sweep):
    jobs = sorted(p.parent for p in offline_sweep.glob("*/results.json"))
    assert len(jobs) == 2
    runs = [read_offline_run(job) for job in jobs]
    assert len({r["dir"].name for r in runs}) == 2  # the second job did not reuse the first run
    for job, run in zip(jobs, runs, strict=True):
        full = json.loads((job / "results.json").read_text())
        assert run["group"] == "wb-sweep" and run["name"] == job.name
        assert run["config"]["class"] == full["config"]["class"]
        assert run["config"]["trainer"] == full["config"]["trainer"]
        assert run["config"]["meta"]["class_name"] == full["meta"]["class_name"]

        fgsm = next(r for r in full["attacks"] if r["method"] == "fgsm" and r["source"] == "same")
        transfer = next(
            r for r in full["attacks"] if r["method"] == "bim" and r["source"] == "balanced"
        )
        s = run["summary"]
        assert s["adv/fgsm/same/acc"] == pytest.approx(fgsm["adv_acc"])
        own = [r for r in full["attacks"] if r["role"] == "balanced" and r["method"] == "fgsm"]
        if own:  # an imbalanced job: the balanced model's own row, kept apart from the job's
            assert s["balanced/adv/fgsm/same/acc"] == pytest.approx(own[0]["adv_acc"])
        assert s["clean/acc"] == pytest.approx(fgsm["clean_acc"])
        assert s["adv/bim/balanced/acc"] == pytest.approx(transfer["adv_acc"])
        assert s["target/clean/acc"] == pytest.approx(full["models"]["target"]["clean"]["acc"])
        assert full["meta"]["dataset"] == "synthetic"  # class names class0..class9
        assert s["adv/fgsm/same/to/class3"] == pytest.approx(fgsm["adv_row"][3] / fgsm["n"])

        # the 10x10 confusion matrix, rebuilt from the logged table, equals the job's counts
        (table,) = (run["dir"] / "files/media/table/target/clean").glob(
            "confusion_table*.table.json"
        )
        logged = json.loads(table.read_text())
        assert logged["columns"] == ["Actual", "Predicted", "nPredictions"]
        names = [f"class{i}" for i in range(10)]
        cm = np.zeros((10, 10))
        for actual, predicted, count in logged["data"]:
            cm[names.index(actual), names.index(predicted)] += count
        assert np.array_equal(cm, np.array(full["models"]["target"]["clean"]["confusion"]))

        assert_curves_streamed_or_referenced(run, full)


def assert_curves_streamed_or_referenced(run: dict, full: dict) -> None:
    """A model trained by this job has its per-epoch curve under train/<role>/ (streamed while it
    trained, so logged before the job's final numbers); a model loaded from the store is named by
    its key and has no curve here."""
    final = next(i for i, h in enumerate(run["history"]) if "clean/acc" in h)
    for role, entry in full["models"].items():
        streamed = [h for h in run["history"] if f"train/{role}/val_loss" in h]
        assert run["summary"][f"{role}/model_key"] == entry["key"]
        assert run["summary"][f"{role}/trained_here"] == full["meta"]["trained_here"][role]
        if not full["meta"]["trained_here"][role]:
            assert streamed == []
            continue
        assert all(run["history"].index(h) < final for h in streamed)
        got = [
            (
                json.loads(h[f"train/{role}/epoch"]),
                json.loads(h[f"train/{role}/val_loss"]),
                json.loads(h[f"train/{role}/loss"]),
            )
            for h in streamed
        ]
        want = [(p["epoch"], p["val/loss"], p["train/loss"]) for p in entry["history"]]
        assert [g[0] for g in got] == [w[0] for w in want]  # epoch by epoch, none missing
        assert [x for g in got for x in g[1:]] == pytest.approx([x for w in want for x in w[1:]])


def test_each_model_curve_is_logged_once_in_the_job_that_trained_it(offline_sweep):
    runs = {
        job.parent.name: (read_offline_run(job.parent), json.loads(job.read_text()))
        for job in offline_sweep.glob("*/results.json")
    }
    trained = [
        (role, full["models"][role]["key"])
        for run, full in runs.values()
        for role in full["models"]
        if full["meta"]["trained_here"][role]
    ]
    assert len(trained) == len(set(trained)) == 3  # balanced once, two under-sampled models
    keys = {full["models"]["balanced"]["key"] for _, full in runs.values()}
    assert len(keys) == 1  # both jobs used the same balanced model; only one logged its curve


@pytest.mark.slow
def test_unreachable_online_server_neither_fails_nor_hangs_the_job(smoke_sweep, tmp_path):
    env = {
        "WANDB_MODE": "online",
        "WANDB_API_KEY": "x" * 40,
        "WANDB_BASE_URL": "http://127.0.0.1:9",
        **{
            k: str(tmp_path / "home")
            for k in ("WANDB_CONFIG_DIR", "WANDB_CACHE_DIR", "WANDB_DATA_DIR")
        },
    }
    started = time.monotonic()
    proc = run_cli(
        [
            *TINY,
            "class=1",
            "imbalance=under",
            "logger=wandb",
            "logger.mode=online",
            "logger.init_timeout=2",
            "logger.finish_timeout=2",
            f"paths.store_dir={smoke_sweep['store']}",
            f"hydra.run.dir={tmp_path / 'job'}",
        ],
        cwd=tmp_path,
        env=env,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "job" / "results.json").exists()
    assert "W&B logging failed" in proc.stdout + proc.stderr
    assert time.monotonic() - started < 90  # wandb's own default would wait 90 s in init alone


def test_no_wandb_files_with_logger_none(smoke_sweep):
    jobs = list(smoke_sweep["sweep"].glob("*/results.json"))
    assert jobs and not any((job.parent / "wandb").exists() for job in jobs)


def test_mode_is_chosen_from_config_and_env_can_only_switch_it_off():
    assert tracking.choose_mode("offline", None) == "offline"
    assert tracking.choose_mode("ONLINE", "offline") == "online"
    assert tracking.choose_mode("online", "disabled") == "disabled"
    assert tracking.choose_mode("shared", None) is None


def test_any_wandb_error_is_a_warning_and_the_run_is_finished(
    smoke_sweep, monkeypatch, tmp_path, caplog
):
    import wandb

    finished = []

    def broken_init(**kwargs):
        raise wandb.errors.CommError("network is unreachable")

    monkeypatch.setattr(wandb, "init", broken_init)
    monkeypatch.setattr(wandb, "finish", lambda *a, **k: finished.append(True))
    monkeypatch.delenv("WANDB_MODE", raising=False)
    job = next(smoke_sweep["sweep"].glob("*imbalance=under*/results.json"))
    full = json.loads(job.read_text())
    cfg = OmegaConf.create({**full["config"], "logger": {"name": "wandb", "mode": "online"}})
    tracking.log_job(cfg, full, tmp_path)  # must not raise
    assert finished == [True]
    assert "W&B logging failed" in caplog.text and "network is unreachable" in caplog.text


def test_scalar_keys_name_eps_only_when_a_job_has_several():
    row = {
        "method": "fgsm",
        "source": "same",
        "eps": 0.01,
        "n": 4,
        "adv_acc": 0.25,
        "adv_acc_ci95": [0.1, 0.6],
        "clean_acc": 0.75,
        "clean_acc_ci95": [0.3, 0.9],
        "relative_drop": 2 / 3,
        "success_rate": 2 / 3,
        "zero_grad_fraction": 0.0,
        "clean_row": [3, 1],
        "adv_row": [1, 3],
    }
    one = tracking.attack_scalars([row], ["cat", "dog"])
    assert one["adv/fgsm/same/acc"] == 0.25 and one["adv/fgsm/same/to/dog"] == 0.75
    assert one["clean/acc"] == 0.75 and one["clean/to/cat"] == 0.75
    two = tracking.attack_scalars([row, {**row, "eps": 0.02, "adv_acc": 0.0}], ["cat", "dog"])
    assert two["adv/fgsm/eps=0.01/same/acc"] == 0.25 and two["adv/fgsm/eps=0.02/same/acc"] == 0.0


def test_confusion_expansion_and_group_names():
    y_true, preds = tracking.expand_confusion([[2, 1], [0, 3]])
    assert y_true == [0, 0, 0, 1, 1, 1] and preds == [0, 0, 1, 1, 1, 1]
    assert tracking.sweep_group("multirun/2026-01-02/03-04-05") == "2026-01-02_03-04-05"
    assert tracking.sweep_group("/tmp/my-sweep") == "my-sweep"


def test_report_run_holds_table1_findings_and_figures(smoke_sweep, tmp_path):
    sweep = tmp_path / "rep-sweep"
    shutil.copytree(smoke_sweep["sweep"], sweep)
    env = {**os.environ, "WANDB_MODE": "offline", **wandb_home(tmp_path)}
    proc = subprocess.run(
        [sys.executable, "-m", "imbadv.report", str(sweep), "--wandb"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B logging failed" not in proc.stdout + proc.stderr
    run = read_offline_run(sweep)
    assert run["group"] == "rep-sweep" and run["name"] == "report"
    long = logged_table(run["dir"], "results/long_table")  # every row of imbadv.results
    want = read(sweep)
    assert long["columns"] == want.columns and len(want.rows) > len(list(sweep.glob("*/")))
    assert long["data"] == [as_cells(r, want.columns) for r in want.rows]
    (table1,) = (run["dir"] / "files/media/table").glob("table1_*.table.json")
    logged = json.loads(table1.read_text())
    with (sweep / "table1.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert logged["columns"] == rows[0] and len(logged["data"]) == len(rows) - 1
    figures = {p.stem for p in sweep.glob("fig*.png")}
    images = list((run["dir"] / "files/media/images").rglob("*.png"))
    assert figures and {p.name.split("_")[0] for p in images} == {f.split("_")[0] for f in figures}
    assert len(images) == len(figures)
    (found,) = (run["dir"] / "files/media/table").glob("findings_*.table.json")
    bullets = tracking.findings_rows((sweep / "report.md").read_text())
    # the 7 findings this sweep can test: 6 plus the balanced-alone twin of its one testable
    # partner pair; those it cannot test are listed apart, with no verdict
    assert json.loads(found.read_text())["data"] == bullets and len(bullets) == 7
    assert all(v in ("confirmed", "inconclusive", "contradicted") for v, _ in bullets)
    verdicts = {v for v, _ in bullets}
    assert {k: v for k, v in run["summary"].items() if k.startswith("findings/")} == {
        f"findings/{v}": sum(b[0] == v for b in bullets) for v in verdicts
    }


def logged_table(run_dir: Path, key: str) -> dict:
    """The one W&B table logged under `key` (a slash key: media/table/<folders>/<name>_*)."""
    folder, _, name = key.rpartition("/")
    (path,) = (run_dir / "files/media/table" / folder).glob(f"{name}_*.table.json")
    return json.loads(path.read_text())


def as_cells(row: dict, columns: list[str]) -> list:
    return [
        json.dumps(v) if isinstance(v, list | dict) else v for v in (row.get(c) for c in columns)
    ]


def test_each_job_logs_its_per_class_rows_as_a_table(offline_sweep):
    for job in sorted(offline_sweep.glob("*/results.json")):
        full = json.loads(job.read_text())
        logged = logged_table(read_offline_run(job.parent)["dir"], "results/per_class")
        want = job_rows(full, "", job.parent.name)
        assert len(want) == len(full["attacks"])  # attack.images=target: one class per row
        assert logged["columns"][:4] == ["sweep", "job", "job_key", "repeat"]
        cols = logged["columns"]
        assert {"model_key", "method", "source", "class", "adv_acc", "adv_row"} <= set(cols)
        got = [dict(zip(cols, r, strict=True)) for r in logged["data"]]
        assert [as_cells(r, cols) for r in want] == [[g[c] for c in cols] for g in got]
        fgsm = next(r for r in full["attacks"] if r["method"] == "fgsm" and r["source"] == "same")
        row = next(g for g in got if g["method"] == "fgsm" and g["source"] == "same")
        assert row["adv_acc"] == fgsm["adv_acc"] and json.loads(row["adv_row"]) == fgsm["adv_row"]


def test_no_artifact_without_the_option(offline_sweep):
    for job in offline_sweep.glob("*/results.json"):
        run = read_offline_run(job.parent)
        assert [a for a in run["artifacts"] if a["type"] == "model"] == []  # tables are run_table
        assert not any(k.endswith("/model_artifact") for k in run["summary"])


def test_bad_artifacts_option_is_refused_up_front(tmp_path):
    proc = run_cli([*TINY, "logger=wandb", "logger.artifacts=maybe"], cwd=tmp_path, timeout=120)
    assert proc.returncode == 2
    assert "logger.artifacts=maybe is not allowed: expected true or false" in proc.stderr


@pytest.mark.slow
def test_artifacts_option_logs_each_model_trained_here_under_its_store_key(offline_sweep):
    """A third job on the sweep's store: the balanced model is another job's (referenced by key,
    not logged again), its own under-sampled model is trained here and logged as an artifact."""
    base = offline_sweep.parent
    job = base / "artifact-job"
    proc = run_cli(
        [
            *TINY,
            "class=2",
            "imbalance=under",
            "logger=wandb",
            "logger.artifacts=true",
            f"paths.store_dir={base / 'store'}",
            f"hydra.run.dir={job}",
        ],
        cwd=base,
        env={"WANDB_MODE": "offline", **wandb_home(base)},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "W&B logging failed" not in proc.stdout + proc.stderr
    full = json.loads((job / "results.json").read_text())
    assert full["meta"]["trained_here"] == {"target": True, "balanced": False}
    run = read_offline_run(job)
    target, balanced = full["models"]["target"], full["models"]["balanced"]
    (artifact,) = [
        a for a in run["artifacts"] if a["type"] == "model"
    ]  # the target only: the balanced model is referenced
    key = target["key"]
    assert artifact["name"] == key and artifact["type"] == "model"
    assert artifact["meta"]["store_key"] == key
    assert artifact["meta"]["spec"] == target["spec"]
    assert artifact["meta"]["record"]["sha256"] == target["sha256"]
    assert artifact["meta"]["record"]["train_counts"] == target["train_counts"]
    assert set(artifact["files"]) == {f"{key}.safetensors", f"{key}.json"}
    assert run["summary"]["target/model_artifact"] == key
    assert run["summary"]["balanced/model_artifact"] == balanced["key"]
