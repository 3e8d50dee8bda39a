"""Job folder names: the `imbadv_folder` resolver of conf/config.yaml's hydra.sweep.subdir."""

from __future__ import annotations

import hashlib

from omegaconf import OmegaConf

MAX_FOLDER = 200  # bytes: room under 255 for Hydra's own suffixes


def job_folder(overrides: str) -> str:
    """A job's folder name: its overrides (`class=3,imbalance=under`), cut with a digest when
    longer than file systems allow (255 bytes; a recipe comparison has many overrides)."""
    if len(overrides.encode()) <= MAX_FOLDER:
        return overrides
    digest = hashlib.sha256(overrides.encode()).hexdigest()[:12]
    return f"{overrides.encode()[: MAX_FOLDER - 13].decode(errors='ignore')}-{digest}"


OmegaConf.register_new_resolver("imbadv_folder", job_folder, replace=True)
