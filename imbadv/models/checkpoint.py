"""A model trained elsewhere, loaded as data: weights of a registered arch, TorchScript or torch.export.

Nothing here unpickles arbitrary objects: state dicts load with `torch.load(weights_only=True)`
or safetensors, and a .pt2 archive's pickled parts are screened the same way before
`torch.export.load` reads them. A file that needs code execution is refused in one line unless
`model.trust=true`. Weights that are not finite (NaN or inf) are refused too, naming the tensors:
every tensor a weights file sets; a TorchScript program's (or trusted pickled module's)
parameters and buffers; a .pt2's state dict and tensor constants (constants inside TorchScript
code are not read). A file cut short is refused before torch (imbadv.models.files), a damaged
one when it is read. Every refusal is a ConfigError on `model.path` (exit 2), raised before any
attack.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import warnings
import zipfile
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from torch import nn

from imbadv.core.errors import ConfigError
from imbadv.data.base import DataCard
from imbadv.models import CHECKPOINT, MODELS, CheckpointParams
from imbadv.models.files import (
    EXPORT,
    KEY,
    SAFETENSORS,
    STATE_DICT,
    TORCHSCRIPT,
    check_sources,
    checkpoint_format,
)

PREFIXES = ("module.", "model.", "_orig_mod.", "net.")  # DataParallel, Lightning, torch.compile
WRAPPERS = ("state_dict", "model_state_dict", "model", "net")  # {"state_dict": {...}, ...}


class Loaded(nn.Module):
    """A loaded program as imbadv attacks it: [0, 1] pixels in, normalized as declared, logits out.

    Its mode is the one it was saved in (exported programs refuse `.eval()`); imbadv never trains it.
    """

    def __init__(self, inner: nn.Module, normalize: dict | None, channels: int) -> None:
        super().__init__()
        self.inner = inner
        self.normalized = normalize is not None
        if normalize is not None:
            mean, std = (_per_channel(normalize[k], channels) for k in ("mean", "std"))
            self.register_buffer("mean", mean, persistent=False)
            self.register_buffer("std", std, persistent=False)

    def train(self, mode: bool = True) -> Loaded:
        self.training = mode  # not passed on: the program's own mode stays as saved
        return self

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner((x - self.mean) / self.std if self.normalized else x)


def _per_channel(values: list[float], channels: int) -> torch.Tensor:
    values = values * channels if len(values) == 1 else values
    return torch.tensor(values, dtype=torch.float32).view(1, -1, 1, 1)


def build(card: DataCard, p: CheckpointParams) -> nn.Module:
    """The registry's entry: the checkpoint loaded for the card, its output shape checked."""
    return load(card, p)[0]


def load(card: DataCard, p: CheckpointParams) -> tuple[nn.Module, str]:
    """(model taking [0, 1] pixels, format) for the checkpoint `p.path`, or a one-line ConfigError."""
    fmt = checkpoint_format(p.path)
    if fmt == SAFETENSORS:
        model = _fit(card, p, _read_safetensors(p.path))
        tensors = model.state_dict()
    elif fmt == STATE_DICT:
        state = _unpickle(p.path, p.trust)
        if isinstance(state, nn.Module):  # a whole pickled module: only ever with model.trust
            model, fmt = Loaded(state.eval(), p.normalize, card.channels), "pickled module"
            tensors = _parameters_and_buffers(state)
        else:
            model = _fit(card, p, _state_dict(p.path, state))
            tensors = model.state_dict()
    else:
        program, tensors = _program(p, fmt)
        model = Loaded(program, p.normalize, card.channels)
    found = not_finite(tensors)
    if found:
        raise ConfigError(KEY, p.path, f"finite weights (not finite: {found})")
    return model, fmt


def _read_safetensors(path: str) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    try:
        return load_file(path, device="cpu")
    except Exception as err:  # noqa: BLE001 - a damaged file: the loader's error, on one line
        raise ConfigError(KEY, path, f"a readable safetensors file ({_first_line(err)})") from None


def _program(p: CheckpointParams, fmt: str) -> tuple[nn.Module, dict[str, torch.Tensor]]:
    """A TorchScript or .pt2 program and the tensors it carries: parameters and buffers, and for
    a .pt2 its tensor constants too (torch.export keeps non-persistent buffers there)."""
    try:
        if fmt == EXPORT and not p.trust:
            _screen_pt2(p.path)
        if fmt == TORCHSCRIPT:
            with warnings.catch_warnings():  # TorchScript is deprecated, still the common format
                warnings.simplefilter("ignore", FutureWarning)
                program = torch.jit.load(p.path, map_location="cpu").eval()
            return program, _parameters_and_buffers(program)
        exported = torch.export.load(p.path)
    except ConfigError:  # the screening's refusal, already in one line
        raise
    except Exception as err:  # noqa: BLE001 - a damaged archive: torch raises many kinds
        what = "TorchScript" if fmt == TORCHSCRIPT else "torch.export (.pt2)"
        raise ConfigError(KEY, p.path, f"a readable {what} program ({_first_line(err)})") from None
    constants = {k: v for k, v in exported.constants.items() if isinstance(v, torch.Tensor)}
    return exported.module(), {**exported.state_dict, **constants}


def _parameters_and_buffers(module: nn.Module) -> dict[str, torch.Tensor]:
    return {**dict(module.named_parameters()), **dict(module.named_buffers())}


def not_finite(tensors: dict[str, torch.Tensor], shown: int = 3) -> str:
    """The first `shown` tensors holding NaN or inf, each with its count, and how many more ("" if
    none): weights that are not finite give NaN logits, which every metric would take as data."""
    bad = [
        (name, t)
        for name, t in tensors.items()
        if (t.is_floating_point() or t.is_complex()) and not bool(torch.isfinite(t).all())
    ]
    named = [f"{name} ({_count_nonfinite(t)})" for name, t in bad[:shown]]
    more = f" and {len(bad) - shown} more" if len(bad) > shown else ""
    return ", ".join(named) + more


def _count_nonfinite(t: torch.Tensor) -> str:
    nan, inf = int(t.isnan().sum()), int(t.isinf().sum())
    kinds = " and ".join(f"{k:,} {what}" for k, what in ((nan, "NaN"), (inf, "inf")) if k)
    if nan + inf < t.numel():
        return kinds
    return f"all {kinds}" if not (nan and inf) else f"all {t.numel():,}: {kinds}"


def _unpickle(path: str, trust: bool) -> Any:
    """A torch.save file as data (tensors, dicts, lists, numbers); code only if trusted."""
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust)
    except pickle.UnpicklingError as err:
        raise ConfigError(KEY, path, _needs_code(err)) from None
    except Exception as err:  # noqa: BLE001 - a damaged archive: torch raises many kinds
        raise ConfigError(KEY, path, f"a readable torch.save file ({_first_line(err)})") from None


def _needs_code(err: Exception) -> str:
    # torch names the first object it refuses in one of these two wordings
    found = re.search(r"(?:Unsupported global: GLOBAL|unsupported GLOBAL) ([\w.]+)", str(err))
    what = f"it needs code execution to unpickle {found[1]}" if found else _first_line(err)
    return f"a checkpoint that loads as data ({what}); pass model.trust=true only if you trust it"


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [type(err).__name__])[0][:200]


def _screen_pt2(path: str) -> None:
    """Refuse a .pt2 whose pickled parts need code: torch.export.load unpickles them unrestricted."""
    with zipfile.ZipFile(path) as archive:
        for name in archive.namelist():
            inner = name.partition("/")[2]
            if inner.endswith(".pt"):  # sample inputs and legacy weights: torch.save files
                _unpickle_bytes(path, archive.read(name))
            elif inner.endswith("_config.json") and inner.startswith("data/"):
                folder = name.rpartition("/")[0]
                for item in json.loads(archive.read(name)).get("config", {}).values():
                    pickled = item.get("use_pickle") or not item["path_name"].startswith(
                        ("weight_", "tensor_")
                    )  # custom and opaque objects are plain pickles
                    if pickled:
                        _unpickle_bytes(path, archive.read(f"{folder}/{item['path_name']}"))


def _unpickle_bytes(path: str, blob: bytes) -> None:
    try:
        torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any refusal of the restricted unpickler
        raise ConfigError(KEY, path, _needs_code(err)) from None


def _state_dict(path: str, loaded: Any) -> dict[str, torch.Tensor]:
    """The tensors of a torch.save file: a state dict, or one wrapped as {"state_dict": ...}."""
    if isinstance(loaded, dict):
        for key in WRAPPERS:
            if isinstance(loaded.get(key), dict) and not isinstance(loaded[key], torch.Tensor):
                loaded = loaded[key]
                break
    if not isinstance(loaded, dict) or not all(
        isinstance(v, torch.Tensor) for v in loaded.values()
    ):
        raise ConfigError(KEY, path, f"a state dict (name -> tensor), not {type(loaded).__name__}")
    return loaded


def _fit(card: DataCard, p: CheckpointParams, state: dict[str, torch.Tensor]) -> nn.Module:
    """The registered architecture with the file's weights; a misfit named in one line."""
    spec = p.arch_spec()
    if p.normalize is not None:  # the architecture normalizes inside: with the declared stats
        card = replace(card, mean=tuple(p.normalize["mean"]), std=tuple(p.normalize["std"]))
    model = MODELS.get("model.arch", spec.name).load()(card, spec.params)
    expected = model.state_dict()
    state = strip_prefixes(state, set(expected))
    problems = misfit(state, expected)
    if problems:
        raise ConfigError(KEY, p.path, f"weights that fit {spec.label()} ({problems})")
    model.load_state_dict(state)
    return model


def strip_prefixes(state: dict[str, Any], expected: set[str]) -> dict[str, Any]:
    """`state` with a prefix every key shares (`module.`, `model.`) removed, while none fits."""
    while state and not set(state) & expected:
        prefix = next((p for p in PREFIXES if all(k.startswith(p) for k in state)), None)
        if prefix is None:
            break
        state = {k[len(prefix) :]: v for k, v in state.items()}
    return state


def misfit(state: dict[str, torch.Tensor], expected: dict[str, torch.Tensor]) -> str:
    """The first missing key, the first unexpected key and the first shape mismatch ("" if none)."""
    missing = next((k for k in expected if k not in state), None)
    unexpected = next((k for k in state if k not in expected), None)
    shape = next((k for k in expected if k in state and state[k].shape != expected[k].shape), None)
    parts = [f"missing {missing}"] if missing else []
    parts += [f"unexpected {unexpected}"] if unexpected else []
    if shape:
        have, want = tuple(state[shape].shape), tuple(expected[shape].shape)
        parts.append(f"{shape} is {have} in the file, {want} in the architecture")
    return "; ".join(parts)


def check_output(model: nn.Module, x: torch.Tensor, classes: int, path: str) -> None:
    """Refuse a model whose output on a batch of [0, 1] images is not (N, classes) logits."""
    try:
        with torch.no_grad():
            out = model.eval()(x)
    except Exception as err:  # noqa: BLE001 - whatever the foreign model raises
        raise ConfigError(
            KEY, path, f"a model that takes {tuple(x.shape)} images ({_first_line(err)})"
        ) from None
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (len(x), classes):
        need = f"a model whose output is (N, {classes}) for the data set's {classes} classes"
        raise ConfigError(KEY, path, f"{need} (it gives {shape} for N={len(x)})")


def record(p: CheckpointParams, fmt: str, sha256: str, key: str, spec: dict) -> dict[str, Any]:
    """The model record of a checkpoint: its file, hash and format; no training (never trained)."""
    return {
        "key": key,
        "spec": spec,
        "checkpoint": {
            "file": Path(p.path).name,
            "path": str(Path(p.path).resolve()),
            "sha256": sha256,
            "format": fmt,
            "arch": p.arch_spec().label() if p.arch else None,
            "normalize": p.normalize,
        },
        "train_counts": [],  # unknown: trained elsewhere
        "val_counts": [],
        "split_sha256": None,
        "selection": "none: a checkpoint, not trained by imbadv",
        "epochs": 0,
        "best_epoch": None,
        "best_val_loss": None,
        "history": [],
    }


def is_checkpoint(model: Any) -> bool:
    return getattr(model, "name", None) == CHECKPOINT


def obtain(data: Any, p: CheckpointParams, device: torch.device) -> tuple[nn.Module, str]:
    """The checkpoint as the job's model, checked on two test images, and its file format."""
    from imbadv.data.tensors import to_unit

    model, fmt = load(data.card, p)
    check_output(model, to_unit(torch.from_numpy(data.x_test[:2])), data.num_classes, p.path)
    return model.to(device).eval(), fmt


def spec_of(p: CheckpointParams, fmt: str, sha256: str, identity: dict) -> dict[str, Any]:
    """What defines a checkpoint's results: the file's sha256 with how it is read (format, arch,
    normalization) and the data it is evaluated on; every job evaluating the same file shares it."""
    return {
        "checkpoint": sha256,
        "format": fmt,
        "arch": p.arch_spec().key() if p.arch else None,
        "normalize": p.normalize,
        "data": identity,
    }


def trained_settings(s: Any) -> Any:
    """The job's settings for the models it trains besides the checkpoint: with `model.arch`."""
    p = s.model.params
    if p.arch is None:
        check_sources(s)
    return replace(s, model=p.arch_spec())
