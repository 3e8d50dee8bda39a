"""Report, statistics: cell summaries, Wilson intervals, seed-level paired intervals, Holm-adjusted verdicts, DAFA's rho."""

from __future__ import annotations

import math
from dataclasses import dataclass, replace
from functools import lru_cache
from typing import Any

import numpy as np
from scipy.stats import t as student_t

Z975 = 1.959964

# The only verdicts a tested finding can get: its Holm-adjusted p is below 0.05
# with the difference in the paper's direction, is not, or is below with the opposite sign.
CONFIRMED, INCONCLUSIVE, CONTRADICTED = "confirmed", "inconclusive", "contradicted"
VERDICTS = (CONFIRMED, INCONCLUSIVE, CONTRADICTED)
INTERVAL = "t-interval over seed means (95 %)"


@dataclass(frozen=True)
class Stat:
    """A cell: mean over seeds with sd and a 95 % interval (Wilson for one seed, t for several)."""

    mean: float
    sd: float
    lo: float
    hi: float
    n: int


def summarize(
    values: list[float], intervals: list[tuple[float, float] | None] | None = None
) -> Stat | None:
    """Mean, sd and 95 % interval of per-seed values; with one seed its own binomial interval."""
    pairs = [
        (v, ci)
        for v, ci in zip(values, intervals or [None] * len(values), strict=True)
        if v is not None and not math.isnan(v)
    ]
    if not pairs:
        return None
    arr = np.array([v for v, _ in pairs], dtype=float)
    if len(arr) == 1:
        lo, hi = pairs[0][1] if pairs[0][1] is not None else (math.nan, math.nan)
        return Stat(float(arr[0]), math.nan, float(lo), float(hi), 1)
    sd = float(arr.std(ddof=1))
    half = t975(len(arr) - 1) * sd / math.sqrt(len(arr))
    return Stat(float(arr.mean()), sd, float(arr.mean() - half), float(arr.mean() + half), len(arr))


@lru_cache(maxsize=256)
def t975(df: int) -> float:
    """Student t 97.5 % quantile, exact (scipy); cached because the report asks for few df."""
    return float(student_t.ppf(0.975, df))


def wilson(k: float, n: float) -> tuple[float, float]:
    """95 % Wilson score interval of k successes in n trials; (nan, nan) when n is 0."""
    if n <= 0:
        return math.nan, math.nan
    p, z2 = k / n, Z975**2
    centre = (p + z2 / (2 * n)) / (1 + z2 / n)
    half = Z975 * math.sqrt(p * (1 - p) / n + z2 / (4 * n * n)) / (1 + z2 / n)
    return max(0.0, centre - half), min(1.0, centre + half)


@dataclass(frozen=True)
class Paired:
    """Paired differences a - b: mean, sd, the t-interval, Cohen's d_z and the verdict.

    `paired` treats every difference as independent; `clustered` first averages within each
    cluster (seed), so `n` is the number of seeds and `pairs` the differences behind them."""

    n: int
    mean: float
    sd: float
    lo: float
    hi: float
    d_z: float
    verdict: str
    p: float = math.nan  # two-sided, against a mean difference of 0
    pairs: int = 0


def verdict(lo: float, hi: float) -> str:
    """Three-way rule on an interval of (paper's direction) differences: 0 inside is inconclusive."""
    if math.isnan(lo) or math.isnan(hi) or lo <= 0 <= hi:
        return INCONCLUSIVE
    return CONFIRMED if lo > 0 else CONTRADICTED


def paired(diffs: list[float]) -> Paired:
    """t-interval over differences taken as independent (signed so the claim is > 0), with d_z."""
    arr = np.asarray(diffs, dtype=float)
    if len(arr) < 2:  # one value has no spread: no interval, so never a confirmation
        mean = float(arr.mean()) if len(arr) else math.nan
        nan = math.nan
        return Paired(len(arr), mean, nan, nan, nan, nan, INCONCLUSIVE, nan, len(arr))
    mean, sd = float(arr.mean()), float(arr.std(ddof=1))
    half = t975(len(arr) - 1) * sd / math.sqrt(len(arr))
    d_z = mean / sd if sd > 0 else (math.copysign(math.inf, mean) if mean else math.nan)
    if sd > 0:
        p = float(2 * student_t.sf(abs(mean) / (sd / math.sqrt(len(arr))), len(arr) - 1))
    else:  # every difference equal: certain unless they are all 0
        p = 0.0 if mean else 1.0
    lo, hi = mean - half, mean + half
    return Paired(len(arr), mean, sd, lo, hi, d_z, verdict(lo, hi), p, len(arr))


def clustered(diffs: dict[Any, float], cluster: Any = lambda key: key[0]) -> Paired:
    """The interval at the unit of replication: average within each cluster, t over clusters.

    Classes of one seed share that seed's models (the balanced one, the matched one, every
    long-tail setting's), so their differences move together; only seeds replicate the study.
    """
    groups: dict[Any, list[float]] = {}
    for key, value in diffs.items():
        groups.setdefault(cluster(key), []).append(value)
    return replace(paired([float(np.mean(v)) for v in groups.values()]), pairs=len(diffs))


def holm(ps: list[float]) -> list[float]:
    """Holm's step-down adjusted p-values (family-wise error), in the order given; nan stays nan."""
    known = sorted((p, i) for i, p in enumerate(ps) if not math.isnan(p))
    out, running = [math.nan] * len(ps), 0.0
    for rank, (p, i) in enumerate(known):
        running = max(running, min(1.0, (len(known) - rank) * p))
        out[i] = running
    return out


NOT_TESTED = "not tested"  # the sweep lacks the runs: listed apart, never a verdict
ALPHA = 0.05


@dataclass(frozen=True)
class Finding:
    """A claim, its verdict (or NOT_TESTED) and the numbers; p raw and Holm-adjusted."""

    claim: str
    verdict: str  # one of VERDICTS, or NOT_TESTED
    evidence: str
    p: float = math.nan
    p_adj: float = math.nan
    mean: float = math.nan
    key: str = ""  # the analysis plan's name for it (conf/report/plan.yaml), e.g. under_vs_balanced

    @property
    def tested(self) -> bool:
        return self.verdict != NOT_TESTED


def keyed(found: list[Finding], keys: list[str]) -> list[Finding]:
    """The findings with their plan keys, in order."""
    return [replace(f, key=k) for f, k in zip(found, keys, strict=True)]


def not_tested(claim: str, why: str) -> Finding:
    return Finding(claim, NOT_TESTED, why)


def adjust(found: list[Finding]) -> list[Finding]:
    """Holm over the findings of one report: the verdict follows the adjusted p, shown beside the raw."""
    adj = holm([f.p for f in found])
    # the family is the findings with a p-value: one whose pairs were all left out (e.g. every
    # model never learned) is tested without an answer, and adds no hypothesis to correct for
    family = sum(not math.isnan(f.p) for f in found)
    out = []
    for f, q in zip(found, adj, strict=True):
        if math.isnan(f.p):
            out.append(f)
            continue
        v = INCONCLUSIVE if q >= ALPHA else (CONFIRMED if f.mean > 0 else CONTRADICTED)
        note = f"; p = {pval(f.p)}, Holm-adjusted p = {pval(q)} (Holm over the {family} findings with a p-value)"
        out.append(replace(f, verdict=v, p_adj=q, evidence=f.evidence + note))
    return out


def pct(v: float | None, signed: bool = False) -> str:
    """A fraction as percent with one decimal (`+` with `signed`); "—" for None or NaN."""
    return "—" if v is None or math.isnan(v) else f"{100 * v:{'+' if signed else ''}.1f}"


def pval(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}" if p < 0.01 else f"{p:.3f}"


def signs(diffs: dict[Any, float], part: Any = lambda key: key[1:]) -> tuple[int, int]:
    """Of the classes (or cases), how many have a seed-averaged difference in the claimed direction."""
    groups: dict[Any, list[float]] = {}
    for key, value in diffs.items():
        groups.setdefault(part(key), []).append(value)
    return sum(np.mean(v) > 0 for v in groups.values()), len(groups)


def compare(
    claim: str,
    what: str,
    a: dict[Any, float],
    b: dict[Any, float],
    labels: tuple[str, str],
    unit: str = "(seed, class) pairs",
    left_out: str = "",
    parts: str = "classes",
) -> Finding:
    """Claim mean(a) > mean(b) on the keys both have (seed first), tested at the seed level.

    The means shown are means of seed means, the same weighting as the interval."""
    common = sorted(set(a) & set(b), key=str)
    tail = f" {left_out}" if left_out else ""
    if not common:
        return not_tested(claim, f"no {unit} with both {labels[0]} and {labels[1]} results{tail}")
    diffs = {k: a[k] - b[k] for k in common}
    test = clustered(diffs)
    ma, mb = (clustered({k: d[k] for k in common}).mean for d in (a, b))
    up, of = signs(diffs)
    text = (
        f"{what}: {labels[0]} {ma:.1%} vs {labels[1]} {mb:.1%} over {test.pairs} {unit} "
        f"from {test.n} seed(s); mean difference {test.mean:+.1%}, {up} of {of} {parts} "
        "in the claimed direction"
    )
    if test.n < 2:
        text += f" (1 seed: no interval at the unit of replication){tail}"
        return Finding(claim, INCONCLUSIVE, text, mean=test.mean)
    text += (
        f", {INTERVAL} [{test.lo:+.1%}, {test.hi:+.1%}]"
        f"{' (includes 0)' if test.verdict == INCONCLUSIVE else ''}, "
        f"seed-level d_z {effect(test.d_z)}{tail}"
    )
    return Finding(claim, test.verdict, text, p=test.p, mean=test.mean)


def effect(d_z: float) -> str:
    """Cohen's d_z as text; undefined when every pair has the same difference."""
    return "undefined (sd 0)" if math.isnan(d_z) or math.isinf(d_z) else f"{d_z:+.2f}"


def dafa_rho(base_avg: float, base_worst: float, avg: float, worst: float) -> float:
    """DAFA's robust-fairness ratio of a run against a baseline (Lee et al., ICLR 2024, Sec. 5).

    rho = (worst - base_worst) / base_worst - (base_avg - avg) / base_avg: the relative gain in
    worst-class robust accuracy minus the relative loss in average robust accuracy; > 0 is fairer.
    """
    return (worst - base_worst) / base_worst - (base_avg - avg) / base_avg
