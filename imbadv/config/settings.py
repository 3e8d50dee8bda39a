"""Config stage: the Hydra config turned into typed, checked settings through the registries.

No torch here: a bad value is refused in about a second, before the heavy imports.
"""

from __future__ import annotations

import functools
import math
import shutil
import tempfile
from dataclasses import dataclass, field, replace
from enum import StrEnum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from imbadv.adversarial import AdversarialSettings
from imbadv.attacks import ATTACKS, MASKING_METHODS, Direction
from imbadv.attacks.goals import check_direction, with_target_class
from imbadv.augment import AUGMENTS
from imbadv.config.sources import (
    ALLOWED,
    CheckpointSource,
    Source,
    SourceModel,
    model_name,
    parse_sources,
)
from imbadv.core.classes import class_choices, class_index
from imbadv.core.errors import ConfigError
from imbadv.core.plugins import import_plugins
from imbadv.core.registry import Spec, build_params, integer_digits, number
from imbadv.data import DATASETS
from imbadv.imbalance import PROFILES
from imbadv.models import MODELS
from imbadv.optimizers import OPTIMIZERS
from imbadv.schedules import SCHEDULES
from imbadv.training import OBJECTIVES, Recipe, TrainSettings, formats


@dataclass(frozen=True)
class AttackSpec:
    """One attack setting: a registered method with its parameters, an eps and a direction."""

    method: Spec
    eps: float
    direction: Direction = Direction.ASCENT
    target_class: int | str | None = None  # direction toward: an index (a name until resolved)

    @property
    def goal(self) -> str:
        """The direction, with the target class for `toward` (toward=5)."""
        tail = "" if self.target_class is None else f"={self.target_class}"
        return f"{self.direction}{tail}"

    @property
    def name(self) -> str:
        """Unique within a run: two settings of one method differ in their parameters."""
        return f"{self.method.label()}/eps={self.eps:g}/{self.goal}"


# A wheel carries conf/ inside the package (pyproject maps it there); a source checkout has it
# at the top level, where the user edits it.
_PACKAGED = Path(__file__).resolve().parents[1] / "conf"
CONF_DIR = _PACKAGED if _PACKAGED.is_dir() else Path(__file__).resolve().parents[2] / "conf"


@dataclass(frozen=True)
class Settings:
    """Everything one experiment needs, checked; `target` may still be a class name for folders."""

    target: int | str | None
    dataset: Spec
    imbalance: Spec
    model: Spec
    objective: Spec
    train: TrainSettings
    seed: int
    val_fraction: float
    specs: tuple[AttackSpec, ...]
    sources: tuple[str, ...]  # same, balanced, or canonical names of the sweep's models
    attack_batch_size: int
    device: str
    jobs_per_gpu: int
    threads: int
    cache_dir: Path
    store_dir: Path
    adversarial: AdversarialSettings = AdversarialSettings()  # mode none: standard training
    attack_images: str = "target"  # target: the target class's test images | all: every class
    per_class: int | None = None  # with all: a seeded class-stratified subset of N per class
    # auto | on | off: sources' images crafted in one stacked call (docs/transfer.md); how images
    # are made, never what they are, so no store key holds it
    attack_stack: str = "auto"
    progress: str = "lines"  # lines: one per epoch and ~30 s of attacks | quiet
    named_sources: dict = field(default_factory=dict)  # name -> SourceModel | CheckpointSource
    recipe: Recipe = field(default_factory=Recipe)  # optimizer, schedule, augmentation
    # names of the margin-loss PGD settings added to `specs` for the gradient-masking check
    # (masking_twins): the job logs them once
    masking_twins: tuple[str, ...] = ()
    # trainer.precision/channels_last as asked and as trained, and who chose (training/formats.py)
    formats: dict = field(default_factory=dict)


def _as_list(value: Any) -> list:
    if OmegaConf.is_list(value) or isinstance(value, list | tuple):
        return list(value)
    return [value]


def _number(key: str, value: Any, low: float, high: float = math.inf, integer: bool = False):
    """`value` checked against [low, high]; an integer field takes integers only (1e9 is a float:
    it would be recorded as 1000000000.0 in the job's config)."""
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    kind = "an integer" if integer else "a number"
    upper = "" if high == math.inf else f" and <= {number(high)}"
    if ok and integer and isinstance(value, float):
        raise ConfigError(key, value, integer_digits(value, f" >= {number(low)}{upper}"))
    if not ok or not low <= value <= high:
        raise ConfigError(key, value, f"{kind} >= {number(low)}{upper}")
    return int(value) if integer else float(value)


def _choice(key: str, value: Any, enum: type[StrEnum]) -> StrEnum:
    try:
        return enum(value)
    except ValueError:
        raise ConfigError(key, value, [e.value for e in enum]) from None


def component(cfg: Any, key: str, registry) -> Spec:
    """A config group `{name: ..., <options>}` checked against its registry."""
    options = OmegaConf.to_container(cfg, resolve=True) if OmegaConf.is_config(cfg) else dict(cfg)
    return registry.parse(key, options.pop("name", None), options)


def parse_target(value: Any, classes: tuple[str, ...] | None) -> int | str:
    """A class index, or a name looked up in `classes` (kept as a name when classes are unknown)."""
    return class_index(value, classes, "class", class_choices(classes))


def attack_specs(cfg: DictConfig) -> tuple[AttackSpec, ...]:
    """One spec per (method setting, eps) from the `attack` group, checked."""
    methods = []
    for item in _as_list(cfg.methods):
        item = OmegaConf.to_container(item) if OmegaConf.is_config(item) else item
        options = dict(item) if isinstance(item, dict) else {"name": item}
        methods.append(ATTACKS.parse("attack.methods", options.pop("name", None), options))
    eps = [_number("attack.eps", e, 0.0, 1.0) for e in _as_list(cfg.eps)]
    direction = _choice("attack.direction", cfg.direction, Direction)
    target_class = cfg.get("target_class")
    for m in methods:
        check_direction(m.name, direction, target_class)
    if not methods or not eps:
        raise ConfigError("attack.methods/eps", "[]", "at least one method and one eps")
    specs = tuple(AttackSpec(m, e, direction, target_class) for m in methods for e in eps)
    names = [s.name for s in specs]
    for name in names:
        if names.count(name) > 1:
            raise ConfigError("attack.methods", name, "each method setting once")
    return specs


def masking_twins(specs: tuple[AttackSpec, ...]) -> tuple[AttackSpec, ...]:
    """The margin-loss twins missing beside `specs`' cross-entropy PGD settings, each once.

    Why: `masking_gap` and half of the `gradient_masking` flag (imbadv.metrics) compare PGD-CE
    with PGD-margin at one source, eps and direction; without the margin run the check is
    silently empty, and adversarially trained models are where gradient masking is expected
    (RoBal, CVPR 2021, Sec. 3.3). A twin is the CE setting (pgd or pgd_l2: same steps, alpha,
    restarts, random start, eps, direction, target) with `loss: margin` and logit_scale 1: a
    positive logit scale leaves the margin's step unchanged (sign or L2-normalized gradient),
    so a CE setting on logits x10 shares the plain setting's twin. A margin setting already
    there with the same other parameters is the twin: nothing is added for it. Appended after
    `specs` by the caller, so every existing setting keeps its name, store key and images.
    """

    def core(spec: AttackSpec) -> tuple:  # what a twin shares: all but the loss and the scale
        params = spec.method.params.resolved(spec.eps)  # alpha None and its value are one
        rest = tuple(sorted((k, v) for k, v in params.items() if k not in ("loss", "logit_scale")))
        return spec.method.name, spec.eps, spec.direction, spec.target_class, rest

    pgd = [x for x in specs if x.method.name in MASKING_METHODS]
    have = {core(x) for x in pgd if x.method.params.loss == "margin"}
    added: dict[str, AttackSpec] = {}
    for x in pgd:
        if x.method.params.loss == "ce" and core(x) not in have:
            params = replace(x.method.params, loss="margin", logit_scale=1.0)
            twin = replace(x, method=replace(x.method, params=params))
            added.setdefault(twin.name, twin)
    return tuple(added.values())


def trains_adversarially(adversarial: AdversarialSettings, named: dict) -> bool:
    """Whether any model the job trains or takes gradients from is adversarially trained: its own
    (and the balanced one, trained the same way) or a named source of the sweep (`exp+pgd_at`).
    A checkpoint file's training is unknown: it does not count."""
    trained = [adversarial] + [x.adversarial for x in named.values() if isinstance(x, SourceModel)]
    return any(x.on for x in trained)


def job_specs(
    cfg: DictConfig,
    adversarial: AdversarialSettings,
    named: dict,
    classes: tuple[str, ...] | None,
    target: int | str,
) -> dict[str, Any]:
    """The job's attack settings (`specs`), with the margin twins an adversarially trained model
    gets for the gradient-masking check (docs/attacks.md, "Gradient masking") after the listed
    ones, and their names (`masking_twins`); a standard-only job runs what it lists."""
    specs = attack_specs(cfg)
    twins = masking_twins(specs) if trains_adversarially(adversarial, named) else ()
    return {
        "specs": with_target_class(specs + twins, classes, target),
        "masking_twins": tuple(x.name for x in twins),
    }


def attack_images(cfg: DictConfig) -> dict[str, Any]:
    """Which test images are attacked: `images` target | all, `per_class` N (only with all)."""
    images, per_class = cfg.get("images", "target"), cfg.get("per_class")
    if images not in ("target", "all"):
        raise ConfigError("attack.images", images, "target or all")
    if per_class is not None:
        if images != "all":
            raise ConfigError("attack.per_class", per_class, "null unless attack.images=all")
        per_class = _number("attack.per_class", per_class, 1, integer=True)
    return {"attack_images": images, "per_class": per_class}


def from_config(cfg: DictConfig) -> Settings:
    """Check every value of `cfg` and return typed Settings; raises ConfigError on the first bad one."""
    import_plugins(cfg)
    dataset = component(cfg.dataset, "dataset", DATASETS)
    for key in ("majority", "minority"):
        _number(f"counts.{key}", cfg.counts[key], 1, integer=True)
    imbalance = component(cfg.imbalance, "imbalance", PROFILES)
    target = parse_target(cfg["class"], dataset.params.known_classes())
    val_fraction = _number("counts.val_fraction", cfg.counts.val_fraction, 0.0, 0.9)
    check_counts(dataset, imbalance, target, val_fraction)
    adversarial = adversarial_settings(cfg)
    classes = dataset.params.known_classes()
    seed = _number("seed", cfg.seed, 0, 2**32 - 1, integer=True)  # `@seed+K` sources read it
    job = (imbalance, target, adversarial)
    sources, named = parse_sources(cfg, job, classes, CONF_DIR, seed)
    train = build_params(
        TrainSettings, "trainer", OmegaConf.to_container(cfg.trainer, resolve=True)
    )
    recipe = recipe_settings(cfg, train, dataset)
    objective = component(cfg.objective, "objective", OBJECTIVES)
    check_objective(objective, adversarial)
    model = component(cfg.model, "model", MODELS)
    check_head(model, adversarial)
    check_logger(cfg.get("logger"))
    device = _device(cfg.device)
    store_dir = check_folder("paths.store_dir", cfg.paths.store_dir)
    train, formats = train_formats(train, model, device, store_dir, "cluster" in cfg)
    return Settings(
        target=target,
        dataset=dataset,
        imbalance=imbalance,
        model=model,
        objective=objective,
        train=train,
        recipe=recipe,
        seed=seed,
        val_fraction=val_fraction,
        **job_specs(cfg.attack, adversarial, named, dataset.params.known_classes(), target),
        sources=sources,
        named_sources=named,
        attack_batch_size=_number("attack.batch_size", cfg.attack.batch_size, 1, integer=True),
        device=device,
        jobs_per_gpu=_number("jobs_per_gpu", cfg.jobs_per_gpu, 1, integer=True),
        threads=_number("threads", cfg.threads, 0, integer=True),
        cache_dir=check_folder("paths.cache_dir", cfg.paths.cache_dir),
        store_dir=store_dir,
        formats=formats,
        adversarial=adversarial,
        **attack_images(cfg.attack),
        attack_stack=_one_of("attack.stack", cfg.attack.get("stack", "auto"), STACK_MODES),
        progress=_one_of("progress", cfg.get("progress", "lines"), PROGRESS_MODES),
    )


def train_formats(
    train: TrainSettings, model: Spec, device: str, store: Path, cluster: bool
) -> tuple[TrainSettings, dict]:
    """trainer.precision and channels_last with `auto` replaced by the bench's measured choice
    (imbadv.training.formats), and the model record's note of it. A cluster launch composes its
    jobs away from their devices, so there `auto` is the default, the same on both sides."""
    key = formats.entry_key(model.name, getattr(model.params, "width", None), train.batch_size)
    if cluster:
        why = "a cluster launch is composed away from its GPUs; set the measured values explicitly"
        return formats.resolve(train, key, None, {}, why)
    auto = "auto" in (train.precision, train.channels_last)
    table = formats.read_table(store / formats.FILE) if auto else {}
    return formats.resolve(train, key, formats.device_name(device) if table else None, table)


def recipe_settings(cfg: DictConfig, train: TrainSettings, dataset: Spec) -> Recipe:
    """The `optimizer`, `schedule` and `augment` groups (absent: the paper's), checked together
    with what they depend on: the schedule against trainer.max_epochs, the padding against the
    image side when the data set tells it before loading."""
    paper = Recipe()
    parts = {}
    for key, registry in (
        ("optimizer", OPTIMIZERS),
        ("schedule", SCHEDULES),
        ("augment", AUGMENTS),
    ):
        group = cfg.get(key)
        parts[key] = getattr(paper, key) if group is None else component(group, key, registry)
    recipe = Recipe(**parts)
    recipe.schedule.params.check_epochs("schedule", train.max_epochs)
    side = dataset.params.known_image_size()
    if side is not None:
        recipe.augment.params.check_image("augment", side)
    return recipe


def check_objective(objective: Spec, adversarial: AdversarialSettings) -> None:
    """A method that brings its own loss (AT-BSL's balanced softmax) takes objective=ce only."""
    if not adversarial.facts.uses_objective and objective.name != "ce":
        allowed = f"ce with adversarial={adversarial.mode} (the method brings its own loss)"
        raise ConfigError("objective", objective.name, allowed)


def check_head(model: Spec, adversarial: AdversarialSettings) -> None:
    """A method built on a cosine classifier (RoBal) trains a model with model.head=cosine."""
    need = adversarial.facts.head
    if need != "any" and getattr(model.params, "head", None) != need:
        allowed = f"{need} with adversarial={adversarial.mode} (its loss is on cosine outputs)"
        raise ConfigError("model.head", getattr(model.params, "head", None), allowed)


def adversarial_settings(cfg: DictConfig) -> AdversarialSettings:
    """The `adversarial` group (absent = standard training), checked."""
    options = cfg.get("adversarial")
    options = OmegaConf.to_container(options, resolve=True) if options is not None else {}
    return AdversarialSettings.parse("adversarial", options)


def check_counts(
    dataset: Spec, imbalance: Spec, target: int | str, val_fraction: float = 0.0
) -> None:
    """Counts the profile asks for, against what the data set has (when known without loading)."""
    from imbadv.imbalance.split import class_counts  # numpy, no torch

    have = dataset.params.known_train_counts()
    if have is not None and isinstance(target, int):
        class_counts(list(have), imbalance, target, val_fraction)


def check_logger(logger: Any) -> None:
    """The logger options a job acts on without W&B's help (`logger.artifacts`: a yes or a no)."""
    artifacts = (logger or {}).get("artifacts", False)
    if not isinstance(artifacts, bool):
        raise ConfigError("logger.artifacts", artifacts, "true or false")


PROGRESS_MODES = ("lines", "quiet")  # a line per epoch and per ~30 s of attacks, or none
STACK_MODES = ("auto", "on", "off")  # attack.stack: auto = on a CUDA device only


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(key, value, f"one of {', '.join(allowed)}")
    return str(value)


MIN_FREE_MB = 200  # room for a few models, results and a data cache; checked before any work


@functools.cache
def check_folder(key: str, path: str | Path) -> Path:
    """A folder this job can write into with room to spare, or a ConfigError naming it.

    Nothing is created: the nearest existing parent is probed, so a refused run leaves no trace.
    Cached per (key, path): a sweep's jobs share their folders.
    """
    path = Path(path)
    parent = next((p for p in (path, *path.absolute().parents) if p.exists()), Path("/"))
    if not parent.is_dir():
        raise ConfigError(key, path, f"a folder, but {parent} is a file")
    try:
        with tempfile.TemporaryFile(dir=parent):
            pass
    except OSError as err:
        raise ConfigError(key, path, f"a writable folder ({parent}: {err.strerror})") from None
    free_mb = shutil.disk_usage(parent).free // 2**20
    if free_mb < MIN_FREE_MB:
        raise ConfigError(key, path, f"a folder with >= {MIN_FREE_MB} MB free ({free_mb} MB left)")
    return path


def _device(value: Any) -> str:
    text = str(value)
    if text in ("auto", "cpu", "cuda") or (text.startswith("cuda:") and text[5:].isdigit()):
        return text
    raise ConfigError("device", value, "auto, cpu, cuda or cuda:N")


def with_names(s: Settings) -> dict[str, str]:
    """Source -> canonical model name for settings `s` (`same` is the job's own model)."""
    mode = s.adversarial.mode
    names = {
        Source.SAME: model_name(s.imbalance.name, s.target, mode),
        Source.BALANCED: model_name(Source.BALANCED, None, mode),
    }
    for name, source in s.named_sources.items():  # another seed's: under-3@seed+1 for same@seed+1
        names[name] = getattr(source, "model", "") or name
    return {src: names.get(src, src) for src in s.sources}


def check_sweep(jobs: list[Settings]) -> None:
    """Every named source of every job is a model some job of the sweep trains (one line if not);
    a checkpoint file is no job's model: it is loaded, its file checked when the job was composed.

    `jobs` are the sweep's Settings; a job trains its own model and, with `balanced` among its
    sources, the balanced one. Names compare across seeds: each seed's source is that seed's model.
    """
    trained = set()
    for s in jobs:
        trained.add(model_name(s.imbalance.name, s.target, s.adversarial.mode))
        if Source.BALANCED in s.sources:
            trained.add(model_name(Source.BALANCED, None, s.adversarial.mode))
    for s in jobs:
        for name, source in s.named_sources.items():
            # another seed's model (`over-3@seed+1`) is trained by the job itself: the name
            # before `@` is checked, as a typo in it would be without the suffix
            base = name.partition("@")[0]
            if base in (Source.SAME, Source.BALANCED):
                continue
            if base not in trained and not isinstance(source, CheckpointSource):  # files: loaded
                have = ", ".join(sorted(trained))
                raise ConfigError("attack.sources", name, f"{ALLOWED}; this sweep trains: {have}")


def source_settings(s: Settings, source: SourceModel) -> Settings:
    """The job's settings with the source's profile, class, training mode and seed."""
    seed = s.seed if source.seed is None else source.seed
    return replace(
        s,
        imbalance=source.profile,
        target=source.target,
        adversarial=source.adversarial,
        seed=seed,
    )
