"""Issue 11 (a)-(c) from longtail_quick sweeps: per seed, then the mean and 95 % t-interval over seeds.

Usage: python scripts/longtail_summary.py SWEEP [SWEEP ...]. Balanced = mean over the 10 classes;
head3/tail3 = the 3 largest / smallest classes of CIFAR-10-LT (index order); robust = PGD-10 rows.
"""

import json
import math
import sys
from pathlib import Path

T = {1: 12.706, 2: 4.303, 3: 3.182}
data = {}
for root in sys.argv[1:]:
    for p in Path(root).rglob("results.json"):
        r = json.loads(p.read_text())
        cfg = r["config"]
        key = (cfg["adversarial"]["mode"], cfg["objective"]["name"], cfg["seed"])
        d = data.setdefault(
            key, {"clean": r["models"]["target"]["clean"]["per_class_acc"], "adv": {}}
        )
        d["adv"][r["meta"]["class"]] = r["attacks"][0]["adv_acc"]


def stat(xs):
    m = sum(xs) / len(xs)
    if len(xs) < 2:
        return f"{m:.3f} (1 seed)"
    sd = math.sqrt(sum((x - m) ** 2 for x in xs) / (len(xs) - 1))
    h = T[len(xs) - 1] * sd / math.sqrt(len(xs))
    return f"{m:.3f} [{m - h:.3f}, {m + h:.3f}] (n={len(xs)})"


def per_seed(mode, obj, f):
    return [
        f(d)
        for (m, o, s), d in sorted(data.items())
        if m == mode and o == obj and len(d["adv"]) == 10
    ]


def head(v):
    return sum(v[:3]) / 3


def tail(v):
    return sum(v[-3:]) / 3


def adv(d):
    return [d["adv"][k] for k in range(10)]


print(
    "(a) standard CE, clean recall head3 - tail3:",
    stat(per_seed("none", "ce", lambda d: head(d["clean"]) - tail(d["clean"]))),
)
for mode, obj in [
    ("none", "ce"),
    ("fast_fgsm", "ce"),
    ("none", "balanced_softmax"),
    ("fast_fgsm", "balanced_softmax"),
]:
    print(
        f"    {mode:>9} {obj:<16} clean bal {stat(per_seed(mode, obj, lambda d: sum(d['clean']) / 10))}  robust bal {stat(per_seed(mode, obj, lambda d: sum(adv(d)) / 10))}  tail3 clean {stat(per_seed(mode, obj, lambda d: tail(d['clean'])))}"
    )


def diff(a, b, f):
    return [x - y for x, y in zip(per_seed(*a, f), per_seed(*b, f), strict=True)]


print(
    "(b) AT(fast_fgsm)+CE - standard CE, balanced robust acc:",
    stat(diff(("fast_fgsm", "ce"), ("none", "ce"), lambda d: sum(adv(d)) / 10)),
)
print(
    "(c) AT+BSL - AT+CE, tail3 clean recall:",
    stat(diff(("fast_fgsm", "balanced_softmax"), ("fast_fgsm", "ce"), lambda d: tail(d["clean"]))),
)
print(
    "    AT+BSL - AT+CE, balanced robust acc:",
    stat(diff(("fast_fgsm", "balanced_softmax"), ("fast_fgsm", "ce"), lambda d: sum(adv(d)) / 10)),
)
