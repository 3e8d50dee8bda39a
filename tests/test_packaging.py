"""Packaging: a built wheel carries conf/ inside the package and runs from any folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest
from conftest import ROOT, TINY


@pytest.mark.slow
def test_wheel_installed_elsewhere_runs_the_smoke_experiment(tmp_path):
    wheels, site, elsewhere = tmp_path / "wheels", tmp_path / "site", tmp_path / "elsewhere"
    pip = [sys.executable, "-m", "pip", "--disable-pip-version-check", "-q"]
    subprocess.run(
        [*pip, "wheel", "--no-deps", "--no-build-isolation", "-w", wheels, ROOT],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = wheels.glob("imbadv-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "imbadv/conf/config.yaml" in names and "imbadv/conf/experiment/smoke.yaml" in names
    # launcher=slurm's launcher: Hydra finds launchers in the hydra_plugins namespace only
    assert "hydra_plugins/imbadv_slurm/launcher.py" in names
    assert "hydra_plugins/__init__.py" not in names  # a namespace shared with other plug-ins
    # Not editable: the wheel's files alone, found before the editable checkout on sys.path.
    subprocess.run(
        [*pip, "install", "--no-deps", "--target", site, wheel],
        check=True,
        capture_output=True,
        timeout=300,
    )
    elsewhere.mkdir()
    env = {**os.environ, "PYTHONPATH": str(site), "WANDB_MODE": "disabled"}
    where = subprocess.run(
        [sys.executable, "-c", "import imbadv.run as r; print(r.CONF_DIR)"],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stdout.strip() == str(site / "imbadv" / "conf")
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "imbadv.run",
            *TINY,
            "class=1",
            "imbalance=under",
            "attack.sources=[same]",
            f"paths.store_dir={elsewhere}/store",
        ],
        env=env,
        cwd=elsewhere,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    (results,) = elsewhere.glob("outputs/*/*/results.json")
    assert json.loads(results.read_text())["meta"]["imbalance"] == "under"
