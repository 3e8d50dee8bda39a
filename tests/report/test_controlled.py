"""Controlled findings and collapse on the committed archives: flagged models, prior, adjustment."""

from __future__ import annotations

from pathlib import Path

import pytest

from imbadv.report import controlled, learning
from imbadv.report.loading import Floor, attack_rows, choose, load_sweeps

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


def job(profile: str, seed: int, cls: int, drops: dict[str, float]) -> dict:
    """A results.json with one target-model row per gradient source."""
    rows = [
        {"method": "fgsm", "attack": "fgsm", "eps": 0.01, "direction": "ascent", "source": src,
         "role": "target", "imbalance": profile, "seed": seed, "class": cls, "n": 100,
         "clean_acc": 0.6, "adv_acc": 0.6 * (1 - d), "relative_drop": d, "model_key": f"{profile}{seed}",
         "images_key": f"{src}{seed}{cls}"}
        for src, d in drops.items()
    ]  # fmt: skip
    meta = {"imbalance": profile, "seed": seed, "class": cls}
    return {"meta": meta, "models": {"target": {}}, "attacks": rows, "config": {}}


def sweep_of(transfer_to_under: float) -> list[dict]:
    results = []
    for seed in range(4):
        for cls in range(3):
            base, mine = 0.03 * (seed % 2), 0.03 * ((seed + 1) % 2)  # seeds disagree
            results.append(job("balanced", seed, cls, {"same": 0.8, "balanced@seed+1": 0.4 + base}))
            results.append(
                job("under", seed, cls, {"same": 0.9, "balanced": 0.9 * transfer_to_under + mine})
            )
    return results


@pytest.mark.parametrize(
    ("efficiency", "verdict"), [(0.2, "confirmed"), (0.5, "inconclusive"), (0.8, "contradicted")]
)
def test_transfer_is_judged_against_two_independent_balanced_models(efficiency, verdict):
    sel = choose(job("balanced", 0, 0, {"same": 0.5})["attacks"], "fgsm", None)
    under, over = controlled.transfer_vs_baseline(sweep_of(efficiency), sel, Floor())
    assert under.key == "transfer_under_vs_baseline" and under.verdict == verdict
    assert over.verdict == "not tested"  # no over-sampled jobs here


def test_without_baseline_rows_the_transfer_finding_says_how_to_get_them():
    results = [r for r in sweep_of(0.2) if r["meta"]["imbalance"] == "under"]
    sel = choose(results[0]["attacks"], "fgsm", None)
    (under, _) = controlled.transfer_vs_baseline(results, sel, Floor())
    assert (
        under.verdict == "not tested" and "attack.sources=[same,balanced@seed+1]" in under.evidence
    )
