"""The bench's measurements at tiny sizes: real runs, positive throughputs, the JSON's keys.

No speed assertions: these machines are shared and noisy.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import TINY

from imbadv import bench
from imbadv.attacks.gradient_sign import fgsm
from imbadv.bench import attacks as bench_attacks
from imbadv.models.vgg import VGG
from imbadv.training import TrainSettings

TINY_BENCH = [
    "--device",
    "cpu",
    "--width",
    "0.0625",
    "--batch-size",
    "8",
    "--steps",
    "2",
    "--warmup",
    "1",
    "--repeats",
    "1",
    "--attack-images",
    "16",
    "--eval-images",
    "64",
    "--attack-steps",
    "2",
]


def positive(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def write_result(path, wall: float, trained: dict[str, bool], train_seconds: dict[str, float]):
    path.mkdir(parents=True)
    models = {role: {"train_seconds": sec} for role, sec in train_seconds.items()}
    full = {"meta": {"wall_seconds": wall, "trained_here": trained}, "models": models}
    (path / "results.json").write_text(json.dumps(full))


def test_main_writes_json_with_required_keys_and_finite_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    write_result(tmp_path / "sweep" / "a", 10.0, {"target": True}, {"target": 6.0})
    report = bench.main([*TINY_BENCH, "--json", str(out), "--sweep", str(tmp_path / "sweep")])
    written = json.loads(out.read_text())
    assert set(bench.REQUIRED_KEYS) <= set(written)
    assert written["device"].startswith("cpu (")
    for key in (
        "train_vs_raw",
        "attack_vs_torchattacks",
        "fgsm_vs_torchattacks",
        "pgd_vs_torchattacks",
        "pgd_l2_vs_torchattacks",
        "mifgsm_vs_torchattacks",
    ):
        assert positive(written[key]), key
    assert written["attack_vs_torchattacks"] == min(
        written["fgsm_vs_torchattacks"], written["bim_vs_torchattacks"]
    )
    for key in ("imbadv_images_per_s", "raw_images_per_s", "imbadv_gflops"):
        assert positive(written["train"][key]), key
    assert positive(written["predict"]["images_per_s"])
    assert positive(written["machine"]["matmul_fp32_gflops"])
    assert written["sweep"]["train_seconds"] == 6.0
    assert report["train_vs_raw"] == written["train_vs_raw"]
    assert "train" in capsys.readouterr().out


def test_both_training_sides_take_the_same_optimizer_steps():
    model = VGG(width=0.0625)
    s = TrainSettings(batch_size=8, max_epochs=1)
    deterministic = torch.are_deterministic_algorithms_enabled()
    result = bench.bench_training(
        model, s, warmup=1, steps=2, repeats=1, device=torch.device("cpu")
    )
    assert positive(result["raw_images_per_s"]) and positive(result["imbadv_images_per_s"])
    # Same start, batches and optimizer: if the raw loop drifted from imbadv's path, this moves.
    assert result["weights_max_abs_diff"] < 1e-5
    # Trainer(deterministic=True) sets a process-wide flag; the bench puts it back.
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_both_adversarial_training_sides_take_the_same_steps():
    model = VGG(width=0.0625)
    s = TrainSettings(batch_size=8, max_epochs=1)
    result = bench.bench_training(
        model, s, warmup=1, steps=2, repeats=1, device=torch.device("cpu"), at_eps=8 / 255
    )
    # the bare fast-FGSM loop draws the same random starts and takes the same inner step as
    # imbadv's AdversarialStep: the weights end alike (they would not if either side changed)
    assert result["weights_max_abs_diff"] < 1e-5
    plain = bench.bench_training(model, s, warmup=1, steps=2, repeats=1, device=torch.device("cpu"))
    assert plain["weights_max_abs_diff"] < 1e-5 and positive(result["imbadv_images_per_s"])


def test_attack_images_are_identical_to_torchattacks():
    x, y = bench.make_data(16, torch.device("cpu"), seed=3)
    # batches of 8 and 5: each batch's random start is seeded by its first index on both sides
    result = bench_attacks.bench_attacks(
        VGG(width=0.0625).eval(), x.float() / 255, y, 8 / 255, 5, 1, 3
    )
    for name in ("fgsm", "bim", "pgd", "pgd_l2", "mifgsm"):
        assert result[name]["max_abs_diff"] <= bench_attacks.IDENTICAL_TOL
        assert positive(result[name]["imbadv_images_per_s"]), name


def test_identity_check_fails_when_the_images_differ():
    model = VGG(width=0.0625).eval()
    x, y = bench.make_data(4, torch.device("cpu"), seed=4)
    adv = fgsm(model, x.float() / 255, y, 0.01)
    assert bench_attacks.check_identical(adv, adv.clone(), "fgsm") == 0.0
    moved = adv.clone()
    moved[0, 0, 0, 0] += 1e-3
    with pytest.raises(AssertionError, match="differ"):
        bench_attacks.check_identical(adv, moved, "fgsm")
    with pytest.raises(AssertionError, match="differ"):
        bench_attacks.check_identical(adv, adv[:2], "fgsm")


def test_sweep_totals_count_only_models_trained_in_the_job(tmp_path):
    write_result(
        tmp_path / "a",
        100.0,
        {"target": True, "balanced": True},
        {"target": 30.0, "balanced": 50.0},
    )
    # This job loaded the balanced model: its train_seconds belong to job "a".
    write_result(
        tmp_path / "b",
        40.0,
        {"target": True, "balanced": False},
        {"target": 20.0, "balanced": 50.0},
    )
    totals = bench.sweep_totals(tmp_path)
    assert totals == {
        "jobs": 2,
        "trainings": 3,
        "wall_seconds": 140.0,
        "train_seconds": 100.0,
        "other_seconds": 40.0,
    }
    with pytest.raises(FileNotFoundError):
        bench.sweep_totals(tmp_path / "empty")


def test_quick_job_reports_peak_rss_of_a_real_run():
    shrink = [x for x in TINY if x != "experiment=smoke"]
    result = bench.quick_job(None, torch.device("cpu"), 1, extra=tuple(shrink))
    assert positive(result["peak_rss_mib"]) and "experiment=smoke" in result["command"]


def test_a_batchnorm_model_takes_the_same_steps_on_both_sides():
    model = bench.bench_model("resnet18", 0.0625)
    s = TrainSettings(batch_size=8, max_epochs=1)
    result = bench.bench_training(
        model, s, warmup=1, steps=2, repeats=1, device=torch.device("cpu")
    )
    assert result["weights_max_abs_diff"] < 1e-5  # BatchNorm statistics included
