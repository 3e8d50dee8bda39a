"""The gradient-masking block: each setting's PGD-CE minus PGD-margin gap over seeds."""

from __future__ import annotations

import pytest

from imbadv.report import masking
from imbadv.report.loading import Sweep


def result(mode: str, seed: int, gap: float | None, flagged: bool, learned: bool = True) -> dict:
    rows = [
        {"source": "same", "method": "pgd", "eps": 0.03, "params": {"loss": loss},
         "masking_gap": gap, "gradient_masking": flagged}
        for loss in ("ce", "margin")
    ]  # fmt: skip
    return {
        "meta": {"seed": seed, "imbalance": "exp"},
        "config": {"imbalance": {"name": "exp"}, "adversarial": {"mode": mode}},
        "models": {"target": {"learned": learned, "learned_check": {}}},
        "attacks": rows,
    }


def test_gaps_are_per_setting_and_seed_and_never_learned_models_are_left_out():
    sweep = Sweep(
        [],
        [
            result("pgd_at", 0, 0.02, False),
            result("pgd_at", 1, 0.04, True),
            result("mart", 0, 0.10, True, learned=False),
            result("mart", 1, 0.06, True),
            result("none", 0, None, False),  # no margin twin: no row
        ],
    )
    table = {r[0]: r for r in masking.rows(masking.gaps(sweep))}
    assert sorted(table) == ["exp + mart", "exp + pgd_at"]
    assert table["exp + pgd_at"][2:4] == ["0 1", "+3.0"] and table["exp + pgd_at"][5] == "1 of 2"
    assert table["exp + mart"][2:4] == ["1", "+6.0"] and table["exp + mart"][4] == "—"
    assert masking.blocks(Sweep([], [result("none", 0, None, False)])) == []


@pytest.mark.parametrize("mode", ["pgd_at"])
def test_the_block_has_its_heading(mode):
    (heading, _, table) = masking.blocks(Sweep([], [result(mode, 0, 0.01, False)]))
    assert heading[2].startswith("Gradient masking") and table[0] == "table"
