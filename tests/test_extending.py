"""docs/extending.md, run as written: a researcher's own component on every axis, through the CLI."""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import ROOT, TINY, run_cli

PAGE = ROOT / "docs" / "extending.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", PAGE.read_text(), flags=re.S)


def named_files(kind: str) -> dict[str, str]:
    """Blocks whose first line is `# <path>`: files of their own (the YAML, the package's)."""
    found = {}
    for text in blocks(kind):
        first = text.splitlines()[0]
        if re.fullmatch(r"# [\w./-]+\.\w+", first):
            found[first.removeprefix("# ")] = text
    return found


def module_text() -> str:
    """my_imbadv: the page's Python blocks that are not files of their own."""
    files = named_files("python").values()
    return "\n\n".join(b for b in blocks("python") if b not in files)


def write_plugin(folder) -> list[str]:
    """The page's module and YAML files written into `folder`; returns its command's arguments."""
    (folder / "my_imbadv.py").write_text(module_text())
    for name, text in named_files("yaml").items():
        path = folder / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (command,) = blocks("bash")
    args = shlex.split(command.replace("$PWD", str(folder)))
    assert args[:3] == ["python", "-m", "imbadv.run"]
    return args[3:]


def write_package(folder) -> Path:
    """The page's plug-in laid out as a package: module, conf/, pyproject, search-path plugin."""
    package = folder / "my-imbadv"
    files = {"my_imbadv/__init__.py": module_text(), **named_files("toml")}
    files.update(named_files("python"))
    for name, text in named_files("yaml").items():
        files[name.replace("myconf/", "my_imbadv/conf/", 1)] = text
    for name, text in files.items():
        (package / name).parent.mkdir(parents=True, exist_ok=True)
        (package / name).write_text(text)
    return package


@pytest.mark.slow
def test_every_axis_extended_from_outside_the_package(tmp_path):
    args = write_plugin(tmp_path)
    proc = run_cli([*args, f"paths.store_dir={tmp_path}/store", "hydra.run.dir=out"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    spec = result["models"]["target"]["spec"]
    assert spec["model"] == {"name": "mlp", "params": {"hidden": 32, "width": 0.125}}
    assert spec["objective"] == {"name": "focal"}  # gamma 2.0 is the default: not in the key
    assert spec["schedule"] == {"name": "halving", "params": {"every": 1}}
    assert spec["optimizer"] == {"name": "adagrad", "params": {"lr": 2e-3}}  # smoke's lr
    assert spec["augment"] == {"name": "vflip"}  # p 0.5 is the default: not in the key
    assert spec["adversarial"] == {"mode": "alp", "steps": 2}  # weight 0.5: the default
    used = result["models"]["target"]["adversarial_used"]
    assert used["weight"] == 0.5 and used["inner_steps"] == 2 and used["alpha"] == used["eps"] / 4
    lrs = [h["train/lr"] for h in result["models"]["target"]["history"]]
    assert lrs == pytest.approx([2e-3, 1e-3])  # halved after the first epoch
    assert spec["imbalance"]["name"] == "halves" and spec["class"] is None  # untargeted
    assert spec["counts"] == [50, 10]
    assert result["meta"]["dataset"] == "blobs" and result["meta"]["class_name"] == "bright"
    methods = {(r["source"], r["method"]) for r in result["attacks"]}
    assert methods == {(s, m) for s in ("same", "balanced") for m in ("fgsm", "random_sign")}
    noise = [r for r in result["attacks"] if r["method"] == "random_sign"]
    assert all(abs(r["max_abs_delta"] - 0.01) < 1e-6 for r in noise)


def test_a_plugin_option_is_checked_before_any_work(tmp_path):
    args = write_plugin(tmp_path)
    proc = run_cli([*args, "model.hiden=32"], tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "imbadv: error: model.hiden=32 is not allowed: expected a known option (hidden, width)"
    )
    assert not (tmp_path / "outputs").exists()
    # the page's attack declares ascent only: another direction is refused, not silently run
    descent = run_cli([*args, "attack.direction=descent"], tmp_path)
    assert descent.returncode == 2 and descent.stderr.strip() == (
        "imbadv: error: attack.direction=descent is not allowed: expected one of ascent for "
        "random_sign"
    )
    missing = run_cli(["experiment=smoke", "plugins=[no_such_module]"], tmp_path)
    assert missing.returncode == 2 and "plugins=no_such_module" in missing.stderr


@pytest.mark.slow
def test_a_plugin_profile_named_as_a_source_is_the_model_its_own_job_trains(tmp_path):
    """The plug-in's YAML (counts 50/10, not the registered 5000/1000) in both jobs of a sweep."""
    args = [
        a
        for a in write_plugin(tmp_path)
        if not a.startswith(("imbalance=", "attack.", "adversarial="))
    ]
    sweep = tmp_path / "multirun"
    proc = run_cli(
        [
            "-m",
            *args,
            "imbalance=balanced,halves",
            "attack.methods=[fgsm]",
            "attack.sources=[same,halves]",
            f"paths.store_dir={tmp_path}/store",
            f"hydra.sweep.dir={sweep}",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sweep.rglob("results.json")]
    by_profile = {r["models"]["target"]["spec"]["imbalance"]["name"]: r for r in results}
    assert sorted(by_profile) == ["balanced", "halves"]
    own = by_profile["halves"]["models"]["target"]
    as_source = by_profile["balanced"]["models"]["halves"]
    assert as_source["spec"] == own["spec"] and as_source["spec"]["counts"] == [50, 10]
    assert as_source["key"] == own["key"]


@pytest.mark.slow
def test_a_plugin_installed_with_pip_is_found_without_flags(tmp_path):
    """Entry point `imbadv.plugins` + Hydra search-path plugin: components chosen by name only."""
    site = tmp_path / "site"  # installed here, not into the shared environment
    pip = [sys.executable, "-m", "pip", "install", "--no-deps", "--no-build-isolation", "-q"]
    proc = subprocess.run(
        [*pip, "--target", str(site), str(write_package(tmp_path))], capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert not (site / "hydra_plugins" / "__init__.py").exists()  # a namespace, shared with Hydra
    work = tmp_path / "elsewhere"  # nothing of the plug-in in the current folder
    work.mkdir()
    path = os.pathsep.join([str(site), *filter(None, [os.environ.get("PYTHONPATH")])])
    # the entry point alone registers the components (no Hydra, no flag)
    code = (
        "from omegaconf import OmegaConf\n"
        "from imbadv.core import plugins\n"
        "from imbadv.imbalance import PROFILES\n"
        "assert 'halves' not in PROFILES.names()\n"
        "plugins.import_plugins(OmegaConf.create({'plugins': []}))\n"
        "print(plugins.installed_plugins(), PROFILES.entries['halves'].target)\n"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=work,
        env={**os.environ, "PYTHONPATH": path},
        capture_output=True,
        text=True,
    )
    assert proc.stdout.strip() == "(('my_imbadv', 'my_imbadv'),) my_imbadv:halves", proc.stderr
    args = [*TINY, "model=mlp", "imbalance=halves", "objective=focal", "trainer.max_epochs=1"]
    args += ["attack.methods=[fgsm,random_sign]", "attack.sources=[same]"]
    proc = run_cli(
        [*args, f"paths.store_dir={tmp_path}/store", "hydra.run.dir=out"],
        work,
        env={"PYTHONPATH": path},
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((work / "out" / "results.json").read_text())
    spec = result["models"]["target"]["spec"]
    assert spec["model"] == {"name": "mlp", "params": {"hidden": 32, "width": 0.125}}  # its YAML
    half = len(spec["counts"]) // 2
    assert spec["imbalance"]["name"] == "halves" and spec["counts"][: half + 1] == [120] * half + [
        24
    ]
    assert {r["method"] for r in result["attacks"]} == {"fgsm", "random_sign"}
    # without the package on the path the same command is refused in one line, naming one of the
    # plug-in's components (the first that Hydra's composition meets)
    proc = run_cli(args, work)
    assert proc.returncode == 2 and proc.stderr.count("\n") == 1
    assert proc.stderr.startswith(
        (
            "imbadv: error: model=mlp ",
            "imbadv: error: imbalance=halves ",
            "imbadv: error: objective=focal ",
        )
    )
