"""Compare the attack rows of two runs (folders of results.json) number by number.

Usage: python scripts/compare_results.py BEFORE AFTER. Rows are matched by (class, imbalance,
source, method, eps, direction); every field both rows have is compared exactly. Exits 1 on any
difference. Used to show that a refactor changed no number (CPU runs are deterministic).
"""

from __future__ import annotations

import json
import math
import sys
from pathlib import Path

KEY = ("class", "imbalance", "source", "method", "eps", "direction")


def rows(folder: Path) -> dict[tuple, dict]:
    out = {}
    for path in sorted(folder.rglob("results.json")):
        for row in json.loads(path.read_text())["attacks"]:
            out[tuple(row[k] for k in KEY)] = row
    return out


def same(x: object, y: object) -> bool:
    """Equal, NaN counting as equal to NaN (a relative drop of a class never classified right)."""
    return x == y or (
        isinstance(x, float) and isinstance(y, float) and math.isnan(x) and math.isnan(y)
    )


def main(before: str, after: str) -> int:
    a, b = rows(Path(before)), rows(Path(after))
    diffs = [f"missing in one run: {sorted(set(a) ^ set(b))}"] if set(a) != set(b) else []
    fields = 0
    for key in sorted(set(a) & set(b), key=str):
        for name in sorted(set(a[key]) & set(b[key])):
            fields += 1
            if not same(a[key][name], b[key][name]):
                diffs.append(f"{key} {name}: {a[key][name]} != {b[key][name]}")
    print(f"{len(set(a) & set(b))} rows, {fields} fields compared, {len(diffs)} differences")
    print("\n".join(diffs[:20]))
    return 1 if diffs else 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:3]))
