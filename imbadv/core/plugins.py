"""Plug-ins: the installed ones (entry point group `imbadv.plugins`) and those named in `plugins`;
importing one registers its components by name. Torch-free."""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
from typing import Any

from omegaconf import DictConfig, OmegaConf

from imbadv.core.errors import ConfigError
from imbadv.core.registry import RegistryError

ENTRY_POINTS = "imbadv.plugins"  # installed plug-ins: each entry names a module that registers


def import_plugins(cfg: DictConfig) -> None:
    """Import the installed plug-ins (entry point group `imbadv.plugins`), then the modules named
    in `plugins`: importing them registers their components by name."""
    for name, module in installed_plugins():
        _import_plugin(f"{name} ({ENTRY_POINTS} entry point)", module)
    named = cfg.get("plugins") or []
    for name in (
        list(named) if OmegaConf.is_list(named) or isinstance(named, list | tuple) else [named]
    ):
        _import_plugin(name, str(name))


@functools.cache
def installed_plugins() -> tuple[tuple[str, str], ...]:
    """(name, module) of every entry point in the group, found in the installed packages' metadata."""
    found = importlib.metadata.entry_points(group=ENTRY_POINTS)
    return tuple(sorted((ep.name, ep.value.partition(":")[0]) for ep in found))


def _import_plugin(name: Any, module: str) -> None:
    try:
        importlib.import_module(module)
    except ImportError as err:
        raise ConfigError("plugins", name, f"an importable module ({err})") from None
    except RegistryError as err:  # a registry line that breaks its axis's contract
        raise ConfigError("plugins", name, f"a module that registers cleanly ({err})") from None
