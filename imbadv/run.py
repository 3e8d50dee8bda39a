"""Entry stage: `python -m imbadv.run`: expands A..B ranges, checks every job's config, then runs them."""

from __future__ import annotations

import itertools
import logging
import re
import sys
import warnings
from pathlib import Path

import hydra
from hydra import compose, initialize_config_dir
from hydra.core.hydra_config import HydraConfig
from hydra.core.override_parser.overrides_parser import OverridesParser
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from imbadv.cluster import check_cluster
from imbadv.errors import ConfigError, ImbadvError
from imbadv.settings import check_folder, from_config

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
# A..B with no path characters on either side, so `dataset.root=../data` is left alone.
RANGE = re.compile(r"^(?P<key>[\w.]+)=\s*(?P<a>[+-]?[\w.]*\w)\s*\.\.\s*(?P<b>[+-]?\w[\w.]*)\s*$")
MAX_CHECKED_JOBS = 2000  # past this many combinations the up-front check would take too long


# Launcher presets size themselves to the machine (conf/launcher/gpus.yaml, ray.yaml).
def _slots(jobs_per_gpu: int) -> int:
    from imbadv.devices import parallel_slots  # torch only once a launcher needs the number

    return parallel_slots(jobs_per_gpu)


def _gpu_share(jobs_per_gpu: int) -> float:
    from imbadv.devices import gpu_share

    return gpu_share(jobs_per_gpu)


OmegaConf.register_new_resolver("imbadv_slots", _slots, replace=True)
OmegaConf.register_new_resolver("imbadv_gpu_share", _gpu_share, replace=True)


def expand_ranges(args: list[str]) -> list[str]:
    """Rewrite `KEY=A..B` (integers, inclusive) into Hydra's `KEY=range(A,B+1)`.

    Hydra alone reads "0..9" as a string and runs one job with it.
    """
    out = []
    for arg in args:
        match = RANGE.match(arg)
        if match is None or arg.startswith("-"):
            out.append(arg)
            continue
        key, a, b = match["key"], match["a"].strip(), match["b"].strip()
        if not (re.fullmatch(r"-?\d+", a) and re.fullmatch(r"-?\d+", b)):
            raise ConfigError(key, f"{a}..{b}", "an integer range A..B such as 0..9")
        if int(a) > int(b):
            raise ConfigError(key, f"{a}..{b}", f"A <= B in A..B (did you mean {b}..{a}?)")
        out.append(f"{key}=range({int(a)},{int(b) + 1})")
    return out


def job_overrides(args: list[str]) -> list[list[str]]:
    """Every job's override list that a (multi)run command line describes."""
    lines = [a for a in args if not a.startswith("-")]
    choices = []
    for override in OverridesParser.create().parse_overrides(lines):
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    return [list(combo) for combo in itertools.product(*choices)]


def check_jobs(args: list[str]) -> int:
    """Compose and check each job's config before any job starts; returns how many were checked."""
    multirun = any(a in ("-m", "--multirun") for a in args)
    jobs = job_overrides(args)
    if len(jobs) > MAX_CHECKED_JOBS:
        jobs = jobs[:1]
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for overrides in jobs:
            try:
                cfg = compose("config", overrides=overrides, return_hydra_config=True)
            except HydraException as err:
                raise ConfigError(*_hydra_problem(err, overrides)) from None
            from_config(cfg)
            check_cluster(cfg)  # launcher resources too: nothing is submitted with a bad one
            out = (
                ("hydra.sweep.dir", cfg.hydra.sweep.dir)
                if multirun
                else ("hydra.run.dir", cfg.hydra.run.dir)
            )
            check_folder(*out)
    return len(jobs)


def _hydra_problem(err: HydraException, overrides: list[str]) -> tuple[str, str, str]:
    """(key, value, allowed) for Hydra's multi-line errors, e.g. an unknown config group option."""
    for item in overrides:
        group, _, value = item.lstrip("+~").partition("=")
        folder = CONF_DIR / group
        if folder.is_dir() and not (folder / f"{value}.yaml").exists():
            options = sorted(p.stem for p in folder.glob("*.yaml"))
            return group, value, "one of " + ", ".join(options)
    return "override", " ".join(overrides), str(err).splitlines()[0]


@hydra.main(version_base="1.3", config_path="../conf", config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    from imbadv import experiment  # torch and Lightning load here, after every check passed

    quiet_lightning()  # again here: Hydra sets up each job's logging before calling us
    hydra_cfg = HydraConfig.get()
    concurrent = int(hydra_cfg.launcher.get("n_jobs", 1) or 1)  # joblib's; 1 for the others
    try:
        experiment.run(cfg, Path(hydra_cfg.runtime.output_dir), concurrent)
    except ImbadvError as err:
        if hydra_cfg.mode == RunMode.MULTIRUN:
            raise  # Hydra records the failed job, runs the others and exits non-zero at the end
        fail(err)


def fail(err: ImbadvError) -> None:
    print(f"imbadv: error: {err}", file=sys.stderr)
    sys.exit(2 if isinstance(err, ConfigError) else 1)


def quiet_lightning() -> None:
    """Lightning's per-Trainer banners (GPU available, tips) would bury the results table."""
    for name in ("lightning.pytorch", "lightning.fabric", "pytorch_lightning"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", message=r".*LeafSpec.*is deprecated")
    # Where SLURM is installed, every job outside `srun` (local, Ray) would get this hint.
    warnings.filterwarnings("ignore", message=r".*`srun` command is available on your system")


def main() -> None:
    """Console entry point: the same as `python -m imbadv.run`."""
    quiet_lightning()
    try:
        sys.argv[1:] = expand_ranges(sys.argv[1:])
        if not any(a in ("--help", "-h", "--cfg", "-c", "--info", "-i") for a in sys.argv[1:]):
            check_jobs(sys.argv[1:])
    except ImbadvError as err:
        fail(err)
    hydra_main()


if __name__ == "__main__":
    main()
