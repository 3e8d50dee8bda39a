"""The attack-evaluation stage: craft() gives, batch by batch, the images the attack functions give."""

from __future__ import annotations

import torch
from torch import nn

from imbadv.attacks import ATTACKS
from imbadv.attacks.gradient_sign import fgsm
from imbadv.config.settings import AttackSpec
from imbadv.data.tensors import to_unit
from imbadv.pipeline.craft import AttackEvaluation, craft

CPU = torch.device("cpu")


def tiny_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2)).eval()


def images(n: int = 10) -> tuple[torch.Tensor, torch.Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=gen, dtype=torch.uint8), torch.arange(
        n
    ) % 2


def spec(method: str, **params) -> AttackSpec:
    return AttackSpec(ATTACKS.parse("attack.methods", method, params), 0.03)


def test_fgsm_images_are_the_attack_functions_own():
    model, (x, y) = tiny_model(), images()
    s = spec("fgsm")
    made = craft("same", model, [s], {s.name: 0}, (x, y), CPU, batch_size=4)
    direct = fgsm(model, to_unit(x), y, 0.03)
    assert made[s.name]["adv"].shape == (10, 3, 8, 8)
    assert torch.allclose(torch.from_numpy(made[s.name]["adv"]), direct, atol=1e-6)


def test_a_seeded_iterative_attack_gives_the_direct_calls_images_batch_by_batch():
    model, (x, y) = tiny_model(), images()
    s = spec("pgd", steps=3)
    made = craft("same", model, [s], {s.name: 7}, (x, y), CPU, batch_size=4)
    function = ATTACKS.get("attack.methods", "pgd").load()
    gen = torch.Generator().manual_seed(7)  # one generator across the batches, as in craft
    direct = torch.cat(
        [
            function(
                model,
                to_unit(x[i : i + 4]),
                y[i : i + 4],
                s.eps,
                s.method.params,
                direction=s.direction,
                generator=gen,
                target=None,
            )
            for i in range(0, 10, 4)
        ]
    )
    assert torch.equal(torch.from_numpy(made[s.name]["adv"]), direct)


def test_a_spec_is_the_same_whichever_others_are_made_with_it():
    model, xy = tiny_model(), images()
    pgd, bim = spec("pgd", steps=3), spec("bim")
    alone = craft("same", model, [pgd], {pgd.name: 3}, xy, CPU, 4)
    both = craft("same", model, [bim, pgd], {pgd.name: 3, bim.name: 5}, xy, CPU, 4)
    assert (alone[pgd.name]["adv"] == both[pgd.name]["adv"]).all()


def test_zero_input_gradients_are_counted():
    flat = nn.Sequential(nn.Flatten(), nn.Linear(3 * 8 * 8, 2))
    nn.init.zeros_(flat[1].weight)  # the output does not depend on the input
    s = spec("fgsm")
    made = craft("same", flat.eval(), [s], {s.name: 0}, images(), CPU, 4)
    assert int(made[s.name]["zero_grads"]) == 10
    assert (
        int(craft("same", tiny_model(), [s], {s.name: 0}, images(), CPU, 4)[s.name]["zero_grads"])
        == 0
    )


def test_the_module_names_its_source_for_progress():
    s = spec("fgsm")
    module = AttackEvaluation("balanced", tiny_model(), [s], {s.name: 0})
    assert list(module.sources) == ["balanced"] and module.crafted() == {}
