"""Report stage, statistics: a cell's mean, sd and 95 % interval over seeds, and paired comparisons."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# Two-sided 95 % Student t quantiles for 1..30 degrees of freedom (no scipy needed for a table).
T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160,
        2.145, 2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056,
        2.052, 2.048, 2.045, 2.042)  # fmt: skip


@dataclass(frozen=True)
class Stat:
    """A cell: mean over seeds with sd and a 95 % interval (Wilson for one seed, t for several)."""

    mean: float
    sd: float
    lo: float
    hi: float
    n: int


def summarize(
    values: list[float], intervals: list[tuple[float, float]] | None = None
) -> Stat | None:
    """Mean, sd and 95 % interval of per-seed values; with one seed its own binomial interval."""
    pairs = [(v, ci) for v, ci in zip(values, intervals or [None] * len(values), strict=True)
             if v is not None and not math.isnan(v)]  # fmt: skip
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
    return T975[df - 1] if df <= len(T975) else 1.959964 + (1.959964**3 + 1.959964) / (4 * df)


@dataclass(frozen=True)
class Finding:
    claim: str
    verdict: str  # supported | not supported | not enough data
    evidence: str


def compare(claim: str, what: str, a: dict[Any, float], b: dict[Any, float], labels: tuple[str, str],
            unit: str = "classes") -> Finding:  # fmt: skip
    """Whether mean(a) > mean(b) over the cases both have, with the paired difference's interval."""
    common = sorted(set(a) & set(b), key=str)
    if not common:
        return Finding(
            claim, "not enough data", f"no {unit} with both {labels[0]} and {labels[1]} results"
        )
    diff = [a[k] - b[k] for k in common]
    ma, mb = np.mean([a[k] for k in common]), np.mean([b[k] for k in common])
    text = (f"{what}: {labels[0]} {ma:.1%} vs {labels[1]} {mb:.1%}, mean over {len(common)} {unit}; "
            f"difference {np.mean(diff):+.1%}")  # fmt: skip
    if len(common) >= 2:
        s = summarize(diff)
        text += f", 95 % interval [{s.lo:+.1%}, {s.hi:+.1%}]" + (
            " (includes 0)" if s.lo <= 0 <= s.hi else ""
        )
    return Finding(claim, "supported" if np.mean(diff) > 0 else "not supported", text)
