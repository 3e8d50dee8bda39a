"""trainer.compile=on in grouped training: one static-shape compiled call for all members trains
each member as it trains alone (eager), stopped members and the last partial batch included."""

import logging
from dataclasses import replace

import pytest
import torch
from test_grouped import SGD, TinyBN, alone_and_grouped, atol, max_diff, members
from test_grouped_at import FIT_ATOL
from torch import nn
from torch._dynamo.utils import counters

from imbadv.adversarial import AdversarialSettings
from imbadv.grouped.train import GroupedClassifier, fit_group, mixes_rows
from imbadv.training import TrainSettings
from imbadv.training import compiled as compiled_module
from imbadv.training.loop import fit

CPU = torch.device("cpu")


def tiny(seed: int) -> nn.Module:
    torch.manual_seed(seed)  # test-only model: its init is not the feature under test
    return TinyBN()


@pytest.mark.slow
def test_compiled_group_trains_each_member_as_alone_with_a_partial_batch_and_a_stop():
    # 96 images at batch 40: steps of 40, 40 and 16 (the partial batch runs its own graph);
    # member 0 validates on flipped labels and stops first, the others go on in the same graph
    torch._dynamo.reset()
    counters.clear()
    eager = TrainSettings(batch_size=40, max_epochs=3, patience=1, channels_last=False)
    compiled = TrainSettings(**{**eager.__dict__, "compile": "on"})
    alone, _, _ = alone_and_grouped(tiny, eager, members(flip_first=True))
    group = members(flip_first=True)
    models = [tiny(m.seed) for m in group]
    records = fit_group(models, group, compiled, CPU, recipe=SGD)
    assert records[0]["epochs"] < records[1]["epochs"] == 3  # a member stopped mid-run
    assert counters["stats"]["unique_graphs"] == 2  # batch 40 and 16; the stop made no new one
    for (model, rec), grouped, grec in zip(alone, models, records, strict=True):
        assert grec["compiled"] is True, grec.get("compile_fallback")
        assert grec["epochs"] == rec["epochs"] and grec["best_epoch"] == rec["best_epoch"]
        sa, sb = model.state_dict(), grouped.state_dict()
        for name in sa:  # weights and BatchNorm statistics, the stopped member's included
            diff = float((sa[name].float() - sb[name].float()).abs().max())
            assert diff < atol(9), name
    # the next group in this process (a worker's next job) reuses both graphs: nothing compiles
    again = members()
    fit_group([tiny(m.seed) for m in again], again, compiled, CPU, recipe=SGD)
    assert counters["stats"]["unique_graphs"] == 2


def test_a_failed_grouped_compile_trains_eager_and_says_why(monkeypatch, caplog):
    def broken_compile(fn, **_):
        def raises(*_):
            raise RuntimeError("no C compiler found\nmore")

        return raises

    monkeypatch.setattr(compiled_module.torch, "compile", broken_compile)
    s = TrainSettings(batch_size=32, max_epochs=2, early_stopping=False, channels_last=False)
    group = members()[:2]
    eager = [tiny(m.seed) for m in group]
    fit_group(eager, group, s, CPU, recipe=SGD)
    fallen = [tiny(m.seed) for m in group]
    with caplog.at_level(logging.WARNING, logger="imbadv.training.compiled"):
        records = fit_group(
            fallen, group, TrainSettings(**{**s.__dict__, "compile": "on"}), CPU, recipe=SGD
        )
    for a, b, rec in zip(eager, fallen, records, strict=True):
        assert rec["compiled"] is False
        assert rec["compile_fallback"] == "RuntimeError: no C compiler found"
        # eager over all members (the static step) equals the sliced eager step
        for name, t in a.state_dict().items():
            assert float((t.float() - b.state_dict()[name].float()).abs().max()) < atol(6)
    assert sum("no C compiler found" in r.getMessage() for r in caplog.records) == 1


@pytest.mark.slow
def test_compiled_adversarial_group_trains_each_member_as_alone():
    # PGD-AT (2 inner steps, eps 1/255, SGD: test_grouped_at's setting and bound) on BatchNorm
    # members: the inner attack's forward compiled in eval mode (running statistics read, never
    # written), the outer one in train mode; member 0 stops first; batch 40 of 96 (40/40/16)
    torch._dynamo.reset()
    counters.clear()
    s = TrainSettings(batch_size=40, max_epochs=3, patience=1, robust_val_steps=2)
    s = replace(s, channels_last=False)
    group, adv = members(flip_first=True), AdversarialSettings.of("pgd_at", eps=1 / 255, steps=2)
    alone = []
    for m in group:
        model = tiny(m.seed)
        rec = fit(model, m.train, m.val, s, CPU, m.seed, recipe=SGD, adversarial=adv)
        alone.append((model, rec))
    models = [tiny(m.seed) for m in group]
    on = replace(s, compile="on")
    records = fit_group(models, group, on, CPU, recipe=SGD, adversarial=adv)
    assert records[0]["epochs"] < records[1]["epochs"] == 3  # a member stopped mid-run
    # eval-mode inner and train-mode outer forward, each at batch 40 and 16
    assert counters["stats"]["unique_graphs"] == 4
    for (model, rec), grouped, grec in zip(alone, models, records, strict=True):
        assert grec["compiled"] is True, grec.get("compile_fallback")
        assert grec["epochs"] == rec["epochs"] and grec["best_epoch"] == rec["best_epoch"]
        assert max_diff(model, grouped) < FIT_ATOL  # weights and BatchNorm statistics


class TinyRows(nn.Module):
    """TinyBN without the BatchNorm: no layer mixes a batch's rows."""

    def __init__(self) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3, stride=4), nn.ReLU(), nn.Flatten())
        self.fc = nn.Linear(4 * 8 * 8, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.net(x))


def rows(seed: int) -> nn.Module:
    torch.manual_seed(seed)  # test-only model
    return TinyRows()


def one_partial_step(make, pad: bool) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """The static step's loss and stacked gradients for a last batch of 16 at batch size 40."""
    group = members()
    settings = TrainSettings(batch_size=40, channels_last=False)
    module = GroupedClassifier([make(m.seed) for m in group], settings, [m.loss for m in group])
    module.compiled = compiled_module.CompiledForward(module.all_logits, False, CPU)  # eager
    module.pad = pad
    module.on_train_epoch_start()
    batch = tuple((m.train[0][80:], m.train[1][80:]) for m in group)
    loss = module.static_step(batch)
    loss.backward()
    return loss.detach(), [p.grad.clone() for p in module.stacked]


def test_a_padded_and_cut_last_batch_gives_the_unpadded_loss_and_gradients():
    loss, grads = one_partial_step(rows, pad=True)
    loss0, grads0 = one_partial_step(rows, pad=False)
    assert float(loss) == pytest.approx(float(loss0), rel=1e-6)
    for g, g0 in zip(grads, grads0, strict=True):
        assert float((g - g0).abs().max()) <= 1e-6 * float(g0.abs().max())
    # with BatchNorm the zero rows would enter the batch statistics: not the same step at all
    bn_loss, _ = one_partial_step(tiny, pad=True)
    assert abs(float(bn_loss) - float(one_partial_step(tiny, pad=False)[0])) > 1e-3
    assert mixes_rows(TinyBN()) and not mixes_rows(TinyRows())


@pytest.mark.slow
def test_compiled_group_without_batchnorm_replays_one_graph_for_every_batch():
    # 96 images at batch 40: steps of 40, 40 and 16, the last padded to 40: one graph
    torch._dynamo.reset()
    counters.clear()
    eager = TrainSettings(batch_size=40, max_epochs=3, patience=1, channels_last=False)
    alone, _, _ = alone_and_grouped(rows, eager, members(flip_first=True))
    group = members(flip_first=True)
    models = [rows(m.seed) for m in group]
    records = fit_group(models, group, replace(eager, compile="on"), CPU, recipe=SGD)
    assert counters["stats"]["unique_graphs"] == 1
    for (model, rec), grouped, grec in zip(alone, models, records, strict=True):
        assert grec["compiled"] is True and grec["last_batch"] == "padded"
        assert grec["epochs"] == rec["epochs"] and grec["best_epoch"] == rec["best_epoch"]
        assert max_diff(model, grouped) < atol(9)
