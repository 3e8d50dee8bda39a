"""Models first: a job whose model another job is training trains the sweep's untouched models."""

from dataclasses import replace
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir

from imbadv.config.settings import from_config
from imbadv.data.load import load_dataset
from imbadv.grouped.groups import identity, write_plan
from imbadv.grouped.jobs import sweep_models
from imbadv.pipeline import obtain as obtaining
from imbadv.pipeline.job import Job
from imbadv.pipeline.plan import plan_model
from imbadv.store import Store

CONF = Path(__file__).resolve().parents[2] / "conf"
CPU = torch.device("cpu")
TINY = [
    "experiment=smoke",
    "dataset.train_per_class=40",
    "dataset.test_per_class=10",
    "counts.majority=40",
    "counts.minority=8",
    "trainer.max_epochs=1",
    "device=cpu",
]


def settings(store: Path, *extra: str):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return from_config(compose("config", overrides=[*TINY, f"paths.store_dir={store}", *extra]))


def key(job: Job) -> str:
    s = job.settings
    return plan_model(job.data, s, s.imbalance, job.target, None).key


def test_a_waiting_job_trains_the_sweeps_other_models_as_their_own_jobs_would(tmp_path):
    store = tmp_path / "store"
    s = settings(store, "imbalance=under")  # each job: its under-c model and the balanced one
    jobs = [replace(s, target=c) for c in (0, 1, 2)]
    write_plan(jobs)  # on a CPU with trainer.group=auto: no group, but the sweep's models
    assert not (store / "groups").exists()
    data = load_dataset(s.dataset, tmp_path / "cache")
    planned = {plan.key for _, plan in sweep_models(data, s)}
    assert len(planned) == 4  # under-0, -1, -2 and the balanced model (asked for by every job)
    first = Job(data, jobs[0], 0, CPU, Store(store))
    mine = key(first)
    assert not Store(store).busy(mine)  # nobody trains it: nothing to do but its own model
    obtaining.help_while_busy(first, mine)
    assert Store(store).work_log() == []
    with Store(store).lock(mine):  # another job is training under-0
        assert Store(store).busy(mine)
        obtaining.help_while_busy(first, mine)
        assert not Store(store).recorded(mine)
    trained = [e["key"] for e in Store(store).work_log()]
    others = [key(Job(data, j, c, CPU, Store(store))) for c, j in enumerate(jobs)][1:]
    assert len(trained) == 3 and set(trained) == planned - {mine} and set(others) < set(trained)
    assert first.helped == trained and first.seconds["helping"] > 0  # results.json meta says so
    # each as its own job trains it: the same record and the same weights
    alone = Job(data, jobs[2], 2, CPU, Store(tmp_path / "alone"))
    model, record = obtaining.obtain_model(alone, jobs[2].imbalance, 2)
    stolen, stolen_record = obtaining.obtain_model(
        Job(data, jobs[2], 2, CPU, Store(store)), jobs[2].imbalance, 2
    )
    assert not stolen_record["trained_here"] and stolen_record["key"] == record["key"]
    assert stolen_record["epochs"] == record["epochs"]
    theirs = stolen.state_dict()
    assert all(torch.equal(v, theirs[n]) for n, v in model.state_dict().items())


def test_group_identity_includes_the_recipe(tmp_path):
    a, b = (settings(tmp_path, f"optimizer.lr={lr}") for lr in (0.001, 0.002))
    assert identity(a) != identity(b)
    assert identity(a) == identity(replace(a, seed=3, target=1))
