"""scripts/gpu_reference.sh on CPU at smoke size: chunks archived, the page's GPU sections written,
a second call redoes nothing, and a lease too short starts nothing (issue 21)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def gpu_reference(tmp: Path, budget: int = 900) -> subprocess.CompletedProcess:
    env = {
        **os.environ,
        "PY": sys.executable,
        "BUDGET": str(budget),
        "DEST": str(tmp / "results"),
        "PAGE": str(tmp / "results.md"),
        "WORK": str(tmp / "work"),
        "PAPER": "experiment=smoke",
        "PAPER_GRID": "class=0 imbalance=under",
        "PAPER_SEEDS": "0",
        "PAPER_MIN": "1",
        "LONGTAIL": "experiment=smoke imbalance=exp attack.methods=[pgd]",
        "LONGTAIL_GRID": "class=0",
        "LONGTAIL_SEEDS": "0 1",
        "LONGTAIL_MIN": "1",
        "LAUNCH": "launcher=local",
    }
    return subprocess.run(
        ["bash", str(ROOT / "scripts" / "gpu_reference.sh")],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )


def trainings(tmp: Path) -> int:
    log = tmp / "work" / "store" / "trainings.jsonl"
    return len(log.read_text().splitlines()) if log.exists() else 0


def test_chunks_are_archived_sections_written_and_a_rerun_redoes_nothing(tmp_path):
    first = gpu_reference(tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    archives = sorted(p.name for p in (tmp_path / "results").glob("*.tar.gz"))
    assert archives == [
        "gpu-longtail-seed0.tar.gz",
        "gpu-longtail-seed1.tar.gz",
        "gpu-paper-seed0.tar.gz",
    ]
    page = (tmp_path / "results.md").read_text()
    assert "<!-- imbadv section gpu-paper -->" in page
    assert "<!-- imbadv section gpu-longtail -->" in page
    assert "gpu-longtail-seed1.tar.gz" in page  # the section reads every seed's archive
    tail = first.stdout.strip().splitlines()
    assert any(line.startswith("  paper: 1 seed(s) archived") for line in tail)
    assert any(line.startswith("  longtail: 2 seed(s) archived") for line in tail)
    trained = trainings(tmp_path)
    assert trained >= 3

    again = gpu_reference(tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert again.stdout.count("done before") == 3
    assert trainings(tmp_path) == trained  # nothing trained twice
    assert (tmp_path / "results.md").read_text() == page


def test_a_lease_too_short_starts_nothing(tmp_path):
    run = gpu_reference(tmp_path, budget=0)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "not started" in run.stdout
    assert not list((tmp_path / "results").glob("*.tar.gz"))
    assert not (tmp_path / "work" / "timings.tsv").exists()
