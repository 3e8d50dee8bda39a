"""Controlled findings and collapse on the committed archives: flagged models, prior, adjustment."""

from __future__ import annotations

from pathlib import Path

import pytest

from imbadv.report import controlled, learning
from imbadv.report.sweep import Floor, attack_rows, choose, load_sweeps

ROOT = Path(__file__).resolve().parents[2]
ARCHIVE = ROOT / "docs" / "results" / "paper-classes5-9.tar.gz"
RULE = {"min_classes": 8, "max_share": 0.5}


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    return load_sweeps([ARCHIVE], tmp_path_factory.mktemp("report"))


def over_6_seed_2(rows):
    return [r for r in rows if (r["imbalance"], r["class"], r["seed"]) == ("over", 6, 2)]


def test_a_collapsed_model_is_left_out_like_one_that_never_learned(sweep):
    plain, ruled = attack_rows(sweep), attack_rows(sweep, RULE)
    assert all(r["learned"] for r in over_6_seed_2(plain))
    assert over_6_seed_2(ruled) and not any(r["learned"] for r in over_6_seed_2(ruled))
    assert Floor().why_out(over_6_seed_2(ruled)[0]) == "a model that never learned (or collapsed)"
    lines = learning.unlearned_models(sweep, ruled, RULE)
    assert any("collapsed: class 6 takes 52.2% of predictions (> 50%)" in line for line in lines)
    assert not any("collapsed" in line for line in learning.unlearned_models(sweep, plain))


def test_the_prior_table_shows_the_over_sampled_model_predicting_its_class_more(sweep):
    rows = {r[0]: r for r in controlled.prior_rows(sweep.results)}
    share = {p: float(rows[p][3].rstrip("%")) for p in ("balanced", "over", "under")}
    assert share["over"] > 3 * share["balanced"] and share["balanced"] > 3 * share["under"]
    assert rows["balanced"][2] == "10.0%"  # the test set is balanced


def test_the_clean_adjustment_is_reported_with_its_sensitivity_and_extrapolation(sweep):
    rows = attack_rows(sweep, RULE)
    found = controlled.at_clean(rows, choose(rows, "fgsm", None), Floor())
    keys = [f.key for f in found]
    assert keys == [
        "under_vs_balanced_at_clean",
        "under_vs_balanced_at_clean_shared_line",
        "over_vs_balanced_at_clean",
        "over_vs_balanced_at_clean_shared_line",
    ]
    assert all(
        "outside the controls' clean range" in f.evidence and "raw +" in f.evidence for f in found
    )
