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
from hydra.errors import ConfigCompositionException, HydraException, MissingConfigException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError

from imbadv.adversarial import ADVERSARIAL
from imbadv.attacks import ATTACKS
from imbadv.augment import AUGMENTS
from imbadv.config.cluster import check_cluster
from imbadv.config.folders import MAX_FOLDER, job_folder  # noqa: F401  registers imbadv_folder
from imbadv.config.settings import CONF_DIR, Settings, check_folder, check_sweep, from_config
from imbadv.config.sources import CheckpointSource
from imbadv.core.errors import ConfigError, ImbadvError
from imbadv.data import DATASETS
from imbadv.grouped.groups import write_plan
from imbadv.imbalance import PROFILES
from imbadv.models import MODELS
from imbadv.models.files import check_sources
from imbadv.optimizers import OPTIMIZERS
from imbadv.schedules import SCHEDULES
from imbadv.training import OBJECTIVES

RECIPE = (OPTIMIZERS, SCHEDULES, AUGMENTS)  # the registries of Recipe's fields, in their order

# A..B with no path characters on either side, so `dataset.root=../data` is left alone.
RANGE = re.compile(r"^(?P<key>[\w.]+)=\s*(?P<a>[+-]?[\w.]*\w)\s*\.\.\s*(?P<b>[+-]?\w[\w.]*)\s*$")


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


BOTH = "trainer.selection=both"


def expand_selection(args: list[str]) -> list[str]:
    """`trainer.selection=both`: the field's two reports of one run, as two jobs per setting
    (`robust_val_acc` and `last`) whose first training stores both models (docs/training.md)."""
    if BOTH not in args:
        return args
    if not any(a in ("-m", "--multirun") for a in args):
        raise ConfigError(
            "trainer.selection", "both", "both only with -m (one job per rule, one training)"
        )
    return [("trainer.selection=robust_val_acc,last" if a == BOTH else a) for a in args]


def check_both(s: Settings) -> None:
    """Both rules from one run need a run of fixed length: early stopping off."""
    if s.train.early_stopping and s.train.selection == "robust_val_acc":
        raise ConfigError(
            "trainer.selection", "both", "both only with trainer.early_stopping=false"
        )


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


def check_jobs(args: list[str], plan: bool = False) -> int:
    """Compose and check every job's config before any job starts; returns how many were checked.

    Composition is cheap (milliseconds a job), so every combination is checked, however many.
    Then each distinct data set and device is checked once, here, before any job folder exists.
    `plan`: once all passed, write the sweep's training groups to the store (imbadv.grouped.groups).
    """
    multirun = any(a in ("-m", "--multirun") for a in args)
    both = "trainer.selection=robust_val_acc,last" in args  # what expand_selection wrote
    jobs = job_overrides(args)
    data, devices, settings = {}, set(), []
    with initialize_config_dir(str(CONF_DIR), version_base="1.3"):
        for overrides in jobs:
            try:
                cfg = compose("config", overrides=overrides, return_hydra_config=True)
            except HydraException as err:
                raise ConfigError(*_hydra_problem(err, overrides)) from None
            s = from_config(cfg)
            if both:
                check_both(s)
            locate_components(s)
            settings.append(s)
            data[repr(s.dataset)] = s.dataset
            devices.add(s.device)
            check_cluster(cfg)  # launcher resources too: nothing is submitted with a bad one
            out = (
                ("hydra.sweep.dir", cfg.hydra.sweep.dir)
                if multirun
                else ("hydra.run.dir", cfg.hydra.run.dir)
            )
            check_folder(*out)
    check_sweep(settings)  # a named gradient source must be a model some job trains
    for device in devices:
        check_device(device)
    for s in {(x.device, x.train.precision): x for x in settings}.values():
        check_precision(s.device, s.train.precision)
    for spec in data.values():
        spec.params.preflight()
    if plan:
        write_plan(settings)
    return len(jobs)


def locate_components(s: Settings) -> None:
    """Every component the job names has an implementation that can be found (not imported yet,
    so no torch): a misspelt `module:function` is refused now, not after training."""
    used = [
        *(
            (r, part.axis, part.name)
            for r, part in zip(RECIPE, vars(s.recipe).values(), strict=True)
        ),
        (DATASETS, "dataset", s.dataset.name),
        (PROFILES, "imbalance", s.imbalance.name),
        (MODELS, "model", s.model.name),
        (OBJECTIVES, "objective", s.objective.name),
        *((ATTACKS, "attack.methods", spec.method.name) for spec in s.specs),
        *(
            (PROFILES, "attack.sources", src.profile.name)
            for src in s.named_sources.values()
            if not isinstance(src, CheckpointSource)  # a file: checked when it was parsed
        ),
    ]
    used.append((ADVERSARIAL, "adversarial", s.adversarial.mode))
    if s.adversarial.attack is not None:
        used.append((ATTACKS, "adversarial.attack", s.adversarial.attack))
    for registry, key, name in used:
        registry.get(key, name).locate(key)
    check_sources(s)  # a checkpoint without model.arch: no other model can be trained


def check_precision(device: str, precision: str) -> None:
    """bf16 on a CPU without bf16 units is emulated: refused before any work (the GPU presets,
    e.g. experiment=longtail, train in bf16-mixed; docs/gpu.md)."""
    if not precision.startswith("bf16"):
        return
    from imbadv.devices import runs_on_cpu, this_cpu_has_bf16

    if runs_on_cpu(device) and not this_cpu_has_bf16():
        raise ConfigError(
            "trainer.precision",
            precision,
            "32-true on this CPU (no bf16 units: bf16 runs emulated, a ResNet-18 step ~17x "
            "slower than 32-true); bf16 on a GPU or a CPU with avx512_bf16/amx",
        )


def check_device(device: str) -> None:
    """A GPU asked for by name must exist here (torch is imported only when one is asked for)."""
    if not device.startswith("cuda"):
        return
    from imbadv.devices import gpu_count

    have = gpu_count()
    index = int(device[5:]) if device.startswith("cuda:") else 0
    if index >= have:
        seen = f"this machine has {have} GPU{'s' if have != 1 else ''}"
        allowed = f"auto or cpu ({seen})" if not have else f"cuda:0..cuda:{have - 1} ({seen})"
        raise ConfigError("device", device, allowed)


def _hydra_problem(err: HydraException, overrides: list[str]) -> tuple[str, str, str]:
    """(key, value, allowed) from Hydra's exception types, not its message text: a group option
    that is missing (Hydra lists the options its whole search path has, plug-in folders too), or
    a key the config lacks (the OmegaConf error Hydra raises it from names the key)."""
    if isinstance(err, MissingConfigException) and err.options and err.missing_cfg_file:
        group, _, value = err.missing_cfg_file.rpartition("/")
        return group, value, "one of " + ", ".join(sorted(err.options))
    if isinstance(err, ConfigCompositionException) and isinstance(
        err.__cause__, (ConfigAttributeError, ConfigKeyError)
    ):
        missing = err.__cause__.full_key  # `a` for `a.b=1` when `a` is missing too
        for item in overrides:
            key = item.partition("=")[0]
            if key == missing or key.startswith(f"{missing}."):
                return _unknown_key(key, overrides)
    return "override", " ".join(overrides), str(err).splitlines()[0]


def _unknown_key(key: str, overrides: list[str]) -> tuple[str, str, str]:
    """An override of a key the config lacks: name the keys its group does have."""
    value = next((o.partition("=")[2] for o in overrides if o.startswith(f"{key}=")), "?")
    rest = [o for o in overrides if not o.startswith(f"{key}=")]
    try:
        node = OmegaConf.select(compose("config", overrides=rest), key.rpartition(".")[0])
    except HydraException:
        node = None
    if OmegaConf.is_dict(node):
        known = ", ".join(sorted(k for k in node if k != "name"))
        return key, value, f"a known option ({known})"
    return key, value, f"an existing key (add a new one with +{key}=...)"


@hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name="config")
def hydra_main(cfg: DictConfig) -> None:
    # torch and Lightning load here, after every check passed
    from imbadv.pipeline import experiment

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
    # On a machine with SLURM installed, Lightning suggests srun for every job, even on a laptop
    # run; imbadv's SLURM launcher submits the jobs itself (docs/cluster.md).
    warnings.filterwarnings("ignore", message=r".*The `srun` command is available")


def main() -> None:
    """Console entry point: the same as `python -m imbadv.run`."""
    quiet_lightning()
    try:
        sys.argv[1:] = expand_selection(expand_ranges(sys.argv[1:]))
        if not any(a in ("--help", "-h", "--cfg", "-c", "--info", "-i") for a in sys.argv[1:]):
            check_jobs(sys.argv[1:], plan=True)
    except ImbadvError as err:
        fail(err)
    hydra_main()


if __name__ == "__main__":
    main()
