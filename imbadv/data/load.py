"""Loading a configured data set: the registry's loader for the chosen name, imported on first use.

A loaded data set stays resident in the process: the next job of a sweep in the same process
(the local launcher runs every job in one; joblib's workers run several each) gets it without
reading the cache again (~2-8 s for CIFAR-10 from a JPEG archive on a 2-core CPU, most of it
the archive's sha256). Jobs never write into its arrays (tests/data/test_resident.py).
"""

from __future__ import annotations

import os
from collections import OrderedDict
from dataclasses import asdict
from pathlib import Path

from imbadv.core.registry import Spec
from imbadv.data import DATASETS
from imbadv.data.base import Dataset

RESIDENT_MAX = 2  # data sets kept per process (a sweep over two data sets does not thrash)
_resident: OrderedDict[tuple, Dataset] = OrderedDict()


def identity(spec: Spec, cache_dir: str | Path) -> tuple:
    """What a loaded copy depends on: the name, the options, the cache, and the size and
    modification time of every option that names an existing file or folder."""
    options = asdict(spec.params)
    files = tuple(
        (k, os.stat(v).st_size, os.stat(v).st_mtime_ns)
        for k, v in sorted(options.items())
        if isinstance(v, str) and v and os.path.exists(v)
    )
    return spec.name, repr(sorted(options.items())), str(Path(cache_dir).resolve()), files


def load_dataset(spec: Spec, cache_dir: str | Path = "data/cache") -> Dataset:
    """The data set `spec` names (a checked Spec from the settings), with its card; resident."""
    key = identity(spec, cache_dir)
    if key in _resident:
        _resident.move_to_end(key)
        return _resident[key]
    data = DATASETS.get("dataset", spec.name).load()(spec.params, Path(cache_dir))
    _resident[key] = data
    while len(_resident) > RESIDENT_MAX:
        _resident.popitem(last=False)
    return data
