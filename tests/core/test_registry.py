"""The registries' contract: one implementation per name, typed facts, implementations located up
front without torch, and YAML defaults equal to the Params defaults."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
import textwrap
from typing import Literal

import pytest
from conftest import ROOT, run_cli
from omegaconf import OmegaConf

from imbadv.adversarial import ADVERSARIAL
from imbadv.attacks import ALL_DIRECTIONS, ATTACKS, AttackFacts, Direction, FGSMParams
from imbadv.core.errors import ConfigError
from imbadv.core.registry import (
    UNKEYED,
    Params,
    Registry,
    RegistryError,
    bounds,
    build_params,
    convert,
    integer_digits,
    number,
    params_key,
)
from imbadv.data import DATASETS
from imbadv.imbalance import PROFILES
from imbadv.models import MODELS, ModelFacts, VGGParams
from imbadv.training import OBJECTIVES, ObjectiveParams, TrainSettings

CONF = ROOT / "conf"
GROUPS = {"dataset": DATASETS, "imbalance": PROFILES, "model": MODELS, "objective": OBJECTIVES}
LINF = {"norm": "Linf", "directions": ALL_DIRECTIONS}


def test_a_name_registered_twice_is_refused_naming_both_implementations():
    before = ATTACKS.entries["fgsm"]
    with pytest.raises(RegistryError) as err:
        ATTACKS.add("fgsm", FGSMParams, "my_imbadv:fgsm", "mine", **LINF)
    assert str(err.value) == (
        "attack.methods fgsm is registered twice: imbadv.attacks.gradient_sign:fgsm_attack and "
        "my_imbadv:fgsm (pass replace=True to replace the first)"
    )
    assert ATTACKS.entries["fgsm"] is before  # the built-in stays


def test_replace_true_replaces_and_the_same_line_again_is_harmless():
    attacks = Registry("attack.methods", AttackFacts)
    attacks.add("fgsm", FGSMParams, "imbadv.attacks.gradient_sign:fgsm_attack", **LINF)
    attacks.add("fgsm", FGSMParams, "imbadv.attacks.gradient_sign:fgsm_attack", **LINF)  # reload
    attacks.add(
        "fgsm", FGSMParams, "my_imbadv:fgsm", replace=True, norm="L2", directions=["ascent"]
    )
    entry = attacks.entries["fgsm"]
    assert entry.target == "my_imbadv:fgsm" and entry.facts.norm == "L2"
    assert entry.facts.directions == (Direction.ASCENT,) and not entry.facts.targeted


@pytest.mark.parametrize(
    "facts, message",
    [
        ({"norm": "Linf", "direction": ALL_DIRECTIONS}, "unknown fact direction (facts: norm, directions, reuses_gradient, draws)"),
        ({"norm": "Linf"}, "missing fact directions (declare directions)"),
        ({"directions": ALL_DIRECTIONS}, "missing fact norm (declare norm)"),
        ({**LINF, "norm": "linf"}, "fact norm='linf' is not allowed: expected one of Linf, L2"),
        ({**LINF, "directions": ("sideways",)}, "fact directions='sideways' is not allowed: expected one of ascent, descent, least_likely, toward"),
        ({**LINF, "directions": ()}, "fact directions=() is not allowed: expected a non-empty tuple"),
        ({**LINF, "reuses_gradient": "yes"}, "fact reuses_gradient='yes' is not allowed: expected bool"),
        ({**LINF, "draws": 0}, "fact draws=0 is not allowed: expected bool"),
    ],
)  # fmt: skip
def test_a_wrong_fact_fails_at_registration_in_one_line(facts, message):
    attacks = Registry("attack.methods", AttackFacts)
    with pytest.raises(RegistryError) as err:
        attacks.add("noise", FGSMParams, "my_imbadv:noise", "doc", **facts)
    assert str(err.value) == f"attack.methods noise: {message}"
    assert "noise" not in attacks.entries


def test_every_axis_declares_its_facts():
    assert PROFILES.entries["under"].facts.targeted and not PROFILES.entries["exp"].facts.targeted
    assert DATASETS.entries["folder"].facts.identity == "source"
    assert DATASETS.entries["cifar10"].facts.identity == "options"
    assert ATTACKS.entries["pgd_l2"].facts.norm == "L2" and ATTACKS.entries["pgd"].facts.targeted
    assert ATTACKS.entries["autoattack"].facts.directions == (Direction.ASCENT,)
    # only the attacks that draw no random start are crafted stacked (docs/transfer.md)
    assert sorted(n for n, e in ATTACKS.entries.items() if not e.facts.draws) == [
        "bim",
        "fgsm",
        "mifgsm",
    ]
    assert all(e.facts.takes_width for e in MODELS.entries.values())
    with pytest.raises(RegistryError, match="unknown fact targeted .facts: none on this axis"):
        OBJECTIVES.add("mine", ObjectiveParams, "my_imbadv:mine", targeted=False)


def test_a_model_fact_that_contradicts_its_parameters_is_refused():
    @dataclasses.dataclass(frozen=True)
    class NoWidth(Params):
        hidden: int = 8

    models = Registry("model", ModelFacts)
    with pytest.raises(
        RegistryError, match=r"^model mlp: fact takes_width=True but NoWidth has no field width$"
    ):
        models.add("mlp", NoWidth, "my_imbadv:mlp", takes_width=True)
    with pytest.raises(RegistryError, match=r"takes_width=False but VGGParams has field width$"):
        models.add("vgg2", VGGParams, "imbadv.models.vgg:build", takes_width=False)


def test_every_builtin_implementation_is_located_without_importing_torch():
    code = textwrap.dedent(
        """
        import sys
        import imbadv.config.settings
        from imbadv.run import ATTACKS, DATASETS, MODELS, OBJECTIVES, PROFILES
        for registry in (ATTACKS, DATASETS, MODELS, OBJECTIVES, PROFILES):
            for entry in registry.entries.values():
                entry.locate(registry.axis)
        assert "torch" not in sys.modules, "locating imported torch"
        """
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr[-2000:]


@pytest.mark.parametrize(
    "target, missing",
    [
        ("imbadv.attacks.gradient_sign:fgsm_atack", "imbadv.attacks.gradient_sign defines no fgsm_atack"),
        ("imbadv.attacks.gradient_sgn:fgsm_attack", "no module imbadv.attacks.gradient_sgn"),
        ("no_such_package.sub:f", "no module no_such_package.sub"),
    ],
)  # fmt: skip
def test_an_implementation_that_cannot_be_found_is_one_line(target, missing):
    attacks = Registry("attack.methods", AttackFacts)
    attacks.add("typo", FGSMParams, target, **LINF)
    with pytest.raises(ConfigError) as err:
        attacks.entries["typo"].locate("attack.methods")
    assert str(err.value) == (
        f"attack.methods=typo is not allowed: expected an implementation that exists "
        f"({target}: {missing})"
    )


PLUGIN = '''
"""A plug-in with a misspelt implementation path."""
from imbadv.attacks import ALL_DIRECTIONS, ATTACKS, FGSMParams

def noise(model, x, y, eps, p, *, direction, generator, target=None):
    return x

ATTACKS.add("noise", FGSMParams, "typo_plugin:nosie", norm="Linf", directions=ALL_DIRECTIONS)
'''


def test_the_sweep_check_refuses_a_misspelt_implementation_before_any_work(tmp_path):
    (tmp_path / "typo_plugin.py").write_text(PLUGIN)
    args = ["experiment=smoke", "plugins=[typo_plugin]", "attack.methods=[fgsm,noise]"]
    proc = run_cli([*args, "hydra.run.dir=out"], tmp_path, env={"PYTHONPATH": _path(tmp_path)})
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "imbadv: error: attack.methods=noise is not allowed: expected an implementation that "
        "exists (typo_plugin:nosie: typo_plugin defines no nosie)"
    )
    assert not (tmp_path / "out").exists()


def test_a_plugin_that_breaks_the_contract_is_refused_as_a_plugin(tmp_path):
    text = PLUGIN.replace("norm=", "nrom=")
    (tmp_path / "typo_plugin.py").write_text(text)
    proc = run_cli(
        ["experiment=smoke", "plugins=[typo_plugin]"], tmp_path, env={"PYTHONPATH": _path(tmp_path)}
    )
    assert proc.returncode == 2
    assert proc.stderr.strip() == (
        "imbadv: error: plugins=typo_plugin is not allowed: expected a module that registers "
        "cleanly (attack.methods noise: unknown fact nrom (facts: norm, directions, reuses_gradient, draws))"
    )


def _path(folder) -> str:
    import os

    return os.pathsep.join([str(folder), *filter(None, [os.environ.get("PYTHONPATH")])])


def literal_defaults(path, params: type[Params]) -> list[tuple[str, object, object]]:
    """(key, YAML value, Params default) for every literal value of a YAML that differs.

    Interpolations (`${counts.majority}`: the job's counts) and `???` (required) set no default.
    """
    raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
    declared = {f.name: f for f in dataclasses.fields(params)}
    differ = []
    for key, value in raw.items():
        if key in ("name", "mode") or (
            isinstance(value, str) and ("${" in value or value == "???")
        ):
            continue
        assert key in declared, f"{path.name}: {key} is not a parameter of {params.__name__}"
        default = declared[key].default
        if value == "auto" and declared[key].metadata.get("auto_default"):
            continue  # resolved before keying; the default is what `auto` gives unmeasured
        if (tuple(value) if isinstance(value, list) else value) != default:
            differ.append((key, value, default))
    return differ


def yaml_files():
    for group, registry in GROUPS.items():
        for name, entry in registry.entries.items():
            path = CONF / group / f"{name}.yaml"
            if path.is_file():
                yield pytest.param(path, entry.params, id=f"{group}/{name}")
    for path in sorted((CONF / "adversarial").glob("*.yaml")):  # named by `mode`
        params = ADVERSARIAL.get("adversarial", OmegaConf.load(path).mode).params
        yield pytest.param(path, params, id=f"adversarial/{path.stem}")
    yield pytest.param(CONF / "trainer" / "paper.yaml", TrainSettings, id="trainer/paper")


@pytest.mark.parametrize("path, params", list(yaml_files()))
def test_a_yaml_holds_the_params_defaults(path, params):
    assert literal_defaults(path, params) == []
    conf = OmegaConf.load(path)
    assert conf.get("name", conf.get("mode", path.stem)) == path.stem


def test_the_defaults_check_sees_a_drifted_default(tmp_path):
    drifted = tmp_path / "bim.yaml"
    drifted.write_text("name: pgd\nsteps: 20\nloss: ce\n")
    assert literal_defaults(drifted, ATTACKS.entries["pgd"].params) == [("steps", 20, 10)]


@dataclasses.dataclass(frozen=True)
class Toy(Params):
    steps: int = dataclasses.field(default=10, metadata=bounds(1, 100))
    rate: float = dataclasses.field(default=0.5, metadata=bounds(0, open_low=True))
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = (1,)
    root: str | None = dataclasses.field(default=None, metadata=UNKEYED)


def test_only_changed_and_keyed_parameters_enter_the_key_and_the_label():
    registry = Registry("toy")
    registry.add("toy", Toy, "math:sqrt", "a toy")
    default = registry.parse("toy", "toy", {"root": "/somewhere"})  # a location is not identity
    assert default.key() == {"name": "toy"} and default.label() == "toy"
    spec = registry.parse("toy", "toy", {"steps": 3, "mode": "b"})
    assert spec.key() == {"name": "toy", "params": {"steps": 3, "mode": "b"}}
    assert params_key(spec.params) == {"steps": 3, "mode": "b"}
    assert spec.label() == "toy(mode=b,steps=3)"
    assert registry.names() == ["toy"]


@pytest.mark.parametrize(
    ("options", "key", "expected"),
    [
        ({"steps": 0}, "t.steps", "an integer >= 1 and <= 100"),
        ({"rate": 0}, "t.rate", "a number > 0"),
        ({"steps": 2.5}, "t.steps", "an integer"),
        ({"steps": 1e9}, "t.steps", "an integer written in digits (1000000000)"),
        ({"mode": "c"}, "t.mode", "one of a, b"),
        ({"speed": 1}, "t.speed", "a known option (mode, rate, root, sizes, steps)"),
        ({"steps": True}, "t.steps", "an integer"),
    ],
)
def test_build_params_converts_and_checks_each_value(options, key, expected):
    with pytest.raises(ConfigError) as err:
        build_params(Toy, "t", options)
    assert err.value.key == key and err.value.allowed == expected


def test_values_are_converted_to_their_declared_types():
    p = build_params(Toy, "t", {"rate": 2, "sizes": [3, 4], "steps": 5})
    assert (p.rate, p.sizes, p.steps) == (2.0, (3, 4), 5) and isinstance(p.rate, float)
    assert convert("k", None, int | None) is None and convert("k", 7, tuple[int, ...]) == (7,)


def test_numbers_read_as_a_reader_types_them():
    assert (number(4294967295.0), number(64.0), number(0.001)) == ("4294967295", "64", "0.001")
    assert integer_digits(2.5) == "an integer" and integer_digits(3.0, " >= 1").endswith("(3)")


def test_params_off_the_axis_base_are_refused_naming_the_base_and_what_they_lack():
    from imbadv.imbalance import ProfileFacts, ProfileParams
    from imbadv.optimizers import OptimizerParams

    @dataclasses.dataclass(frozen=True)
    class HalvesParams(Params):
        head: int = 100

    @dataclasses.dataclass(frozen=True)
    class NoLr(Params):
        momentum: float = 0.9

    profiles = Registry("imbalance", ProfileFacts, ProfileParams)
    with pytest.raises(RegistryError) as refused:
        profiles.add("halves", HalvesParams, "my_imbadv:halves", targeted=False)
    assert str(refused.value) == (
        "imbalance halves: params "
        f"{HalvesParams.__qualname__} must derive from imbadv.imbalance.ProfileParams; "
        "it lacks balanced_count"
    )
    optimizers = Registry("optimizer", base=OptimizerParams)
    with pytest.raises(
        RegistryError, match=r"derive from imbadv.optimizers.OptimizerParams; it lacks lr$"
    ):
        optimizers.add("mine", NoLr, "my_imbadv:mine")

    @dataclasses.dataclass(frozen=True)
    class Halves(ProfileParams):
        head: int = 100

    profiles.add("halves", Halves, "my_imbadv:halves", targeted=False)  # on the base: taken
    assert profiles.names() == ["halves"]


def test_every_builtin_registry_holds_its_axis_base():
    from imbadv.augment import AUGMENTS
    from imbadv.optimizers import OPTIMIZERS
    from imbadv.schedules import SCHEDULES

    registries = (DATASETS, PROFILES, MODELS, ATTACKS, OBJECTIVES, OPTIMIZERS, SCHEDULES, AUGMENTS)
    for registry in registries:
        assert registry.base is not Params, registry.axis
        assert all(issubclass(e.params, registry.base) for e in registry.entries.values())
    assert all(
        "lr" in {f.name for f in dataclasses.fields(e.params)} for e in OPTIMIZERS.entries.values()
    )
