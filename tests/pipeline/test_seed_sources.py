"""Another seed's model as a gradient source (`balanced@seed+1`): names, keys, reuse, refusals."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from conftest import TINY, one_line_refusal, run_cli
from test_transfer import settings

from imbadv.config.settings import check_sweep, source_settings, with_names
from imbadv.core.errors import ConfigError
from imbadv.grouped.groups import plan, requests
from imbadv.store import Store

SOURCES = "attack.sources=[same,balanced@seed+1]"


def test_seed_sources_are_named_as_written_relative_to_the_job():
    s = settings(
        "class=3",
        "imbalance=under",
        "seed=2",
        "attack.sources=[same,balanced@seed+1,under-3@seed+1,same@seed+1,'over-3@seed=7',"
        "balanced+none@seed+01]",
    )
    # under-3 is the job's own model (same), balanced+none its balanced one: each counts once
    assert s.sources == ("same", "balanced@seed+1", "same@seed+1", "over-3@seed=7")
    names = with_names(s)
    assert names["same@seed+1"] == "under-3@seed+1" and names["over-3@seed=7"] == "over-3@seed=7"
    base, own, over = (s.named_sources[n] for n in s.sources[1:])
    assert (base.seed, own.seed, over.seed) == (3, 3, 7)
    assert base.control and base.profile == s.imbalance  # the control of the job's profile
    assert source_settings(s, own) == replace(s, seed=3)  # the job itself at seed 3


def test_in_a_balanced_job_the_baseline_is_named_balanced_too():
    s = settings(
        "class=3", "imbalance=balanced", "attack.sources=[same,same@seed+1,balanced@seed+1]"
    )
    assert s.sources == ("same", "balanced@seed+1")
    assert with_names(s)["balanced@seed+1"] == "balanced@seed+1"


def test_the_source_is_requested_as_that_seeds_job_requests_it():
    def job(seed: int, sources: str = SOURCES):
        return settings("class=3", "imbalance=under", f"seed={seed}", "trainer.group=on", sources)

    asked = [m for _, m in requests(job(0))]
    own = [m for _, m in requests(job(1, "attack.sources=[same,balanced]"))]
    assert asked[1] == own[1] and own[1]["balanced"] and own[1]["seed"] == 1
    (members,) = plan([job(0), job(1, "attack.sources=[same,balanced]")]).values()
    assert [(m["seed"], m["balanced"]) for m in members] == [(0, False), (1, True), (1, False)]


@pytest.mark.parametrize(
    "entry, allowed",
    [
        ("balanced@seed+0", "K >= 1"),
        ("'balanced@seed=2'", "a seed other than the job's own (2)"),
        ("balanced@seed", "<source>@seed=N"),
        ("balanced@seed-1", "<source>@seed+K"),
        ("balanced@sead+1", "<source>@seed=N"),
        ("checkpoint:w.pt@seed+1", "a file has no seed"),
        ("under@seed+1", "profile under with a class"),
        ("nothing@seed+1", "a model of the sweep"),
        ("balanced@seed+4294967294", "a resolved seed <= 4294967295"),
    ],
)
def test_bad_seed_suffixes_are_refused_in_one_line(entry, allowed):
    with pytest.raises(ConfigError) as err:
        settings("class=1", "imbalance=under", "seed=2", f"attack.sources=[same,{entry}]")
    text = str(err.value)
    assert text.splitlines() == [text] and text.startswith("attack.sources=") and allowed in text


def test_the_part_before_the_suffix_must_be_a_model_of_the_sweep():
    jobs = [settings("class=1", f"imbalance={m}", "seed=4", SOURCES) for m in ("under", "over")]
    check_sweep(jobs)  # seed 5's balanced model: no job of the sweep trains it, the job does
    jobs.append(settings("class=1", "imbalance=over", "attack.sources=[same,under-4@seed+1]"))
    with pytest.raises(ConfigError, match=r"attack.sources=under-4@seed\+1 .*trains: over-1"):
        check_sweep(jobs)


@pytest.mark.parametrize(
    "entry, fragment",
    [
        ("balanced@seed+0", "attack.sources=balanced@seed+0 is not allowed: expected K >= 1"),
        ('"balanced@seed=0"', "attack.sources=balanced@seed=0 is not allowed"),
        ("checkpoint:w.pt@seed+1", "a file has no seed"),
    ],
)
def test_cli_refuses_a_bad_seed_source_before_any_work(tmp_path, entry, fragment):
    args = ["-m", *TINY, "class=1", "imbalance=under", "seed=0", f"attack.sources=[same,{entry}]"]
    proc = run_cli([*args, f"hydra.sweep.dir={tmp_path / 'sweep'}"], cwd=tmp_path, timeout=300)
    assert proc.returncode == 2
    one_line_refusal(proc, fragment)
    assert not (tmp_path / "sweep").exists() and not (tmp_path / "store").exists()


@pytest.fixture(scope="module")
def baseline(tmp_path_factory) -> dict:
    """Balanced and under-1 at seeds 0 and 1, each attacked with its own gradient and with the
    balanced model of its seed + 1: seed 1's balanced model is a job's and seed 0's source."""
    base = tmp_path_factory.mktemp("baseline")
    args = ["-m", *TINY, "class=1", "imbalance=balanced,under", "seed=0,1", SOURCES]
    args += [f"paths.store_dir={base / 'store'}", f"hydra.sweep.dir={base / 'sweep'}"]
    proc = run_cli(args, cwd=base)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = {}
    for path in (base / "sweep").rglob("results.json"):
        res = json.loads(path.read_text())
        results[(res["meta"]["imbalance"], res["meta"]["seed"])] = res
    return {"base": base, "results": results}


@pytest.mark.slow
def test_every_job_has_rows_for_both_sources(baseline):
    for (profile, seed), res in baseline["results"].items():
        rows = [r for r in res["attacks"] if r["role"] == "target"]
        by_source = {r["source"]: r for r in rows}
        assert sorted(by_source) == ["balanced@seed+1", "same"]
        assert len(rows) == 4  # fgsm and bim from each source
        other = by_source["balanced@seed+1"]
        assert other["source_model"] == "balanced@seed+1" and other["source_seed"] == seed + 1
        assert other["model"] == {"balanced": "balanced", "under": "under-1"}[profile]
        assert "source_seed" not in by_source["same"]  # the job's own seed: rows as before
        assert other["images_key"] != by_source["same"]["images_key"]


@pytest.mark.slow
def test_the_source_is_the_model_that_seeds_job_trains_and_trained_once(baseline):
    res = baseline["results"]
    seed1 = res[("balanced", 1)]["models"]["target"]
    for profile in ("balanced", "under"):
        source = res[(profile, 0)]["models"]["balanced@seed+1"]
        assert source["key"] == seed1["key"] and source["spec"]["seed"] == 1
        assert source["clean"] == seed1["clean"]
    assert res[("under", 1)]["models"]["balanced@seed+1"]["spec"]["seed"] == 2
    trained = [e["key"] for e in Store(baseline["base"] / "store").work_log("trainings")]
    # balanced at seeds 0, 1, 2 and under-1 at seeds 0, 1: each trained once
    assert len(trained) == len(set(trained)) == 5


@pytest.mark.slow
def test_the_report_draws_the_baseline_as_its_own_gradient_row(baseline):
    from imbadv.report import cli

    sweep = baseline["base"] / "sweep"
    assert cli.main([str(sweep)]) == 0
    table = (sweep / "report.md").read_text().split("## Transfer matrix")[1].split("\n## ")[0]
    cells = {
        line.split("|")[1].strip(): line.split("|")[2:4]
        for line in table.splitlines()
        if line.startswith("| gradient of ")
    }
    # the white-box rows of both models, and the baseline's on both (never pooled with them)
    assert list(cells) == [
        "gradient of balanced",
        "gradient of under-c",
        "gradient of balanced@seed+1",
    ]
    assert "—" not in "".join(cells["gradient of balanced@seed+1"])
