"""Report: Table 1 cells against the results files, seeds and eps, partial sweeps, figures, CLI."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from imbadv.report import cli, loading, paper, stats

COLUMN = {(imb, src): key for key, _, imb, src in paper.COLUMNS}


def copy_sweep(smoke_sweep: dict, dest: Path) -> Path:
    """A private copy of the session's real sweep, so writing a report never touches the shared one."""
    shutil.copytree(smoke_sweep["sweep"], dest)
    return dest


def read_csv(path: Path) -> dict[tuple[int, str], dict]:
    with path.open() as f:
        return {(int(r["class"]), r["column"]): r for r in csv.DictReader(f)}


def assert_images(folder: Path, markdown: str) -> list[str]:
    """Every figure the report links is a valid, non-empty PNG; returns their names."""
    names = [
        line.split("](")[1].rstrip(")") for line in markdown.splitlines() if line.startswith("![")
    ]
    assert names
    for name in names:
        path = folder / name
        assert path.stat().st_size > 1000
        with Image.open(path) as image:
            image.verify()
            assert image.format == "PNG" and min(image.size) > 100
    return names


@pytest.fixture(scope="module")
def one_seed(smoke_sweep, tmp_path_factory) -> Path:
    sweep = copy_sweep(smoke_sweep, tmp_path_factory.mktemp("report") / "sweep")
    assert cli.main([str(sweep)]) == 0
    return sweep


def test_table_cells_are_the_results_files_numbers(one_seed):
    table = read_csv(one_seed / "table1.csv")
    assert len(table) == 10 * len(paper.COLUMNS)
    filled = set()
    for path in one_seed.glob("*/results.json"):
        for row in json.loads(path.read_text())["attacks"]:
            if row["method"] != "fgsm":
                continue
            cell = table[(row["class"], COLUMN[(row["imbalance"], row["source"])])]
            assert float(cell["mean"]) == pytest.approx(row["adv_acc"])
            assert [float(cell["ci_lo"]), float(cell["ci_hi"])] == pytest.approx(
                row["adv_acc_ci95"]
            )
            assert cell["n_seeds"] == "1" and cell["seeds"] == "0"
            published = paper.PAPER_TABLE1[cell["column"]][row["class"]] / 100
            assert float(cell["paper"]) == pytest.approx(published)
            assert float(cell["diff"]) == pytest.approx(row["adv_acc"] - published)
            filled.add((row["class"], cell["column"]))
    assert len(filled) == 2 * 5  # classes 0 and 1, all five columns
    assert all(table[k]["n_seeds"] == "0" for k in table if k not in filled)
    assert float(table[(3, "same_under")]["paper"]) == pytest.approx(0.005)


def test_markdown_shows_cells_paper_and_missing(one_seed):
    md = (one_seed / "table1.md").read_text()
    assert "FGSM, eps 0.01" in md
    row0 = next(line for line in md.splitlines() if line.startswith("| 0 - class0"))
    cell = read_csv(one_seed / "table1.csv")[(0, "same_balanced")]
    ours = f"{100 * float(cell['mean']):.1f} ({100 * float(cell['ci_lo']):.1f}–{100 * float(cell['ci_hi']):.1f})"
    assert ours in row0 and "| 36.0 |" in row0  # the paper's balanced same-model airplane
    row5 = next(line for line in md.splitlines() if line.startswith("| 5 - class5"))
    assert row5.count("—") == 10 and "| 47.0 |" in row5  # no results, paper still shown
    full = (one_seed / "report.md").read_text()
    assert (
        "class 2 (class2): all columns" in full
        and "class 0 (class0)" not in full.split("### Missing")[1].split("##")[0]
    )
    assert "internally inconsistent" in full and "not CIFAR-10" in full
    assert "pixel [0, 1]" in full and "Seeds: 0" in full and "git " in full
    assert "made by `python -m imbadv.run -m experiment=smoke " in full  # from multirun.yaml


def test_every_figure_is_a_valid_image_and_embedded_in_html(one_seed):
    md = (one_seed / "report.md").read_text()
    names = assert_images(one_seed, md)
    assert {
        "fig1_confusion_balanced.png",
        "fig2_clean_accuracy.png",
        "fig5_relative_drop.png",
        "fig_classwise_robust.png",
        "fig_transfer.png",
    } <= set(names)
    # the default pair (classes 3 and 5) has no results in this sweep: no empty figure for it
    assert not any(n.startswith("fig6_pair") for n in names)
    assert not (one_seed / "fig6_pair_class3_class5.png").exists()
    page = (one_seed / "report.html").read_text()
    assert page.count("data:image/png;base64,") == len(names) and "<table>" in page


def test_findings_have_verdicts_and_numbers(one_seed):
    found = (one_seed / "report.md").read_text().split("checked on this sweep")[1]
    tested_part, untested_part = found.split("### Not tested in this sweep")
    items = [line for line in tested_part.splitlines() if line.startswith("- **")]
    # one seed: the paper's transfer, Table 1 and cat/dog findings are tested, none has an
    # interval at the unit of replication, so none can be anything but inconclusive
    assert len(items) == 7 and "7 finding(s) tested: 7 inconclusive; 13 not tested" in tested_part
    for item in items:  # the tiny models leave some findings with every cell below the floor
        assert item.split("**")[1] == "inconclusive"
        assert "1 seed: no interval" in item or "nothing left to test" in item
    assert "class1 and class9 receive more" in tested_part  # measured, all cells left out
    untested = [line for line in untested_part.splitlines() if line.startswith("- ")]
    # class3/class5 (no rows) pooled and balanced alone, matched x2, head/tail x2, AT-BSL, and the
    # clean-accuracy adjustment x4 (every cell below the floor at this size), the transfer
    # baseline x2 (no `balanced@seed+1` rows)
    assert len(untested) == 13 and not any("**" in line for line in untested)
    assert "class3 and class5 receive more" in untested_part
    assert "no matched control in this sweep" in untested_part
    assert "Holm-adjusted" in found and "unit of replication is the seed" in found
    assert "supported" not in found.replace("not supported", "")  # the old verdict word is gone


def seed_copies(sweep: Path, shifts: dict[int, float], extra_eps: float | None = None) -> None:
    """Add copies of every job for more seeds (adv_acc shifted) and, optionally, a second eps."""
    for path in list(sweep.glob("*/results.json")):
        full = json.loads(path.read_text())
        for seed, shift in shifts.items():
            other = copy.deepcopy(full)
            other["meta"]["seed"] = other["config"]["seed"] = seed
            other["key"] = f"{full['key']}-seed{seed}"  # a job's key holds its seed
            for row in other["attacks"]:
                row["seed"], row["adv_acc"] = seed, min(1.0, row["adv_acc"] + shift)
                row["model_key"] += f"-seed{seed}"  # another seed's model: rows told apart
            target = path.parent.with_name(path.parent.name + f",seed={seed}") / "results.json"
            target.parent.mkdir()
            target.write_text(json.dumps(other))
        if extra_eps is not None:
            full["attacks"] += [
                {
                    **r,
                    "eps": extra_eps,
                    "adv_acc": r["adv_acc"] / 2,
                    "images_key": r["images_key"] + "-eps",
                }
                for r in full["attacks"]
            ]
            path.write_text(json.dumps(full))


@pytest.mark.slow
def test_several_seeds_give_mean_sd_and_t_interval(smoke_sweep, tmp_path):
    sweep = copy_sweep(smoke_sweep, tmp_path / "sweep")
    seed_copies(sweep, {1: 0.1, 2: 0.2}, extra_eps=0.02)
    assert cli.main([str(sweep), "--eps", "0.01"]) == 0
    table = read_csv(sweep / "table1.csv")
    results = [json.loads(p.read_text()) for p in sweep.glob("*/results.json")]
    for (cls, key), cell in table.items():
        values = [
            r["adv_acc"]
            for f in results
            for r in f["attacks"]
            if r["method"] == "fgsm"
            and r["eps"] == 0.01
            and r["role"] == "target"  # not the balanced model's rows measured again by under/over
            and r["class"] == cls
            and COLUMN[(r["imbalance"], r["source"])] == key
        ]
        if not values:
            continue
        assert len(values) == 3 and cell["n_seeds"] == "3" and cell["seeds"] == "0 1 2"
        mean, sd = np.mean(values), np.std(values, ddof=1)
        half = 4.302653 * sd / math.sqrt(3)  # Student t, 2 degrees of freedom
        got = [float(cell[k]) for k in ("mean", "sd", "ci_lo", "ci_hi")]
        assert got == pytest.approx([mean, sd, mean - half, mean + half], abs=1e-6)
    md = (sweep / "report.md").read_text()
    assert "mean ± sd over seeds" in md and "fig_eps.png" in md
    assert_images(sweep, md)
    assert cli.main([str(sweep), "--eps", "0.02", "--attack", "bim", "--pair", "0,class1"]) == 0
    assert "BIM, eps 0.02" in (sweep / "table1.md").read_text()
    assert (sweep / "fig6_pair_class0_class1.png").exists()


def test_partial_sweep_names_the_missing_job_and_cells(smoke_sweep, tmp_path):
    sweep = copy_sweep(smoke_sweep, tmp_path / "sweep")
    running = next(sweep.glob("class=1,*imbalance=over*"))
    (running / "results.json").unlink()  # as if the job were still running (or had failed)
    assert cli.main([str(sweep)]) == 0
    md = (sweep / "report.md").read_text()
    assert f"job `{running.name}`: no results.json" in md
    assert "class 1 (class1): Different model: over, Same model: over" in md
    assert read_csv(sweep / "table1.csv")[(1, "same_over")]["n_seeds"] == "0"


@pytest.mark.slow
def test_cli_newest_sweep_and_one_line_errors(smoke_sweep, tmp_path):
    older = copy_sweep(smoke_sweep, tmp_path / "multirun" / "2020-01-01" / "00-00-00")
    newer = copy_sweep(smoke_sweep, tmp_path / "multirun" / "2021-01-01" / "00-00-00")
    os.utime(older / "multirun.yaml", (1, 1))
    (tmp_path / "multirun" / "empty").mkdir()
    (tmp_path / "multirun" / "empty" / "multirun.yaml").write_text("{}")
    cli = [sys.executable, "-m", "imbadv.report"]
    ok = subprocess.run(cli, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert ok.returncode == 0, ok.stderr
    assert (newer / "report.md").exists() and not (older / "report.md").exists()
    for args, fragment in (
        ([str(tmp_path / "nope")], "nope"),
        ([str(newer), "--eps", "0.5"], "--eps 0.5"),
        ([str(newer), "--pair", "cat,cat"], "--pair cat,cat"),
        ([str(newer), "--min-clean", "5"], "--min-clean 5"),
        ([str(newer), "--baseline", "nope"], "--baseline nope"),
    ):
        bad = subprocess.run(cli + args, cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert bad.returncode == 2 and fragment in bad.stderr
        assert len(bad.stderr.strip().splitlines()) == 1 and "Traceback" not in bad.stderr


def test_summaries_and_pair_defaults():
    one = stats.summarize([0.25], [(0.1, 0.5)])
    assert (one.mean, one.lo, one.hi, one.n) == (0.25, 0.1, 0.5, 1) and math.isnan(one.sd)
    assert stats.summarize([math.nan]) is None
    assert stats.t975(1) == pytest.approx(12.7062, abs=1e-4)
    assert stats.t975(1000) == pytest.approx(1.96234, abs=1e-5)
    assert paper.parse_pair(None, list(paper.PAPER_CLASSES)) == (3, 5)
    assert paper.parse_pair(None, [f"class{i}" for i in range(10)]) == (3, 5)
    assert paper.parse_pair("automobile,truck", list(paper.PAPER_CLASSES)) == (1, 9)


def test_findings_verdicts_follow_the_numbers():
    sel = loading.Selection("fgsm", 0.01, "ascent", (0.01,))
    base = {
        "method": "fgsm",
        "eps": 0.01,
        "direction": "ascent",
        "n": 100,
        "clean_acc": 0.8,
        "clean_row": [0] * 10,
        "adv_row": [0] * 10,
    }
    rows = [
        {
            **base,
            "seed": s,
            "class": c,
            "imbalance": m,
            "source": "same",
            "relative_drop": d + 0.01 * (c + s) % 3,
            "adv_acc": 0.1,
        }
        for s in range(2)
        for c in range(3)
        for m, d in (("balanced", 0.5), ("under", 0.8), ("over", 0.6))
    ]
    all_found = paper.findings(rows, sel, list(paper.PAPER_CLASSES))
    found = {f.claim.split(" (Sec")[0]: f for f in all_found}
    under = found["Under-sampled models are more vulnerable than the balanced model"]
    assert under.verdict == "confirmed" and "over 6 (seed, class) pairs" in under.evidence
    over = found["Over-sampled models are less vulnerable than the balanced model"]
    assert (
        over.verdict == "contradicted"
    )  # the paper's direction is balanced > over; here over > balanced
    assert (
        found["Over-sampled models are less vulnerable than under-sampled ones"].verdict
        == "confirmed"
    )
    transfer = [f for f in all_found if f.claim.startswith("Transfer")]
    assert [f.verdict for f in transfer] == [stats.NOT_TESTED] * 2
    assert all("no (seed, class) pairs with both" in f.evidence for f in transfer)


def test_several_folders_merge_and_say_what_is_missing(smoke_sweep, tmp_path):
    first = copy_sweep(smoke_sweep, tmp_path / "seed0")
    second = tmp_path / "seed1"
    second.mkdir()
    seed_copies(first, {1: 0.05})  # the copies land in `first`: move them into their own sweep
    for job in list(first.glob("*,seed=1")):
        shutil.move(str(job), second / job.name)
    shutil.copytree(next(first.glob("class=0,*imbalance=under*")), second / "dup")  # a job twice
    (next(second.glob("class=1,*imbalance=over*")) / "results.json").unlink()  # one seed missing
    out = tmp_path / "merged"
    assert cli.main([str(first), str(second), "--out", str(out), "--min-correct", "1"]) == 0
    md = (out / "report.md").read_text()
    assert f"`{first}`" in md and f"`{second}`" in md and "Sweep folders (2)" in md
    assert "1 job(s) found twice, counted once" in md
    assert "class 1 same_over: seeds 1 missing" in md
    table = read_csv(out / "table1.csv")
    assert table[(0, "same_under")]["n_seeds"] == "2" and table[(1, "same_over")]["n_seeds"] == "1"
    assert "## Class-wise" in md and "rho vs balanced" in md
    assert not (first / "report.md").exists()  # the sweeps themselves are left alone


def test_floor_options_flag_cells_and_reach_the_findings(smoke_sweep, tmp_path):
    sweep_dir = copy_sweep(smoke_sweep, tmp_path / "sweep")
    assert cli.main([str(sweep_dir), "--min-clean", "0", "--min-correct", "0"]) == 0
    found = (sweep_dir / "report.md").read_text().split("checked on this sweep")[1]
    assert "below the floor" not in found.split("Verdicts:")[0]
    table = read_csv(sweep_dir / "table1.csv")
    assert all(r["degenerate"] == "0" for r in table.values())
    assert cli.main([str(sweep_dir), "--min-correct", "100000"]) == 0  # every cell below
    table = read_csv(sweep_dir / "table1.csv")
    assert all(r["degenerate"] == r["n_seeds"] for r in table.values())
    md = (sweep_dir / "report.md").read_text()
    assert "†" in md.split("## Table 1")[1].split("###")[0] and "pair(s) left out" in md


def test_results_page_copies_figures_beside_it(smoke_sweep, tmp_path):
    sweep_dir = copy_sweep(smoke_sweep, tmp_path / "sweep")
    page = tmp_path / "docs" / "results.md"
    assert cli.main([str(sweep_dir), "--results-page", str(page)]) == 0
    text = page.read_text()
    assert (
        "](results/fig_transfer.png)" in text
        and (tmp_path / "docs" / "results" / "fig_transfer.png").exists()
    )
    assert "Made by `python -m imbadv.report " in text and "--results-page" in text


@pytest.mark.slow
def test_results_page_sections_are_added_then_replaced(smoke_sweep, tmp_path):
    sweep_dir = copy_sweep(smoke_sweep, tmp_path / "sweep")
    page = tmp_path / "results.md"
    page.write_text("# Results\n\nintro\n")
    for _ in range(2):  # the second run replaces its section, it does not add another
        assert cli.main([str(sweep_dir), "--results-page", str(page), "--section", "lt"]) == 0
    text = page.read_text()
    assert text.startswith("# Results\n\nintro\n") and text.count("<!-- imbadv section lt -->") == 1
    assert "](results/lt-fig_transfer.png)" in text
    assert (tmp_path / "results" / "lt-fig_transfer.png").exists()
    assert cli.main([str(sweep_dir), "--results-page", str(page), "--section", "other"]) == 0
    assert page.read_text().index("section lt -->") < page.read_text().index("section other -->")
    both = page.read_text()  # replacing the first of two sections changes nothing else
    assert cli.main([str(sweep_dir), "--results-page", str(page), "--section", "lt"]) == 0
    assert page.read_text() == both and "end of section lt -->\n\n<!-- imbadv" in both
