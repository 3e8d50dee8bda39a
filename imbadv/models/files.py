"""Checkpoint files told apart without torch: which format a file is, read from its first bytes.

The config check runs before torch is imported, so a missing, unreadable or unknown file is
refused here in one line, and so is a file cut short (a safetensors file shorter than its header
says, a zip without the directory at its end); loading (and the safety checks that need torch) is
imbadv.models.checkpoint.
"""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

from imbadv.core.errors import ConfigError

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
            found = _zip_format(file) if zipfile.is_zipfile(file) else _flat_format(f, head, path)
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


def _flat_format(f, head: bytes, path: str) -> str | None:
    """safetensors (an 8-byte header length, then a JSON header) or torch.save's legacy pickle."""
    if len(head) == 8:
        size = int.from_bytes(head, "little")
        if 2 <= size < 100_000_000:
            text = f.read(size)
            try:
                header = json.loads(text)
            except (ValueError, UnicodeDecodeError):
                header = None
            if isinstance(header, dict):
                _check_complete(header, 8 + size, Path(path).stat().st_size, path)
                return SAFETENSORS
            if len(text) < size and text[:1] == b"{":  # a JSON header that stops mid-way
                raise ConfigError(
                    KEY, path, _cut(8 + len(text), 8 + size, "its header alone needs")
                )
    if head[:4] == b"PK\x03\x04":  # torch's zip formats keep their directory at the very end
        need = "a complete zip archive, as torch.save, TorchScript and torch.export write"
        raise ConfigError(KEY, path, f"{need} (no directory at its end: cut short or damaged)")
    return STATE_DICT if head[:1] == b"\x80" else None  # pickle protocol 2+: legacy torch.save


def _check_complete(header: dict, start: int, size: int, path: str) -> None:
    """Refuse a safetensors file whose length is not its header's plus the tensors it lists: a cut
    file would otherwise fail deep inside the loader."""
    ends = [v.get("data_offsets") if isinstance(v, dict) else None for v in header.values()]
    ends = [e[1] for e in ends if isinstance(e, list) and len(e) == 2 and isinstance(e[1], int)]
    if ends and size != start + max(ends):  # a malformed header is the loader's to refuse
        raise ConfigError(KEY, path, _cut(size, start + max(ends), "its header describes"))


def _cut(have: int, want: int, who: str) -> str:
    how = "cut short" if have < want else "bytes past its end"
    return f"a complete safetensors file (it has {have:,} bytes, {who} {want:,}: {how})"


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
