"""Loading a configured data set: the registry's loader for the chosen name, imported on first use."""

from __future__ import annotations

from pathlib import Path

from imbadv.core.registry import Spec
from imbadv.data import DATASETS
from imbadv.data.base import Dataset


def load_dataset(spec: Spec, cache_dir: str | Path = "data/cache") -> Dataset:
    """The data set `spec` names (a checked Spec from the settings), with its card."""
    return DATASETS.get("dataset", spec.name).load()(spec.params, Path(cache_dir))
