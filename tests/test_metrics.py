"""Metrics: accuracies, relative drop, success rate, confusion rows and intervals."""

import math

import numpy as np
import pytest

from imbadv.metrics import (
    attack_summary,
    confusion_matrix,
    model_summary,
    relative_drop,
    success_rate,
    wilson_interval,
)


def test_confusion_matrix_rows_are_true_classes():
    cm = confusion_matrix(np.array([0, 0, 1, 2]), np.array([0, 1, 1, 1]), 3)
    assert cm.tolist() == [[1, 1, 0], [0, 1, 0], [0, 1, 0]]


def test_attack_summary_numbers():
    y = np.full(10, 3)
    clean = np.array([3] * 8 + [5, 5])
    adv = np.array([3] * 4 + [5] * 6)
    s = attack_summary(y, clean, adv, 10)
    assert s["clean_acc"] == 0.8 and s["adv_acc"] == 0.4
    assert s["relative_drop"] == pytest.approx(0.5)
    assert s["success_rate"] == pytest.approx(0.5)  # 4 of the 8 right ones flipped
    assert s["clean_row"][3] == 8 and s["adv_row"][5] == 6 and sum(s["adv_row"]) == 10
    lo, hi = s["adv_acc_ci95"]
    assert lo < 0.4 < hi


def test_edge_cases():
    assert math.isnan(relative_drop(0.0, 0.0))
    assert math.isnan(success_rate(np.array([1]), np.array([0]), np.array([0])))
    assert wilson_interval(0, 100)[0] == 0.0 and wilson_interval(100, 100)[1] == 1.0
    lo, hi = wilson_interval(500, 1000)
    assert hi - lo == pytest.approx(0.062, abs=0.002)  # the +/-3 % of a 1,000-image test set


def test_model_summary_per_class():
    s = model_summary(np.array([0, 0, 1, 1]), np.array([0, 1, 1, 1]), 2)
    assert s["acc"] == 0.75 and s["per_class_acc"] == [0.5, 1.0]


@pytest.mark.parametrize(("k", "n"), [(0, 1000), (1000, 1000), (1, 3), (333, 1000)])
def test_wilson_interval_contains_the_estimate(k, n):
    lo, hi = wilson_interval(k, n)
    assert 0.0 <= lo <= k / n <= hi <= 1.0
