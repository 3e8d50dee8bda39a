"""Every class measured: per-class accuracies, confusions, worst class, stratified subsets."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from imbadv.attacks import ATTACKS
from imbadv.config.settings import AttackSpec
from imbadv.config.sources import Source
from imbadv.data.base import DataCard, Dataset
from imbadv.metrics import class_summary, stratified_subset
from imbadv.models.vgg import VGG
from imbadv.pipeline.attack import attack_rows
from imbadv.pipeline.job import Job
from imbadv.store import Store


def test_class_summary_counts_every_class_with_its_own_denominator():
    y = np.array([0, 0, 0, 0, 1, 1, 2, 2])
    clean = np.array([0, 0, 0, 1, 1, 1, 2, 0])
    adv = np.array([0, 1, 1, 1, 1, 0, 2, 0])
    out = class_summary(y, clean, adv, 4)
    accs = [(r["n"], r["clean_acc"], r["adv_acc"]) for r in out["per_class"][:3]]
    assert accs == [(4, 0.75, 0.25), (2, 1.0, 0.5), (2, 0.5, 0.5)]
    assert np.isnan(out["per_class"][3]["adv_acc"])  # no images: left out of the means
    assert out["worst_class"] == 0 and out["worst_class_adv_acc"] == 0.25
    assert out["balanced_clean_acc"] == pytest.approx(0.75)
    assert out["balanced_adv_acc"] == pytest.approx((0.25 + 0.5 + 0.5) / 3)
    assert out["adv_confusion"][0] == [1, 3, 0, 0] and sum(map(sum, out["clean_confusion"])) == 8
    low, high = out["per_class"][0]["adv_acc_ci95"]
    assert low < 0.25 < high


def test_stratified_subset_is_seeded_and_per_class():
    y = np.repeat(np.arange(5), [10, 10, 10, 10, 2])
    a = stratified_subset(y, 3, seed=0)
    assert np.bincount(y[a]).tolist() == [3, 3, 3, 3, 2] and np.all(np.diff(a) > 0)
    assert np.array_equal(a, stratified_subset(y, 3, seed=0))
    assert not np.array_equal(a, stratified_subset(y, 3, seed=1))
    assert np.array_equal(stratified_subset(y, None, seed=0), np.arange(y.size))


def tiny_job(images, per_class, store_dir):
    gen = torch.Generator().manual_seed(0)
    y = np.repeat(np.arange(10), 6)
    x = torch.randint(0, 256, (60, 3, 32, 32), generator=gen, dtype=torch.uint8).numpy()
    card = DataCard(tuple("abcdefghij"), 3, 32, (0.5,) * 3, (0.25,) * 3)
    data = Dataset("synthetic", card, x, y, x, y, "test")
    model = VGG(width=0.0625, mean=card.mean, std=card.std).eval()
    spec = AttackSpec(ATTACKS.parse("attack.methods", "fgsm", {}), 0.03)
    s = SimpleNamespace(
        sources=(Source.SAME,),
        named_sources={},
        specs=(spec,),
        seed=0,
        attack_batch_size=16,
        attack_stack="auto",  # one source: nothing to stack either way
        imbalance=SimpleNamespace(name="under"),
        target=3,
        adversarial=SimpleNamespace(mode="none"),
        attack_images=images,
        per_class=per_class,
    )
    store = Store(store_dir)
    job = Job(data, s, 3, torch.device("cpu"), store)
    return attack_rows(job, {"target": model}, {"target": "m"})


def test_rows_measure_every_class_and_keep_the_paper_row(tmp_path):
    (paper,) = tiny_job("target", None, tmp_path)
    assert "classes" not in paper and paper["n"] == 6
    (row,) = tiny_job("all", 4, tmp_path)
    assert row["images"] == {"images": "all", "per_class": 4, "n": 40}
    per_class = row["classes"]["per_class"]
    assert [r["n"] for r in per_class] == [4] * 10
    assert row["n"] == 4  # the paper's numbers: the target class's images of the subset
    assert row["adv_acc"] == per_class[3]["adv_acc"] and "gradient_masking" in row
