"""Tensor helpers every stage shares: uint8 batches on the device, [0, 1] inputs, eval mode, predictions."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import torch
from torch import nn

from imbadv.data.base import Dataset


class TensorBatches:
    """Batches sliced from uint8 tensors already on the training device: no DataLoader, no copies.

    Each pass is a fresh permutation drawn from (seed, pass number), so a run is repeatable and
    every epoch is shuffled differently. `augment` (training only) transforms each shuffled batch
    with its own generator, seeded by `augment_seed`, on the data's device. `sampler="class_balanced"` instead draws len(y) indices
    with replacement, image i with probability ~ 1/n_{y_i}: every class equally often on average.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y: torch.Tensor,
        batch_size: int,
        shuffle: bool,
        seed: int = 0,
        sampler: str = "uniform",
        augment: Callable[[torch.Tensor, torch.Generator], torch.Tensor] | None = None,
        augment_seed: int = 0,
    ) -> None:
        self.x, self.y, self.batch_size, self.shuffle, self.seed = x, y, batch_size, shuffle, seed
        self.sampling, self.passes = sampler, 0  # not `.sampler`: Lightning reads that name
        self.augment, self.gen = augment, None
        if augment is not None:  # one stream for the whole run, on the data's device
            self.gen = torch.Generator(device=x.device).manual_seed(augment_seed)

    def draw(self, gen: torch.Generator) -> torch.Tensor:
        """This pass's order: a permutation, or a class-balanced draw with replacement."""
        if self.sampling == "uniform":
            return torch.randperm(len(self.y), generator=gen)
        labels = self.y.cpu()
        per_class = torch.bincount(labels).double()
        weights = 1.0 / per_class[labels]
        return torch.multinomial(weights, len(labels), replacement=True, generator=gen)

    def __len__(self) -> int:
        return math.ceil(len(self.y) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        order = None
        if self.shuffle:
            gen = torch.Generator().manual_seed(self.seed * 100_003 + self.passes)
            order = self.draw(gen).to(self.y.device)
        self.passes += 1
        for start in range(0, len(self.y), self.batch_size):
            if order is None:
                yield (
                    self.x[start : start + self.batch_size],
                    self.y[start : start + self.batch_size],
                )
            else:
                idx = order[start : start + self.batch_size]
                x = self.x[idx]
                yield (x if self.augment is None else self.augment(x, self.gen)), self.y[idx]


def to_unit(x: torch.Tensor) -> torch.Tensor:
    """uint8 pixels -> float32 in [0, 1] (the model's and the attacks' input space)."""
    return x.float().div_(255.0) if x.dtype == torch.uint8 else x


def one_device(device: torch.device) -> dict[str, Any]:
    """Trainer arguments for exactly `device` (never "auto": that would start DDP on every GPU)."""
    if device.type == "cuda":
        return {"accelerator": "gpu", "devices": [device.index or 0]}
    return {"accelerator": "cpu", "devices": 1}


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[nn.Module]:
    """Put `model` in eval mode (dropout/BatchNorm frozen) and restore each submodule's mode after."""
    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        yield model
    finally:
        for module, training in modes:
            module.training = training  # per module: a recursive .train() here costs ~4x the attack step's overhead


def on_device(
    data: Dataset, idx: np.ndarray, device: torch.device, train: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen uint8 images and labels, moved once to the device the job computes on."""
    x, y = (data.x_train, data.y_train) if train else (data.x_test, data.y_test)
    return torch.from_numpy(x[idx]).to(device), torch.from_numpy(y[idx]).to(device)


def placed(model: nn.Module, device: torch.device) -> nn.Module:
    """`model` on `device`, where the stage that received it computes.

    The rule every stage keeps: modules are created on the CPU and initialized there from a CPU
    generator, then moved; a stage never assumes a model it is handed is where it computes
    (Lightning's teardown moves a module back to the CPU after every fit and test on a GPU), so
    it puts the model there itself. A no-op where it already is.
    """
    return model.to(device)


@torch.inference_mode()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> np.ndarray:
    """Predicted labels for uint8 images `x` (the model is put on x's device), in eval mode."""
    with eval_mode(placed(model, x.device)):
        out = [
            model(to_unit(x[i : i + batch_size])).argmax(1).cpu()
            for i in range(0, len(x), batch_size)
        ]
    return torch.cat(out).numpy()


@torch.inference_mode()
def predict_unit(
    model: nn.Module, x: np.ndarray, device: torch.device, batch_size: int = 1024
) -> np.ndarray:
    """Predicted labels for float images `x` in [0, 1] (kept on the CPU, moved batch by batch)
    by `model` on `device`."""
    with eval_mode(placed(model, device)):
        out = [
            model(torch.from_numpy(x[i : i + batch_size]).to(device)).argmax(1).cpu()
            for i in range(0, len(x), batch_size)
        ]
    return torch.cat(out).numpy() if out else np.zeros(0, dtype=np.int64)
