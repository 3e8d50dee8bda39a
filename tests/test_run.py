"""The command line: A..B ranges, one-line refusals of bad input, and one smoke experiment end to end."""

import json

import pytest
from conftest import TINY, run_cli

from imbadv.core.errors import ConfigError
from imbadv.run import check_jobs, expand_ranges, job_overrides


def test_ranges_are_inclusive_and_hydra_forms_untouched():
    assert expand_ranges(["class=0..9"]) == ["class=range(0,10)"]
    assert expand_ranges(["class=3..3"]) == ["class=range(3,4)"]
    assert expand_ranges(["seed=0,1", "class=range(0,3)", "dataset.root=../data/x.tar.gz"]) == [
        "seed=0,1",
        "class=range(0,3)",
        "dataset.root=../data/x.tar.gz",
    ]
    assert len(job_overrides(expand_ranges(["class=0..9", "imbalance=under,over"]))) == 20
    assert job_overrides(expand_ranges(["class=3..3"])) == [["class=3"]]


@pytest.mark.parametrize("bad", ["class=5..3", "class=a..b", "class=1.5..3"])
def test_bad_ranges_are_refused(bad):
    with pytest.raises(ConfigError, match="class="):
        expand_ranges([bad])


BAD = [
    (["class=12"], "class=12"),
    (["class=zebra"], "class=zebra"),
    (["imbalance=sideways"], "imbalance=sideways"),
    (["attack.eps=-1"], "attack.eps=-1"),
    (["attack.methods=[pgd_linf]"], "attack.methods=pgd_linf"),
    (["attack.direction=up"], "attack.direction=up"),
    (["attack.sources=[other]"], "attack.sources=other"),
    (["dataset=imagenet"], "dataset=imagenet"),
    (["dataset=folder", "dataset.root=/no/such/folder"], "/no/such/folder"),
    (["trainer.batch_size=0"], "trainer.batch_size=0"),
    (["trainer.max_epochs=0"], "trainer.max_epochs=0"),
    (["attack.eps=1.5"], "attack.eps=1.5"),
    (["paths.store_dir=/proc/imbadv"], "paths.store_dir=/proc/imbadv"),
    (["hydra.run.dir=/proc/imbadv-out"], "hydra.run.dir=/proc/imbadv-out"),
    (["counts.majority=9000"], "9000"),
    (["-m", "class=0..2,zebra"], "class="),
    (["attack.methods=[{name:pgd,steps:0}]"], "attack.methods.steps=0"),
    (["attack.methods=[{name:pgd,alpha:0}]"], "attack.methods.alpha=0"),
    (["attack.methods=[{name:pgd_l2,alpha:2}]"], "attack.methods.alpha=2"),
    (["attack.methods=[{name:pgd,restarts:0}]"], "attack.methods.restarts=0"),
    (["attack.methods=[{name:mifgsm,steps:-3}]"], "attack.methods.steps=-3"),
    (["attack.methods=[{name:pgd,loss:hinge}]"], "attack.methods.loss=hinge"),
    (["attack.methods=[{name:autoattack,norm:L3}]"], "attack.methods.norm=L3"),
    (["attack.eps=[0.01,-0.5]"], "attack.eps=-0.5"),
    (["class=3", "attack.direction=toward", "attack.target_class=3"], "attack.target_class=3"),
    (["class=3", "attack.direction=toward", "attack.target_class=13"], "attack.target_class=13"),
    (["attack.direction=toward"], "attack.target_class=None"),
    (["attack.target_class=2"], "attack.target_class=2"),
    (["attack.methods=[apgd_pair]", "attack.direction=descent"], "attack.direction=descent"),
    (["attack.images=some"], "attack.images=some"),
    (["attack.per_class=5"], "attack.per_class=5"),
    (["attack.images=all", "attack.per_class=0"], "attack.per_class=0"),
    (["attack.stack=maybe"], "attack.stack=maybe"),
]


@pytest.mark.parametrize(("args", "named"), BAD, ids=[" ".join(a) for a, _ in BAD])
def test_bad_input_is_one_clear_line(tmp_path, args, named):
    # the defaults come first so that the case's own value is the one Hydra keeps
    proc = run_cli(["experiment=smoke", f"paths.store_dir={tmp_path}/store", *args], cwd=tmp_path)
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode != 0
    assert len(lines) == 1 and lines[0].startswith("imbadv: error:"), proc.stderr
    assert named in lines[0] and "expected" in lines[0]
    assert not (tmp_path / "store" / "models").exists() or not any(
        (tmp_path / "store" / "models").iterdir()
    )


def test_a_bad_job_in_a_sweep_stops_it_before_any_job_runs(tmp_path):
    proc = run_cli(
        [
            "-m",
            *TINY,
            "class=0,1",
            "imbalance=under,sideways",
            f"paths.store_dir={tmp_path}/store",
            f"hydra.sweep.dir={tmp_path}/mr",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 2 and "imbalance=sideways" in proc.stderr
    assert not (tmp_path / "mr").exists()


@pytest.mark.slow
def test_smoke_experiment_end_to_end(tmp_path):
    proc = run_cli(
        [
            "experiment=smoke",
            "class=3",
            "imbalance=under",
            f"paths.store_dir={tmp_path}/store",
            f"hydra.run.dir={tmp_path}/out",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "out" / "results.json").read_text())
    meta = result["meta"]
    assert (meta["class"], meta["imbalance"], meta["dataset"]) == (3, "under", "synthetic")
    target = result["models"]["target"]
    assert target["train_counts"][3] == 36 and target["train_counts"][0] == 180  # 40/200 minus 10 %
    assert result["models"]["balanced"]["train_counts"] == [180] * 10
    rows = {(r["source"], r["method"]): r for r in result["attacks"]}
    assert set(rows) == {(s, m) for s in ("same", "balanced") for m in ("fgsm", "bim")}
    for r in rows.values():
        assert r["n"] == 100 and r["eps"] == 0.01 and r["eps_space"] == "pixel [0, 1]"
        assert r["max_abs_delta"] <= 0.01 + 1e-6 and sum(r["adv_row"]) == 100
        assert r["adv_acc"] <= r["clean_acc"]
    assert rows[("same", "fgsm")]["adv_acc"] < rows[("same", "fgsm")]["clean_acc"]
    assert "same" in proc.stdout and "balanced" in proc.stdout  # the printed table


# Hydra 1.3's own exceptions for each refusal _hydra_problem turns into one line (composed in
# process, no job runs): (overrides, key, value, what the line must offer)
HYDRA_REFUSALS = [
    (["trainer.lrr=0.1"], "trainer.lrr", "0.1", "a known option ("),
    (["attack.nothing=2"], "attack.nothing", "2", "a known option ("),
    (["bogus.x=1"], "bogus.x", "1", "an existing key (add a new one with +bogus.x=...)"),
    (["imbalance=sideways"], "imbalance", "sideways", "one of balanced, exp, matched, over"),
    (["dataset=imagenet"], "dataset", "imagenet", "one of cifar10, cifar100,"),
]


@pytest.mark.parametrize(("args", "key", "value", "allowed"), HYDRA_REFUSALS)
def test_hydra_refusals_name_key_value_and_choices(args, key, value, allowed):
    with pytest.raises(ConfigError) as err:
        check_jobs(["experiment=smoke", *args])
    assert (err.value.key, err.value.value) == (key, value)
    assert err.value.allowed.startswith(allowed), err.value.allowed


def test_a_known_key_lists_the_options_of_its_group():
    with pytest.raises(ConfigError) as err:
        check_jobs(["experiment=smoke", "trainer.lrr=0.1"])
    assert "max_epochs" in err.value.allowed and "batch_size" in err.value.allowed


def test_an_unknown_option_lists_those_of_a_plugin_search_path(tmp_path):
    (tmp_path / "imbalance").mkdir()
    (tmp_path / "imbalance" / "linear.yaml").write_text("name: linear\n")
    with pytest.raises(ConfigError) as err:
        check_jobs(
            ["experiment=smoke", f"hydra.searchpath=[file://{tmp_path}]", "imbalance=lineer"]
        )
    assert (err.value.key, err.value.value) == ("imbalance", "lineer")
    assert "linear" in err.value.allowed.split("one of ")[1].split(", ")


def test_a_job_folder_name_never_exceeds_what_file_systems_allow():
    from imbadv.run import MAX_FOLDER, job_folder

    short = "class=3,imbalance=under"
    assert job_folder(short) == short
    long = ",".join(f"option{k}.value={'x' * 12}" for k in range(20))  # a recipe comparison's
    cut, other = job_folder(long), job_folder(long.replace("option19", "option18"))
    assert len(cut.encode()) <= MAX_FOLDER < 255 and cut.startswith(long[:100])
    assert cut == job_folder(long) and cut != other  # repeatable, and distinct jobs stay distinct


@pytest.mark.slow
def test_a_multirun_with_many_overrides_writes_its_job_folders(tmp_path):
    overrides = [
        "experiment=smoke",
        "trainer.max_epochs=1",
        "attack.methods=[fgsm]",
        "optimizer=rmsprop_keras",
        "optimizer.lr=0.002",
        "schedule=keras_decay",
        "schedule.decay=0.00001",
        "augment=none",
        "trainer.early_stopping=true",
        "trainer.selection=val_loss",
        "trainer.robust_val_steps=10",
        "counts.val_fraction=0.1",
        "seed=0,1",
    ]
    proc = run_cli(
        [
            "-m",
            *overrides,
            f"paths.store_dir={tmp_path}/store",
            f"hydra.sweep.dir={tmp_path}/sweep",
        ],
        tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    jobs = sorted(p.parent.name for p in (tmp_path / "sweep").glob("*/results.json"))
    assert len(jobs) == 2 and all(len(j.encode()) <= 200 for j in jobs)
