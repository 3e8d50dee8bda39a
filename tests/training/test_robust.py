"""Guarantees: diverged training, determinism, concurrent sweeps, full or read-only disks, atomic files."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from imbadv.config.settings import check_folder
from imbadv.core.errors import ConfigError
from imbadv.store import Store, atomic_write_json


@pytest.mark.slow
def test_diverged_training_fails_clearly_and_leaves_the_store_clean(tmp_path):
    proc = run_cli(
        [
            *TINY,
            "class=1",
            "imbalance=under",
            "optimizer.lr=1e6",
            f"paths.store_dir={tmp_path}/store",
            f"hydra.run.dir={tmp_path}/out",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "diverged" in lines[0], proc.stderr[-2000:]
    failed = json.loads((tmp_path / "out" / "failed.json").read_text())
    assert failed["type"] == "TrainingError" and failed["config"]["optimizer"]["lr"] == 1e6
    assert not (tmp_path / "out" / "results.json").exists()
    assert not list((tmp_path / "store" / "models").iterdir())


@pytest.mark.slow
def test_same_config_and_seed_give_the_same_bytes_and_numbers(tmp_path):
    outs = []
    for run in ("a", "b"):
        proc = run_cli(
            [
                *TINY,
                "class=2",
                "imbalance=over",
                f"paths.store_dir={tmp_path}/{run}",
                f"hydra.run.dir={tmp_path}/{run}/out",
            ],
            cwd=tmp_path,
        )
        assert proc.returncode == 0, proc.stderr[-2000:]
        outs.append(json.loads((tmp_path / run / "out" / "results.json").read_text()))
    weights = [sorted((tmp_path / r / "models").glob("*.safetensors")) for r in ("a", "b")]
    assert [p.name for p in weights[0]] == [p.name for p in weights[1]] and len(weights[0]) == 2
    assert all(p.read_bytes() == q.read_bytes() for p, q in zip(*weights, strict=True))
    assert outs[0]["attacks"] == outs[1]["attacks"]
    assert outs[0]["models"]["target"]["clean"] == outs[1]["models"]["target"]["clean"]


@pytest.mark.slow
def test_four_processes_on_one_sweep_do_each_piece_of_work_once(tmp_path):
    store = tmp_path / "store"
    env = {**os.environ, "WANDB_MODE": "disabled"}
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "imbadv.run",
                "-m",
                *TINY,
                "class=0..1",
                "imbalance=under",
                f"paths.store_dir={store}",
                f"hydra.sweep.dir={tmp_path}/sweep{i}",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(4)
    ]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert all(p.returncode == 0 for p in procs), [e[-1500:] for e in errors]
    trained = [t["key"] for t in Store(store).work_log()]
    evaluated = [t["key"] for t in Store(store).work_log("evaluations")]
    assert len(trained) == len(set(trained)) == 3  # balanced + under for class 0 and for class 1
    assert len(evaluated) == len(set(evaluated)) == 2  # one result per (class, imbalance)
    for i in range(4):
        assert len(list((tmp_path / f"sweep{i}").rglob("results.json"))) == 2


def test_unparseable_result_is_recomputed_with_a_warning(tmp_path):
    store = Store(tmp_path)
    result, computed = store.result("r", lambda: {"x": 1})
    assert computed and result == {"x": 1}
    (tmp_path / "results" / "r.json").write_text('{"x": ')  # a file cut short by hand or by disk
    with pytest.warns(UserWarning, match="unreadable"):
        result, computed = store.result("r", lambda: {"x": 2})
    assert computed and result == {"x": 2}
    assert [e["key"] for e in store.work_log("evaluations")] == ["r", "r"]


def test_a_crash_while_writing_leaves_no_file_under_the_final_name(tmp_path, monkeypatch):
    def half_then_disk_full(self, text):
        with open(self, "w") as f:
            f.write(text[: len(text) // 2])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_text", half_then_disk_full)
    target = tmp_path / "results.json"
    with pytest.raises(OSError, match="No space"):
        atomic_write_json(target, {"numbers": list(range(100))})
    assert not target.exists() and not list(tmp_path.iterdir())


def test_read_only_and_full_folders_are_refused_up_front(tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="paths.store_dir=/proc/imbadv"):
        check_folder("paths.store_dir", "/proc/imbadv")  # /proc takes no files, even from root
    (tmp_path / "file").write_text("")
    with pytest.raises(ConfigError, match="is a file"):
        check_folder("paths.store_dir", tmp_path / "file" / "sub")
    usage = type("Usage", (), {"free": 10 * 2**20})
    monkeypatch.setattr("shutil.disk_usage", lambda _: usage)
    with pytest.raises(ConfigError, match="10 MB left"):
        check_folder("hydra.run.dir", tmp_path / "new")
    assert not (tmp_path / "new").exists()  # the check creates nothing
