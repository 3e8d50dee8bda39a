"""Report, controls: clean-accuracy-adjusted contrasts, the prior, collapse, constant floors, the partner channel.

Method notes (quoted into the analysis plan):

- Clean-accuracy adjustment: drop = a + b * logit(clip(clean)) is fitted by least squares on the
  control profiles' cells (balanced, matched) of each seed separately, and the residual contrast
  treated - control is averaged per seed and given a t-interval over seeds (`clustered`). Per seed,
  as the seed is the unit of replication: one slope for all seeds is shared by every seed's
  contrast, so the t-interval over seeds misses its error; fitted per seed, that error is in the
  seed-to-seed spread. A seed has ~20 control cells (10 classes x 2 profiles) for 2 parameters;
  one with fewer than `min_fit` usable cells is left out (named).
  The intercept cancels in the contrast: adjusted = raw - b * (logit(clean_t) - logit(clean_c)).
  In simulation (tests) the per-seed interval covers the truth in 94-95 % of studies, a pooled
  line's in 84-86 %. One intercept for balanced and matched (the reviewer's line) reads their
  difference in drop (matched: less accurate and less vulnerable, the size effect) as slope and
  flattens it; `within=True` fits one slope with an intercept per control profile.
  The line is a model: treated cells whose clean accuracy lies outside the controls' range are
  extrapolations (counted), and noise in the measured clean accuracy flattens b (under-adjusts).
- The prior: predicted share, precision and recall of a class, read from the full clean confusion
  matrix (rows true class, columns predicted).
- Collapse: a class counts as predicted when it gets at least `min_count` predictions (default 1,
  i.e. any); flagged below `min_classes` predicted classes or above `max_share` for one class.
- Constant floor: any constant predictor has balanced accuracy 1/K (K = classes present in the
  test set); the best one's plain accuracy is the largest class share.
- Partner channel: the share of a class's images misclassified under attack that went to the
  partner, against an even split 1/(K-1); it counts images already wrong clean, so it carries
  the clean confusion too (paper.lost_shares takes net flows instead). Lost images (the weight) are approximated from rows as
  clean_row[c] - adv_row[c] clipped at 0: a net count (an image the attack fixes cancels one it
  breaks), so a lower bound when per-image data is absent. Pooled over models, each weighted by
  its lost images, within each seed; the 95 % interval is a t-interval over the seeds' weighted
  shares, the same seed-level rule as every other finding. Wilson on pooled image counts is not
  used: the images of one model are not independent trials (they share the model).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from imbadv.report.stats import CONFIRMED, Paired, clustered, paired

CLIP = 0.01  # logit of clean accuracy 0 or 1 is infinite; findings' floor leaves out < 5 % anyway
MIN_FIT = 5  # control cells a seed needs for its line (2 parameters, and a spread to fit)
CONTROLS = ("balanced", "matched")


@dataclass(frozen=True)
class Cell:
    """One (seed, class, profile): the target class's clean accuracy and its relative drop."""

    seed: Any
    cls: int
    profile: str
    clean: float
    drop: float


@dataclass(frozen=True)
class Line:
    """drop = a[profile] + b * logit(clean), fitted on n control cells (a shared: equal values)."""

    a: dict[str, float]
    b: float
    n: int


@dataclass(frozen=True)
class Adjusted:
    """Raw and clean-accuracy-adjusted contrasts (treated - control) on the same (seed, class) pairs."""

    raw: Paired
    adjusted: Paired
    fits: dict[Any, Line]  # per seed, or {"pooled": line}
    left_out: tuple[Any, ...]  # seeds with treated cells but no usable line
    extrapolated: int  # treated cells whose clean accuracy is outside the fitted cells' range


def logit(p: Any, clip: float = CLIP) -> np.ndarray:
    """log(p / (1 - p)) with p clipped to [clip, 1 - clip], so 0 and 1 stay finite."""
    q = np.clip(np.asarray(p, dtype=float), clip, 1 - clip)
    return np.log(q / (1 - q))


def fit_line(
    cells: Sequence[Cell], clip: float = CLIP, min_fit: int = MIN_FIT, within: bool = False
) -> Line | None:
    """Least-squares drop on logit(clean), one intercept (or one per profile when `within`).

    None with fewer than `min_fit` cells or no spread in clean to fit a slope on."""
    profiles = sorted({c.profile for c in cells})
    groups = profiles if within else [None]
    x = logit([c.clean for c in cells], clip)
    columns = [[not within or c.profile == p for c in cells] for p in groups]
    design = np.column_stack([x, *columns]).astype(float)
    if len(cells) < max(min_fit, design.shape[1] + 1):
        return None
    coef, _, rank, _ = np.linalg.lstsq(design, [c.drop for c in cells], rcond=None)
    if rank < design.shape[1]:  # every clean accuracy equal (within a profile): no slope
        return None
    a = {p: float(coef[1 + (groups.index(p) if within else 0)]) for p in profiles}
    return Line(a, float(coef[0]), len(cells))


def fit_lines(
    cells: Sequence[Cell],
    fit_on: Sequence[str],
    pooled: bool,
    clip: float,
    min_fit: int,
    within: bool,
) -> dict[Any, Line]:
    """The control line per seed (or one pooled line under the key "pooled")."""
    groups: dict[Any, list[Cell]] = {}
    for c in cells:
        if c.profile in fit_on:
            groups.setdefault("pooled" if pooled else c.seed, []).append(c)
    fits = {k: fit_line(v, clip, min_fit, within) for k, v in groups.items()}
    return {k: v for k, v in fits.items() if v is not None}


def adjusted_contrast(
    cells: Iterable[Cell],
    treated: str,
    control: str,
    fit_on: Sequence[str] = CONTROLS,
    pooled: bool = False,
    clip: float = CLIP,
    min_fit: int = MIN_FIT,
    within: bool = False,
) -> Adjusted:
    """Contrast treated - control in relative drop, raw and net of clean accuracy.

    Assumes one cell per (seed, class, profile) (a duplicate raises), cells already filtered by
    the caller's floor (a cell with a nan clean or drop is skipped), and a drop linear in
    logit(clean) with the same slope for every profile within a seed. `pooled=True` fits one line
    on every seed's controls (the reviewer's fit; seeds then share it, see the module notes);
    `within=True` gives each fitted profile its own intercept, so a difference in drop between
    the controls themselves (balanced vs matched: the size effect) is not read as a slope.
    """
    usable = [c for c in cells if math.isfinite(c.clean) and math.isfinite(c.drop)]
    by = {(c.seed, c.cls, c.profile): c for c in usable}
    if len(by) < len(usable):
        raise ValueError("adjusted_contrast: more than one cell for a (seed, class, profile)")
    fits = fit_lines(usable, fit_on, pooled, clip, min_fit, within)
    span = {k: controls_range(usable, fit_on, k, pooled, clip) for k in fits}
    raw, adj, left, outside = {}, {}, set(), 0
    for (seed, cls, profile), t in by.items():
        k = by.get((seed, cls, control))
        if profile != treated or k is None:
            continue
        key = "pooled" if pooled else seed
        if key not in fits:
            left.add(seed)
            continue
        x_t, x_k = logit(t.clean, clip), logit(k.clean, clip)
        outside += not span[key][0] <= x_t <= span[key][1]
        raw[(seed, cls)] = t.drop - k.drop
        adj[(seed, cls)] = float(raw[(seed, cls)] - fits[key].b * (x_t - x_k))
    return Adjusted(clustered(raw), clustered(adj), fits, tuple(sorted(left, key=str)), outside)


def controls_range(
    cells: Sequence[Cell], fit_on: Sequence[str], key: Any, pooled: bool, clip: float
) -> tuple[float, float]:
    """The logit(clean) range of the cells a line was fitted on: inside it, no extrapolation."""
    x = [logit(c.clean, clip) for c in cells if c.profile in fit_on and (pooled or c.seed == key)]
    return float(np.min(x)), float(np.max(x))


def as_matrix(confusion: Any) -> np.ndarray:
    """A square, non-negative confusion matrix with at least one image, as floats."""
    m = np.asarray(confusion, dtype=float)
    if m.ndim != 2 or m.shape[0] != m.shape[1] or (m < 0).any() or m.sum() <= 0:
        raise ValueError(f"not a confusion matrix: shape {m.shape}, total {m.sum()}")
    return m


def ratio(a: float, b: float) -> float:
    return float(a / b) if b > 0 else math.nan


@dataclass(frozen=True)
class Prior:
    """Class `cls` in a model's predictions: how often it is predicted, and how right that is."""

    share: float  # predicted share over all test images
    true_share: float  # its share of the test set, for comparison
    precision: float  # nan when never predicted
    recall: float


def prior_stats(confusion: Any, cls: int) -> Prior:
    """Predicted share, precision and recall of `cls`; assumes rows true, columns predicted."""
    m = as_matrix(confusion)
    total, col, row = m.sum(), m[:, cls].sum(), m[cls].sum()
    return Prior(col / total, row / total, ratio(m[cls, cls], col), ratio(m[cls, cls], row))


@dataclass(frozen=True)
class Collapse:
    """Whether a model's predictions collapsed onto few classes, with the reason ("" if not)."""

    flagged: bool
    predicted: int  # classes predicted at least min_count times
    classes: int
    top: int  # the most predicted class
    top_share: float
    reason: str


def collapsed(confusion: Any, min_classes: int, max_share: float, min_count: int = 1) -> Collapse:
    """Flag a model predicting fewer than `min_classes` classes or one class above `max_share`.

    Assumes rows true, columns predicted; a class is "predicted" with >= `min_count` predictions
    (1: at all; a class predicted once in 10,000 images may deserve a higher count).
    """
    m = as_matrix(confusion)
    cols = m.sum(axis=0)
    shares = cols / cols.sum()
    never = [int(j) for j in np.flatnonzero(cols < min_count)]
    top = int(np.argmax(cols))
    reasons = []
    if len(cols) - len(never) < min_classes:
        reasons.append(
            f"predicts {len(cols) - len(never)} of {len(cols)} classes (< {min_classes}); "
            f"never class(es) {', '.join(map(str, never))}"
        )
    if shares[top] > max_share:
        reasons.append(f"class {top} takes {shares[top]:.1%} of predictions (> {max_share:.0%})")
    n = len(cols) - len(never)
    return Collapse(bool(reasons), n, len(cols), top, float(shares[top]), "; ".join(reasons))


@dataclass(frozen=True)
class ConstantFloor:
    """What a model predicting one class for every image scores on a test set."""

    balanced: float  # mean per-class recall: 1/K for any constant predictor
    plain: float  # accuracy of predicting the most common class: its share
    best: int  # that class


def constant_floor(class_counts: Sequence[int]) -> ConstantFloor:
    """Balanced and plain accuracy of the best constant predictor, from test images per class.

    Assumes balanced accuracy averages recall over the classes present (count > 0): the constant
    class gets recall 1, every other 0, so 1/K whichever class it is.
    """
    counts = np.asarray(class_counts, dtype=float)
    present = int((counts > 0).sum())
    if present == 0 or (counts < 0).any():
        raise ValueError(f"constant_floor: no test images in {list(class_counts)}")
    best = int(np.argmax(counts))
    return ConstantFloor(1 / present, float(counts[best] / counts.sum()), best)


def lost_images(clean_row: Sequence[int], adv_row: Sequence[int], c: int) -> int:
    """Net images of class c the attack made wrong: clean_row[c] - adv_row[c], clipped at 0.

    Without per-image data this is a lower bound: an image the attack makes right cancels one it
    makes wrong."""
    return max(0, int(clean_row[c]) - int(adv_row[c]))


def partner_share(adv_row: Sequence[int], c: int, partner: int) -> float:
    """Share of class c's images misclassified under attack that went to `partner`; nan if none.

    Assumes adv_row[j] counts class c's attacked images predicted as j. The share counts every
    image wrong under attack, including those already wrong clean."""
    row = np.asarray(adv_row, dtype=float)
    return ratio(row[partner], row.sum() - row[c])


def even_split(classes: int) -> float:
    """The share each wrong class gets if errors spread evenly: 1/(K-1)."""
    return 1 / (classes - 1)


@dataclass(frozen=True)
class PartnerPool:
    """The partner share pooled over models (weighted by lost images) against the even split."""

    share: float  # mean of the seeds' weighted shares: the interval's centre
    lo: float
    hi: float
    even: float
    test: Paired  # seed-level test of share - even (p and verdict as for every finding)
    pooled: float  # every model at once, weighted by lost images
    unweighted: float  # plain mean over models, for comparison
    models: int
    lost: int
    exceeds: bool  # the whole interval above the even split


def pooled_partner(rows: Iterable[Mapping[str, Any]], c: int, partner: int) -> PartnerPool:
    """Pool `partner_share` over models of class c, each weighted by its lost images.

    Rows are attack rows (keys seed, clean_row, adv_row) of models whose target class is c; a
    model with no lost image or no misclassified image has no weight and is skipped. Within a
    seed the shares are weighted by lost images; the seeds' shares get a t-interval.
    """
    per_seed: dict[Any, list[tuple[int, float]]] = {}
    classes = 0
    for r in rows:
        w, s = lost_images(r["clean_row"], r["adv_row"], c), partner_share(r["adv_row"], c, partner)
        classes = len(r["adv_row"])
        if w > 0 and not math.isnan(s):
            per_seed.setdefault(r["seed"], []).append((w, s))
    even = even_split(classes) if classes > 1 else math.nan
    seeds = {
        g: np.average([s for _, s in v], weights=[w for w, _ in v]) for g, v in per_seed.items()
    }
    models = [ws for v in per_seed.values() for ws in v]
    test = replace(paired([float(v - even) for v in seeds.values()]), pairs=len(models))
    weights, shares = [w for w, _ in models] or [1], [s for _, s in models] or [math.nan]
    return PartnerPool(
        test.mean + even,
        test.lo + even,
        test.hi + even,
        even,
        test,
        float(np.average(shares, weights=weights)),
        float(np.mean(shares)),
        len(models),
        int(sum(w for w, _ in models)),
        test.verdict == CONFIRMED,
    )
