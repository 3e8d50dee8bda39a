"""Store: content keys, atomic writes, checksums, and one training however many processes ask."""

import json
import multiprocessing as mp
import time

import pytest
import torch

from imbadv.models.vgg import VGG
from imbadv.store import Store, content_key


def small():
    return VGG(width=0.125)


def fake_train(seconds=0.0):
    def train(model):
        time.sleep(seconds)
        model.reset_parameters(torch.Generator().manual_seed(7))
        return {"epochs": 1}

    return train


def test_key_is_stable_and_sensitive():
    assert content_key({"a": 1, "b": [1, 2]}) == content_key({"b": [1, 2], "a": 1})
    assert content_key({"a": 1}) != content_key({"a": 2})


def test_train_once_then_load(tmp_path):
    store = Store(tmp_path)
    a, b = small(), small()
    record, trained = store.model("k1", a, fake_train())
    assert trained and record["size"] > 0 and len(record["sha256"]) == 64
    record2, trained2 = store.model("k1", b, fake_train())
    assert not trained2 and record2["sha256"] == record["sha256"]
    assert all(torch.equal(p, q) for p, q in zip(a.parameters(), b.parameters(), strict=True))
    assert len(store.work_log()) == 1


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_weights_are_retrained_not_loaded(tmp_path, damage):
    store = Store(tmp_path)
    store.model("k", small(), fake_train())
    weights = tmp_path / "models" / "k.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(
        data[: len(data) // 2] if damage == "truncate" else data[:-1] + bytes([data[-1] ^ 1])
    )
    with pytest.warns(UserWarning, match="corrupt"):
        _, trained = store.model("k", small(), fake_train())
    assert trained and len(store.work_log()) == 2


def test_no_partial_file_under_the_final_name(tmp_path):
    store = Store(tmp_path)

    def crash(model):
        raise KeyboardInterrupt  # a job killed while training

    with pytest.raises(KeyboardInterrupt):
        store.model("k", small(), crash)
    assert list((tmp_path / "models").iterdir()) == []


def _worker(root, key, seconds):
    Store(root).model(key, small(), fake_train(seconds))


@pytest.mark.slow
def test_concurrent_processes_train_once(tmp_path):
    ctx = mp.get_context("spawn")
    procs = [ctx.Process(target=_worker, args=(str(tmp_path), "shared", 1.0)) for _ in range(3)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(120)
    assert all(p.exitcode == 0 for p in procs)
    lines = (tmp_path / "trainings.jsonl").read_text().splitlines()
    assert [json.loads(line)["key"] for line in lines] == ["shared"]


def job_keys(overrides):
    """The store keys of a smoke job's model and attack settings, as the experiment computes them."""
    from hydra import compose, initialize_config_dir

    from imbadv.config.settings import from_config
    from imbadv.data.load import load_dataset
    from imbadv.pipeline.attack import attack_identity
    from imbadv.pipeline.plan import model_spec
    from imbadv.run import CONF_DIR

    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose(
            "config",
            overrides=[
                "experiment=smoke",
                "dataset.train_per_class=40",
                "counts.majority=40",
                "counts.minority=8",
                *overrides,
            ],
        )
    s = from_config(cfg)
    data = load_dataset(s.dataset, "unused")
    model = content_key(model_spec(data, s, s.imbalance, 3))
    return model, [content_key(attack_identity(spec)) for spec in s.specs]


def test_a_new_option_with_a_neutral_default_changes_no_key(monkeypatch):
    from dataclasses import dataclass, field, replace

    from imbadv.attacks import ATTACKS, BIMParams
    from imbadv.models import MODELS, VGGParams

    before = job_keys(["imbalance=under", "attack.methods=[fgsm,{name:bim,steps:5}]"])

    @dataclass(frozen=True)
    class VGGWithDropout(VGGParams):
        dropout: float = field(default=0.0)  # 0 = the network as stored before the field

    @dataclass(frozen=True)
    class BIMWithRestarts(BIMParams):
        restarts: int = 1  # 1 = the attack as stored before the field

    monkeypatch.setitem(
        MODELS.entries, "vgg", replace(MODELS.entries["vgg"], params=VGGWithDropout)
    )
    monkeypatch.setitem(
        ATTACKS.entries, "bim", replace(ATTACKS.entries["bim"], params=BIMWithRestarts)
    )
    assert job_keys(["imbalance=under", "attack.methods=[fgsm,{name:bim,steps:5}]"]) == before
    changed = job_keys(
        [
            "imbalance=under",
            "+model.dropout=0.5",
            "attack.methods=[fgsm,{name:bim,steps:5,restarts:2}]",
        ]
    )
    assert (
        changed[0] != before[0] and changed[1][0] == before[1][0] and changed[1][1] != before[1][1]
    )
