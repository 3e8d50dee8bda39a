"""Long-tail contrasts from rows: a job that attacked every class (attack.images=all) gives every
class's recall, and a recipe other than the paper's is a factor paired by seed."""

from __future__ import annotations

from imbadv.report import classwise, longtail
from imbadv.report.loading import Selection

SEL = Selection("pgd", 0.03, "ascent", (0.03,))
COUNTS = (900, 700, 540, 420, 320, 250, 190, 150, 120, 90)


def confusion(correct: list[int], n: int = 10) -> list[list[int]]:
    """Class c keeps correct[c] of n images, the rest go to class 0 (or 1 for class 0)."""
    rows = []
    for c, k in enumerate(correct):
        row = [0] * len(correct)
        row[c] = k
        row[1 if c == 0 else 0] += n - k
        rows.append(row)
    return rows


def row(
    group: str, recipe: str, seed: int, clean: list[int], robust: list[int], adv="none"
) -> dict:
    """The class-0 row of a job with attack.images=all (10 images per class)."""
    cc, ac = confusion(clean), confusion(robust)
    return {
        "method": "pgd", "eps": 0.03, "direction": "ascent", "source": "same",
        "group": group, "recipe": recipe, "profile": "exp(ratio=10)", "objective": "ce",
        "adversarial": adv, "imbalance": "exp", "seed": seed, "class": 0, "n": 10,
        "clean_row": cc[0], "adv_row": ac[0], "learned": True,
        "classes": {
            "per_class": [{"class": c, "n": 10} for c in range(10)],
            "clean_confusion": cc,
            "adv_confusion": ac,
        },
    }  # fmt: skip


def test_a_job_of_every_class_gives_every_class_and_the_recipe_is_paired_by_seed():
    paper, new = "exp(ratio=10)", "exp(ratio=10) + sgd/step/crop_flip"
    rows, counts = [], {}
    for seed in (0, 1, 2):
        rows.append(row(paper, "", seed, [9, 8, 7, 6, 5, 4, 3, 2, 1, 0], [1] * 10))
        rows.append(row(new, "sgd/step/crop_flip", seed, [9] * 10, [2 + seed % 2] * 10))
        counts[(paper, seed, 0)] = counts[(new, seed, 0)] = COUNTS
    units = classwise.units_from_rows(rows, SEL, counts=counts)
    assert all(len(u.classes) == 10 and u.train_counts == COUNTS for u in units)
    found = {(c.a, c.b, c.metric): c for c in longtail.contrasts(units)}
    clean = found[(new, paper, "balanced clean")]
    assert clean.seeds == (0, 1, 2) and abs(clean.stat.mean - (0.9 - 0.45)) < 1e-9
    robust = found[(new, paper, "balanced robust")]
    assert abs(robust.stat.mean - (2 + 1 / 3 - 1) / 10) < 1e-9
    assert (paper, new, "balanced clean") not in found  # the paper's recipe is the base


def test_a_model_that_never_learned_is_left_out_of_the_contrasts():
    paper, new = "exp(ratio=10)", "exp(ratio=10) + sgd/step/crop_flip"
    rows, counts = [], {}
    for seed in (0, 1):
        rows.append(row(paper, "", seed, [5] * 10, [1] * 10))
        rows.append(row(new, "sgd/step/crop_flip", seed, [9] * 10, [3] * 10))
        counts[(paper, seed, 0)] = counts[(new, seed, 0)] = COUNTS
    rows[0]["learned"] = False  # the paper recipe's seed-0 model never learned
    units = classwise.units_from_rows(rows, SEL, counts=counts)
    found = {(c.a, c.b, c.metric): c for c in longtail.contrasts(units)}
    assert found[(new, paper, "balanced clean")].seeds == (1,)


def test_a_long_tail_defense_is_paired_with_pgd_at_and_not_the_other_way():
    at, mart, cw = "exp + pgd_at", "exp + mart", "exp + pgd_at(classwise)"
    rows, counts = [], {}
    for seed in (0, 1):
        rows.append(row(at, "", seed, [5] * 10, [1] * 10, "pgd_at"))
        rows.append(row(mart, "", seed, [6] * 10, [2] * 10, "mart"))
        rows.append(row(cw, "", seed, [5] * 10, [3] * 10, "pgd_at(classwise)"))
        for g in (at, mart, cw):
            counts[(g, seed, 0)] = COUNTS
    units = classwise.units_from_rows(rows, SEL, counts=counts)
    found = {(c.a, c.b, c.metric): c for c in longtail.contrasts(units)}
    assert abs(found[(mart, at, "balanced robust")].stat.mean - 0.1) < 1e-9
    assert abs(found[(cw, at, "balanced robust")].stat.mean - 0.2) < 1e-9
    assert (at, mart, "balanced robust") not in found and (mart, cw, "balanced robust") not in found
