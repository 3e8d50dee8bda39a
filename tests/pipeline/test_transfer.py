"""The transfer matrix: named sources, image sets made once per source, the diagonal is white box."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import TINY, run_cli
from hydra import compose, initialize_config_dir

from imbadv.config.settings import CONF_DIR, check_sweep, from_config
from imbadv.core.errors import ConfigError

NUMBERS = ("n", "clean_acc", "adv_acc", "relative_drop", "success_rate", "clean_row", "adv_row")


def settings(*overrides: str):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", ["experiment=smoke", *overrides], return_hydra_config=True)
        return from_config(cfg)


def test_named_sources_resolve_to_the_sweeps_models():
    s = settings(
        "class=3",
        "imbalance=under",
        "attack.sources=[same,balanced,under-3,over-3,exp,balanced+fast_fgsm]",
    )
    assert s.sources == (
        "same",
        "balanced",
        "over-3",
        "exp",
        "balanced+fast_fgsm",
    )  # under-3 = same
    over, exp, at = (s.named_sources[n] for n in ("over-3", "exp", "balanced+fast_fgsm"))
    assert over.target == 3 and over.profile.params.majority == s.imbalance.params.majority
    assert exp.target is None and exp.profile.params.ratio == 10
    assert exp.profile.params.n_max == s.imbalance.params.majority  # from the job's counts
    assert at.adversarial.mode == "fast_fgsm" and s.adversarial.mode == "none"


def test_a_source_the_sweep_does_not_train_is_refused():
    jobs = [
        settings("class=1", f"imbalance={m}", "attack.sources=[same,under-1]")
        for m in ("under", "over")
    ]
    check_sweep(jobs)  # under-1 is a job of this sweep
    jobs.append(settings("class=1", "imbalance=over", "attack.sources=[same,under-4]"))
    with pytest.raises(
        ConfigError, match=r"attack.sources=under-4 .*this sweep trains: over-1, under-1"
    ):
        check_sweep(jobs)


@pytest.mark.parametrize(
    "source, allowed",
    [
        ("under", "profile under with a class"),
        ("exp-3", "profile exp with no class"),
        ("nothing", "a model of the sweep"),
        ("under-1+bogus", "a training mode"),
    ],
)
def test_malformed_source_names_are_one_line(source, allowed):
    with pytest.raises(ConfigError, match=allowed):
        settings("class=1", "imbalance=under", f"attack.sources=[same,{source}]")


def test_cli_refuses_a_missing_source_before_any_work(tmp_path):
    args = ["-m", *TINY, "class=1", "imbalance=under,over", "attack.sources=[same,under-4]"]
    proc = run_cli([*args, f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "attack.sources=under-4" in lines[0] and "under-1" in lines[0]
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "store").exists()


@pytest.fixture(scope="module")
def matrix(tmp_path_factory) -> dict:
    """Class 1's full matrix: balanced, under-1 and over-1, each attacked with all three gradients."""
    base = tmp_path_factory.mktemp("matrix")
    args = ["-m", *TINY, "class=1", "imbalance=balanced,under,over", "attack=matrix"]
    args += [f"paths.store_dir={base / 'store'}", f"hydra.sweep.dir={base / 'sweep'}"]
    proc = run_cli(args, cwd=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in sorted((base / "sweep").rglob("results.json"))]
    return {"base": base, "args": args, "rows": [r for res in results for r in res["attacks"]]}


def crafted(store: Path) -> list[str]:
    return [
        json.loads(line)["key"] for line in (store / "craftings.jsonl").read_text().splitlines()
    ]


@pytest.mark.slow
def test_each_source_makes_its_images_once_for_every_model(matrix):
    keys = crafted(matrix["base"] / "store")
    # 3 sources x 2 attacks, although each source's images are tested on 3 models
    assert len(keys) == len(set(keys)) == 6
    rows = matrix["rows"]
    pairs = {(r["source_model"], r["model"]) for r in rows}
    names = {"balanced", "under-1", "over-1"}
    assert pairs == {(a, b) for a in names for b in names}  # the whole 3 x 3 matrix
    used = {}
    for r in rows:
        used.setdefault(r["images_key"], set()).add(r["model"])
    assert sorted(len(models) for models in used.values()) == [3] * 6
    assert set(used) == set(keys)


@pytest.mark.slow
def test_another_result_reads_the_stored_images(matrix):
    before = crafted(matrix["base"] / "store")
    # the sources in another order: new results (their key lists the sources), the same images
    order = "attack.sources=[over-${class},under-${class},balanced,same]"
    again = [*matrix["args"][:-1], order, f"hydra.sweep.dir={matrix['base'] / 'again'}"]
    proc = run_cli(again, cwd=matrix["base"])
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert crafted(matrix["base"] / "store") == before


def test_the_diagonal_is_the_white_box_attack(matrix):
    rows = matrix["rows"]
    # white box: each job's own model with its own gradient (role "balanced" marks the
    # balanced model's rows that an imbalanced job measured from the same images)
    white = {
        (r["model"], r["attack"]): r
        for r in rows
        if r["source"] == "same" and r["role"] == "target"
    }
    diagonal = [r for r in rows if r["source_model"] == r["model"]]
    assert len(white) == 6 and len(diagonal) > len(white)  # the balanced model's rows come thrice
    for r in diagonal:
        box = white[(r["model"], r["attack"])]
        assert {k: r[k] for k in NUMBERS} == {k: box[k] for k in NUMBERS}
        assert r["images_key"] == box["images_key"]


@pytest.mark.slow
def test_the_balanced_row_of_a_class_comes_without_a_balanced_job(tmp_path):
    args = [
        "-m",
        *TINY,
        "class=0..1",
        "imbalance=under,over",
        f"hydra.sweep.dir={tmp_path / 'sweep'}",
    ]
    proc = run_cli(args, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = [json.loads(p.read_text()) for p in (tmp_path / "sweep").rglob("results.json")]
    own = {
        (r["class"], r["attack"])
        for res in results
        for r in res["attacks"]
        if r["model"] == "balanced" and r["source"] == "same"
    }
    assert own == {(c, a) for c in (0, 1) for a in ("fgsm", "bim")}
    keys = crafted(tmp_path / "store")
    assert (
        len(keys) == len(set(keys)) == 2 * 2 + 4 * 2
    )  # balanced on 2 classes + 4 own, x 2 attacks
    report = run_cli_report(tmp_path / "sweep", tmp_path)
    assert "Combinations measured: 10 of 50" in report  # 5 per class, as the paper has


def run_cli_report(sweep: Path, cwd: Path) -> str:
    import subprocess
    import sys

    proc = subprocess.run(
        [sys.executable, "-m", "imbadv.report", str(sweep)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return (sweep / "report.md").read_text()


def test_report_draws_the_whole_matrix_with_white_box_on_the_diagonal(matrix):
    from imbadv.report import cli

    sweep = matrix["base"] / "sweep"
    assert cli.main([str(sweep)]) == 0
    md = (sweep / "report.md").read_text()
    table = md.split("## Transfer matrix")[1].split("\n## ")[0]
    lines = [line for line in table.splitlines() if line.startswith("| gradient of ")]
    cells = {
        line.split("|")[1].strip()[len("gradient of ") :]: line.split("|")[2:5] for line in lines
    }
    assert list(cells) == ["balanced", "under-c", "over-c"] and "—" not in table
    white = {
        r["model"]: r["adv_acc"]
        for r in matrix["rows"]
        if r["method"] == "fgsm" and r["source"] == "same"
    }
    for i, name in enumerate(cells):
        assert float(cells[name][i]) == pytest.approx(
            100 * white[name.replace("-c", "-1")], abs=0.051
        )
    assert (sweep / "fig_transfer.png").exists()
