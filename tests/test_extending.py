"""docs/extending.md, run as written: a researcher's own component on every axis, through the CLI."""

from __future__ import annotations

import json
import re
import shlex

from conftest import ROOT, run_cli

PAGE = ROOT / "docs" / "extending.md"


def blocks(kind: str) -> list[str]:
    return re.findall(rf"```{kind}\n(.*?)```", PAGE.read_text(), flags=re.S)


def write_plugin(folder) -> list[str]:
    """The page's module and YAML files written into `folder`; returns its command's arguments."""
    (folder / "my_imbadv.py").write_text("\n\n".join(blocks("python")))
    for text in blocks("yaml"):
        path = folder / text.splitlines()[0].removeprefix("# ").strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (command,) = blocks("bash")
    args = shlex.split(command.replace("$PWD", str(folder)))
    assert args[:3] == ["python", "-m", "imbadv.run"]
    return args[3:]


def test_every_axis_extended_from_outside_the_package(tmp_path):
    args = write_plugin(tmp_path)
    proc = run_cli([*args, f"paths.store_dir={tmp_path}/store", "hydra.run.dir=out"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    spec = result["models"]["target"]["spec"]
    assert spec["model"] == {"name": "mlp", "params": {"hidden": 32, "width": 0.125}}
    assert spec["objective"] == {"name": "focal"}  # gamma 2.0 is the default: not in the key
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


def test_a_plugin_profile_named_as_a_source_is_the_model_its_own_job_trains(tmp_path):
    """The plug-in's YAML (counts 50/10, not the registered 5000/1000) in both jobs of a sweep."""
    args = [a for a in write_plugin(tmp_path) if not a.startswith(("imbalance=", "attack."))]
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
