"""Cluster stage: the `cluster.*` resources a launcher preset asks for, checked before anything is submitted.

No torch here. The keys exist only under launcher=slurm, slurm_cpu and ray (conf/launcher/)."""

from __future__ import annotations

import re
from typing import Any

from omegaconf import DictConfig, OmegaConf

from imbadv.core.errors import ConfigError

# key -> smallest allowed value (integers)
COUNTS = {"gpus": 0, "cpus": 1, "mem_gb": 1, "time_min": 1, "parallel": 1}
# SLURM names: partition (a comma list is allowed by sbatch), account, QoS
NAMES = ("partition", "account", "qos")
NAME = re.compile(r"^[\w.+-]+(,[\w.+-]+)*$")


def check_cluster(cfg: DictConfig) -> dict[str, Any]:
    """The `cluster` block as a plain dict; the first bad key or value raises ConfigError."""
    if "cluster" not in cfg:
        return {}
    block = OmegaConf.to_container(cfg.cluster, resolve=True)
    for key, value in block.items():
        name = f"cluster.{key}"
        if key in COUNTS:
            _count(name, value, COUNTS[key])
        elif key in NAMES:
            if value is not None and not (isinstance(value, str) and NAME.match(value)):
                raise ConfigError(name, value, "null or a SLURM name (letters, digits, . _ + -)")
        else:
            raise ConfigError(name, value, f"a key among {', '.join([*COUNTS, *NAMES])}")
    return block


def _count(key: str, value: Any, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ConfigError(key, value, f"an integer >= {low}")
    return value
