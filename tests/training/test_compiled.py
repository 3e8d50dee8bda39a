"""trainer.compile: the training forward through torch.compile equals eager; a failure falls back."""

import logging
from pathlib import Path

import pytest
import torch
from hydra import compose, initialize_config_dir
from tolerance import sgd_bound

from imbadv.config.settings import from_config
from imbadv.core.errors import ConfigError
from imbadv.core.registry import params_key
from imbadv.models.vgg import VGG
from imbadv.optimizers import OPTIMIZERS
from imbadv.training import Recipe, TrainSettings, paper_spec
from imbadv.training import compiled as compiled_module
from imbadv.training.loop import fit

CPU = torch.device("cpu")
CONF = Path(__file__).resolve().parents[2] / "conf"
# Inductor fuses and reorders the forward's and backward's sums: each step's gradient differs from
# eager's by float32 rounding, which `sgd_bound` bounds over the run's 6 steps (tests/tolerance.py).
LR = 0.01
SGD = Recipe(optimizer=paper_spec(OPTIMIZERS, "sgd", lr=LR, momentum=0.0, weight_decay=0.0))
ATOL = sgd_bound(LR, steps=6)


def data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 2
    x = (torch.rand(n, 3, 32, 32, generator=gen) * 100 + y.view(-1, 1, 1, 1) * 120).to(torch.uint8)
    return x, y


def train(setting: str) -> tuple[torch.nn.Module, dict]:
    """A width-0.125 VGG, 2 epochs of 3 steps (one shape: batch 8 of 24), from seed 0."""
    model = VGG(num_classes=2, width=0.125)
    model.reset_parameters(torch.Generator().manual_seed(0))
    s = TrainSettings(batch_size=8, max_epochs=2, early_stopping=False, compile=setting)
    record = fit(model, data(24, 1), data(8, 2), s, CPU, seed=0, recipe=SGD)
    return model, record


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(
        float((p - q).abs().max())
        for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True)
    )


@pytest.mark.slow
def test_compile_on_trains_like_eager_and_records_it():
    eager, eager_record = train("off")
    assert eager_record["compiled"] is False and "compile_fallback" not in eager_record
    auto, auto_record = train("auto")  # auto = off everywhere: exactly eager
    assert auto_record["compiled"] is False and max_diff(eager, auto) == 0.0
    compiled, record = train("on")  # inductor on CPU: gcc compiles the kernels
    assert record["compiled"] is True, record.get("compile_fallback")
    assert "compile_fallback" not in record
    assert max_diff(eager, compiled) < ATOL
    assert max_diff(eager, VGG(num_classes=2, width=0.125)) > 1e-3  # the bound can tell


def test_a_failed_compile_falls_back_to_eager_exactly_and_records_why(monkeypatch, caplog):
    calls = []

    def broken_compile(model, **_):
        def first_call_raises(x):
            calls.append(len(x))
            raise RuntimeError("no C compiler found\nmore detail")

        return first_call_raises

    monkeypatch.setattr(compiled_module.torch, "compile", broken_compile)
    eager, _ = train("off")
    assert calls == []  # off never compiles
    with caplog.at_level(logging.WARNING, logger="imbadv.training.compiled"):
        fallen, record = train("on")
    assert calls == [8]  # tried once, then eager for the rest of the run
    assert max_diff(eager, fallen) == 0.0  # the same eager steps, bit for bit
    assert record["compiled"] is False
    assert record["compile_fallback"] == "RuntimeError: no C compiler found"
    warned = [r for r in caplog.records if "compiling failed" in r.getMessage()]
    assert len(warned) == 1 and "no C compiler found" in warned[0].getMessage()


def test_compile_is_in_no_store_key_and_refuses_other_words():
    # how a model is trained, not what it is: the same math up to float rounding
    assert params_key(TrainSettings(compile="on")) == params_key(TrainSettings(compile="off")) == {}
    with initialize_config_dir(str(CONF), version_base="1.3"):
        assert from_config(compose("config", ["experiment=smoke"])).train.compile == "auto"
        with pytest.raises(ConfigError) as err:
            from_config(compose("config", ["experiment=smoke", "trainer.compile=maybe"]))
    assert str(err.value).splitlines() == [str(err.value)]
    assert "trainer.compile=maybe" in str(err.value) and "auto, on, off" in str(err.value)
