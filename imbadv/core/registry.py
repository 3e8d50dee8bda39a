"""Registries: a component name -> its validated parameter dataclass -> a lazily imported function.

Torch-free on purpose: the config layer checks every name and option through these before any
heavy import, and a function is imported only when a job runs it. Names, never import paths, go
into configs and store keys.
"""

from __future__ import annotations

import ast
import dataclasses
import enum
import importlib
import importlib.machinery
import importlib.util
import math
import sys
import types
import typing
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from imbadv.core.errors import ConfigError, ImbadvError


@dataclass(frozen=True)
class Params:
    """Base of every component's parameters: frozen fields with defaults, checked in `check`.

    Subclasses declare bounds as field metadata: `field(default=1, metadata=bounds(1))`.
    """

    def check(self, key: str) -> None:
        """Raise ConfigError for a value outside its declared bounds; subclasses add their own rules."""
        hints = typing.get_type_hints(type(self))
        for f in fields(self):
            low, high = f.metadata.get("low"), f.metadata.get("high")
            value = getattr(self, f.name)
            if value is None or low is None:
                continue
            open_low, open_high = f.metadata.get("open_low"), f.metadata.get("open_high")
            if (
                not low <= value <= high
                or (open_low and value == low)
                or (open_high and value == high)
            ):
                kind = "an integer" if _integer(hints[f.name]) else "a number"
                bound = "> " if open_low else ">= "
                upper = (
                    "" if high == math.inf else f" and {'<' if open_high else '<='} {number(high)}"
                )
                raise ConfigError(f"{key}.{f.name}", value, f"{kind} {bound}{number(low)}{upper}")


def number(x: float) -> str:
    """A bound as a reader types it: 4294967295 and 64, not 4.29497e+09 and 64.0; 0.001."""
    return str(int(x)) if math.isfinite(x) and float(x).is_integer() else f"{x:g}"


def _integer(hint: Any) -> bool:
    """Whether a field's type is int (or int | None)."""
    return hint is int or int in typing.get_args(hint) and float not in typing.get_args(hint)


def bounds(
    low: float, high: float = math.inf, open_low: bool = False, open_high: bool = False
) -> dict[str, Any]:
    """Field metadata for a numeric parameter: low <= value <= high (an end excluded if open)."""
    return {"low": low, "high": high, "open_low": open_low, "open_high": open_high}


@dataclass(frozen=True)
class Facts:
    """What the rest of imbadv relies on about a component, declared in its registry line.

    Each axis subclasses this (attacks: norm and directions; profiles: targeted; ...). A field
    without a default is a fact every component must declare; `check` may hold facts against
    the component's parameters.
    """

    def check(self, where: str, params: type[Params]) -> None:
        """Raise RegistryError when a fact contradicts the parameters (e.g. `width`)."""


@dataclass(frozen=True)
class Entry:
    """One registered component: name, parameter type, implementation ("module:function"), facts."""

    name: str
    params: type[Params]
    target: str
    doc: str = ""
    facts: Facts = Facts()

    def load(self) -> Callable[..., Any]:
        """Import the implementation now (this is where torch gets imported)."""
        module, _, attr = self.target.partition(":")
        return getattr(importlib.import_module(module), attr)

    def locate(self, key: str) -> None:
        """Refuse an implementation that cannot be found, without importing it (no torch)."""
        module, _, attr = self.target.partition(":")
        try:
            spec = importlib.util.find_spec(module)
        except (ImportError, ValueError):  # a parent package that is missing
            spec = None
        if spec is None:
            missing = f"no module {module}"
        elif not _defines(spec, attr):
            missing = f"{module} defines no {attr}"
        else:
            return
        raise ConfigError(
            key, self.name, f"an implementation that exists ({self.target}: {missing})"
        )


def _defines(spec: importlib.machinery.ModuleSpec, attr: str) -> bool:
    """Whether the module of `spec` has `attr` at top level: read from its source, not imported."""
    if spec.name in sys.modules:
        return hasattr(sys.modules[spec.name], attr)
    if not spec.origin or not spec.origin.endswith(".py"):
        return True  # compiled or namespace: only an import can tell
    names = set()
    for node in ast.parse(Path(spec.origin).read_text()).body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef | ast.ClassDef):
            names.add(node.name)
        elif isinstance(node, ast.Assign | ast.AnnAssign):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names.update(t.id for t in targets if isinstance(t, ast.Name))
        elif isinstance(node, ast.Import | ast.ImportFrom):
            names.update((a.asname or a.name).split(".")[0] for a in node.names)
    return bool({attr, "*", "__getattr__"} & names)


class RegistryError(ImbadvError):
    """A registry line that breaks the axis's contract (a name twice, a fact missing or mistyped)."""


class Registry:
    """The components of one extension axis (data sets, profiles, models, attacks, objectives)."""

    def __init__(self, axis: str, facts: type[Facts] = Facts, base: type[Params] = Params) -> None:
        self.axis = axis
        self.facts = facts
        self.base = base  # every component's params derive from it: the axis's contract
        self.entries: dict[str, Entry] = {}

    def add(
        self,
        name: str,
        params: type[Params],
        target: str,
        doc: str = "",
        *,
        replace: bool = False,
        **facts: Any,
    ) -> None:
        """Register `name` with the axis's facts; a user's module may call this too.

        A name already registered to another implementation is refused unless `replace=True`.
        """
        where = f"{self.axis} {name}"
        if not dataclasses.is_dataclass(params) or not issubclass(params, Params):
            raise RegistryError(f"{where}: params must be a Params dataclass, not {params!r}")
        if not issubclass(params, self.base):
            raise RegistryError(f"{where}: {breach(params, self.base)}")
        if ":" not in target:
            raise RegistryError(f"{where}: target must be 'module:function', not {target}")
        old = self.entries.get(name)
        if old is not None and old.target != target and not replace:
            raise RegistryError(
                f"{where} is registered twice: {old.target} and {target} "
                "(pass replace=True to replace the first)"
            )
        checked = make_facts(self.facts, where, facts)
        checked.check(where, params)
        self.entries[name] = Entry(name, params, target, doc, checked)

    def names(self) -> list[str]:
        return sorted(self.entries)

    def get(self, key: str, name: Any) -> Entry:
        """The entry for `name`, or a ConfigError listing the registered names."""
        if str(name) not in self.entries:
            raise ConfigError(key, name, f"one of {', '.join(self.names())}")
        return self.entries[str(name)]

    def parse(self, key: str, name: Any, options: Mapping[str, Any] | None) -> Spec:
        """Check `options` against `name`'s parameters: unknown keys and bad values are refused."""
        entry = self.get(key, name)
        params = build_params(entry.params, f"{key}", dict(options or {}))
        return Spec(entry.name, params, self.axis)


def breach(params: type[Params], base: type[Params]) -> str:
    """Why `params` breaks an axis's contract: the base it must derive from, what it lacks."""
    given = {f.name for f in fields(params)} | set(dir(params))
    offered = [f.name for f in fields(base)] + [
        n for n, v in vars(base).items() if callable(v) and not n.startswith("_")
    ]
    lacks = [n for n in offered if n not in given]
    name = f"{base.__module__}.{base.__qualname__}"
    missing = f"; it lacks {', '.join(lacks)}" if lacks else ""
    return f"params {params.__qualname__} must derive from {name}{missing}"


@dataclass(frozen=True)
class Spec:
    """A chosen component: its registered name and checked parameters."""

    name: str
    params: Params
    axis: str = ""

    def key(self) -> dict[str, Any]:
        """What enters store keys: the name and every parameter that differs from its default.

        A new parameter whose default keeps the existing behaviour therefore changes no stored key.
        Changing an existing default changes what a key means: bump FORMAT_VERSION then.
        """
        changed = params_key(self.params)
        return {"name": self.name, **({"params": changed} if changed else {})}

    def label(self) -> str:
        """`name` or `name(k=v,...)` with the non-default parameters: unique within a run."""
        changed = self.key().get("params", {})
        inner = ",".join(f"{k}={_short(v)}" for k, v in sorted(changed.items()))
        return f"{self.name}({inner})" if inner else self.name

    def load(self, registry: Registry) -> Callable[..., Any]:
        return registry.get(self.axis, self.name).load()


def params_key(params: Params) -> dict[str, Any]:
    """The parameters that differ from their defaults, less those marked `unkeyed` (locations)."""
    return {
        f.name: getattr(params, f.name)
        for f in fields(params)
        if not f.metadata.get("unkeyed") and getattr(params, f.name) != _default(f)
    }


# field metadata: where or how, not what a thing is (a data root, trainer.group)
UNKEYED = {"unkeyed": True}
# field metadata: a config may say `auto`, resolved before any key is made; the default is what
# `auto` gives when nothing decides otherwise (trainer.precision: imbadv/training/formats.py)
AUTO_DEFAULT = {"auto_default": True}


def make_facts(cls: type[Facts], where: str, given: dict[str, Any]) -> Facts:
    """`cls(**given)` with each fact checked against its declared type; one line if not."""
    declared = {f.name: f for f in fields(cls)}
    unknown = sorted(set(given) - set(declared))
    if unknown:
        allowed = ", ".join(declared) or "none on this axis"
        raise RegistryError(f"{where}: unknown fact {unknown[0]} (facts: {allowed})")
    missing = [
        n for n, f in declared.items() if n not in given and _default(f) is dataclasses.MISSING
    ]
    if missing:
        raise RegistryError(f"{where}: missing fact {missing[0]} (declare {', '.join(missing)})")
    hints = typing.get_type_hints(cls)
    return cls(**{k: _fact(f"{where}: fact {k}", v, hints[k]) for k, v in given.items()})


def _fact(where: str, value: Any, hint: Any) -> Any:
    """`value` as fact type `hint`: a Literal, bool, str, an Enum or a tuple of one of these."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is tuple:
        if isinstance(value, str) or not _is_seq(value) or not value:
            raise RegistryError(f"{where}={value!r} is not allowed: expected a non-empty tuple")
        return tuple(_fact(where, v, args[0]) for v in value)
    if origin is typing.Literal:
        allowed = args
    elif isinstance(hint, type) and issubclass(hint, enum.Enum):
        allowed = tuple(hint)
    elif hint in (bool, str) and isinstance(value, hint):
        return value
    else:
        raise RegistryError(f"{where}={value!r} is not allowed: expected {hint.__name__}")
    if value not in allowed:
        names = ", ".join(str(a) for a in allowed)
        raise RegistryError(f"{where}={value!r} is not allowed: expected one of {names}")
    return hint(value) if isinstance(hint, type) else value


def _default(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return dataclasses.MISSING


def _short(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def build_params(cls: type[Params], key: str, options: dict[str, Any]) -> Params:
    """`cls(**options)` with each value converted to its declared type and checked."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for name in options:
        if name not in known:
            allowed = ", ".join(sorted(known)) or "none"
            raise ConfigError(f"{key}.{name}", options[name], f"a known option ({allowed})")
    values = {name: convert(f"{key}.{name}", value, hints[name]) for name, value in options.items()}
    params = cls(**values)
    params.check(key)
    return params


def convert(key: str, value: Any, hint: Any) -> Any:
    """`value` as type `hint` (int, float, bool, str, a Literal, a tuple, or X | None)."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return convert(key, value, inner[0]) if len(inner) == 1 else value
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(key, value, f"one of {', '.join(str(a) for a in args)}")
        return value
    if origin is tuple:
        items = list(value) if isinstance(value, list | tuple) or _is_seq(value) else [value]
        return tuple(convert(key, v, args[0]) for v in items)
    return _scalar(key, value, hint)


def integer_digits(value: float, within: str = "") -> str:
    """What to write instead of a float (1e9, 3.0, 2.5) where an integer `within` is asked for."""
    if math.isfinite(value) and value.is_integer():
        return f"an integer{within} written in digits ({int(value)})"
    return f"an integer{within}"


def _is_seq(value: Any) -> bool:
    return hasattr(value, "__iter__") and not isinstance(value, str | bytes | Mapping)


def _scalar(key: str, value: Any, hint: Any) -> Any:
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise ConfigError(key, value, "true or false")
    if hint in (int, float):
        ok = isinstance(value, int | float) and not isinstance(value, bool)
        if not ok or (isinstance(value, float) and math.isnan(value)):
            raise ConfigError(key, value, "an integer" if hint is int else "a number")
        if hint is int and isinstance(value, float):
            raise ConfigError(key, value, integer_digits(value))
        return hint(value)
    if hint is str:
        if isinstance(value, str | int):
            return str(value)
        raise ConfigError(key, value, "a name")
    return value
