"""Gradient sources by name: `same`, `balanced`, any model of the sweep (`under-3`, `exp+fast_fgsm`),
or a checkpoint file (`checkpoint:FILE`, `{checkpoint: FILE, arch: resnet18, ...}`).

A model of a sweep is named `<profile>[-<class>][+<training mode>]`: the class only for profiles
that have a target class (under, over), the training mode only when it is adversarial. A named
source is the attacked job's own setting (data, model, objective, trainer, seed) with that
profile, class and training mode; its profile's options are the job's own when the job has that
profile, else those a job of the same command with `imbalance=<name>` gets: Hydra composes the
job's own overrides (search path and plugins included) with it. Without `+mode` a source trains
as the job does, like `balanced`. A checkpoint source is loaded, never trained: its file is
checked here (exists, readable, a supported format) without torch. Any source but a file may
name another seed's model (`balanced@seed+1`: a baseline across seeds; imbadv.core.seeds).
No torch here.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from omegaconf import DictConfig, OmegaConf

from imbadv.adversarial import ADVERSARIAL, AdversarialSettings
from imbadv.core.classes import class_choices, class_index
from imbadv.core.errors import ConfigError
from imbadv.core.registry import Spec
from imbadv.core.seeds import seeded, split_seed
from imbadv.imbalance import PROFILES, targeted


class Source(StrEnum):
    """The paper's gradient sources (Sec. 4.2); any model of the sweep may be one too (by name)."""

    SAME = "same"  # the attacked model's own gradient (white box)
    BALANCED = "balanced"  # the balanced model's gradient (transfer); the balanced profile's name


NAME = re.compile(r"^(?P<profile>[A-Za-z_]\w*)(?:-(?P<cls>[^+]+))?(?:\+(?P<mode>[A-Za-z_]\w*))?$")
ALLOWED = (
    "same, balanced, a model of the sweep: <profile>[-<class>][+<mode>], e.g. under-3, "
    "or a file: checkpoint:FILE; any but a file at another seed: <source>@seed=N or @seed+K"
)
CHECKPOINT = "checkpoint"  # `checkpoint:FILE`, or a mapping {checkpoint: FILE, <option>: ...}
FILE_OPTIONS = ("arch", "arch_params", "width", "normalize", "trust")  # model=checkpoint's options


@dataclass(frozen=True)
class SourceModel:
    """A named source resolved for one job: the model its gradient comes from."""

    name: str  # canonical: under-3, balanced+fast_fgsm
    profile: Spec
    target: int | str | None  # None for a profile without a target class
    adversarial: AdversarialSettings
    seed: int | None = None  # another seed's model (`@seed=N`, `@seed+K`); None: the job's seed
    model: str = ""  # the rows' `source_model` when it is not `name`: under-3@seed+1
    control: bool = False  # the balanced control of `profile`, as `balanced` (its count needs data)


@dataclass(frozen=True)
class CheckpointSource:
    """A checkpoint file as a gradient source: loaded (never trained), keyed by its sha256."""

    name: str  # canonical: checkpoint:<the path as given>
    text: str  # the entry as written, for one-line errors when the job loads the file
    params: Any  # imbadv.models.CheckpointParams: how the file is read


def is_checkpoint_source(name: str) -> bool:
    """Whether a canonical source name is a checkpoint file's (`checkpoint:FILE`)."""
    return str(name).startswith(f"{CHECKPOINT}:")


def checkpoint_source(text: Any, cfg: DictConfig) -> CheckpointSource | None:
    """The checkpoint an entry names (`checkpoint:FILE` or `{checkpoint: FILE, arch: ...}`), its file
    checked; None for any other entry. A weights file without `arch` is read with the job's own
    architecture (`model=vgg` and its options, or `model.arch` of a `model=checkpoint` job)."""
    from imbadv.models import MODELS  # no torch: the registry and the file checks
    from imbadv.models.files import WEIGHTS, checkpoint_format

    if OmegaConf.is_dict(text) or isinstance(text, dict):
        options = dict(
            OmegaConf.to_container(text, resolve=True) if OmegaConf.is_dict(text) else text
        )
        shown = "{" + ",".join(f"{k}:{v}" for k, v in options.items()) + "}"
        if CHECKPOINT not in options or set(options) - {CHECKPOINT, *FILE_OPTIONS}:
            need = f"a mapping {{checkpoint: FILE}} with options among {', '.join(FILE_OPTIONS)}"
            raise ConfigError("attack.sources", shown, need)
        path = str(options.pop(CHECKPOINT))
    elif is_checkpoint_source(text):
        options, shown, path = {}, str(text), str(text)[len(CHECKPOINT) + 1 :]
    else:
        return None
    try:
        fmt = checkpoint_format(path)
        if fmt in WEIGHTS and "arch" not in options:
            options |= job_architecture(cfg)
        params = MODELS.parse("attack.sources", CHECKPOINT, {"path": path, **options}).params
    except ConfigError as err:
        raise as_source_error(err, shown) from None
    return CheckpointSource(f"{CHECKPOINT}:{path}", shown, params)


def job_architecture(cfg: DictConfig) -> dict[str, Any]:
    """The job's architecture as checkpoint options (arch, arch_params, width)."""
    from imbadv.models import MODELS

    options = dict(OmegaConf.to_container(cfg.model, resolve=True))
    name = options.pop("name", None)
    if name == CHECKPOINT:
        return {k: options.get(k) for k in ("arch", "arch_params", "width") if k in options}
    entry = MODELS.get("model", name)
    width = options.pop("width", None) if entry.facts.takes_width else None
    return {
        "arch": name,
        "arch_params": options or None,
        **({"width": width} if width is not None else {}),
    }


def as_source_error(err: ConfigError, shown: str) -> ConfigError:
    """A checkpoint's refusal (on `model.path`, `attack.sources.arch`, ...) as one on its entry."""
    option = err.key.rpartition(".")[2]
    what = err.allowed if option in ("path", "sources") else f"{option}: {err.allowed}"
    return ConfigError("attack.sources", shown, what)


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
            ADVERSARIAL.get("attack.sources", mode)
        except ConfigError as err:
            raise ConfigError("attack.sources", text, f"a training mode: {err.allowed}") from None
        options = group_options(cfg, "adversarial", mode, conf_dir, text)
        adversarial = AdversarialSettings.parse("attack.sources", options)
    return SourceModel(model_name(profile, target, adversarial.mode), spec, target, adversarial)


def seed_source(
    text: str,
    cfg: DictConfig,
    job: tuple[Spec, int | str, AdversarialSettings],
    classes: tuple[str, ...] | None,
    conf_dir: Path,
    seed: int,
) -> SourceModel:
    """Another seed's model (`balanced@seed+1`), for a job of seed `seed`: the model that seed's
    own job trains. Named `balanced@...` when it is the job's balanced model (in a balanced job
    too, so one name finds the baseline in every job), `same@...` when the job's own, else by
    its model's name; the suffix as written, so `@seed+K` reads alike in every seed's rows."""
    base, suffix = split_seed(text, seed)
    profile, target, adversarial = job
    own = model_name(profile.name, target, adversarial.mode)
    balanced = model_name(Source.BALANCED, None, adversarial.mode)
    if base in (Source.SAME, Source.BALANCED):
        source = SourceModel(own if base == Source.SAME else balanced, profile, target, adversarial)
    else:
        try:
            source = resolve(base, cfg, job, classes, conf_dir)
        except ConfigError as err:  # refused on the whole entry, its suffix included
            raise ConfigError("attack.sources", text, err.allowed) from None
    if source.name == balanced:  # as `balanced`: the control of the job's own profile
        source = SourceModel(balanced, profile, target, adversarial, control=True)
    # balanced last: in a balanced job (own == balanced) the entry is `balanced@...`
    kind = {own: Source.SAME, balanced: Source.BALANCED}.get(source.name, source.name)
    return replace(
        source, name=f"{kind}{suffix}", seed=suffix.seed(seed), model=f"{source.name}{suffix}"
    )


def parse_sources(
    cfg: DictConfig,
    job: tuple[Spec, int | str, AdversarialSettings],
    classes: tuple[str, ...] | None,
    conf_dir: Path,
    seed: int,
) -> tuple[tuple[str, ...], dict[str, SourceModel]]:
    """The job's sources in order (same, balanced, canonical names) and the named ones resolved
    (SourceModel, or CheckpointSource for a file), for a job of seed `seed`.

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
        if seeded(text):  # another seed's model: never the job's own, never `balanced` itself
            source = seed_source(text, cfg, job, classes, conf_dir, seed)
            order.append(source.name)
            named[source.name] = source
            continue
        if isinstance(text, str) and text in (Source.SAME, Source.BALANCED):
            order.append(str(text))
            continue
        file = checkpoint_source(text, cfg)
        if file is not None:  # each file counts once: its first entry says how it is read
            order.append(file.name)
            named.setdefault(file.name, file)
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
