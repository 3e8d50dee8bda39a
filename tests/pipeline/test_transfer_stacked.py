"""attack.stack in a transfer-matrix sweep: the same sets under the same keys, logged as stacked.

The sweep runs twice on one store: with attack.stack=on, then, its images and results removed
(the models kept, so both runs attack the same weights), with attack.stack=off. Tolerance as in
tests/grouped/test_stacked_attacks.py: at most 1e-3 of a set's pixel values may differ (a sign flip
where the input gradient is ~0, under another float summation order).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY, run_cli

TOLERANCE = 1e-3


def sweep(base: Path, stack: str) -> list[dict]:
    out = base / f"sweep-{stack}"
    args = ["-m", *TINY, "class=1", "imbalance=balanced,under,over", "attack=matrix"]
    args += [f"attack.stack={stack}", f"paths.store_dir={base / 'store'}", f"hydra.sweep.dir={out}"]
    proc = run_cli(args, cwd=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted(out.rglob("results.json"))]
    return [r for res in results for r in res["attacks"]]


def images(store: Path) -> dict[str, np.ndarray]:
    return {p.stem: np.load(p)["adv"] for p in sorted((store / "images").glob("*.npz"))}


def log(store: Path) -> list[dict]:
    lines = (store / "craftings.jsonl").read_text().splitlines()
    return [json.loads(line) for line in lines]


@pytest.fixture(scope="module")
def both(tmp_path_factory) -> dict:
    base = tmp_path_factory.mktemp("stacked")
    store = base / "store"
    on = {"rows": sweep(base, "on"), "images": images(store), "log": log(store)}
    for done in ("images", "results", "craftings.jsonl"):  # keep the models: the same weights
        path = store / done
        shutil.rmtree(path) if path.is_dir() else path.unlink()
    off = {"rows": sweep(base, "off"), "images": images(store), "log": log(store)}
    return {"on": on, "off": off}


@pytest.mark.slow
def test_stacked_sets_are_logged_as_such_and_made_once(both):
    on, off = both["on"]["log"], both["off"]["log"]
    # 3 sources (balanced, under-1, over-1) x 2 attacks, all made by the first job in one call
    assert len(on) == len({e["key"] for e in on}) == 6
    assert all(e["stacked"] == 3 for e in on)
    assert len(off) == 6 and not any("stacked" in e for e in off)
    assert {e["key"] for e in on} == {e["key"] for e in off}  # the switch is in no key


def test_each_key_holds_the_same_images_either_way(both):
    on, off = both["on"]["images"], both["off"]["images"]
    assert on.keys() == off.keys() and len(on) == 6
    for key in on:
        assert on[key].shape == off[key].shape and on[key].dtype == np.float32
        assert float((on[key] != off[key]).mean()) <= TOLERANCE, key
    # a mix-up of members (each source's images stored under another's key) would not pass
    first, *others = sorted(on)
    assert all(float((on[first] != off[o]).mean()) > 0.1 for o in others)


def test_the_rows_are_the_same_either_way(both):
    on, off = both["on"]["rows"], both["off"]["rows"]
    # 3 jobs x 3 sources x 2 attacks, and the balanced model's own rows in the 2 imbalanced jobs
    assert len(on) == len(off) == 22
    assert on == off
