"""Gradient sources by name: `same`, `balanced`, or any model of the sweep (`under-3`, `exp+fast_fgsm`).

A model of a sweep is named `<profile>[-<class>][+<training mode>]`: the class only for profiles
that have a target class (under, over), the training mode only when it is adversarial. A named
source is the attacked job's own setting (data, model, objective, trainer, seed) with that
profile, class and training mode; its profile's options are the job's own when the job has that
profile, else those a job of the same command with `imbalance=<name>` gets: Hydra composes the
job's own overrides (search path and plugins included) with it. Without `+mode` a source trains
as the job does, like `balanced`. No torch here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from imbadv.config.classes import class_choices, class_index
from imbadv.config.errors import ConfigError
from imbadv.config.registry import Spec, build_params
from imbadv.imbalance import PROFILES, targeted
from imbadv.training import AdversarialSettings


class Source(StrEnum):
    """The paper's gradient sources (Sec. 4.2); any model of the sweep may be one too (by name)."""

    SAME = "same"  # the attacked model's own gradient (white box)
    BALANCED = "balanced"  # the balanced model's gradient (transfer); the balanced profile's name


NAME = re.compile(r"^(?P<profile>[A-Za-z_]\w*)(?:-(?P<cls>[^+]+))?(?:\+(?P<mode>[A-Za-z_]\w*))?$")
ALLOWED = "same, balanced, or a model of the sweep: <profile>[-<class>][+<mode>], e.g. under-3"


@dataclass(frozen=True)
class SourceModel:
    """A named source resolved for one job: the model its gradient comes from."""

    name: str  # canonical: under-3, balanced+fast_fgsm
    profile: Spec
    target: int | str | None  # None for a profile without a target class
    adversarial: AdversarialSettings


def model_name(profile: str, target: int | str | None, mode: str) -> str:
    """The canonical name of a model of the sweep: `under-3`, `exp+fast_fgsm`, `balanced`."""
    cls = f"-{target}" if targeted(profile) else ""
    return f"{profile}{cls}" + (f"+{mode}" if mode != "none" else "")


def group_options(
    cfg: DictConfig, group: str, name: str, conf_dir: Path, text: Any = None
) -> dict[str, Any]:
    """Option `name` of config group `group` exactly as a job of this command with `group=name`
    gets it: Hydra composes the job's own overrides (search path, plugins, counts, presets) with
    `group=name`, so a plug-in's YAML resolves here as in the job that trains that model."""
    overrides = [o for o in job_overrides(cfg) if _override_key(o) != group]
    try:
        composed = _compose([*overrides, f"{group}={name}"], conf_dir)
    except HydraException as err:
        first = str(err).strip().splitlines()[0]
        raise ConfigError(
            "attack.sources", text or name, f"a model a job can train ({first})"
        ) from None
    return dict(OmegaConf.to_container(composed[group], resolve=True))


def job_overrides(cfg: DictConfig) -> list[str]:
    """The overrides the job was composed with (its own and `hydra.searchpath`)."""
    if "hydra" in cfg:  # composed with return_hydra_config (the up-front sweep check)
        overrides = cfg.hydra.overrides
    elif HydraConfig.initialized():  # inside the job that @hydra.main runs
        overrides = HydraConfig.get().overrides
    else:
        raise ValueError("named sources need a config composed with return_hydra_config=True")
    searchpath = [o for o in overrides.hydra if _override_key(o) == "hydra.searchpath"]
    return [*overrides.task, *searchpath]


def _override_key(override: str) -> str:
    """`imbalance` for `imbalance=x`, `+imbalance=x` or `~imbalance`; `imbalance.ratio` for its option."""
    return override.lstrip("+~").partition("=")[0]


def _compose(overrides: list[str], conf_dir: Path) -> DictConfig:
    """The composed config, inside Hydra's current initialisation (a job, the sweep check) or a
    temporary one of `conf_dir`."""
    if GlobalHydra.instance().is_initialized():
        return compose("config", overrides=overrides)
    with initialize_config_dir(str(conf_dir), version_base="1.3"):
        return compose("config", overrides=overrides)


def resolve(
    text: Any,
    cfg: DictConfig,
    job: tuple[Spec, int | str, AdversarialSettings],
    classes: tuple[str, ...] | None,
    conf_dir: Path,
) -> SourceModel:
    """The model a source name stands for, for the job (profile, target, adversarial) `job`."""
    match = NAME.match(str(text))
    if match is None or match["profile"] not in PROFILES.names():
        raise ConfigError("attack.sources", text, ALLOWED)
    profile, cls, mode = match["profile"], match["cls"], match["mode"]
    own_profile, own_target, own_adv = job
    if targeted(profile) != (cls is not None):
        need = "a class (under-3)" if targeted(profile) else "no class"
        raise ConfigError("attack.sources", text, f"profile {profile} with {need}")
    try:
        target = None if cls is None else class_index(cls, classes, "class", class_choices(classes))
    except ConfigError as err:
        raise ConfigError("attack.sources", text, f"a class that is {err.allowed}") from None
    if profile == own_profile.name:
        spec = own_profile
    else:
        options = group_options(cfg, "imbalance", profile, conf_dir, text)
        spec = PROFILES.parse("attack.sources", options.pop("name"), options)
    adversarial = own_adv
    if mode is not None and mode != own_adv.mode:
        try:  # a known mode before Hydra looks for its file: the allowed modes, not a path
            build_params(AdversarialSettings, "attack.sources", {"mode": mode})
        except ConfigError as err:
            raise ConfigError("attack.sources", text, f"a training mode: {err.allowed}") from None
        options = group_options(cfg, "adversarial", mode, conf_dir, text)
        adversarial = build_params(AdversarialSettings, "attack.sources", options)
    return SourceModel(model_name(profile, target, adversarial.mode), spec, target, adversarial)


def parse_sources(
    cfg: DictConfig,
    job: tuple[Spec, int | str, AdversarialSettings],
    classes: tuple[str, ...] | None,
    conf_dir: Path,
) -> tuple[tuple[str, ...], dict[str, SourceModel]]:
    """The job's sources in order (same, balanced, canonical names) and the named ones resolved.

    A name that is the job's own model is `same`; one that is the balanced source is `balanced`.
    """
    profile, target, adversarial = job
    own = model_name(profile.name, target, adversarial.mode)
    balanced = model_name(Source.BALANCED, None, adversarial.mode)
    entries = cfg.attack.sources
    entries = (
        list(entries) if OmegaConf.is_list(entries) or isinstance(entries, list) else [entries]
    )
    order, named = [], {}
    for text in entries:
        if text in (Source.SAME, Source.BALANCED):
            order.append(str(text))
            continue
        source = resolve(text, cfg, job, classes, conf_dir)
        if source.name == own:
            order.append(Source.SAME)
        elif source.name == balanced:  # the name starts with the profile: it is balanced
            order.append(Source.BALANCED)
        else:
            order.append(source.name)
            named[source.name] = source
    return tuple(dict.fromkeys(order)), named
