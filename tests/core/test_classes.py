"""imbadv.core.classes: one index-or-name class lookup for `class`, sources and target classes."""

from __future__ import annotations

import pytest

from imbadv.attacks.goals import parse_target_class
from imbadv.config.settings import parse_target
from imbadv.core.classes import class_choices, class_index
from imbadv.core.errors import ConfigError

NAMES = ("plane", "car", "bird")


@pytest.mark.parametrize(
    ("value", "classes", "index"),
    [(1, NAMES, 1), ("2", NAMES, 2), ("car", NAMES, 1), ("car", None, "car"), ("7", None, 7)],
)
def test_an_index_a_digit_string_or_a_name(value, classes, index):
    assert class_index(value, classes, "class", "x") == index
    assert parse_target(value, classes) == index


@pytest.mark.parametrize("value", [True, None, 3, "-1", "ship"])
def test_a_class_the_data_set_lacks_is_refused_with_the_choices(value):
    with pytest.raises(ConfigError, match=r"expected an index 0..2 or a name \(plane, car, bird\)"):
        parse_target(value, NAMES)


def test_choices_without_known_classes():
    assert class_choices(None) == "a class index or name"


def test_a_target_class_is_the_same_lookup_and_never_the_true_class():
    assert parse_target_class("bird", NAMES, 0) == 2
    assert parse_target_class("5", None, 0) == 5
    with pytest.raises(ConfigError, match="a class other than class=1"):
        parse_target_class("car", NAMES, 1)
    with pytest.raises(ConfigError, match="attack.target_class= is not allowed"):
        parse_target_class("", None, 1)
