"""Imbalance: exact counts for every profile and class, and a selection decided by the seed alone."""

import numpy as np
import pytest

from imbadv.errors import ConfigError
from imbadv.imbalance import PROFILES
from imbadv.imbalance.split import class_counts as counts_of
from imbadv.imbalance.split import select

CIFAR = [5000] * 10


def class_counts(available, name, target, **params):
    """The counts of profile `name` through the registry, as settings and experiment use it."""
    return counts_of(available, PROFILES.parse("imbalance", name, params), target)


@pytest.mark.parametrize("target", range(10))
def test_counts_for_every_profile_and_class(target):
    assert class_counts(CIFAR, "balanced", target) == [5000] * 10
    under = class_counts(CIFAR, "under", target)
    over = class_counts(CIFAR, "over", target)
    assert under[target] == 1000 and sum(under) == 46000
    assert over[target] == 5000 and sum(over) == 14000
    assert all(under[c] == 5000 and over[c] == 1000 for c in range(10) if c != target)


def test_counts_are_configurable_and_checked():
    assert class_counts([300] * 3, "under", 1, majority=300, minority=30) == [300, 30, 300]
    with pytest.raises(ConfigError, match="at most the 300"):
        class_counts([300] * 3, "balanced", 0, majority=400)
    with pytest.raises(ConfigError, match="imbalance=sideways"):
        class_counts(CIFAR, "sideways", 0)
    with pytest.raises(ConfigError, match="class=10"):
        class_counts(CIFAR, "under", 10)


def labels(per_class=50, classes=4):
    return np.repeat(np.arange(classes), per_class)[
        np.random.default_rng(9).permutation(per_class * classes)
    ]


def test_selection_exact_counts_and_validation_split():
    y = labels()
    split = select(y, [50, 10, 50, 50], val_fraction=0.2, seed=3)
    assert split.train_counts == (40, 8, 40, 40)
    assert split.val_counts == (10, 2, 10, 10)
    assert np.bincount(y[split.train]).tolist() == [40, 8, 40, 40]
    assert np.bincount(y[split.val]).tolist() == [10, 2, 10, 10]
    assert not set(split.train) & set(split.val)


def test_selection_depends_on_seed_alone():
    y = labels()
    a, b = select(y, [20] * 4, 0.1, seed=1), select(y, [20] * 4, 0.1, seed=1)
    assert np.array_equal(a.train, b.train) and np.array_equal(a.val, b.val)
    c = select(y, [20] * 4, 0.1, seed=2)
    assert not np.array_equal(a.train, c.train)


def test_under_sampled_class_is_a_subset_of_the_balanced_choice():
    # the minority keeps the first images of the same seeded order the full class uses
    y = labels()
    full, under = select(y, [50] * 4, 0.0, seed=5), select(y, [50, 12, 50, 50], 0.0, seed=5)
    assert set(under.train[y[under.train] == 1]) <= set(full.train[y[full.train] == 1])
    other = y[under.train] != 1
    assert np.array_equal(under.train[other], full.train[y[full.train] != 1])
