"""Reading a tar archive as data: every member vetted (no absolute path, no `..`, no link), nothing extracted."""

from __future__ import annotations

import tarfile
from collections.abc import Callable
from pathlib import Path

from imbadv.errors import ImbadvError


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
