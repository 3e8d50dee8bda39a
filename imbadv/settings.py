"""Config stage: the Hydra config turned into typed, validated settings before any work starts.

No torch here: a bad value is refused in about a second, before the heavy imports."""

from __future__ import annotations

import math
import shutil
import tempfile
from dataclasses import dataclass, fields
from enum import StrEnum
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from imbadv.errors import ConfigError
from imbadv.imbalance import Profile, parse_profile

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


class Method(StrEnum):
    FGSM = "fgsm"
    BIM = "bim"


class Direction(StrEnum):
    """`ascent` raises the true label's loss (the attack); `descent` lowers it (Sec. 3.3)."""

    ASCENT = "ascent"
    DESCENT = "descent"


@dataclass(frozen=True)
class TrainSettings:
    """Paper defaults: Keras RMSprop (rho 0.9, eps 1e-7), lr 1e-4, Keras decay 1e-5, batch 32."""

    lr: float = 1e-4
    decay: float = 1e-5
    rho: float = 0.9
    eps: float = 1e-7
    batch_size: int = 32
    max_epochs: int = 100
    patience: int = 5
    precision: str = "32-true"
    channels_last: bool = True


@dataclass(frozen=True)
class AttackSpec:
    """One attack setting; `alpha`/`steps` are BIM's (None = Kurakin defaults)."""

    method: Method
    eps: float
    direction: Direction = Direction.ASCENT
    alpha: float | None = None
    steps: int | None = None

    @property
    def name(self) -> str:
        return f"{self.method}/eps={self.eps:g}/{self.direction}"


class Source(StrEnum):
    """Whose input gradient makes the adversarial images (Sec. 4.2 of the paper)."""

    SAME = "same"  # the attacked model's own gradient (white box)
    BALANCED = "balanced"  # the balanced model's gradient (transfer)


@dataclass(frozen=True)
class Settings:
    """Everything one experiment needs, checked; `target` may still be a class name for folders."""

    target: int | str
    imbalance: Profile
    seed: int
    dataset: dict[str, Any]
    majority: int
    minority: int
    val_fraction: float
    width: float
    fc: int
    train: TrainSettings
    specs: tuple[AttackSpec, ...]
    sources: tuple[Source, ...]
    attack_batch_size: int
    device: str
    jobs_per_gpu: int
    threads: int
    cache_dir: Path
    store_dir: Path
    progress: str = "lines"


def _choice(key: str, value: Any, enum: type[StrEnum]) -> StrEnum:
    try:
        return enum(value)
    except ValueError:
        raise ConfigError(key, value, [e.value for e in enum]) from None


def _as_list(value: Any) -> list:
    if OmegaConf.is_list(value) or isinstance(value, list | tuple):
        return list(value)
    return [value]


def _number(key: str, value: Any, low: float, high: float = math.inf, integer: bool = False):
    ok = isinstance(value, int | float) and not isinstance(value, bool)
    if ok and integer:
        ok = float(value).is_integer()
    if not ok or not low <= value <= high:
        kind = "an integer" if integer else "a number"
        upper = "" if high == math.inf else f" and <= {high:g}"
        raise ConfigError(key, value, f"{kind} >= {low:g}{upper}")
    return int(value) if integer else float(value)


def parse_target(value: Any, classes: tuple[str, ...] | None) -> int | str:
    """A class index, or a name looked up in `classes` (kept as a name when classes are unknown yet)."""
    if isinstance(value, bool):
        raise ConfigError("class", value, "a class index or name")
    if isinstance(value, int):
        if classes is not None and not 0 <= value < len(classes):
            raise ConfigError(
                "class", value, f"an index 0..{len(classes) - 1} or a name ({', '.join(classes)})"
            )
        return value
    name = str(value)
    if name.lstrip("-").isdigit():
        return parse_target(int(name), classes)
    if classes is None:
        return name
    if name not in classes:
        raise ConfigError(
            "class", name, f"an index 0..{len(classes) - 1} or a name ({', '.join(classes)})"
        )
    return classes.index(name)


def known_train_per_class(dataset: dict[str, Any]) -> int | None:
    """Training images per class known without reading any file (None for class folders)."""
    if dataset.get("name") == "cifar10":
        return 5000
    if dataset.get("name") == "synthetic":
        return int(dataset.get("train_per_class", 500))
    return None


def known_classes(dataset: dict[str, Any]) -> tuple[str, ...] | None:
    """Class names known without reading any file (None for class folders)."""
    if dataset.get("name") == "cifar10":
        return CIFAR10_CLASSES
    if dataset.get("name") == "synthetic":
        return tuple(f"class{i}" for i in range(int(dataset.get("num_classes", 10))))
    return None


def attack_specs(cfg: DictConfig) -> tuple[AttackSpec, ...]:
    """One spec per (method, eps) from the `attack` group, checked."""
    methods = [_choice("attack.methods", m, Method) for m in _as_list(cfg.methods)]
    eps = [_number("attack.eps", e, 0.0, 1.0) for e in _as_list(cfg.eps)]
    direction = _choice("attack.direction", cfg.direction, Direction)
    alpha = None if cfg.alpha is None else _number("attack.alpha", cfg.alpha, 0.0, 1.0)
    steps = None if cfg.steps is None else _number("attack.steps", cfg.steps, 1, integer=True)
    if not methods or not eps:
        raise ConfigError("attack.methods/eps", "[]", "at least one method and one eps")
    return tuple(AttackSpec(m, e, direction, alpha, steps) for m in methods for e in eps)


def train_settings(cfg: DictConfig) -> TrainSettings:
    """The `trainer` group as TrainSettings; unknown keys and bad numbers are refused."""
    known = {f.name for f in fields(TrainSettings)}
    unknown = set(cfg) - known
    if unknown:
        raise ConfigError(
            f"trainer.{sorted(unknown)[0]}", "?", f"a key among {', '.join(sorted(known))}"
        )
    s = TrainSettings(**OmegaConf.to_container(cfg))
    _number("trainer.lr", s.lr, 1e-12)
    _number("trainer.decay", s.decay, 0.0)
    _number("trainer.batch_size", s.batch_size, 1, integer=True)
    _number("trainer.max_epochs", s.max_epochs, 1, integer=True)
    _number("trainer.patience", s.patience, 0, integer=True)
    return s


def from_config(cfg: DictConfig) -> Settings:
    """Check every value of `cfg` and return typed Settings; raises ConfigError on the first bad one."""
    dataset = OmegaConf.to_container(cfg.dataset, resolve=True)
    if dataset.get("name") == "folder" and not Path(str(dataset.get("root"))).exists():
        raise ConfigError(
            "dataset.root",
            dataset.get("root"),
            "an existing folder with train/ and test/, or a .tar.gz of one",
        )
    have = known_train_per_class(dataset)
    if have is not None and cfg.counts.majority > have:
        raise ConfigError(
            "counts.majority",
            cfg.counts.majority,
            f"at most the {have} training images per class {dataset['name']} has",
        )
    sources = tuple(
        dict.fromkeys(_choice("attack.sources", s, Source) for s in _as_list(cfg.attack.sources))
    )
    return Settings(
        target=parse_target(cfg["class"], known_classes(dataset)),
        imbalance=parse_profile(cfg.imbalance),
        seed=_number("seed", cfg.seed, 0, 2**32 - 1, integer=True),
        dataset=dataset,
        majority=_number("counts.majority", cfg.counts.majority, 1, integer=True),
        minority=_number("counts.minority", cfg.counts.minority, 1, integer=True),
        val_fraction=_number("counts.val_fraction", cfg.counts.val_fraction, 0.0, 0.9),
        width=_number("model.width", cfg.model.width, 1e-3, 64.0),
        fc=_number("model.fc", cfg.model.fc, 1, integer=True),
        train=train_settings(cfg.trainer),
        specs=attack_specs(cfg.attack),
        sources=sources,
        attack_batch_size=_number("attack.batch_size", cfg.attack.batch_size, 1, integer=True),
        device=_device(cfg.device),
        jobs_per_gpu=_number("jobs_per_gpu", cfg.jobs_per_gpu, 1, integer=True),
        threads=_number("threads", cfg.threads, 0, integer=True),
        cache_dir=check_folder("paths.cache_dir", cfg.paths.cache_dir),
        store_dir=check_folder("paths.store_dir", cfg.paths.store_dir),
        progress=_one_of("progress", cfg.get("progress", "lines"), PROGRESS_MODES),
    )


PROGRESS_MODES = ("lines", "quiet")  # a line per epoch and per ~30 s of attacks, or none


def _one_of(key: str, value: Any, allowed: tuple[str, ...]) -> str:
    if value not in allowed:
        raise ConfigError(key, value, f"one of {', '.join(allowed)}")
    return str(value)


MIN_FREE_MB = 200  # room for a few models, results and a data cache; checked before any work


def check_folder(key: str, path: str | Path) -> Path:
    """A folder this job can write into with room to spare, or a ConfigError naming it.

    Nothing is created: the nearest existing parent is probed, so a refused run leaves no trace.
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
