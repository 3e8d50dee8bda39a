"""Attack-evaluation stage: a Lightning module that makes adversarial images batch by batch; predictions."""

from __future__ import annotations

from collections import defaultdict

import lightning as L
import numpy as np
import torch
from torch import nn

from imbadv.attacks import ATTACKS, UNTARGETED
from imbadv.attacks.core import input_gradient
from imbadv.attacks.gradient_sign import fgsm_from_gradient
from imbadv.config.settings import AttackSpec
from imbadv.data.tensors import TensorBatches, one_device, placed, to_unit
from imbadv.grouped.stacked import Stacked


class AttackEvaluation(L.LightningModule):
    """Makes the adversarial images of every spec from one gradient source, batch by batch.

    The images are kept (on the CPU) for whichever models they are then tested on: the source
    itself (white box) and every model that names it (transfer). One input gradient per batch
    serves every FGSM eps; each spec draws its random starts from its own seeded generator, so a
    set is the same whichever other specs are made with it. Needs `Trainer(inference_mode=False)`:
    test steps otherwise run under inference mode, where no input gradient exists.

    `copies` > 1: `source` is a `Stacked` of that many members, each batch goes in once per member
    (member k's rows are the k-th copy) and `crafted` returns one set per member.
    """

    def __init__(
        self,
        name: str,
        source: nn.Module,
        specs: list[AttackSpec],
        seeds: dict[str, int],
        copies: int = 1,
    ):
        super().__init__()
        self.source, self.specs, self.copies = source, specs, copies
        self.sources = {name: source}  # read by imbadv.telemetry.progress.AttackProgress
        self.entries = {
            spec.name: ATTACKS.get("attack.methods", spec.method.name) for spec in specs
        }
        self.functions = {name: entry.load() for name, entry in self.entries.items()}
        self.generators = {n: torch.Generator().manual_seed(seeds[n]) for n in self.entries}
        self.images: dict[str, list[torch.Tensor]] = defaultdict(list)
        # per member: images whose input gradient is exactly zero (gradient masking)
        self.zero_grads = [0] * copies

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = to_unit(batch[0]), batch[1]
        if self.copies > 1:
            x, y = x.repeat(self.copies, 1, 1, 1), y.repeat(self.copies)
        grad = input_gradient(self.source, x, y)
        zero = (grad.flatten(1).abs().amax(1) == 0).reshape(self.copies, -1).sum(1).tolist()
        self.zero_grads = [a + b for a, b in zip(self.zero_grads, zero, strict=True)]
        for spec in self.specs:
            adv = self.attack(spec, x, y, grad).cpu()
            self.images[spec.name].append(adv.reshape(self.copies, -1, *adv.shape[1:]))

    def attack(self, spec: AttackSpec, x: torch.Tensor, y: torch.Tensor, grad) -> torch.Tensor:
        """The adversarial images of `spec`; FGSM reuses the batch's gradient for every eps."""
        reusable = spec.direction in UNTARGETED  # the batch's gradient is the true labels'
        if reusable and self.entries[spec.name].facts.reuses_gradient:
            return fgsm_from_gradient(x, grad, spec.eps, spec.direction)
        return self.functions[spec.name](
            self.source,
            x,
            y,
            spec.eps,
            spec.method.params,
            direction=spec.direction,
            generator=self.generators[spec.name],
            target=spec.target_class,
        )

    def crafted(self, member: int = 0) -> dict[str, dict[str, np.ndarray]]:
        """Per spec name: `adv` (N, C, H, W) float32 in [0, 1] and the source's `zero_grads` count
        (of stacked member `member`)."""
        zero = np.array(self.zero_grads[member])
        return {
            name: {"adv": torch.cat([p[member] for p in parts]).numpy(), "zero_grads": zero}
            for name, parts in self.images.items()
        }


def craft(
    name: str,
    source: nn.Module,
    specs: list[AttackSpec],
    seeds: dict[str, int],
    images: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    batch_size: int,
    callbacks: list | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """The adversarial images of `specs` made from `source` on `images` (uint8, labels) through a
    one-device Trainer. `callbacks` are Lightning callbacks, e.g. imbadv.telemetry.progress.AttackProgress.
    """
    module = AttackEvaluation(name, source, specs, seeds)
    attack_loop(module, images, device, batch_size, callbacks)
    return module.crafted()


def craft_stacked(
    name: str,
    sources: list[nn.Module],
    specs: list[AttackSpec],
    images: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    batch_size: int,
    callbacks: list | None = None,
) -> list[dict[str, dict[str, np.ndarray]]]:
    """Per source, what `craft` makes from it, from one `Stacked` call per batch (K times the rows).

    For attacks that draw nothing random (`AttackFacts.draws` False): no generator is passed on.
    The sources share one architecture and are on `device`; images as in `craft`.
    """
    if any(ATTACKS.get("attack.methods", x.method.name).facts.draws for x in specs):
        raise ValueError("only attacks that draw no random numbers are crafted stacked")
    stacked = Stacked.of(sources)
    unused = {spec.name: 0 for spec in specs}  # seeds of generators these attacks never read
    module = AttackEvaluation(name, stacked, specs, unused, len(sources))
    attack_loop(module, images, device, batch_size, callbacks)
    return [module.crafted(k) for k in range(len(sources))]


def attack_loop(
    module: AttackEvaluation,
    images: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    batch_size: int,
    callbacks: list | None,
) -> None:
    """`module`'s test loop over `images` in batches of `batch_size`, on exactly `device`; the
    source ends on `device` again (Lightning's teardown moves it to the CPU after a GPU test)."""
    trainer = L.Trainer(
        **one_device(device),
        inference_mode=False,
        logger=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        enable_checkpointing=False,
        callbacks=callbacks,
    )
    trainer.test(module, TensorBatches(*images, batch_size, shuffle=False), verbose=False)
    placed(module.source, device)
