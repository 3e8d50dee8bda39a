"""The recipe: optimizers, schedules and augmentation as components, the keys stored before them kept,
the selection pair from one run, and their bad input."""

from __future__ import annotations

import math
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

from imbadv.augment import AUGMENTS, CropFlipParams
from imbadv.augment.batch import crop_at, crop_flip
from imbadv.config.settings import CONF_DIR, from_config
from imbadv.core.errors import ConfigError
from imbadv.data.tensors import TensorBatches
from imbadv.models.vgg import VGG
from imbadv.optimizers import OPTIMIZERS
from imbadv.run import check_jobs, expand_selection
from imbadv.schedules import SCHEDULES
from imbadv.schedules.factors import cosine, onecycle, step
from imbadv.training import Recipe, TrainSettings
from imbadv.training.loop import fit, optimization

# Keys computed by the code before the recipe was a set of components (git f856bb2), on the same
# configs: every model stored before this change must be found again under its key.
OLD_KEYS = [
    (["experiment=smoke", "class=1", "imbalance=under"], "09f06baefafd94d8"),
    (["experiment=smoke", "class=0", "imbalance=balanced", "seed=3"], "533b9c73f136df7c"),
    (
        ["experiment=smoke", "imbalance=exp", "adversarial=fast_fgsm", "trainer.selection=last"],
        "af70aa441204046f",
    ),
    (
        [
            "experiment=smoke",
            "imbalance=over",
            "class=2",
            "objective=balanced_softmax",
            "trainer.selection=robust_val_acc",
        ],
        "cdc547533823f032",
    ),
    (
        [
            "experiment=quick",
            "dataset=synthetic",
            "dataset.train_per_class=1000",
            "class=3",
            "imbalance=under",
        ],
        "b069a9042afe3f59",
    ),
]


def settings(overrides, tmp_path):
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        cfg = compose("config", overrides=[*overrides, f"paths.store_dir={tmp_path}"])
    return from_config(cfg)


@pytest.mark.parametrize(("overrides", "key"), OLD_KEYS)
def test_every_model_trained_before_keeps_its_store_key(overrides, key, tmp_path):
    from imbadv.data.load import load_dataset
    from imbadv.pipeline.plan import model_spec
    from imbadv.store import content_key

    s = settings(overrides, tmp_path)
    data = load_dataset(s.dataset, tmp_path)
    assert content_key(model_spec(data, s, s.imbalance, s.target)) == key
    # a new component enters the key only when it differs from the default
    changed = settings([*overrides, "augment=crop_flip"], tmp_path)
    assert content_key(model_spec(data, changed, s.imbalance, s.target)) != key


def test_step_schedule_drops_at_the_milestones_first_step():
    p = SCHEDULES.parse("schedule", "step", {"milestones": [2, 3], "factor": 0.1})
    f = step(p.params, steps_per_epoch=5, max_epochs=4)
    assert [f(t) for t in (0, 9, 10, 14, 15, 19)] == pytest.approx([1, 1, 0.1, 0.1, 0.01, 0.01])


def test_cosine_and_warm_up():
    p = SCHEDULES.parse("schedule", "cosine", {"warmup_epochs": 1, "min_factor": 0.1}).params
    f = cosine(p, steps_per_epoch=10, max_epochs=3)
    assert f(0) == pytest.approx(0.1)  # warm-up: (0 + 1) / 10 of the cosine's 1
    assert f(9) == pytest.approx(1.0)
    assert f(19) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 9 / 20)) / 2)
    assert f(29) == pytest.approx(0.1 + 0.9 * (1 + math.cos(math.pi * 19 / 20)) / 2)


def test_onecycle_matches_torch():
    p = SCHEDULES.parse("schedule", "onecycle", {}).params
    f = onecycle(p, steps_per_epoch=7, max_epochs=3)
    w = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([w], lr=0.5)
    ref = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.5, total_steps=21)
    for t in range(21):
        assert opt.param_groups[0]["lr"] == pytest.approx(0.5 * f(t), rel=1e-6), t
        opt.step()
        ref.step()


def test_sgd_and_weight_decay_groups():
    model = VGG(width=0.125)
    named = list(model.named_parameters())
    sgd = OPTIMIZERS.parse("optimizer", "sgd", {"decay_norm_bias": False})
    recipe = Recipe(sgd, SCHEDULES.parse("schedule", "constant", {}))
    opt = optimization(named, recipe, steps_per_epoch=3, max_epochs=2)["optimizer"]
    assert isinstance(opt, torch.optim.SGD)
    decayed, flat = opt.param_groups
    assert decayed["weight_decay"] == 5e-4 and flat["weight_decay"] == 0.0
    assert decayed["momentum"] == 0.9 and decayed["lr"] == 0.1
    assert all(p.dim() == 1 for p in flat["params"]) and all(p.dim() > 1 for p in decayed["params"])
    assert len(flat["params"]) + len(decayed["params"]) == len(named)


def test_crop_flip_is_pad_crop_flip_per_image():
    gen = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (6, 3, 8, 8), generator=gen, dtype=torch.uint8)
    top, left = torch.tensor([0, 8, 4, 3, 1, 2]), torch.tensor([8, 0, 4, 2, 7, 0])
    mirror = torch.tensor([True, False, True, False, False, True])
    out = crop_at(x, top, left, mirror, 4)
    for i in range(6):
        ref = F.pad(x[i], (4,) * 4)[:, top[i] : top[i] + 8, left[i] : left[i] + 8]
        assert torch.equal(out[i], ref.flip(-1) if mirror[i] else ref)


def test_crop_flip_draws_come_from_the_seed_only():
    x = torch.randint(0, 256, (64, 3, 8, 8), dtype=torch.uint8).contiguous(
        memory_format=torch.channels_last
    )
    y = torch.arange(64) % 4
    augment = crop_flip(CropFlipParams(padding=2))

    def batches(seed):
        return [b[0] for b in TensorBatches(x, y, 16, True, seed, "uniform", augment, seed + 7)]

    a, b, c = batches(0), batches(0), batches(1)
    assert all(torch.equal(p, q) for p, q in zip(a, b, strict=True))
    assert not all(torch.equal(p, q) for p, q in zip(a, c, strict=True))
    assert a[0].is_contiguous(memory_format=torch.channels_last) and a[0].dtype == torch.uint8
    plain = [b[0] for b in TensorBatches(x, y, 16, True, 0)]
    assert not all(torch.equal(p, q) for p, q in zip(a, plain, strict=True))  # augmented
    # the order is the data order's generator, untouched by augmentation
    assert all(
        torch.equal(p[1], q[1])
        for p, q in zip(
            TensorBatches(x, y, 16, True, 0, "uniform", augment, 7),
            TensorBatches(x, y, 16, True, 0),
            strict=True,
        )
    )


def toy(n=96, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (torch.rand(n, 3, 32, 32, generator=gen) * 100 + y.view(-1, 1, 1, 1) * 120).to(torch.uint8)
    return x, y


def test_one_fixed_length_run_yields_both_selections():
    settings = TrainSettings(
        batch_size=32, max_epochs=3, early_stopping=False, selection="last", robust_val_steps=2
    )
    recipe = Recipe(
        OPTIMIZERS.parse("optimizer", "sgd", {"lr": 0.01}),
        SCHEDULES.parse("schedule", "step", {"milestones": [2]}),
        AUGMENTS.parse("augment", "crop_flip", {}),
    )
    model = VGG(num_classes=2, width=0.125)
    model.reset_parameters(torch.Generator().manual_seed(0))
    record = fit(
        model,
        toy(),
        toy(32, 1),
        settings,
        torch.device("cpu"),
        0,
        recipe=recipe,
        sibling="robust_val_acc",
    )
    curve = [h["val/robust_acc"] for h in record["history"]]
    assert record["epochs"] == 3 and record["best_epoch"] == 2
    other = record["sibling"]
    assert other["selection_rule"] == "robust_val_acc"
    assert other["best_epoch"] == curve.index(max(curve))
    alone = VGG(num_classes=2, width=0.125)
    alone.reset_parameters(torch.Generator().manual_seed(0))
    robust = TrainSettings(
        batch_size=32,
        max_epochs=3,
        early_stopping=False,
        selection="robust_val_acc",
        robust_val_steps=2,
    )
    fit(alone, toy(), toy(32, 1), robust, torch.device("cpu"), 0, recipe=recipe)
    assert all(torch.equal(other["state"][k], v) for k, v in alone.state_dict().items())


def test_selection_both_is_two_jobs_of_one_training():
    args = ["-m", "experiment=smoke", "trainer.selection=both", "trainer.early_stopping=false"]
    assert "trainer.selection=robust_val_acc,last" in expand_selection(args)
    with pytest.raises(ConfigError, match="only with -m"):
        expand_selection(args[1:])
    with pytest.raises(ConfigError, match="early_stopping=false"):
        check_jobs(expand_selection(args[:3]))


BAD = [
    (["optimizer=lion"], "optimizer", "lion", "one of adam, adamw, rmsprop_keras, sgd"),
    (["schedule=linear"], "schedule", "linear", "one of constant, cosine"),
    (["augment=mixup"], "augment", "mixup", "one of crop_flip, none"),
    (["optimizer=sgd", "optimizer.lr=0"], "optimizer.lr", "0.0", "a number > 0"),
    (["optimizer=sgd", "optimizer.lr=-0.1"], "optimizer.lr", "-0.1", "a number > 0"),
    (["optimizer=sgd", "optimizer.momentum=1.0"], "optimizer.momentum", "1.0", "< 1"),
    (["schedule=step", "schedule.milestones=[5,3]"], "schedule.milestones", "[5, 3]", "increasing"),
    (["schedule=step", "schedule.milestones=[3,8]"], "schedule.milestones", "[3, 8]", "1..7"),
    (
        ["schedule=cosine", "schedule.warmup_epochs=9"],
        "schedule.warmup_epochs",
        "9.0",
        "<= trainer",
    ),
    (["augment=crop_flip", "augment.padding=33"], "augment.padding", "33", "image side (32)"),
]


@pytest.mark.parametrize(("overrides", "key", "value", "allowed"), BAD)
def test_bad_recipe_is_refused_before_any_work(overrides, key, value, allowed):
    with pytest.raises(ConfigError) as err:
        check_jobs(["experiment=smoke", *overrides])
    assert err.value.key == key and str(err.value.value) == value
    assert allowed in str(err.value)


def test_a_bad_recipe_is_one_line_and_exit_2(tmp_path):
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "imbadv.run",
            "experiment=smoke",
            "optimizer=sgd",
            "optimizer.momentum=1.5",
            f"hydra.run.dir={tmp_path}/out",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    lines = run.stderr.strip().splitlines()
    assert len(lines) == 1 and "optimizer.momentum" in lines[0] and "1.5" in lines[0]
    assert not (tmp_path / "out").exists()
