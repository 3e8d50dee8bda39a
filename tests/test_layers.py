"""The architecture, enforced on every module the package holds (found by walking it, so a new
module cannot be missed): imports point down the data flow, the config layer, the registries and
the report stay torch-free, and no module imports itself through a cycle."""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
import subprocess
import sys
from pathlib import Path

import pytest

import imbadv

AXES = (
    "data",
    "imbalance",
    "models",
    "attacks",
    "training",
    "adversarial",
    "optimizers",
    "schedules",
    "augment",
)
MODULES = sorted(m.name for m in pkgutil.walk_packages(imbadv.__path__, "imbadv."))
PACKAGES = {m.name for m in pkgutil.walk_packages(imbadv.__path__, "imbadv.") if m.ispkg}


def top(module: str) -> str:
    """`attacks` for imbadv.attacks.pgd; "" for imbadv itself."""
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


# Two layers of configuration: core (errors, the registry, plug-ins, class and seed names) sits
# below the axes, config (settings, gradient sources, cluster checks: what reads every axis)
# above them. Everything else at the root or in a tool's room (pipeline, grouped, telemetry,
# status, bench, report) is machinery the axes must never import.
MACHINERY = sorted({top(m) for m in MODULES} - {*AXES, "core"})
# A job's stages in the order they run: each imports only the stages before it.
PIPELINE = ("job", "plan", "obtain", "craft", "attack", "experiment")


def source(module: str) -> Path:
    return Path(importlib.util.find_spec(module).origin)


def is_script_block(node: ast.AST) -> bool:
    """`if __name__ == "__main__":`: runs only when the module is the script (`python -m`), after
    the module itself is loaded, so what it imports is not a dependency of the module."""
    test = getattr(node, "test", None)
    return (
        isinstance(node, ast.If)
        and isinstance(test, ast.Compare)
        and isinstance(test.left, ast.Name)
        and test.left.id == "__name__"
        and any(isinstance(c, ast.Constant) and c.value == "__main__" for c in test.comparators)
    )


def walk(tree: ast.AST):
    """ast.walk, less the script blocks."""
    for child in ast.iter_child_nodes(tree):
        if not is_script_block(child):
            yield child
            yield from walk(child)


def imported_modules(module: str) -> set[str]:
    """Every imbadv module `module` imports, at any depth (lazy imports inside functions too)."""
    found = set()
    for node in walk(ast.parse(source(module).read_text())):
        if (
            isinstance(node, ast.ImportFrom) and node.level
        ):  # relative: resolved against the package
            base = module if module in PACKAGES else module.rpartition(".")[0]
            for _ in range(node.level - 1):
                base = base.rpartition(".")[0]
            name = f"{base}.{node.module}" if node.module else base
            found.add(name)
            found.update(f"{name}.{a.name}" for a in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("imbadv"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("imbadv"))
    return {m for m in found if m in MODULES}


def test_the_walk_finds_every_room_and_the_root_reads_as_the_pipeline():
    rooms = {top(m) for m in MODULES}
    assert {*AXES, "core", "config", "pipeline", "grouped", "telemetry", "status"} <= rooms
    assert {"bench", "report", "run"} <= rooms
    root = [m for m in MODULES if m.count(".") == 1 and m not in PACKAGES]
    assert len(root) + 1 <= 10, root  # + imbadv/__init__.py: entry points and what every room reads
    stages = {m.rpartition(".")[2] for m in MODULES if top(m) == "pipeline"} - {"pipeline"}
    assert stages == set(PIPELINE), stages


@pytest.mark.parametrize("stage", PIPELINE)
def test_each_stage_imports_only_the_stages_before_it(stage):
    before = {f"imbadv.pipeline.{x}" for x in PIPELINE[: PIPELINE.index(stage)]}
    used = {m for m in imported_modules(f"imbadv.pipeline.{stage}") if top(m) == "pipeline"}
    assert used <= before | {"imbadv.pipeline"}, f"{stage} imports {sorted(used - before)}"


@pytest.mark.parametrize("axis", AXES)
def test_axes_never_import_the_machinery(axis):
    for module in (m for m in MODULES if top(m) == axis):
        bad = sorted(m for m in imported_modules(module) if top(m) in MACHINERY)
        assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", [m for m in MODULES if top(m) == "core"])
def test_the_core_imports_only_itself(module):
    bad = sorted(m for m in imported_modules(module) if top(m) != "core")
    assert not bad, f"{module} imports {bad}"


@pytest.mark.parametrize("module", [m for m in MODULES if top(m) == "config"])
def test_the_config_layer_reads_the_axes_and_imports_no_stage(module):
    allowed = ("core", "config", *AXES)  # the axes' registries (torch-free), never the machinery
    bad = sorted(m for m in imported_modules(module) if top(m) not in allowed)
    assert not bad, f"{module} imports {bad}"


def test_the_two_config_layers_are_below_and_above_the_axes():
    axes = [m for m in MODULES if top(m) in AXES]
    assert not [m for m in axes for d in imported_modules(m) if top(d) == "config"]
    assert any(top(d) == "core" for m in axes for d in imported_modules(m))
    reads = {top(d) for m in MODULES if top(m) == "config" for d in imported_modules(m)}
    assert set(AXES) <= reads  # the settings read every axis


def test_report_reads_only_results_and_itself():
    allowed = {
        "imbadv.results",
        "imbadv.core.errors",
        "imbadv.telemetry.tracking",  # --wandb
        "imbadv.table",  # --compare pairs the long table's cells (read through results)
        "imbadv.data.tarsafe",  # archives: the vetted tar reader the data loader uses too
        "imbadv.config.folders",  # archives: the job folder names of multirun.yaml's subdir
        "imbadv.data.names",  # CIFAR-10's class names, spelled once (torch-free)
    }
    for module in (m for m in MODULES if top(m) == "report"):
        bad = sorted(m for m in imported_modules(module) if top(m) != "report" and m not in allowed)
        assert not bad, f"{module} imports {bad}"


def test_no_import_cycle():
    # a module's own packages are imported before it anyway (a registry's implementation importing
    # its registry is the registry pattern, not a cycle)
    graph = {
        m: {d for d in imported_modules(m) if not f"{m}.".startswith(f"{d}.")} for m in MODULES
    }
    done: set[str] = set()

    def visit(module: str, path: list[str]) -> None:
        if module in path:
            pytest.fail("import cycle: " + " -> ".join([*path[path.index(module) :], module]))
        if module in done:
            return
        for dep in sorted(graph[module]):
            visit(dep, [*path, module])
        done.add(module)

    for module in MODULES:
        visit(module, [])


TORCH_FREE = [
    *(m for m in MODULES if top(m) in ("core", "config", "report") and not m.endswith("__main__")),
    "imbadv.grouped",
    "imbadv.grouped.groups",
    "imbadv.telemetry",
    "imbadv.pipeline",
    "imbadv.pipeline.job",
    *(f"imbadv.{axis}" for axis in AXES),  # every registry
    "imbadv.run",
    "imbadv.results",
    "imbadv.imbalance.split",
    "imbadv.data.names",
    "imbadv.attacks.goals",
    "imbadv.status.sweep",
    "imbadv.telemetry.tracking",
    "imbadv.telemetry.wandb_tables",
    "imbadv.table",
    "imbadv.export",
    "imbadv.data.tarsafe",
    "imbadv.models.files",
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


def test_no_function_is_longer_than_a_screen():
    long = []
    for module in MODULES:
        for node in ast.walk(ast.parse(source(module).read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                lines = node.end_lineno - node.lineno + 1
                if lines > 60:
                    long.append(f"{module}.{node.name}: {lines} lines")
    assert not long, long
