"""Two sweeps compared: the differing setting, shared cells paired by seed from the files, one-sided cells."""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import t as student_t

from imbadv.report import compare


def variant(src: Path, dest: Path, seed: int, eps: float, scale: float) -> Path:
    """A copy of a real sweep as if run with another seed and eps: adversarial accuracy scaled
    (so B - A is not 0), store keys suffixed (a new seed trains new models)."""
    shutil.copytree(src, dest)
    for path in dest.rglob("results.json"):
        full = json.loads(path.read_text())
        full["meta"]["seed"] = full["config"]["seed"] = seed
        full["config"]["attack"]["eps"] = eps
        for a in full["attacks"]:
            a |= {"seed": seed, "eps": eps, "adv_acc": a["adv_acc"] * scale}
            a |= {
                "model_key": f"{a['model_key']}-{seed}",
                "images_key": f"{a['images_key']}-{seed}",
            }
        path.write_text(json.dumps(full))
    return dest


def cells_of(root: Path) -> dict[tuple, dict]:
    """(attacked model, source, attack, class, seed) -> the row, straight from the files."""
    out = {}
    for path in sorted(root.rglob("results.json")):
        for a in json.loads(path.read_text())["attacks"]:
            out.setdefault((a["model"], a["source"], a["attack"], a["class"], a["seed"]), a)
    return out


@pytest.fixture(scope="module")
def pair(smoke_sweep, tmp_path_factory) -> tuple[Path, Path]:
    """A: seeds 0 and 1 at eps 0.01; B: the same at eps 0.02, its under-1 job failed."""
    base = tmp_path_factory.mktemp("compare")
    a, b = base / "A", base / "B"
    variant(smoke_sweep["sweep"], a / "seed0", 0, 0.01, 1.0)
    variant(smoke_sweep["sweep"], a / "seed1", 1, 0.01, 0.9)
    variant(smoke_sweep["sweep"], b / "seed0", 0, 0.02, 0.5)
    variant(smoke_sweep["sweep"], b / "seed1", 1, 0.02, 0.8)
    for job in (b / "seed0").glob("class=1,*imbalance=under*"):
        (job / "results.json").unlink()
        (job / "failed.json").write_text(json.dumps({"error": "nan", "type": "TrainingError"}))
    return a, b


def test_the_differing_setting_is_listed_and_cells_pair_across_it(pair):
    c = compare.compare(*pair)
    assert [(d.column, d.a, d.b, d.across) for d in c.differences] == [
        ("eps", ("0.01",), ("0.02",), True)
    ]
    assert [m["job"] for m in c.tables[1].missing][0].startswith("seed0/class=1")


def test_shared_cells_and_their_paired_differences_are_the_files_numbers(pair):
    c = compare.compare(*pair)
    fa, fb = cells_of(pair[0]), cells_of(pair[1])
    by_label = {x.label: x for x in c.shared}
    expected: dict[str, list[tuple[int, float]]] = {}
    for (model, source, attack, cls, seed), ra in fa.items():
        rb = fb.get((model, source, attack, cls, seed))
        if rb is not None:
            label = f"{model} ← {source}: {attack}, class {cls} ({ra['class_name']})"
            expected.setdefault(label, []).append((seed, rb["adv_acc"] - ra["adv_acc"]))
    assert set(by_label) == set(expected) and len(expected) == 20
    for label, diffs in expected.items():
        got = by_label[label]
        assert got.seeds == tuple(sorted(s for s, _ in diffs))
        values = [d for _, d in sorted(diffs)]
        assert math.isclose(got.diff["adv_acc"].mean, np.mean(values), abs_tol=1e-12)
        if len(values) == 2:  # t over the two seeds' differences
            half = student_t.ppf(0.975, 1) * np.std(values, ddof=1) / math.sqrt(2)
            assert math.isclose(got.diff["adv_acc"].hi, np.mean(values) + half, abs_tol=1e-9)
    # over the shared cells: each seed's mean difference first, then t over the 2 seed means
    seed_means = [
        np.mean([d for ds in expected.values() for s, d in ds if s == seed]) for seed in (0, 1)
    ]
    overall = c.overall["all"]["adv_acc"]
    half = student_t.ppf(0.975, 1) * np.std(seed_means, ddof=1) / math.sqrt(2)
    assert overall.n == 2 and overall.pairs == sum(len(ds) for ds in expected.values())
    assert math.isclose(overall.mean, np.mean(seed_means), abs_tol=1e-12)
    assert math.isclose(overall.lo, np.mean(seed_means) - half, abs_tol=1e-9)


def test_a_cell_only_one_sweep_has_is_listed(pair):
    c = compare.compare(*pair)
    # B's under-1 job failed on seed 0 only: its cells are shared on seed 1 alone
    assert c.only == ([], [])
    solo = {x.label: x.seeds for x in c.shared if x.label.startswith("under-1 ←")}
    assert solo and set(solo.values()) == {(1,)}
    # and a sweep without that job at all: only in A
    c = compare.compare(pair[0] / "seed0", pair[1] / "seed0")
    assert "under-1 ← same: fgsm, class 1 (class1)" in c.only[0] and not c.only[1]


def test_the_command_line_prints_and_writes_the_comparison(pair, tmp_path):
    out = tmp_path / "cmp"
    cmd = [sys.executable, "-m", "imbadv.report", *map(str, pair), "--compare", "--out", str(out)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| `eps` | 0.01 | 0.02 | paired across it |" in proc.stdout
    assert (out / "compare.md").read_text() == proc.stdout
    assert len((out / "compare.csv").read_text().splitlines()) == 1 + 20
    proc = subprocess.run(cmd[:4] + ["--compare"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 2 and "--compare takes two sweeps A B, got 1" in proc.stderr
