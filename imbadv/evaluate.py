"""Attack-evaluation stage: a Lightning module that attacks the target class batch by batch."""

from __future__ import annotations

from collections import defaultdict

import lightning as L
import numpy as np
import torch
from torch import nn

from imbadv.attacks import ATTACKS, UNTARGETED
from imbadv.attacks.core import eval_mode, input_gradient
from imbadv.attacks.gradient_sign import fgsm_from_gradient
from imbadv.settings import AttackSpec
from imbadv.training.loop import TensorBatches, one_device, to_unit


class AttackEvaluation(L.LightningModule):
    """Attacks `target` with adversarial images made from each gradient source in `sources`.

    `sources` maps a source name ("same", "balanced") to the model whose input gradient makes
    the images; the images are always classified by `target`. One input gradient per source
    and batch serves every FGSM eps. Needs `Trainer(inference_mode=False)`: test steps
    otherwise run under inference mode, where no input gradient exists.
    """

    def __init__(
        self,
        target: nn.Module,
        sources: dict[str, nn.Module],
        specs: list[AttackSpec],
        seed: int = 0,
    ):
        super().__init__()
        self.target, self.specs = target, specs
        self.entries = {
            spec.name: ATTACKS.get("attack.methods", spec.method.name) for spec in specs
        }
        self.functions = {name: entry.load() for name, entry in self.entries.items()}
        # One generator for every random start, seeded per job: repeatable, no global RNG.
        self.generator = torch.Generator().manual_seed(seed)
        self.sources = nn.ModuleDict(sources)
        self.preds: dict[str, list[torch.Tensor]] = defaultdict(list)
        self.labels: list[torch.Tensor] = []
        self.max_delta: dict[str, float] = defaultdict(float)
        self.zero_grads: dict[str, int] = defaultdict(int)

    def test_step(self, batch: tuple[torch.Tensor, torch.Tensor], _: int) -> None:
        x, y = to_unit(batch[0]), batch[1]
        self.labels.append(y.cpu())
        self._record("clean", x, x)
        for source_name, source in self.sources.items():
            grad = input_gradient(source, x, y)
            self.zero_grads[source_name] += int((grad.flatten(1).abs().amax(1) == 0).sum())
            for spec in self.specs:
                self._record(f"{source_name}|{spec.name}", x, self.attack(spec, source, x, y, grad))

    def attack(
        self, spec: AttackSpec, source: nn.Module, x: torch.Tensor, y: torch.Tensor, grad
    ) -> torch.Tensor:
        """The adversarial images of `spec`; FGSM reuses the batch's gradient for every eps."""
        reusable = spec.direction in UNTARGETED  # the batch's gradient is the true labels'
        if reusable and self.entries[spec.name].extra.get("reuses_gradient"):
            return fgsm_from_gradient(x, grad, spec.eps, spec.direction)
        function = self.functions[spec.name]
        return function(
            source,
            x,
            y,
            spec.eps,
            spec.method.params,
            direction=spec.direction,
            generator=self.generator,
            target=spec.target_class,
        )

    def _record(self, key: str, x: torch.Tensor, adv: torch.Tensor) -> None:
        with torch.no_grad():
            self.preds[key].append(self.target(adv).argmax(1).cpu())
        delta = float((adv - x).abs().max()) if adv.numel() else 0.0
        self.max_delta[key] = max(self.max_delta[key], delta)

    def collected(self) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Labels and, per "clean" or "source|attack" key, the target model's predictions."""
        labels = torch.cat(self.labels).numpy()
        return labels, {k: torch.cat(v).numpy() for k, v in self.preds.items()}


def evaluate_attacks(
    target: nn.Module,
    sources: dict[str, nn.Module],
    specs: list[AttackSpec],
    images: tuple[torch.Tensor, torch.Tensor],
    device: torch.device,
    batch_size: int,
    seed: int = 0,
    callbacks: list | None = None,
) -> AttackEvaluation:
    """Run the attack evaluation on `images` (uint8, labels) through a one-device Trainer.

    `callbacks` are Lightning callbacks, e.g. imbadv.progress.AttackProgress.
    """
    module = AttackEvaluation(target, sources, specs, seed)
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
    return module


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Predicted labels for uint8 images `x` (on the model's device), in eval mode."""
    with eval_mode(model):
        out = [
            model(to_unit(x[i : i + batch_size])).argmax(1).cpu()
            for i in range(0, len(x), batch_size)
        ]
    return torch.cat(out).numpy()
