"""GPU check, the grouping and compile paths: grouped = alone, grouped AT, compiled steps."""

from __future__ import annotations

from imbadv.bench.checks import GRADIENT_RTOL, GRID, SGD, TOY, Check, CheckFailed, Skipped, records


def sweep(check: Check, name: str, group: str) -> str:
    check.job(name, [*TOY, *SGD, *GRID, f"trainer.group={group}"], multirun=True)
    models = records(check.out / f"{name}-store")
    grouped = sum(bool(r.get("grouped")) for r in models.values())
    return f"4 jobs, {len(models)} models ({grouped} grouped), trainer.group={group}"


def sweep_on_vs_off(check: Check) -> str:
    """trainer.group=on gives the models group=off gives: same keys, weights within rounding."""
    return same_models(check, STORES)


def same_models(check: Check, stores: tuple[str, str]) -> str:
    """The second store's grouped models are the first's: same keys, weights within rounding."""
    from safetensors.torch import load_file

    off, on = (records(check.out / store) for store in stores)
    if set(off) != set(on):
        raise CheckFailed(f"other store keys grouped: {sorted(set(off) ^ set(on))}")
    if not any(r.get("grouped") for r in on.values()):
        raise CheckFailed("no model was trained grouped with trainer.group=on")
    worst = (0.0, 0.0, 0.0)  # (bulk, largest, bound) of the model with the largest bulk
    for key, record in on.items():
        a, b = (load_file(check.out / s / "models" / f"{key}.safetensors") for s in stores)
        steps = record["epochs"] * -(-sum(record["train_counts"]) // 64)  # smoke: batch 64
        bound = 0.01 * steps * GRADIENT_RTOL[check.device] * 10 / (1 - 0.9)
        bulk, largest = weight_gap(a, b)
        if bulk > bound or largest > FLIP_FACTOR * bound:
            raise CheckFailed(
                f"grouped weights differ from alone: 99.9% within {bulk:.3g}, largest "
                f"{largest:.3g} (allowed {bound:.3g} and {FLIP_FACTOR * bound:.3g})"
            )
        worst = max(worst, (bulk, largest, bound))
    return f"{len(on)} models: same keys, 99.9% of weights within {worst[0]:.2g} (bound {worst[2]:.2g}), largest {worst[1]:.2g}"  # fmt: skip


# Rounding can flip a ReLU whose input is within rounding of 0: that unit's few weights then move
# by one sample's share of a step (measured: 4 of 63,234 weights by 1.4 bounds, threads=1 against
# threads=2 alone, the same as grouped against alone). A real divergence (a missed step, another
# batch) moves all weights by lr x a gradient: so the bound holds for 99.9% of the weights, and
# the few flipped ones may reach FLIP_FACTOR times it.
FLIP_FACTOR = 10.0


def weight_gap(a: dict, b: dict) -> tuple[float, float]:
    """The 99.9th percentile and the largest |a - b| over all weights of two state dicts."""
    import torch

    gap = torch.cat([(a[n].float() - b[n].float()).abs().flatten() for n in a])
    k = max(1, int(round(0.999 * gap.numel())))
    return float(gap.kthvalue(k).values), float(gap.max())


STORES = ("sweep-off-store", "sweep-on-store")


# two under members of one size trained as one adversarial group (with adversarial=<mode>)
GROUPED_AT = [*TOY, "class=0..1", "imbalance=under", "attack.sources=[same]"]
GROUPED_AT += ["adversarial.steps=2", "trainer.group=on"]


def grouped_at(check: Check) -> str:
    check.job("grouped-at", [*GROUPED_AT, "adversarial=pgd_at"], True)
    models = records(check.out / "grouped-at-store")
    if not any(r.get("grouped") for r in models.values()):
        raise CheckFailed("pgd_at members were not trained grouped")
    return f"pgd_at, {len(models)} members trained as one group"


def compiled_grouped_at(check: Check) -> str:
    """The grouped-at sweep under TRADES with trainer.compile=on: the inner attack and the outer
    step compiled (on CUDA captured; TRADES holds clean logits over the ascent, the case where a
    graph's reused output memory would show), every member grouped and compiled."""
    if check.device == "cpu":
        raise Skipped("inductor on a CPU: tests/grouped/test_grouped_compiled.py runs it")
    check.job("compile-grouped-at", [*GROUPED_AT, "adversarial=trades", "trainer.compile=on"], True)
    models = records(check.out / "compile-grouped-at-store")
    fallen = [r.get("compile_fallback") for r in models.values() if not r.get("compiled")]
    if fallen or not models or not all(r.get("grouped") for r in models.values()):
        raise CheckFailed(f"not all trained grouped and compiled: {fallen[:1]}")
    return f"trades, {len(models)} members grouped and compiled"


def compiled(check: Check) -> str:
    if check.device == "cpu":
        raise Skipped(
            "inductor compiles for minutes on a CPU; tests/training/test_compiled.py runs it"
        )
    check.job("compile", [*TOY, "class=0", "imbalance=balanced", "attack.sources=[same]", "trainer.compile=on"])  # fmt: skip
    (record,) = records(check.out / "compile-store").values()
    if not record.get("compiled"):
        raise CheckFailed(f"fell back to eager: {record.get('compile_fallback')}")
    return "trainer.compile=on: compiled"


def compiled_grouped(check: Check) -> str:
    """trainer.compile=on with trainer.group=on: the static-shape compiled step (captured on
    CUDA), its models the first sweep's within rounding."""
    if check.device == "cpu":
        raise Skipped("inductor on a CPU: tests/grouped/test_grouped_compiled.py runs it")
    args = [*TOY, *SGD, *GRID, "trainer.group=on", "trainer.compile=on"]
    check.job("compile-grouped", args, multirun=True)
    models = records(check.out / "compile-grouped-store").values()
    fallen = [r.get("compile_fallback") for r in models if r.get("grouped") and not r["compiled"]]
    if fallen:
        raise CheckFailed(f"grouped training fell back to eager: {fallen[0]}")
    return "compiled: " + same_models(check, ("sweep-off-store", "compile-grouped-store"))
