"""Group plan and grouped training in jobs: trainer.group, the plan, the store, a killed group."""

from dataclasses import replace
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tolerance import sgd_bound

from imbadv.config.settings import from_config
from imbadv.core.errors import ConfigError
from imbadv.core.registry import params_key
from imbadv.data.load import load_dataset
from imbadv.grouped.groups import identity, plan, read_plan, write_plan
from imbadv.pipeline import obtain as obtaining
from imbadv.pipeline.job import Job
from imbadv.store import Store
from imbadv.training import TrainSettings

CONF = Path(__file__).resolve().parents[2] / "conf"
CPU = torch.device("cpu")
TINY = [
    "experiment=smoke",
    "dataset.train_per_class=40",
    "dataset.test_per_class=10",
    "counts.majority=40",
    "counts.minority=8",
    "trainer.max_epochs=2",
    "device=cpu",
]


def settings(store: Path, *extra: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        cfg = compose("config", overrides=[*TINY, f"paths.store_dir={store}", *extra])
    return from_config(cfg)


def test_group_is_in_no_store_key_and_refuses_other_words():
    assert params_key(TrainSettings(group="on")) == params_key(TrainSettings(group="off")) == {}
    with pytest.raises(ConfigError) as err:
        settings(Path("store"), "trainer.group=maybe")
    assert str(err.value).splitlines() == [str(err.value)]
    assert "trainer.group" in str(err.value) and "auto, on, off" in str(err.value)


def test_plan_groups_models_that_differ_in_seed_class_or_profile(tmp_path):
    jobs = [settings(tmp_path, f"seed={k}", "trainer.group=on") for k in range(3)]
    jobs.append(settings(tmp_path, "seed=0", "model.width=0.25", "trainer.group=on"))
    jobs.append(settings(tmp_path, "seed=5", "trainer.group=off"))  # off: never planned
    jobs.append(settings(tmp_path, "seed=6", "trainer.group=auto"))  # auto on a CPU: neither
    groups = plan(jobs)
    assert len(groups) == 1  # width 0.25 stands alone: a group needs two members
    (members,) = groups.values()
    assert [m["seed"] for m in members] == [0, 1, 2]
    assert write_plan(jobs) == 1
    assert read_plan(tmp_path, identity(jobs[0])) == members
    assert identity(jobs[0]) != identity(jobs[3])


# SGD: grouped and alone differ by vmap's summation order only, which `sgd_bound` bounds (RMSprop
# turns rounding into whole steps: tests/tolerance.py); 360 training images in batches of 64.
STABLE = [
    "optimizer=sgd",
    "optimizer.lr=0.01",
    "optimizer.momentum=0.9",
    "optimizer.weight_decay=0",
    "trainer.max_epochs=1",
]
ATOL = sgd_bound(0.01, steps=6, momentum=0.9)


def obtain(s, seed: int, data, store: Path):
    s = replace(s, seed=seed)
    return obtaining.obtain_model(Job(data, s, 0, CPU, Store(store)), s.imbalance, 0)


def weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.clone() for k, v in model.state_dict().items()}


def test_a_killed_group_reruns_only_its_missing_members(tmp_path):
    off, on = (settings(tmp_path / "b", *STABLE, f"trainer.group={g}") for g in ("off", "on"))
    data = load_dataset(on.dataset, tmp_path / "cache")
    write_plan([replace(on, seed=k) for k in (0, 1, 2)])
    # the group's last run was killed after member 0 was stored: it is in the store already
    _, first = obtain(off, 0, data, tmp_path / "b")
    assert first["grouped"] is False and first["group"] == "off"
    model, record = obtain(on, 1, data, tmp_path / "b")
    assert record["trained_here"] and record["grouped"] is True and record["group"] == "on"
    keys = record["group_members"]
    assert len(set(keys)) == 3 and keys[0] == record["key"] and first["key"] in keys
    log = [e["key"] for e in Store(tmp_path / "b").work_log()]
    assert log == [first["key"], keys[0], keys[2]] and len(set(log)) == 3  # nothing twice
    for k in (2, 0):  # the other jobs find their member in the store, under its own key
        _, rec = obtain(on, k, data, tmp_path / "b")
        assert not rec["trained_here"] and rec["key"] in keys
    assert len(Store(tmp_path / "b").work_log()) == 3
    stored = {p.stem for p in (tmp_path / "b" / "models").glob("*.json")}
    assert stored == set(keys)  # the same members an uninterrupted group ends with
    alone, rec = obtain(replace(off, store_dir=tmp_path / "a"), 1, data, tmp_path / "a")
    assert rec["key"] == record["key"]  # the key is the same whether trained grouped or not
    assert (rec["epochs"], rec["best_epoch"]) == (record["epochs"], record["best_epoch"])
    mine = model.state_dict()
    assert all(torch.allclose(v, mine[n], atol=ATOL) for n, v in alone.state_dict().items())
