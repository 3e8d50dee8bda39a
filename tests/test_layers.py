"""The architecture, enforced: imports point down the data flow, and the config layer stays torch-free."""

from __future__ import annotations

import ast
import subprocess
import sys

import pytest
from conftest import ROOT

PACKAGE = ROOT / "imbadv"
AXES = ("data", "imbalance", "models", "attacks", "training")
MACHINERY = (
    "settings",
    "run",
    "experiment",
    "evaluate",
    "metrics",
    "results",
    "store",
    "devices",
    "tracking",
    "bench",
    "status",
    "progress",
    "report",
)


def imported_modules(path) -> set[str]:
    """Every imbadv module a file imports, at any depth (lazy imports inside functions too)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("imbadv"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("imbadv"))
    return found


def top(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


@pytest.mark.parametrize("axis", AXES)
def test_axes_never_import_the_machinery(axis):
    for path in sorted((PACKAGE / axis).rglob("*.py")):
        bad = sorted(m for m in imported_modules(path) if top(m) in MACHINERY)
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


def test_report_reads_only_results_and_itself():
    allowed = ("report", "results", "errors", "tracking", "")  # tracking: the --wandb upload
    for path in sorted((PACKAGE / "report").rglob("*.py")):
        bad = sorted(m for m in imported_modules(path) if top(m) not in allowed)
        assert not bad, f"{path.relative_to(ROOT)} imports {bad}"


TORCH_FREE = [
    "imbadv.config.registry",
    "imbadv.config.settings",
    "imbadv.run",
    "imbadv.results",
    *(f"imbadv.{axis}" for axis in AXES),
    "imbadv.imbalance.split",
    "imbadv.report.cli",
    "imbadv.report.document",
    "imbadv.report.paper",
    "imbadv.status.tracking",
    "imbadv.status",
]


def test_the_config_layer_registries_and_report_import_no_torch():
    code = (
        "import sys\n"
        f"for name in {TORCH_FREE!r}:\n"
        "    __import__(name)\n"
        "    assert 'torch' not in sys.modules, name\n"
        "print('ok')"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr[-2000:]


def test_checking_a_whole_config_imports_no_torch():
    code = (
        "import sys\n"
        "from hydra import compose, initialize_config_dir\n"
        "from imbadv.run import CONF_DIR\n"
        "from imbadv.config.settings import from_config\n"
        "with initialize_config_dir(str(CONF_DIR), version_base='1.3'):\n"
        "    cfg = compose('config', overrides=['experiment=smoke', 'imbalance=under', 'class=3'])\n"
        "s = from_config(cfg)\n"
        "assert 'torch' not in sys.modules\n"
        "print(s.imbalance.name, s.target, [x.name for x in s.specs])"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.split()[:2] == ["under", "3"]
