"""Imbalance: exact counts for every profile and class, and a selection decided by the seed alone."""

import numpy as np
import pytest

from imbadv.core.errors import ConfigError
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


# --- long-tail profiles ---


def test_cifar10_lt_counts_are_ldams_exactly():
    ir10 = class_counts(CIFAR, "exp", None, ratio=10, n_max=5000)
    assert ir10 == [5000, 3871, 2997, 2320, 1796, 1391, 1077, 834, 645, 500]
    assert sum(ir10) == 20431
    ir50 = class_counts(CIFAR, "exp", None, ratio=50, n_max=5000)
    assert ir50[-2:] == [154, 100] and sum(ir50) == 13996
    ir100 = class_counts(CIFAR, "exp", None, ratio=100, n_max=5000)
    assert ir100[-2:] == [83, 50] and sum(ir100) == 12406
    # n_max None = what the data has; IR 1 = balanced
    assert class_counts(CIFAR, "exp", None, ratio=10) == ir10
    assert class_counts(CIFAR, "exp", None, ratio=1) == CIFAR


def test_head_to_tail_order_and_step():
    reverse = class_counts(CIFAR, "exp", 0, ratio=10, order=list(range(9, -1, -1)))
    assert reverse == class_counts(CIFAR, "exp", 0, ratio=10)[::-1]
    assert class_counts(CIFAR, "step", 0, ratio=10, n_max=1000) == [1000] * 5 + [100] * 5
    swapped = class_counts([10] * 4, "step", 0, ratio=2, order=[3, 1, 0, 2])
    assert swapped == [5, 10, 5, 10]
    with pytest.raises(ConfigError, match="permutation of 0..9"):
        class_counts(CIFAR, "exp", 0, order=[0, 1, 2])


def test_matched_control_has_the_total_of_its_profile():
    over = class_counts(CIFAR, "matched", 4, of="over", majority=5000, minority=1000)
    assert over == [1400] * 10
    # the remainder (20,431 = 10 * 2,043 + 1) is dropped: exactly balanced, total within C - 1
    lt = class_counts(CIFAR, "matched", 0, of="exp", ratio=10, n_max=5000, majority=5000)
    assert lt == [2043] * 10
    assert PROFILES.get("imbalance", "matched").facts.targeted is False
    with pytest.raises(ConfigError, match="imbalance.of=nope"):
        PROFILES.parse("imbalance", "matched", {"of": "nope"})
    with pytest.raises(ConfigError, match="imbalance.of=matched"):
        PROFILES.parse("imbalance", "matched", {"of": "matched"})


def test_balanced_counterparts():
    exp = PROFILES.parse("imbalance", "exp", {"ratio": 50})
    assert exp.params.balanced_count([5000] * 10) == 5000
    assert PROFILES.parse("imbalance", "exp", {"n_max": 700}).params.balanced_count() == 700
    matched = PROFILES.parse("imbalance", "matched", {"majority": 3000, "minority": 100})
    assert matched.params.balanced_count() == 3000  # the transfer source of the `over` it controls


def test_bad_long_tail_input_is_refused():
    with pytest.raises(ConfigError, match="imbalance.ratio=0.5"):
        PROFILES.parse("imbalance", "exp", {"ratio": 0.5})
    with pytest.raises(ConfigError, match="at most the 5000"):
        class_counts(CIFAR, "exp", 0, n_max=6000)
    # IR 100 at n_max 100 leaves the tail with 1 image: no validation image at 10 %
    spec = PROFILES.parse("imbalance", "exp", {"ratio": 100, "n_max": 100})
    with pytest.raises(ConfigError, match="validation image"):
        counts_of(CIFAR, spec, 0, val_fraction=0.1)
    assert counts_of(CIFAR, spec, 0, val_fraction=0.0)[-1] == 1
    with pytest.raises(ConfigError, match="validation image"):
        select(labels(), [50, 4, 50, 50], val_fraction=0.1, seed=0)


SPLIT_SCRIPT = """
import sys, numpy as np
from imbadv.imbalance import PROFILES
from imbadv.imbalance.split import class_counts, select
y = np.repeat(np.arange(10), 300)[np.random.default_rng(1).permutation(3000)]
counts = class_counts([300] * 10, PROFILES.parse("imbalance", "exp", {"ratio": 10, "n_max": 300}), 0)
s = select(y, counts, 0.1, seed=int(sys.argv[1]))
sys.stdout.write(s.digest() + " " + np.concatenate([s.train, [-1], s.val]).astype("<i8").tobytes().hex())
"""


def test_split_is_byte_identical_in_a_fresh_process():
    import subprocess
    import sys

    runs = [
        subprocess.run(
            [sys.executable, "-c", SPLIT_SCRIPT, seed], capture_output=True, text=True, check=True
        ).stdout
        for seed in ("7", "7", "8")
    ]
    assert runs[0] == runs[1] and runs[0] != runs[2]
    digest, blob = runs[0].split()
    y = np.repeat(np.arange(10), 300)[np.random.default_rng(1).permutation(3000)]
    here = select(y, class_counts([300] * 10, "exp", 0, ratio=10, n_max=300), 0.1, seed=7)
    assert here.digest() == digest and len(digest) == 16
    assert np.concatenate([here.train, [-1], here.val]).astype("<i8").tobytes().hex() == blob
