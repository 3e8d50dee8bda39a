"""The long table: every number from its results.json, failed jobs listed as missing, formats, archives."""

from __future__ import annotations

import csv
import json
import math
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from imbadv import export, results, table
from imbadv.report.archive import write_archive

METRICS = ("clean_acc", "adv_acc", "relative_drop", "success_rate", "max_abs_delta")


def results_cli(*args: str | Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imbadv.results", *map(str, args)],
        capture_output=True,
        text=True,
        timeout=300,
    )


def same(x: float, y: float) -> bool:
    """Equal, or both NaN (a relative drop with no correctly classified clean image)."""
    return x == y or (math.isnan(x) and math.isnan(y))


def source_row(sweep: Path, row: dict) -> tuple[dict, dict]:
    """The results.json a table row names, and the one attack row in it that the table row is."""
    full = json.loads((sweep / row["job"] / "results.json").read_text())
    ident = ("role", "source", "attack", "direction")
    found = [
        a
        for a in full["attacks"]
        if all(str(a[k]) == str(row[k]) for k in ident)
        and float(a["eps"]) == float(row["eps"])
        and int(a["class"]) == int(row["class"])
    ]
    assert len(found) == 1, row
    return full, found[0]


def test_every_number_in_the_csv_is_the_one_in_its_results_file(smoke_sweep, tmp_path):
    sweep = smoke_sweep["sweep"]
    out = tmp_path / "t.csv"
    proc = results_cli(sweep, "--to", "csv", "--out", out)
    assert proc.returncode == 0, proc.stderr
    with out.open() as f:
        rows = list(csv.DictReader(f))
    files = sorted(sweep.rglob("results.json"))
    assert len(rows) == sum(len(json.loads(p.read_text())["attacks"]) for p in files)
    for row in rows:
        full, a = source_row(sweep, row)
        for m in METRICS:  # csv holds Python's shortest repr: it parses back to the same float
            assert same(float(row[m]), a[m]), (m, row["job"])
        lo, hi = a["adv_acc_ci95"]
        assert (float(row["adv_acc_lo"]), float(row["adv_acc_hi"])) == (lo, hi)
        assert float(row["clean_acc_lo"]) == a["clean_acc_ci95"][0]
        assert int(row["n"]) == a["n"] and int(row["seed"]) == a["seed"]
        assert json.loads(row["adv_row"]) == a["adv_row"]
        assert json.loads(row["clean_row"]) == a["clean_row"]
        assert row["gradient_masking"] == str(a["gradient_masking"])
        model = full["models"][a["role"]]
        assert row["profile"] == model["spec"]["imbalance"]["name"]
        assert int(row["train_count"]) == model["train_counts"][a["class"]]
        assert row["git"] == full["meta"]["versions"]["git"]
        assert row["dataset"] == full["meta"]["dataset"]
        assert float(row["optimizer.lr"]) == full["config"]["optimizer"]["lr"]
        assert row["model"] == full["config"]["model"]["name"]


def test_jsonl_and_the_data_frame_hold_the_same_table(smoke_sweep, tmp_path):
    import pandas as pd  # the [table] extra, also in [dev]

    sweep = smoke_sweep["sweep"]
    proc = results_cli(sweep, "--to", "jsonl")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    df = table.frame(sweep)
    assert len(df) == len(lines) and list(df.columns) == list(lines[0])
    for m in METRICS:
        assert all(map(same, df[m].tolist(), [x[m] for x in lines])), m
    # the balanced model's rows come with every job that uses its images: flagged, not dropped
    assert (
        df["repeat"].sum() == 8
        and not df[~df["repeat"]].duplicated(["model_key", "images_key"]).any()
    )
    proc = results_cli(sweep, "--to", "parquet", "--out", tmp_path / "t.parquet")
    assert proc.returncode == 0, proc.stderr
    back = pd.read_parquet(tmp_path / "t.parquet")
    assert back["adv_acc"].tolist() == df["adv_acc"].tolist()
    assert back["adv_row"].map(list).tolist() == df["adv_row"].tolist()


def test_a_failed_and_an_unfinished_job_are_listed_missing_not_a_crash(smoke_sweep, tmp_path):
    sweep = shutil.copytree(smoke_sweep["sweep"], tmp_path / "sweep")
    jobs = sorted(p.parent for p in sweep.rglob("results.json"))
    failed, unfinished = jobs[1], jobs[2]
    (failed / "results.json").unlink()
    (failed / "failed.json").write_text(
        json.dumps({"error": "loss is nan", "type": "TrainingError"})
    )
    (unfinished / "results.json").unlink()
    proc = results_cli(sweep, "--to", "csv")
    assert proc.returncode == 0, proc.stderr
    assert f"missing {sweep}/{failed.name}: failed: TrainingError: loss is nan" in proc.stderr
    assert f"missing {sweep}/{unfinished.name}: no results.json" in proc.stderr
    t = table.read(sweep)
    assert {m["job"] for m in t.missing} == {failed.name, unfinished.name}
    assert {r["job"] for r in t.rows} == {j.name for j in jobs} - {failed.name, unfinished.name}
    assert len(proc.stdout.splitlines()) == 1 + len(t.rows)


def test_an_archived_sweep_reads_as_its_folder(smoke_sweep, tmp_path):
    archive = tmp_path / "sweep.tar.gz"
    write_archive(smoke_sweep["sweep"], archive)  # python -m imbadv.report SWEEP --archive FILE
    folder, packed = table.read(smoke_sweep["sweep"]), table.read(archive)
    assert not packed.missing and len(packed.rows) == len(folder.rows)
    for a, b in zip(folder.rows, packed.rows, strict=True):
        assert {**a, "sweep": ""} == {**b, "sweep": ""}
    # One reader of archives: a plain tar of the folder is not a results archive, and is refused
    plain = tmp_path / "plain.tar.gz"
    with tarfile.open(plain, "w:gz") as tf:
        tf.add(smoke_sweep["sweep"], arcname="sweep")
    with pytest.raises(results.SweepError, match="not an imbadv results archive"):
        table.read(plain)


def test_parquet_without_pandas_and_a_bad_path_end_in_one_line(
    smoke_sweep, tmp_path, monkeypatch, capsys
):
    monkeypatch.setitem(sys.modules, "pandas", None)  # as if the [table] extra were not installed
    code = export.main([str(smoke_sweep["sweep"]), "--to", "parquet", "--out", str(tmp_path / "t")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.splitlines()) == 1 and 'pip install -e ".[table]"' in err
    assert not (tmp_path / "t").exists()
    assert export.main([str(tmp_path / "nowhere")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(
        f"imbadv.results: error: {tmp_path / 'nowhere'}: no such sweep folder or results archive"
    )


def test_every_class_rows_with_attack_images_all():
    meta = {"card": {"classes": ["a", "b", "c"]}}
    per_class = [
        {
            "class": c,
            "n": 4,
            "clean_acc": x,
            "clean_acc_ci95": [0, 1],
            "adv_acc": y,
            "adv_acc_ci95": [0, 1],
        }
        for c, x, y in ((0, 0.5, 0.25), (1, 1.0, 0.75), (2, math.nan, math.nan))
    ]
    row = {
        "class": 1,
        "class_name": "b",
        "n": 4,
        "clean_acc": 1.0,
        "clean_acc_ci95": [0.5, 1.0],
        "adv_acc": 0.75,
        "adv_acc_ci95": [0.3, 0.95],
        "relative_drop": 0.25,
        "success_rate": 0.25,
        "clean_row": [0, 4, 0],
        "adv_row": [1, 3, 0],
        "classes": {
            "per_class": per_class,
            "clean_confusion": [[2, 2, 0], [0, 4, 0], [0, 0, 0]],
            "adv_confusion": [[1, 3, 0], [1, 3, 0], [0, 0, 0]],
        },
    }
    out = table.class_metrics(row, meta)
    assert [r["class"] for r in out] == [0, 1, 2]
    assert (
        out[0]["class_name"] == "a" and out[0]["adv_acc"] == 0.25 and out[0]["adv_row"] == [1, 3, 0]
    )
    assert out[0]["relative_drop"] is None  # stored for the target class only
    assert out[1]["relative_drop"] == 0.25 and out[1]["adv_acc_lo"] == 0.3


def test_a_checkpoint_model_is_named_by_its_file_and_sha256():
    record = {
        "spec": {"checkpoint": "cd" * 32},
        "checkpoint": {"file": "m.pt2", "sha256": "cd" * 32},
    }
    cols = table.model_columns(record)
    assert (cols["model_file"], cols["model_sha256"]) == ("m.pt2", "cd" * 32)
    trained = table.model_columns({"spec": {}, "sha256": "ef" * 32})
    assert (trained["model_file"], trained["model_sha256"]) == (None, "ef" * 32)


def test_a_checkpoint_source_is_named_by_its_file_and_sha256():
    models = {
        "target": {"spec": {}},
        "checkpoint:w/m.pt": {"checkpoint": {"file": "m.pt", "sha256": "ab" * 32}},
    }
    cols = table.source_columns(models, {"source": "checkpoint:w/m.pt"})
    assert cols == {"source_file": "m.pt", "source_sha256": "ab" * 32}
    assert table.source_columns(models, {"source": "same"}) == {
        "source_file": None,
        "source_sha256": None,
    }


def test_each_row_carries_its_model_s_clean_prior_for_its_class():
    from imbadv.table import prior

    model = {"clean": {"confusion": [[8, 2, 0], [4, 4, 2], [0, 0, 10]]}}
    assert prior(model, 0) == {"predicted_share": 12 / 30, "precision": 8 / 12}
    assert prior(model, 1)["precision"] == pytest.approx(4 / 6)
    assert prior({}, 0) == {"predicted_share": None, "precision": None}
