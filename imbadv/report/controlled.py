"""Report, controlled findings: imbalance effects at matched clean accuracy, the prior, the gross partner channel.

The raw vulnerability contrasts compare classes a model classifies well with classes it barely
learned; within a model a worse-classified class is also easier to attack. These findings net
that out (report.controls.adjusted_contrast), say how often each model predicts its class, and
pool the partner channel by lost images. Each is keyed for the analysis plan.
"""

from __future__ import annotations

import math
from dataclasses import replace
from types import SimpleNamespace
from typing import Any

import numpy as np

from imbadv.report.controls import Cell, adjusted_contrast, pooled_partner, prior_stats
from imbadv.report.loading import Floor, Selection, attack_rows, pick
from imbadv.report.paper import PAIRS
from imbadv.report.stats import INCONCLUSIVE, INTERVAL, Finding, Paired, compare, effect, not_tested

Block = tuple
PROFILES = ("balanced", "under", "over", "matched")
# (key, claim, treated, sign): sign -1 turns "treated less vulnerable" into a positive claim
AT_CLEAN = (
    (
        "under_vs_balanced_at_clean",
        "Under-sampled models are more vulnerable than the balanced model at matched clean accuracy",
        "under",
        1.0,
    ),
    (
        "over_vs_balanced_at_clean",
        "Over-sampled models are less vulnerable than the balanced model at matched clean accuracy",
        "over",
        -1.0,
    ),
)


def drop_cells(rows: list[dict[str, Any]], sel: Selection, floor: Floor) -> list[Cell]:
    """Same-model cells above the floor, of models that learned: clean accuracy and drop."""
    cells = []
    for r in pick(rows, sel, source="same"):
        if r.get("imbalance") in PROFILES and not floor.why_out(r):
            key = (int(r["seed"]), int(r["class"]), r["imbalance"])
            cells.append(Cell(*key, float(r["clean_acc"]), float(r["relative_drop"])))
    return cells


def signed(test: Paired, sign: float) -> Paired:
    """The contrast turned so that the claim is a positive difference."""
    if sign > 0:
        return test
    lo, hi = -test.hi, -test.lo
    return Paired(test.n, -test.mean, test.sd, lo, hi, -test.d_z, test.verdict, test.p, test.pairs)


def at_clean(rows: list[dict[str, Any]], sel: Selection, floor: Floor) -> list[Finding]:
    """The imbalance contrasts net of clean accuracy: primary (one slope per seed, an intercept
    per control profile) and the shared-intercept line as a sensitivity, beside the raw one."""
    cells = drop_cells(rows, sel, floor)
    out = []
    for key, claim, treated, sign in AT_CLEAN:
        if not {c.profile for c in cells} >= {treated, "balanced"}:
            why = f"no {treated} and balanced cells above the floor"
            out += [
                replace(not_tested(claim, why), key=key),
                replace(not_tested(claim + " (shared line)", why), key=key + "_shared_line"),
            ]
            continue
        for within, suffix in ((True, ""), (False, "_shared_line")):
            adj = adjusted_contrast(cells, treated, "balanced", within=within)
            test, raw = signed(adj.adjusted, sign), signed(adj.raw, sign)
            slopes = [f.b for f in adj.fits.values()]
            if not slopes or not adj.adjusted.pairs:
                why = "no seed with enough control cells to fit the line (5 at least), or no pair"
                out.append(replace(not_tested(claim, why), key=key + suffix))
                continue
            how = "an intercept per control profile" if within else "one intercept (shared line)"
            what = (
                f"relative drop net of clean accuracy (drop = a + b logit(clean) fitted per seed on "
                f"balanced and matched cells, {how}; slopes {min(slopes):+.3f} to {max(slopes):+.3f}); "
                f"raw {raw.mean:+.1%} [{raw.lo:+.1%}, {raw.hi:+.1%}]; {adj.extrapolated} of "
                f"{adj.raw.pairs} {treated} cells outside the controls' clean range (extrapolated)"
            )
            out.append(
                from_paired(key + suffix, claim + (" (shared line)" if suffix else ""), what, test)
            )
    return out


def from_paired(key: str, claim: str, what: str, test: Paired) -> Finding:
    """A finding from a seed-level test whose positive mean is the claim."""
    text = f"{what}: mean difference {test.mean:+.1%} over {test.pairs} (seed, class) pairs from {test.n} seed(s)"
    if test.n < 2:
        return Finding(
            claim, INCONCLUSIVE, text + " (1 seed: no interval)", mean=test.mean, key=key
        )
    text += f", {INTERVAL} [{test.lo:+.1%}, {test.hi:+.1%}], seed-level d_z {effect(test.d_z)}"
    return Finding(claim, test.verdict, text, p=test.p, mean=test.mean, key=key)


def prior_rows(results: list[dict[str, Any]]) -> list[list[str]]:
    """Per profile: the target class's share of all predictions, precision and recall (clean),
    means over (seed, class) models, and the class's share of the test set."""
    per: dict[str, list[Any]] = {}
    for r in results:
        entry, cls = r["models"].get("target"), int(r["meta"]["class"])
        confusion = (entry or {}).get("clean", {}).get("confusion")
        if confusion:
            per.setdefault(r["meta"]["imbalance"], []).append(prior_stats(confusion, cls))
    rows = []
    for profile in sorted(per, key=lambda p: (PROFILES + (p,)).index(p)):
        ps = per[profile]
        mean = {
            k: float(np.nanmean([getattr(p, k) for p in ps]))
            for k in ("share", "true_share", "precision", "recall")
        }
        rows.append(
            [
                profile,
                str(len(ps)),
                *(f"{mean[k]:.1%}" for k in ("true_share", "share", "precision", "recall")),
            ]
        )
    return rows


def prior_blocks(results: list[dict[str, Any]]) -> list[Block]:
    """The prior: how often each model predicts its own target class, clean (descriptive)."""
    rows = prior_rows(results)
    if not rows:
        return []
    head = ["model", "models", "test share", "predicted share", "precision", "recall"]
    return [
        ("h", 2, "The prior: how often a model predicts its target class (clean, descriptive)"),
        (
            "p",
            "A model that predicts its class more often keeps more of that class's images under "
            "attack without being more robust: recall under attack mixes robustness with this "
            "prior. Means over the (seed, class) models of each profile, from their clean confusion "
            "matrices; descriptive, no test.",
        ),
        ("table", head, rows),
    ]


def partner_blocks(rows: list[dict[str, Any]], sel: Selection, names: list[str]) -> list[Block]:
    """The partner channel pooled over models weighted by lost images (descriptive)."""
    lines = []
    for a, b in PAIRS:
        for src, dst in ((a, b), (b, a)):
            if max(src, dst) >= len(names):
                continue
            mine = [
                r
                for r in pick(rows, sel, source="same", **{"class": src})
                if r.get("learned", True)
            ]
            pool = pooled_partner(mine, src, dst)
            if pool.models and not math.isnan(pool.share):
                lines.append(
                    f"{names[src]} -> {names[dst]}: {pool.share:.1%} [{pool.lo:.1%}, {pool.hi:.1%}] of "
                    f"the images wrong under attack (even split {pool.even:.1%}); {pool.models} models, "
                    f"{pool.lost} lost images; unweighted mean {pool.unweighted:.1%}"
                )
    if not lines:
        return []
    text = (
        "Gross partner shares, every profile pooled, each model weighted by the images it lost "
        "(clean right, wrong under attack), a t-interval over seeds: descriptive, no correction. "
        "They count images already wrong before the attack, so they carry the clean confusion "
        "too; the findings below test net flows (what the attack adds) instead."
    )
    return [
        ("h", 2, "The partner class, pooled by lost images (descriptive)"),
        ("p", text),
        ("ul", lines),
    ]


BASELINE = "balanced@seed+1"  # the balanced model of the next seed: an independent twin
TRANSFER = (
    ("transfer_under_vs_baseline", "under"),
    ("transfer_over_vs_baseline", "over"),
)


def efficiencies(
    results: list[dict[str, Any]],
    sel: Selection,
    floor: Floor,
    profile: str,
    source: str,
    collapse: Any,
) -> dict[tuple[int, int], float]:
    """Per (seed, class): the relative drop the `source` model's images cause on the job's own
    `profile` model, as a share of the drop its own gradient causes (1: transfer as strong as
    white box). Both rows from the same job, so both are of the very same attacked model (a
    store key names a model's recipe, not the machine that trained it)."""
    out = {}
    for result in results:
        rows = attack_rows(SimpleNamespace(results=[result]), collapse)
        mine = {r["source"]: r for r in pick(rows, sel, imbalance=profile, role="target")}
        own, other = mine.get("same"), mine.get(source)
        if own is None or other is None or floor.why_out(own) or floor.why_out(other):
            continue
        if own["relative_drop"] > 0:
            out[(int(own["seed"]), int(own["class"]))] = (
                other["relative_drop"] / own["relative_drop"]
            )
    return out


def transfer_vs_baseline(
    results: list[dict[str, Any]], sel: Selection, floor: Floor, collapse: Any = None
) -> list[Finding]:
    """Is transfer from the balanced model weaker on an imbalanced model than between two
    independently trained balanced models? Transfer efficiency, baseline minus imbalanced."""
    base = efficiencies(results, sel, floor, "balanced", BASELINE, collapse)
    out = []
    for key, profile in TRANSFER:
        claim = (
            f"The balanced model's images transfer less to the {profile}-sampled model than to "
            "another seed's balanced model (transfer weaker beyond the baseline)"
        )
        if not base:
            why = (
                f"no `{BASELINE}` rows: run the balanced jobs with attack.sources=[same,{BASELINE}]"
            )
            out.append(replace(not_tested(claim, why), key=key))
            continue
        mine = efficiencies(results, sel, floor, profile, "balanced", collapse)
        what = (
            "transfer efficiency (relative drop from the source's images / from the model's own "
            "gradient, both rows of one job)"
        )
        labels = ("balanced -> balanced@seed+1", f"balanced -> {profile}")
        out.append(replace(compare(claim, what, base, mine, labels), key=key))
    return out


def controlled_findings(
    rows: list[dict[str, Any]],
    sel: Selection,
    floor: Floor,
    results: Any = (),
    collapse: Any = None,
) -> list[Finding]:
    """The findings that need the controls: effects at matched clean accuracy, the transfer
    baseline."""
    return at_clean(rows, sel, floor) + transfer_vs_baseline(list(results), sel, floor, collapse)
