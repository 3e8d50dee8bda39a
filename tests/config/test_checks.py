"""Defects found by trying imbadv as a new user would, each refused up front or fixed."""

from __future__ import annotations

import json

import pytest
from conftest import TINY, one_line_refusal, run_cli
from omegaconf import OmegaConf

import imbadv.run as run
from imbadv.core.errors import ConfigError


@pytest.mark.slow
@pytest.mark.parametrize(
    ("args", "fragment"),
    [
        (["attack.methods=[{name:bim,alpha:0}]"], "attack.methods.alpha=0"),
        (["counts.majority=abc"], "counts.majority=abc"),
        (["device=cuda:7"], "device=cuda:7"),
        (["device=cuda"], "device=cuda"),
        (["attack.methods=[bim,bim]"], "attack.methods=bim/eps=0.01/ascent"),
    ],
)
def test_bad_values_are_one_line(tmp_path, args, fragment):
    one_line_refusal(run_cli(["experiment=smoke", *args], tmp_path), fragment)


@pytest.mark.slow
def test_missing_data_is_refused_once_before_any_job_folder(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    args = [
        "-m",
        "class=0..9",
        "imbalance=under,over",
        f"dataset.root={empty}",
        "dataset.download=false",
        f"hydra.sweep.dir={tmp_path}/sweep",
    ]
    proc = run_cli(args, tmp_path)
    one_line_refusal(proc, "cifar-10-python.tar.gz")
    assert str(empty) in proc.stderr and not (tmp_path / "sweep").exists()


@pytest.mark.slow
def test_two_settings_of_one_attack_give_two_rows(tmp_path):
    methods = "attack.methods=[{name:bim,steps:1},{name:bim,steps:4,alpha:0.004}]"
    proc = run_cli(
        [
            *TINY,
            "class=1",
            "imbalance=under",
            methods,
            "attack.sources=[same]",
            "hydra.run.dir=out",
            f"paths.store_dir={tmp_path}/store",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    rows = json.loads((tmp_path / "out" / "results.json").read_text())["attacks"]
    assert [r["attack"] for r in rows] == ["bim(steps=1)", "bim(alpha=0.004,steps=4)"]
    assert [r["params"] for r in rows] == [
        {"alpha": pytest.approx(1 / 255), "steps": 1},
        {"alpha": 0.004, "steps": 4},
    ]
    assert rows[0]["max_abs_delta"] <= 1 / 255 + 1e-6 < rows[1]["max_abs_delta"]


def test_every_job_of_a_large_sweep_is_checked(monkeypatch):
    seen = []

    def compose(name, overrides, return_hydra_config=False):
        seen.append(overrides)
        return OmegaConf.create({"hydra": {"sweep": {"dir": "multirun"}}, "seed": overrides[-1]})

    def from_config(cfg):
        if cfg.seed == "seed=2400":  # only the very last of 2,401 jobs is bad
            raise ConfigError("seed", 2400, "a good seed")
        return type("S", (), {"dataset": None, "device": "cpu"})()

    monkeypatch.setattr(run, "compose", compose)
    monkeypatch.setattr(run, "from_config", from_config)
    monkeypatch.setattr(run, "locate_components", lambda s: None)  # the fake has no components
    with pytest.raises(ConfigError, match="seed=2400"):
        run.check_jobs(["-m", "seed=range(0,2401)"])
    assert len(seen) == 2401
