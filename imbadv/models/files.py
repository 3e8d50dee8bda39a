"""Checkpoint files told apart without torch: which format a file is, read from its first bytes.

The config check runs before torch is imported, so a missing, unreadable or unknown file is
refused here in one line; loading (and the safety checks that need torch) is imbadv.models.checkpoint.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from imbadv.config.errors import ConfigError

SAFETENSORS, STATE_DICT, TORCHSCRIPT, EXPORT = "safetensors", "torch.save", "torchscript", "pt2"
WEIGHTS = (SAFETENSORS, STATE_DICT)  # formats that hold weights only: they need model.arch
FORMATS = "safetensors, torch.save (a state dict), TorchScript or torch.export (.pt2)"
KEY = "model.path"


def checkpoint_format(path: str) -> str:
    """The format of the checkpoint at `path`, or a ConfigError naming what is wrong with it."""
    if path in ("", "???"):
        raise ConfigError(KEY, path or '""', "the checkpoint's file (model.path=FILE)")
    file = Path(path)
    if not file.is_file():
        raise ConfigError(KEY, path, "an existing file (no such file)")
    try:
        with open(file, "rb") as f:
            head = f.read(8)
            found = _zip_format(file) if zipfile.is_zipfile(file) else _flat_format(f, head)
    except OSError as err:
        raise ConfigError(KEY, path, f"a readable file ({err.strerror or err})") from None
    if found is None:
        raise ConfigError(KEY, path, f"a checkpoint in one of the formats {FORMATS}")
    return found


def _zip_format(file: Path) -> str | None:
    """torch.save, TorchScript and torch.export all write a zip with one top-level folder."""
    try:
        names = zipfile.ZipFile(file).namelist()
    except zipfile.BadZipFile:
        return None
    inner = {n.partition("/")[2] for n in names}
    if "archive_format" in inner:
        return EXPORT
    if any(n.startswith("code/") for n in inner) and "constants.pkl" in inner:
        return TORCHSCRIPT
    if "data.pkl" in inner:
        return STATE_DICT
    return None


def _flat_format(f, head: bytes) -> str | None:
    """safetensors (an 8-byte header length, then a JSON header) or torch.save's legacy pickle."""
    if len(head) == 8:
        size = int.from_bytes(head, "little")
        if 2 <= size < 100_000_000:
            try:
                header = json.loads(f.read(size))
            except (ValueError, UnicodeDecodeError):
                header = None
            if isinstance(header, dict):
                return SAFETENSORS
    return STATE_DICT if head[:1] == b"\x80" else None  # pickle protocol 2+: legacy torch.save


def check_sources(s: Any) -> None:
    """A program file without `model.arch` leaves imbadv no architecture to train the job's other
    models with (the balanced source, named sources): only `same` (and checkpoint files, loaded
    as they are) is allowed then."""
    p = s.model.params
    if s.model.name != "checkpoint" or p.arch is not None:
        return
    own_balanced = s.imbalance.name == "balanced"  # its own gradient is the balanced one
    for source in s.sources:
        if source == "same" or str(source).startswith("checkpoint:"):
            continue
        if not (source == "balanced" and own_balanced):
            need = (
                "same only: imbadv trains the other models of a checkpoint job with model.arch "
                "(give model.arch=<name>, or attack.sources=[same])"
            )
            raise ConfigError("attack.sources", source, need)
