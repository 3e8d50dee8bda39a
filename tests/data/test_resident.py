"""A loaded data set stays resident in the process, and a whole job leaves it as it was loaded."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from conftest import TINY
from hydra import compose, initialize_config_dir

from imbadv.config.settings import CONF_DIR, from_config
from imbadv.data import DATASETS
from imbadv.data.load import load_dataset
from imbadv.pipeline.experiment import run

ARRAYS = ("x_train", "y_train", "x_test", "y_test")


def test_a_job_leaves_the_resident_data_as_loaded(tmp_path):
    overrides = [*TINY, "class=1", "imbalance=under", "adversarial=fast_fgsm", "threads=1"]
    overrides += [f"paths.store_dir={tmp_path}/store", f"paths.data_dir={tmp_path}/data"]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    s = from_config(cfg)
    resident = load_dataset(s.dataset, s.cache_dir)
    assert load_dataset(s.dataset, s.cache_dir) is resident  # the second job reads nothing
    full = run(cfg, tmp_path / "job")
    assert full["meta"]["stage_seconds"]["data"] < 0.5  # it got the resident copy
    fresh = DATASETS.get("dataset", s.dataset.name).load()(s.dataset.params, Path(s.cache_dir))
    for name in ARRAYS:  # training, evaluation and attacks wrote into none of the arrays
        assert np.array_equal(getattr(resident, name), getattr(fresh, name)), name


def test_another_cache_or_another_option_is_another_data_set(tmp_path):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        a = from_config(compose("config", overrides=[*TINY]))
        b = from_config(compose("config", overrides=[*TINY, "dataset.test_per_class=20"]))
    first = load_dataset(a.dataset, tmp_path / "one")
    assert load_dataset(a.dataset, tmp_path / "two") is not first
    assert len(load_dataset(b.dataset, tmp_path / "one").y_test) != len(first.y_test)
