"""Report, statistics: cell summaries, Wilson intervals, paired t-intervals, three-way verdicts, DAFA's rho."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# Two-sided 95 % Student t quantiles for 1..30 degrees of freedom (no scipy needed for a table).
T975 = (
    12.706,
    4.303,
    3.182,
    2.776,
    2.571,
    2.447,
    2.365,
    2.306,
    2.262,
    2.228,
    2.201,
    2.179,
    2.160,
    2.145,
    2.131,
    2.120,
    2.110,
    2.101,
    2.093,
    2.086,
    2.080,
    2.074,
    2.069,
    2.064,
    2.060,
    2.056,
    2.052,
    2.048,
    2.045,
    2.042,
)
Z975 = 1.959964

# The only verdicts a finding can get (issue 12): the 95 % interval of the paired difference
# excludes 0 in the paper's direction, spans 0, or excludes 0 the other way.
CONFIRMED, INCONCLUSIVE, CONTRADICTED = "confirmed", "inconclusive", "contradicted"
VERDICTS = (CONFIRMED, INCONCLUSIVE, CONTRADICTED)
INTERVAL = "paired t-interval (95 %)"


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


def t975(df: int) -> float:
    """Student t 97.5 % quantile; past 30 df the Cornish-Fisher term is within 0.001."""
    return T975[df - 1] if df <= len(T975) else Z975 + (Z975**3 + Z975) / (4 * df)


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
    """Paired differences a - b: mean, sd, the t-interval, Cohen's d_z and the verdict."""

    n: int
    mean: float
    sd: float
    lo: float
    hi: float
    d_z: float
    verdict: str


def verdict(lo: float, hi: float) -> str:
    """Three-way rule on an interval of (paper's direction) differences: 0 inside is inconclusive."""
    if math.isnan(lo) or math.isnan(hi) or lo <= 0 <= hi:
        return INCONCLUSIVE
    return CONFIRMED if lo > 0 else CONTRADICTED


def paired(diffs: list[float]) -> Paired:
    """t-interval over paired differences (signed so the paper's claim is > 0), with d_z."""
    arr = np.asarray(diffs, dtype=float)
    if len(arr) < 2:  # one pair has no spread: no interval, so never a confirmation
        mean = float(arr.mean()) if len(arr) else math.nan
        return Paired(len(arr), mean, math.nan, math.nan, math.nan, math.nan, INCONCLUSIVE)
    mean, sd = float(arr.mean()), float(arr.std(ddof=1))
    half = t975(len(arr) - 1) * sd / math.sqrt(len(arr))
    d_z = mean / sd if sd > 0 else (math.copysign(math.inf, mean) if mean else math.nan)
    return Paired(
        len(arr), mean, sd, mean - half, mean + half, d_z, verdict(mean - half, mean + half)
    )


@dataclass(frozen=True)
class Finding:
    claim: str
    verdict: str  # one of VERDICTS
    evidence: str


def compare(
    claim: str,
    what: str,
    a: dict[Any, float],
    b: dict[Any, float],
    labels: tuple[str, str],
    unit: str = "(seed, class) pairs",
    left_out: str = "",
) -> Finding:
    """Claim mean(a) > mean(b), tested on the keys both have (pairs), by the paired t-interval."""
    common = sorted(set(a) & set(b), key=str)
    tail = f" {left_out}" if left_out else ""
    if not common:
        return Finding(
            claim,
            INCONCLUSIVE,
            f"not in this sweep: no {unit} with both {labels[0]} and {labels[1]} results{tail}",
        )
    test = paired([a[k] - b[k] for k in common])
    ma, mb = np.mean([a[k] for k in common]), np.mean([b[k] for k in common])
    text = (
        f"{what}: {labels[0]} {ma:.1%} vs {labels[1]} {mb:.1%} over {test.n} {unit}; "
        f"mean difference {test.mean:+.1%}"
    )
    if test.n < 2:
        text += f" (1 pair: no interval){tail}"
        return Finding(claim, INCONCLUSIVE, text)
    text += (
        f", {INTERVAL} [{test.lo:+.1%}, {test.hi:+.1%}]"
        f"{' (includes 0)' if test.verdict == INCONCLUSIVE else ''}, Cohen's d_z {effect(test.d_z)}{tail}"
    )
    return Finding(claim, test.verdict, text)


def effect(d_z: float) -> str:
    """Cohen's d_z as text; undefined when every pair has the same difference."""
    return "undefined (sd 0)" if math.isnan(d_z) or math.isinf(d_z) else f"{d_z:+.2f}"


def dafa_rho(base_avg: float, base_worst: float, avg: float, worst: float) -> float:
    """DAFA's robust-fairness ratio of a run against a baseline (Lee et al., ICLR 2024, Sec. 5).

    rho = (worst - base_worst) / base_worst - (base_avg - avg) / base_avg: the relative gain in
    worst-class robust accuracy minus the relative loss in average robust accuracy; > 0 is fairer.
    """
    return (worst - base_worst) / base_worst - (base_avg - avg) / base_avg
