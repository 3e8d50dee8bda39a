"""Shared fixtures: the command line run as a user runs it, and one small real sweep per session."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

# A smoke run shrunk further so a 6-job sweep takes well under a minute on 2 cores.
TINY = [
    "experiment=smoke",
    "dataset.train_per_class=120",
    "dataset.test_per_class=30",
    "counts.majority=120",
    "counts.minority=24",
    "trainer.max_epochs=3",
]


def run_cli(
    args: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 900
) -> subprocess.CompletedProcess:
    """`python -m imbadv.run ARGS` in `cwd`, as a user would type it; output captured."""
    full_env = {**os.environ, "WANDB_MODE": "disabled", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "imbadv.run", *args],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def one_line_refusal(proc: subprocess.CompletedProcess, fragment: str) -> None:
    """The command refused before any work: non-zero exit, one line naming `fragment`."""
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0 and len(lines) == 1, proc.stderr[-2000:]
    assert lines[0].startswith("imbadv: error:") and fragment in lines[0], lines[0]


# Fixtures that run real sweeps or trainings through the command line: a test using one is slow
# (`make test-fast` leaves it out; `make test` and CI run it).
SLOW_FIXTURES = {
    "smoke_sweep",
    "offline_sweep",  # telemetry/test_tracking.py
    "baseline",  # pipeline/test_seed_sources.py
    "matrix",  # pipeline/test_transfer.py
    "both",  # pipeline/test_transfer_stacked.py
    "trained",  # models/test_checkpoint.py
    "wheelhouse",  # test_wheelhouse.py
    "node",
    "pair",  # report/test_compare.py
    "one_seed",  # report/test_report.py
    "archived",  # report/test_archive.py, report/test_results_page.py
}


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if SLOW_FIXTURES & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def smoke_sweep(tmp_path_factory) -> dict[str, Path]:
    """A real multirun: classes 0 and 1 x balanced, under, over on tiny synthetic data."""
    base = tmp_path_factory.mktemp("sweep")
    store, sweep = base / "store", base / "multirun"
    proc = run_cli(
        [
            "-m",
            *TINY,
            "class=0..1",
            "imbalance=balanced,under,over",
            f"paths.store_dir={store}",
            f"hydra.sweep.dir={sweep}",
        ],
        cwd=base,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return {"base": base, "store": store, "sweep": sweep, "stdout": proc.stdout}


@pytest.fixture
def vgg_members():
    """K width-0.125 VGGs in eval mode, member i initialized from seed i (stacking tests)."""
    import torch

    from imbadv.models.vgg import VGG

    def members(k: int = 3) -> list:
        out = []
        for i in range(k):
            model = VGG(width=0.125, num_classes=10)
            model.reset_parameters(torch.Generator().manual_seed(i))
            out.append(model.eval())
        return out

    return members
