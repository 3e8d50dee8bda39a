"""One job's models: their store identity (spec, key, data identity), reuse without training, roles."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch
from conftest import TINY
from hydra import compose, initialize_config_dir

import imbadv.pipeline.obtain as obtain
import imbadv.pipeline.plan as plan
from imbadv.config.settings import CONF_DIR, from_config
from imbadv.data.load import load_dataset
from imbadv.pipeline.job import Job
from imbadv.store import Store, content_key
from imbadv.training.objectives import LogitAdjusted

CPU = torch.device("cpu")
# The key of the TINY under-sampled class-1 model: a change here orphans every existing store.
UNDER_1_KEY = "9396579671cafd23"
BALANCED_KEY = "e5cd3ecaf9546d06"


def settings(tmp, *extra: str):
    overrides = [*TINY, "trainer.max_epochs=1", "class=1", "imbalance=under", *extra]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        return from_config(compose("config", overrides=[*overrides, f"paths.store_dir={tmp}"]))


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("experiment")
    s = settings(tmp)
    return s, load_dataset(s.dataset, tmp), tmp


def test_model_keys_are_stable_for_a_fixed_config(job):
    s, data, _ = job
    spec = plan.model_spec(data, s, s.imbalance, 1)
    assert sorted(spec) == sorted(
        [
            "class",
            "counts",
            "data",
            "imbalance",
            "model",
            "objective",
            "seed",
            "train",
            "val_fraction",
        ]
    )
    assert content_key(spec) == UNDER_1_KEY
    balanced = plan.balanced_profile(s, data.train_counts())
    # an untargeted model is one model whichever class's job asks for it
    for cls in (0, 1):
        assert content_key(plan.model_spec(data, s, balanced, cls)) == BALANCED_KEY


def test_adversarial_training_enters_the_key_only_when_on(job, tmp_path):
    s, data, _ = job
    on = settings(tmp_path, "adversarial=pgd_at")
    assert "adversarial" in plan.model_spec(data, on, on.imbalance, 1)
    assert "adversarial" not in plan.model_spec(data, s, s.imbalance, 1)


def test_a_data_set_known_by_its_options_is_identified_by_them(job, tmp_path):
    s, data, _ = job
    assert plan.data_identity(data, s) == s.dataset.key()
    other = settings(tmp_path, "dataset.noise=0.5")
    assert plan.data_identity(data, other) != plan.data_identity(data, s)


def test_a_data_set_known_by_its_copy_is_identified_by_its_source(job, monkeypatch):
    s, data, _ = job
    facts = replace(plan.DATASETS.get("dataset", s.dataset.name).facts, identity="source")
    entry = replace(plan.DATASETS.get("dataset", s.dataset.name), facts=facts)
    monkeypatch.setattr(plan.DATASETS, "get", lambda *_: entry)
    assert plan.data_identity(data, s) == {"name": data.name, "source": data.source}


@pytest.mark.slow
def test_a_stored_model_is_reused_without_training(job, monkeypatch):
    s, data, tmp = job
    store = Store(tmp / "store")
    first, record = obtain.obtain_model(Job(data, s, 1, CPU, store), s.imbalance, 1)
    assert record["trained_here"] and record["key"] == UNDER_1_KEY

    def no_training(*args, **kwargs):
        raise AssertionError("a stored model was trained again")

    monkeypatch.setattr(obtain, "fit", no_training)
    again, reused = obtain.obtain_model(Job(data, s, 1, CPU, store), s.imbalance, 1)
    assert not reused["trained_here"] and reused["key"] == record["key"]
    for a, b in zip(first.state_dict().values(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_roles_and_labels_of_planned_models(job):
    s, data, _ = job
    own = plan.plan_model(data, s, s.imbalance, 1, None)
    assert (own.role, own.label, own.key) == (
        "target",
        "target under class 1 (class1)",
        UNDER_1_KEY,
    )
    balanced = plan.balanced_profile(s, data.train_counts())
    planned = plan.plan_model(data, s, balanced, 1, None)
    assert (planned.role, planned.label) == (
        "balanced",
        "balanced",
    )  # untargeted: the profile's name
    named = plan.plan_model(data, s, s.imbalance, 0, "mine")
    assert named.label == "mine under class 0 (class0)"


def test_posthoc_adjustment_wraps_the_model_only_when_asked(job):
    s, _, _ = job
    model = torch.nn.Linear(2, 2)
    record = {"train_counts": [10, 1]}
    assert plan.posthoc(model, record, s, CPU) is model
    tau = replace(s, train=replace(s.train, posthoc_tau=1.0))
    assert isinstance(plan.posthoc(model, record, tau, CPU), LogitAdjusted)


def test_classes_by_index_or_name(job):
    _, data, _ = job
    assert plan.resolve_class(1, data) == plan.resolve_class("class1", data) == 1


def test_the_commit_says_dirty_when_the_code_differs_from_it(tmp_path):
    import subprocess

    from imbadv.pipeline.experiment import git_commit

    assert git_commit(tmp_path) == "unknown"  # not a checkout
    env = ["-c", "user.name=t", "-c", "user.email=t@t"]
    (tmp_path / "imbadv").mkdir()
    (tmp_path / "imbadv" / "a.py").write_text("x = 1\n")
    (tmp_path / "docs.md").write_text("notes\n")
    for args in (["init", "-q"], ["add", "."], [*env, "commit", "-qm", "c"]):
        subprocess.run(["git", *args], cwd=tmp_path, check=True)
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=tmp_path, capture_output=True, text=True).stdout.strip()  # fmt: skip
    (tmp_path / "docs.md").write_text("more notes\n")  # not code: still the commit
    assert git_commit(tmp_path / "imbadv") == head
    (tmp_path / "imbadv" / "b.py").write_text("y = 2\n")  # new code
    assert git_commit(tmp_path / "imbadv") == f"{head}+dirty"


def test_the_commit_is_read_when_the_code_is_loaded_not_when_a_job_ends(monkeypatch):
    import subprocess

    from imbadv.pipeline import experiment

    def no_git(*args, **kwargs):
        raise AssertionError("git was asked after the code was loaded")

    monkeypatch.setattr(subprocess, "run", no_git)
    assert experiment.versions()["git"] == experiment.CODE_COMMIT
