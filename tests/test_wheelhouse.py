"""The air-gapped GPU node: make wheelhouse, then scripts/node_env.sh under a python that has only the image's packages."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest
from conftest import ROOT, TINY

pytestmark = pytest.mark.slow

# What the measured H200 image had that imbadv uses (plus pip, which node_env.sh runs).
IMAGE = "torch torchvision lightning numpy scipy safetensors filelock yaml matplotlib PIL"
IMAGE += " packaging tqdm requests pip"
# What it lacked: none of these may import on the emulated node before node_env.sh.
LACKED = ["hydra", "omegaconf", "hydra_plugins.hydra_joblib_launcher", "joblib", "cloudpickle"]
LACKED += ["torchattacks", "wandb"]
# The default wheelhouse: pure Python, under 1 MB.
WHEELS = {"antlr4-python3-runtime", "cloudpickle", "hydra-core", "hydra-joblib-launcher"}
WHEELS |= {"joblib", "omegaconf", "torchattacks"}

# Run in the dev venv: the distributions that importing the image's modules loads (Python files
# and shared libraries under site-packages), with what they require (no extras), and the
# top-level entries (packages, *.libs, *.dist-info) that those distributions installed.
IMAGE_ENTRIES = r"""
import importlib, importlib.metadata as md, json, re, sys
from pathlib import Path
try:
    from packaging.requirements import Requirement
except ImportError:
    from pip._vendor.packaging.requirements import Requirement

sp, modules = Path(sys.argv[1]).resolve(), sys.argv[2].split()
for m in modules:
    importlib.import_module(m)
canon = lambda n: re.sub(r"[-_.]+", "-", n or "").lower()
dists = {canon(d.metadata["Name"]): d for d in md.distributions(path=[str(sp)])}
tops = {n: {f.parts[0] for f in d.files or [] if f.parts[0] not in ("..", "__pycache__")}
        for n, d in dists.items()}
owner = {}
for n, entries in tops.items():
    for t in entries:
        owner.setdefault(t, set()).add(n)
files = [getattr(m, "__file__", None) for m in list(sys.modules.values())]
files += [line.split()[-1] for line in open("/proc/self/maps") if "/" in line]
todo = []
for f in filter(None, files):
    try:
        todo += owner.get(Path(f).resolve().relative_to(sp).parts[0], ())
    except ValueError:
        pass
need = set()
while todo:
    n = todo.pop()
    if n in need or n not in dists:
        continue
    need.add(n)
    for r in dists[n].requires or []:
        req = Requirement(r)
        if not req.marker or req.marker.evaluate({"extra": ""}):
            todo.append(canon(req.name))
print(json.dumps({"dists": sorted(need), "tops": sorted(set().union(*(tops[n] for n in need)))}))
"""


def _env(**extra: str) -> dict[str, str]:
    """This environment without the dev venv's python settings, plus `extra`."""
    drop = {"PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV"}
    return {**{k: v for k, v in os.environ.items() if k not in drop}, **extra}


def _run(args, **kw) -> subprocess.CompletedProcess:
    return subprocess.run(args, capture_output=True, text=True, timeout=600, **kw)


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory) -> Path:
    """`make wheelhouse` into a fresh folder (skipped where no package index answers)."""
    base = tmp_path_factory.mktemp("wheelhouse")
    probe = _run(
        [sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--retries", "0"]
        + ["--timeout", "20", "-d", base / "probe", "hydra-joblib-launcher==1.2.0"]
    )
    if probe.returncode != 0:
        pytest.skip("no package index reachable: make wheelhouse needs one")
    folder = base / "whl"
    proc = _run(
        ["make", "--no-print-directory", "wheelhouse", f"WHEELHOUSE={folder}"]
        + [f"PY={sys.executable}"],
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert f"wheelhouse: {folder}: {len(WHEELS)} wheels" in proc.stdout
    return folder


@pytest.fixture(scope="module")
def node(tmp_path_factory) -> dict[str, Path]:
    """A fresh venv that sees only the dev venv's image packages, through a folder of symlinks.

    Plus a stand-in for antlr4 4.13 (as on this machine's pyenv python): importable, but not the
    4.9 hydra 1.3 needs, so node_env.sh must put the wheelhouse's in front of it.
    """
    base = tmp_path_factory.mktemp("node")
    site_packages = Path(sysconfig.get_paths()["purelib"])
    proc = _run([sys.executable, "-c", IMAGE_ENTRIES, site_packages, IMAGE])
    assert proc.returncode == 0, proc.stderr[-3000:]
    found = json.loads(proc.stdout)
    assert not {"hydra-core", "omegaconf", "torchattacks", "wandb", "imbadv"} & set(found["dists"])
    image = base / "image"
    image.mkdir()
    for top in found["tops"]:
        if not top.endswith(".pth"):  # a .pth works in site-packages only: keep none
            (image / top).symlink_to(site_packages / top)
    stale = image / "antlr4_python3_runtime-4.13.2.dist-info"
    stale.mkdir()
    (stale / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: antlr4-python3-runtime\nVersion: 4.13.2\n"
    )
    (image / "antlr4").mkdir()
    (image / "antlr4" / "__init__.py").write_text("# stands in for antlr4 4.13\n")

    venv = base / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", venv], check=True, timeout=120)
    py = venv / "bin" / "python"
    purelib = _run([py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"])
    (Path(purelib.stdout.strip()) / "image.pth").write_text(f"{image}\n")

    # Before going further: the image imports, what it lacked does not.
    check = (
        "import importlib, importlib.util, sys\n"
        "for m in sys.argv[1].split(): importlib.import_module(m)\n"
        "def found(m):\n"
        "    try: return importlib.util.find_spec(m) is not None\n"
        "    except ImportError: return False  # its parent package is missing\n"
        "print(' '.join(filter(found, sys.argv[2].split())))\n"
    )
    proc = _run([py, "-c", check, IMAGE, " ".join(LACKED)], env=_env(), cwd=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert proc.stdout.strip() == ""
    return {"base": base, "py": py, "image": image}


def _source(node: dict[str, Path], **env: str) -> subprocess.CompletedProcess:
    """`source scripts/node_env.sh` in a `set -u -o pipefail` shell; then its options, PYTHONPATH."""
    script = (
        'set -u -o pipefail; source scripts/node_env.sh; rc=$?; echo "options=$-"; '
        'echo "PYTHONPATH=${PYTHONPATH:-}"; exit $rc'
    )
    return _run(["bash", "-c", script], cwd=ROOT, env=_env(PY=str(node["py"]), **env))


def test_without_a_wheelhouse_node_env_names_what_is_missing(node):
    proc = _source(
        node,
        WHEELHOUSE=str(node["base"] / "no-wheelhouse"),
        NODE_SITE=str(node["base"] / "site-none"),
        PYTHONPATH="/before",
    )
    message, options, pythonpath = proc.stdout.splitlines()
    assert proc.returncode != 0 and proc.stderr == ""
    assert message.startswith("node_env:") and "make wheelhouse" in message
    lacks = message.split(" lacks ")[1].split(" and there is no wheelhouse")[0].split()
    assert lacks == [m for m in LACKED if m != "wandb"]  # wandb: only when its wheel is there
    assert pythonpath == "PYTHONPATH=/before"  # unchanged on failure
    assert "e" not in options.split("=")[1] and "u" in options.split("=")[1]


def test_wheelhouse_is_small_pure_python(wheelhouse):
    wheels = sorted(wheelhouse.glob("*.whl"))
    assert {w.name.split("-")[0].replace("_", "-") for w in wheels} == WHEELS
    assert all(w.name.endswith("-py3-none-any.whl") for w in wheels)
    assert sum(w.stat().st_size for w in wheels) < 1024 * 1024
    (antlr,) = (w for w in wheels if w.name.startswith("antlr4"))
    assert "-4.9.3-" in antlr.name and zipfile.ZipFile(antlr).testzip() is None


def test_node_env_installs_the_wheelhouse_and_the_smoke_preset_runs(node, wheelhouse, tmp_path):
    site = node["base"] / "site"
    env = {"WHEELHOUSE": str(wheelhouse), "NODE_SITE": str(site)}
    proc = _source(node, **env)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    message, options, pythonpath = proc.stdout.splitlines()
    assert message.startswith("node_env: installed antlr4-python3-runtime 4.9.3, cloudpickle ")
    assert "e" not in options and "u" in options  # the caller's shell options, as they were
    pythonpath = pythonpath.removeprefix("PYTHONPATH=")
    assert pythonpath.split(":")[:2] == [str(site), str(ROOT)]
    # Only the wheelhouse's distributions went there: never a torch, numpy or requests.
    installed = {p.name.split("-")[0].replace("_", "-") for p in site.glob("*.dist-info")}
    assert installed == WHEELS
    assert not {"torch", "numpy", "lightning", "requests", "yaml"} & {
        p.name for p in site.iterdir()
    }

    # Sourced again (a new script, the same shell): nothing to install, nothing added twice.
    again = _source(node, PYTHONPATH=pythonpath, **env)
    assert again.returncode == 0 and "nothing missing" in again.stdout.splitlines()[0]
    assert again.stdout.splitlines()[2] == f"PYTHONPATH={pythonpath}"

    node_env = _env(PYTHONPATH=pythonpath, WANDB_MODE="disabled")
    where = (
        "import importlib, importlib.metadata as md, json, sys\n"
        "mods = {m: importlib.import_module(m).__file__ for m in sys.argv[1:]}\n"
        "print(json.dumps({**mods, 'antlr4 version': md.version('antlr4-python3-runtime')}))\n"
    )
    ours = ["hydra", "omegaconf", "antlr4", "hydra_plugins.hydra_joblib_launcher", "joblib"]
    ours += ["cloudpickle", "torchattacks"]
    theirs = ["torch", "torchvision", "lightning", "numpy", "requests"]
    proc = _run([node["py"], "-c", where, *ours, *theirs, "imbadv"], env=node_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    files = json.loads(proc.stdout)
    assert all(files[m].startswith(str(site)) for m in ours), files
    assert all(files[m].startswith(str(node["image"])) for m in theirs), files
    assert files["imbadv"] == str(ROOT / "imbadv" / "__init__.py")
    assert files["antlr4 version"] == "4.9.3"

    # launcher=gpus composes: Hydra finds the joblib launcher plug-in in the private site.
    args = [node["py"], "-m", "imbadv.run", "launcher=gpus", "--cfg", "hydra"]
    proc = _run(args, env=node_env, cwd=tmp_path)
    assert proc.returncode == 0 and "JoblibLauncher" in proc.stdout, proc.stderr[-3000:]

    # The smoke preset end to end, under the node's python (TINY at one epoch, own gradient).
    run_dir = tmp_path / "run"
    tiny = [a for a in TINY if not a.startswith("trainer.max_epochs=")]
    args = [node["py"], "-m", "imbadv.run", *tiny, "trainer.max_epochs=1", "attack.sources=[same]"]
    args += ["class=3", "imbalance=under", "logger=none", f"paths.store_dir={tmp_path}/store"]
    proc = _run([*args, f"hydra.run.dir={run_dir}"], env=node_env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    results = json.loads((run_dir / "results.json").read_text())
    assert {a["attack"] for a in results["attacks"]} == {"fgsm", "bim"}
    assert {a["class"] for a in results["attacks"]} == {3} and "target" in results["models"]
