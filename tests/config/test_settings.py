"""Bad values refused up front by the config layer, each in one exact line naming key, value and
what is allowed: precision, counts that invert a profile, floats in integer fields, bounds."""

from __future__ import annotations

import pytest
from conftest import run_cli

from imbadv.core.errors import ConfigError
from imbadv.core.registry import build_params
from imbadv.training import TrainSettings

PRECISIONS = "auto, 32-true, 16-mixed, bf16-mixed, 16-true, bf16-true, 64-true"
REFUSED = [
    (
        ["trainer.precision=banana"],
        f"trainer.precision=banana is not allowed: expected one of {PRECISIONS}",
    ),
    (
        ["imbalance=under", "counts.majority=200", "counts.minority=300"],
        "imbalance.minority=300 is not allowed: expected an integer <= imbalance.majority=200 "
        "(the profiles read counts.minority and counts.majority)",
    ),
    (
        ["imbalance=over", "counts.majority=200", "counts.minority=300"],
        "imbalance.minority=300 is not allowed: expected an integer <= imbalance.majority=200 "
        "(the profiles read counts.minority and counts.majority)",
    ),
    (
        ["trainer.max_epochs=1e9"],
        "trainer.max_epochs=1000000000.0 is not allowed: expected an integer written in digits "
        "(1000000000)",
    ),
    (
        ["seed=1e12"],
        "seed=1000000000000.0 is not allowed: expected an integer >= 0 and <= 4294967295 written "
        "in digits (1000000000000)",
    ),
    (["seed=-1"], "seed=-1 is not allowed: expected an integer >= 0 and <= 4294967295"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0 is not allowed: expected an integer >= 1"),
    (["attack.batch_size=2.5"], "attack.batch_size=2.5 is not allowed: expected an integer >= 1"),
]


@pytest.mark.parametrize(("args", "line"), REFUSED, ids=[" ".join(a) for a, _ in REFUSED])
def test_bad_values_are_one_exact_line_before_any_work(tmp_path, args, line):
    proc = run_cli(["experiment=smoke", *args, "hydra.run.dir=out"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == f"imbadv: error: {line}"
    assert not (tmp_path / "out").exists()


def test_equal_counts_and_an_integer_given_as_an_integer_are_accepted():
    train = build_params(TrainSettings, "trainer", {"max_epochs": 7, "precision": "bf16-mixed"})
    assert train.max_epochs == 7 and isinstance(train.max_epochs, int)
    with pytest.raises(ConfigError, match=r"^trainer.max_epochs=3.0 .* in digits \(3\)$"):
        build_params(TrainSettings, "trainer", {"max_epochs": 3.0})
    from imbadv.imbalance import PROFILES

    under = PROFILES.parse("imbalance", "under", {"majority": 200, "minority": 200})
    assert under.params.minority == under.params.majority == 200
