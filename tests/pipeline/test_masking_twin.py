"""The gradient-masking check runs for adversarially trained models: the margin twin of each
cross-entropy PGD setting is added (config.settings.masking_twins), once, keeping the CE rows."""

from __future__ import annotations

import json
import shutil
from dataclasses import replace

import pytest
from conftest import TINY, run_cli
from hydra import compose, initialize_config_dir

from imbadv.attacks import ATTACKS
from imbadv.config.settings import CONF_DIR, AttackSpec, from_config, masking_twins
from imbadv.pipeline.job import Job
from imbadv.report.loading import choose, pick

EPS = 8 / 255


def spec(name: str, eps: float = EPS, **params) -> AttackSpec:
    return AttackSpec(ATTACKS.parse("attack.methods", name, params), eps)


def losses(specs) -> list[tuple[str, str, int]]:
    return [(x.method.name, x.method.params.loss, x.method.params.steps) for x in specs]


def test_each_ce_pgd_setting_gets_one_margin_twin_linf_and_l2():
    ce, l2 = spec("pgd", steps=2, alpha=0.01), spec("pgd_l2", eps=0.5, steps=3)
    specs = (spec("fgsm"), ce, spec("bim"), l2)
    twins = masking_twins(specs)
    assert losses(twins) == [("pgd", "margin", 2), ("pgd_l2", "margin", 3)]
    (linf, two) = twins
    assert linf.method.params == replace(ce.method.params, loss="margin")  # alpha, restarts, ...
    assert (linf.eps, linf.direction, two.eps) == (EPS, ce.direction, 0.5)
    assert masking_twins(specs + twins) == ()  # present: nothing added again
    # each setting keeps its name (and store key): the twins come after, under their own names
    assert [x.name for x in specs] == [x.name for x in (specs + twins)[:4]]
    assert linf.name == f"pgd(alpha=0.01,loss=margin,steps=2)/eps={EPS:g}/ascent"


def test_a_twin_already_listed_or_shared_is_not_duplicated():
    plain, scaled = spec("pgd", steps=2), spec("pgd", steps=2, logit_scale=10.0)
    margin = spec("pgd", steps=2, loss="margin")
    assert masking_twins((plain, margin)) == ()
    assert masking_twins((plain, scaled, margin)) == ()  # the logits x10 check shares it
    (twin,) = masking_twins((plain, scaled))
    assert twin.method.params.logit_scale == 1.0 and twin.method.params.loss == "margin"
    # a margin run of another strength is no twin: PGD-2 CE still gets PGD-2 margin
    (twin,) = masking_twins((plain, spec("pgd", steps=5, loss="margin")))
    assert losses([twin]) == [("pgd", "margin", 2)]
    # alpha left to its default and the same alpha written out are one setting
    explicit = spec("pgd", steps=2, alpha=2.5 * EPS / 2, loss="margin")
    assert masking_twins((plain, explicit)) == ()
    # each eps its own twin; no PGD, no twin
    assert len(masking_twins((plain, spec("pgd", eps=0.01, steps=2)))) == 2
    assert masking_twins((spec("fgsm"), spec("mifgsm"))) == ()


def settings(overrides: list[str], tmp_path):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        full = [*overrides, f"paths.data_dir={tmp_path}"]
        cfg = compose("config", overrides=full, return_hydra_config=True)
    return from_config(cfg)


PGD2 = "attack.methods=[{name:pgd,steps:2}]"


@pytest.mark.parametrize(
    ("overrides", "added"),
    [
        (["adversarial=fast_fgsm", PGD2], True),
        (["adversarial=pgd_at", "adversarial.steps=2", PGD2], True),
        (["adversarial=none", PGD2], False),  # a standard job runs what it lists
        # a standard job attacked with an adversarially trained model's gradient
        (["adversarial=none", "imbalance=exp", PGD2, "attack.sources=[same,exp+fast_fgsm]"], True),
        (["adversarial=fast_fgsm"], False),  # fgsm and bim: no PGD, nothing to pair
        (["adversarial=fast_fgsm", "attack.methods=[{name:pgd,loss:margin}]"], False),
        (["experiment=longtail_quick"], False),  # lists its twin: the same rows in every mode
        (["experiment=longtail_quick", "adversarial=none"], False),
        (["experiment=longtail", "attack.methods.3=fgsm"], False),  # PGD-AT, twin listed
    ],
)
def test_the_twin_is_added_for_adversarially_trained_models_only(overrides, added, tmp_path):
    s = settings(["experiment=smoke", *overrides], tmp_path)
    names = [x.name for x in s.specs]
    assert len(s.masking_twins) == added
    if added:  # after the listed settings, which keep their order
        assert names[-1] == s.masking_twins[0] and "loss=margin" in names[-1]
    if added or "adversarial=none" not in overrides:  # an AT model: every CE PGD has its twin
        assert masking_twins(s.specs) == ()


def job(tmp_path, name: str, args: list[str]) -> tuple[dict, str]:
    """One job through the command line: its results.json and everything it printed and logged."""
    proc = run_cli([*args, f"hydra.run.dir={name}", "logger=none"], cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    logs = "".join(p.read_text() for p in (tmp_path / name).rglob("*.log"))
    return (
        json.loads((tmp_path / name / "results.json").read_text()),
        proc.stdout + proc.stderr,
        logs,
    )


LOGGED = "gets the margin twin"


@pytest.mark.slow
def test_an_adversarially_trained_job_writes_a_masking_gap_on_every_pgd_row(tmp_path):
    """Smoke-size jobs attacked with PGD-2 (CE) only: fast-FGSM AT (at eps 0.002: it learns in
    3 epochs) and standard training; every class's images, 10 each (rows beyond one class)."""
    store = tmp_path / "store"
    attack = [
        PGD2,
        "attack.eps=0.01",
        "attack.sources=[same]",
        "class=1",
        f"paths.store_dir={store}",
    ]
    at_args = [*TINY, *attack, "attack.images=all", "attack.per_class=10"]
    at_args += ["adversarial=fast_fgsm", "adversarial.eps=0.002"]
    at, printed, logs = job(tmp_path, "at", at_args)

    pgd = [r for r in at["attacks"] if r["method"] == "pgd"]
    assert sorted(r["params"]["loss"] for r in pgd) == ["ce", "margin"]
    assert all(r["masking_gap"] is not None for r in pgd)
    ce, margin = sorted(pgd, key=lambda r: r["params"]["loss"])
    assert ce["masking_gap"] == pytest.approx(ce["adv_acc"] - margin["adv_acc"])
    assert at["meta"]["masking_twins"] == ["pgd(loss=margin,steps=2)/eps=0.01/ascent"]
    assert printed.count(LOGGED) == 1 and logs.count(LOGGED) == 1  # said once

    # standard training, nothing adversarial: what it listed, no pair, no gap
    std_args = [*TINY, *attack, "trainer.max_epochs=1", "adversarial=none"]
    standard, printed, logs = job(tmp_path, "standard", std_args)
    (row,) = standard["attacks"]
    assert row["params"]["loss"] == "ce" and row["masking_gap"] is None
    assert "masking_twins" not in standard["meta"] and LOGGED not in printed + logs

    # The CE row is the one the AT job made before twins existed: the job computed again with
    # its CE setting only, on a store holding only its model (the images crafted anew), agrees.
    import torch

    from imbadv.data.load import load_dataset
    from imbadv.pipeline.experiment import compute
    from imbadv.pipeline.plan import resolve_class
    from imbadv.store import Store

    fresh = tmp_path / "fresh"
    shutil.copytree(store / "models", fresh / "models")
    s = settings([*at_args, f"paths.store_dir={fresh}"], tmp_path)
    s = replace(s, specs=s.specs[: -len(s.masking_twins)], masking_twins=())
    data = load_dataset(s.dataset, s.cache_dir)
    cpu = torch.device("cpu")
    old, trained = compute(Job(data, s, resolve_class(s.target, data), cpu, Store(fresh)))
    assert not any(trained.values())  # the same model, loaded
    (before,) = old["attacks"]
    every = before["classes"]  # the 100 images: learned, and the attack hurts
    assert before["masking_gap"] is None
    assert 0 < every["balanced_adv_acc"] < every["balanced_clean_acc"], every
    same = lambda r: json.dumps(  # noqa: E731 - as written to results.json (NaN, tuples)
        {k: v for k, v in r.items() if k not in ("masking_gap", "gradient_masking")}, sort_keys=True
    )
    assert same(before) == same(ce)


def test_the_report_reads_the_plain_pgd_rows_beside_their_twins():
    """Rows of one model and class: PGD-CE, its margin twin and a logits x10 check."""

    def row(loss: str, scale: float, acc: float) -> dict:
        label = "pgd" + ("(loss=margin)" if loss == "margin" else "")
        label = f"pgd(logit_scale={scale:g})" if scale != 1.0 else label
        params = {"loss": loss, "logit_scale": scale}
        return {"method": "pgd", "attack": label, "params": params, "eps": EPS,
                "direction": "ascent", "eps_space": "pixel [0, 1]", "class": 0, "adv_acc": acc}  # fmt: skip

    rows = [row("margin", 1.0, 0.1), row("ce", 10.0, 0.5), row("ce", 1.0, 0.3)]
    sel = choose(rows, "pgd", None)
    assert sel.attack == "pgd" and [r["adv_acc"] for r in pick(rows, sel)] == [0.3]
    alone = choose([rows[2]], "pgd", None)  # one setting: every row of the method, as before
    assert alone.attack is None and pick([rows[2]], alone) == [rows[2]]
