"""Official files on disk: published checksums, bounded downloads, one-line errors naming where files go."""

from __future__ import annotations

import contextlib
import socket
import tarfile
import zipfile
from collections.abc import Iterable, Iterator
from pathlib import Path

from imbadv.core.errors import DataError

# urllib waits forever by default; a firewall that drops packets would hang a job.
DOWNLOAD_TIMEOUT_S = 30.0


@contextlib.contextmanager
def socket_timeout(seconds: float) -> Iterator[None]:
    """Every socket opened inside gives up after `seconds` of silence (urllib has no default)."""
    previous = socket.getdefaulttimeout()
    socket.setdefaulttimeout(seconds)
    try:
        yield
    finally:
        socket.setdefaulttimeout(previous)


def checksum_failures(files: Iterable[tuple[Path, str]]) -> list[str]:
    """Names of the files that are missing or whose md5 differs from the published one."""
    from torchvision.datasets.utils import check_integrity

    return [path.name for path, md5 in files if not check_integrity(str(path), md5)]


def fetch(url: str, root: Path, filename: str, md5: str, extract: bool = True) -> None:
    """Download `url` into root (checked against `md5`, extracted if `extract`), time-bounded.

    Raises DataError with the reason on one line; the caller adds where the files belong.
    """
    from torchvision.datasets.utils import download_and_extract_archive, download_url

    try:
        with socket_timeout(DOWNLOAD_TIMEOUT_S):
            if extract:
                download_and_extract_archive(url, str(root), filename=filename, md5=md5)
            else:
                download_url(url, str(root), filename=filename, md5=md5)
    except (OSError, RuntimeError, EOFError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise DataError(f"the download failed ({' '.join(str(exc).split())})") from exc


def extract(archive: Path, root: Path) -> None:
    """Unpack an official archive whose checksum the caller has checked."""
    from torchvision.datasets.utils import extract_archive

    try:
        extract_archive(str(archive), str(root))
    except (OSError, EOFError, tarfile.TarError, zipfile.BadZipFile) as exc:
        raise DataError(f"{archive} cannot be extracted: {' '.join(str(exc).split())}") from exc


def one_line(text: str) -> str:
    """Collapse whitespace so a library's multi-line message fits a one-line error."""
    return " ".join(str(text).split())
