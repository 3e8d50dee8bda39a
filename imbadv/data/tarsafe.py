"""Reading a tar archive as data: every member vetted (no absolute path, no `..`, no link), nothing extracted."""

from __future__ import annotations

import gzip
import hashlib
import json
import tarfile
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

from imbadv.core.errors import ImbadvError


def member_parts(
    member: tarfile.TarInfo, archive: Path, error: type[Exception] = ImbadvError
) -> list[str]:
    """The member's path parts; `error` (one line) for a path outside the archive or a link."""
    name = member.name
    if name.startswith("/") or ".." in name.split("/"):
        raise error(f"{archive} member {name!r} points outside the archive; refusing it")
    if not (member.isfile() or member.isdir()):
        raise error(
            f"{archive} member {name!r} is a link or device, not a file; refusing the archive "
            "(repack it with plain files only)"
        )
    return [p for p in name.split("/") if p not in ("", ".")]


def read_members(
    archive: Path,
    keep: Callable[[list[str]], bool],
    error: type[Exception] = ImbadvError,
    label: str | None = None,
) -> dict[str, bytes]:
    """The bytes of every file member whose parts `keep` accepts, read as a stream into memory.

    Every member is vetted before anything is read, because an archive is data, not code; a
    damaged or unreadable archive raises `error` naming `label` (default: the path).
    """
    blobs = {}
    try:
        with tarfile.open(archive, "r|*") as tar:
            for member in tar:
                parts = member_parts(member, archive, error)
                if member.isfile() and keep(parts):
                    blobs["/".join(parts)] = tar.extractfile(member).read()
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise error(f"{label or archive} is not a readable .tar.gz: {exc}") from exc
    return blobs


MANIFEST = "manifest.json"  # an imbadv results archive's table of contents (imbadv.report.archive)
ARCHIVE_FORMAT = 1
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz")


def read_verified(
    path: Path, error: type[Exception] = ImbadvError
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """An imbadv results archive's manifest and members, every member checked against its sha256.

    The one reader of results archives (the report and the long table both use it); `error`
    (one line) when the archive is damaged, is not one, or does not match its manifest.
    """
    try:  # the whole stream first: gzip's CRC and length cover bytes a tar reader never reaches
        gzip.decompress(path.read_bytes())
    except (OSError, EOFError, zlib.error) as exc:
        raise error(f"{path} is not a readable .tar.gz: {exc}") from None
    blobs = read_members(path, lambda parts: True, error)
    try:
        manifest = json.loads(blobs.pop(MANIFEST))
        sums = manifest["sha256"]
    except (KeyError, ValueError, TypeError):
        raise error(f"{path}: no readable {MANIFEST}; not an imbadv results archive") from None
    if manifest.get("format") != ARCHIVE_FORMAT:
        raise error(f"{path}: archive format {manifest.get('format')}, this reads {ARCHIVE_FORMAT}")
    if set(blobs) != set(sums):
        odd = sorted(set(blobs) ^ set(sums))
        raise error(f"{path}: members and manifest differ ({', '.join(odd[:3])})")
    for name, data in blobs.items():
        if hashlib.sha256(data).hexdigest() != sums[name]:
            raise error(f"{path}: {name} does not match its sha256 in the manifest")
    return manifest, blobs
