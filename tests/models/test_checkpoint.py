"""model=checkpoint: a model imbadv trained, saved in every supported format and evaluated from
the file, gives the stored model's rows; bad files are refused in one line (exit 2)."""

from __future__ import annotations

import copy
import json
import os
import shutil
import zipfile
from pathlib import Path

import pytest
import torch
from conftest import TINY, run_cli
from safetensors.torch import load_file, save_file
from torch import nn

from imbadv.data.base import DataCard
from imbadv.models import VGGParams
from imbadv.models.vgg import build

JOB = [*TINY, "class=0", "imbalance=balanced", "attack.sources=[same]", "logger=none"]
WIDTH = 0.125  # experiment=smoke's model.width


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> dict:
    """One smoke model trained by imbadv, its results, and the model rebuilt from the store."""
    base = tmp_path_factory.mktemp("ckpt")
    proc = run_cli(
        [*JOB, f"paths.store_dir={base / 'store'}", f"hydra.run.dir={base / 'job'}"], base
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((base / "job" / "results.json").read_text())
    key = results["models"]["target"]["key"]
    card = results["meta"]["card"]
    card = DataCard(**{**card, "classes": tuple(card["classes"]), "mean": tuple(card["mean"]), "std": tuple(card["std"])})  # fmt: skip
    model = build(card, VGGParams(width=WIDTH)).eval()
    model.load_state_dict(load_file(base / "store" / "models" / f"{key}.safetensors"))
    return {"base": base, "results": results, "model": model, "card": card, "key": key}


def checkpoint_job(base: Path, *args: str, multirun: bool = False, run_dir: str = "single"):
    out = ["hydra.sweep.dir=sweep"] if multirun else [f"hydra.run.dir={run_dir}"]
    flags = ["-m"] if multirun else []
    return run_cli([*flags, *JOB, f"paths.store_dir={base / 'store'}", *out, "model=checkpoint", *args], base)  # fmt: skip


def sample(card: DataCard, n: int = 4) -> torch.Tensor:
    return torch.rand(n, card.channels, card.image_size, card.image_size)


def numbers(results: dict) -> dict:
    """What must not change when the same weights come from a file: accuracies and confusion."""
    rows = {
        (r["source"], r["attack"]): [r[k] for k in ("n", "clean_acc", "adv_acc", "clean_row", "adv_row")]
        for r in results["attacks"]
    }  # fmt: skip
    clean = results["models"]["target"]["clean"]
    return {"rows": rows, "acc": clean["acc"], "confusion": clean["confusion"]}


@pytest.mark.slow
def test_every_format_gives_the_stored_models_rows(trained):
    base, model, card = trained["base"], trained["model"], trained["card"]
    stored = base / "store" / "models" / f"{trained['key']}.safetensors"
    shutil.copy(stored, base / "weights.safetensors")
    # a state dict as DataParallel saves it, wrapped as Lightning does: both unwrapped on load
    state = {f"module.{k}": v for k, v in model.state_dict().items()}
    torch.save({"state_dict": state, "epoch": 3}, base / "state.pt")
    torch.jit.save(torch.jit.trace(model, sample(card)), base / "scripted.pt")
    batch = torch.export.Dim("batch", min=1, max=4096)
    program = torch.export.export(model, (sample(card),), dynamic_shapes=({0: batch},))
    torch.export.save(program, base / "exported.pt2")
    files = ["weights.safetensors", "state.pt", "scripted.pt", "exported.pt2"]
    proc = checkpoint_job(base, f"model.path={','.join(files)}", "model.arch=vgg", multirun=True)
    assert proc.returncode == 0, proc.stderr[-3000:]
    expected = numbers(trained["results"])
    assert expected["acc"] > 0.3 and any(r[1] > 0 for r in expected["rows"].values())  # learnt
    found = {}
    for path in (base / "sweep").glob("*/results.json"):
        results = json.loads(path.read_text())
        found[results["models"]["target"]["checkpoint"]["file"]] = results
    assert sorted(found) == sorted(files)
    for name, results in found.items():
        assert numbers(results) == expected, name
        entry = results["models"]["target"]["checkpoint"]
        assert entry["file"] == name and entry["sha256"] == _sha256(base / name)
        assert results["models"]["target"]["key"] != trained["key"]  # keyed by the file
        assert f"checkpoint {name} sha256 {entry['sha256'][:16]}" in proc.stdout
    trainings = (base / "store" / "trainings.jsonl").read_text().splitlines()
    assert len(trainings) == 1  # the checkpoints were never trained


def _sha256(path: Path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_files_are_refused_up_front_in_one_line(trained):
    base = trained["base"]
    (base / "notes.txt").write_text("not a model\n")
    shutil.copy(base / "store" / "models" / f"{trained['key']}.safetensors", base / "w.safetensors")
    torch.jit.save(torch.jit.trace(trained["model"], sample(trained["card"])), base / "ts.pt")
    cases = {
        "missing.pt": ["model.path=missing.pt"],
        "notes.txt": ["model.path=notes.txt"],
        "w.safetensors": ["model.path=w.safetensors"],  # weights only: the arch is needed
        "ts.pt": [
            "model.path=ts.pt",
            "imbalance=under",
            "attack.sources=[same,balanced]",
        ],  # nothing to train with
    }
    lines = {
        "missing.pt": "model.path=missing.pt is not allowed: expected an existing file (no such file)",
        "notes.txt": "model.path=notes.txt is not allowed: expected a checkpoint in one of the formats safetensors, torch.save (a state dict), TorchScript or torch.export (.pt2)",
        "w.safetensors": "model.arch=None is not allowed: expected the architecture of the weights in w.safetensors (safetensors holds weights only): one of preact_resnet18, resnet18, vgg, wrn",
        "ts.pt": "attack.sources=balanced is not allowed: expected same only: imbadv trains the other models of a checkpoint job with model.arch (give model.arch=<name>, or attack.sources=[same])",
    }  # fmt: skip
    for name, args in cases.items():
        proc = checkpoint_job(base, *args)
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        assert proc.stderr.strip() == f"imbadv: error: {lines[name]}", name
        assert not (base / "single").exists()  # refused before any job folder


def test_misfit_weights_name_the_first_missing_unexpected_key_and_shape(trained):
    base = trained["base"]
    state = dict(trained["model"].state_dict())
    state["features.0.w"] = state.pop("features.0.weight")
    state["classifier.1.weight"] = state["classifier.1.weight"][:, :8]
    save_file({k: v.contiguous() for k, v in state.items()}, base / "misfit.safetensors")
    proc = checkpoint_job(base, "model.path=misfit.safetensors", "model.arch=vgg")
    assert proc.returncode == 2, proc.stderr[-2000:]
    want = tuple(trained["model"].state_dict()["classifier.1.weight"].shape)
    shape = tuple(state["classifier.1.weight"].shape), want
    assert proc.stderr.strip() == (
        "imbadv: error: model.path=misfit.safetensors is not allowed: expected weights that fit "
        "vgg(width=0.125) (missing features.0.weight; unexpected features.0.w; "
        f"classifier.1.weight is {shape[0]} in the file, {shape[1]} in the architecture)"
    )
    assert "images made" not in proc.stdout + proc.stderr  # refused before any attack


def test_an_output_that_is_not_one_logit_per_class_is_refused(trained):
    base, card = trained["base"], trained["card"]
    three = nn.Sequential(nn.Flatten(), nn.Linear(card.channels * card.image_size**2, 3))
    torch.jit.save(torch.jit.trace(three, sample(card)), base / "three.pt")
    proc = checkpoint_job(base, "model.path=three.pt")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
        "imbadv: error: model.path=three.pt is not allowed: expected a model whose output is "
        "(N, 10) for the data set's 10 classes (it gives (2, 3) for N=2)"
    )


class Payload:
    """A pickle that runs code when loaded: what weights_only must never unpickle."""

    def __reduce__(self):
        return (os.mkdir, ("pwned",))


def test_a_pickle_that_needs_code_is_refused_and_never_run(trained):
    base = trained["base"]
    torch.save({"state_dict": trained["model"].state_dict(), "hook": Payload()}, base / "evil.pt")
    proc = checkpoint_job(base, "model.path=evil.pt", "model.arch=vgg")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
        "imbadv: error: model.path=evil.pt is not allowed: expected a checkpoint that loads as "
        "data (it needs code execution to unpickle posix.mkdir); pass model.trust=true only if "
        "you trust it"
    )
    assert not (base / "pwned").exists()


def test_an_exported_program_with_a_code_pickle_inside_is_refused(trained, tmp_path, monkeypatch):
    """torch.export.load unpickles sample inputs without restriction: imbadv screens them first."""
    from imbadv.core.errors import ConfigError
    from imbadv.models import MODELS
    from imbadv.models.checkpoint import load

    card, good = trained["card"], tmp_path / "good.pt2"
    torch.export.save(torch.export.export(trained["model"], (sample(card),)), good)
    evil = tmp_path / "evil.pt2"
    torch.save(Payload(), tmp_path / "payload.pt")
    with zipfile.ZipFile(good) as src, zipfile.ZipFile(evil, "w") as dst:
        for item in src.infolist():
            inputs = item.filename.endswith("sample_inputs/model.pt")
            dst.writestr(item, (tmp_path / "payload.pt").read_bytes() if inputs else src.read(item))
    monkeypatch.chdir(tmp_path)
    params = MODELS.parse("model", "checkpoint", {"path": str(evil)}).params
    with pytest.raises(ConfigError, match=r"it needs code execution to unpickle posix.mkdir"):
        load(card, params)
    assert not (tmp_path / "pwned").exists()
    ok = MODELS.parse("model", "checkpoint", {"path": str(good)}).params
    assert load(card, ok)[1] == "pt2"


def source_job(base: Path, run_dir: str, *args: str):
    """A job of the smoke model's settings on under-0, its gradient sources given by `args`."""
    store = f"paths.store_dir={base / 'store'}"
    job = [a for a in JOB if not a.startswith(("imbalance=", "attack.sources="))]
    return run_cli([*job, "imbalance=under", store, f"hydra.run.dir={run_dir}", *args], base)


def test_a_checkpoint_file_is_a_gradient_source_like_the_stored_model(trained):
    """`attack.sources=[...,checkpoint:FILE]`: the file's gradient attacks the job's own model; with
    the stored balanced model's weights in the file, its rows are the `balanced` source's rows."""
    base = trained["base"]
    shutil.copy(
        base / "store" / "models" / f"{trained['key']}.safetensors", base / "src.safetensors"
    )
    torch.jit.save(torch.jit.trace(trained["model"], sample(trained["card"])), base / "src_ts.pt")
    sources = "attack.sources=[same,balanced,checkpoint:src.safetensors,{checkpoint:src_ts.pt}]"
    proc = source_job(base, "from_file", sources)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads((base / "from_file" / "results.json").read_text())
    rows = {}
    for r in results["attacks"]:
        if (
            r["role"] == "target"
        ):  # the job's own model (under-0) attacked with each source's images
            assert r["model"] == "under-0"
            rows.setdefault(r["source"], {})[r["attack"]] = [
                r[k] for k in ("n", "clean_acc", "adv_acc", "clean_row", "adv_row", "max_abs_delta")
            ]
    names = ["checkpoint:src.safetensors", "checkpoint:src_ts.pt"]
    assert sorted(rows) == sorted(["same", "balanced", *names])
    assert len(rows["balanced"]) == 2  # FGSM and BIM
    assert rows["balanced"] != rows["same"]  # the sources differ: the rows say whose gradient
    for name in names:
        assert rows[name] == rows["balanced"], name
        assert next(r for r in results["attacks"] if r["source"] == name)["source_model"] == name
    # the balanced source is the model the fixture stored, the files never trained
    assert results["models"]["balanced"]["key"] == trained["key"]
    for name, file in zip(names, ["src.safetensors", "src_ts.pt"], strict=True):
        entry = results["models"][name]
        assert entry["checkpoint"]["file"] == file
        assert entry["checkpoint"]["sha256"] == _sha256(base / file)
        assert entry["key"] != trained["key"] and entry["epochs"] == 0
        assert entry["clean"] == results["models"]["balanced"]["clean"]
        assert results["meta"]["trained_here"][name] is False
        assert f"checkpoint {file} sha256 {entry['checkpoint']['sha256'][:16]}" in proc.stdout
    assert (
        results["models"]["checkpoint:src.safetensors"]["checkpoint"]["arch"] == "vgg(width=0.125)"
    )
    trainings = (base / "store" / "trainings.jsonl").read_text().splitlines()
    assert len(trainings) == 2  # the fixture's balanced model and this job's under-0


def test_a_bad_checkpoint_source_is_refused_in_one_line(trained):
    base = trained["base"]
    (base / "notes.txt").write_text("not a model\n")
    shutil.copy(base / "store" / "models" / f"{trained['key']}.safetensors", base / "w.safetensors")
    trainings = (base / "store" / "trainings.jsonl").read_text()
    refused = "imbadv: error: attack.sources={} is not allowed: expected {}"
    cases = {  # before any job starts: no job folder, nothing loaded
        "checkpoint:missing.pt": "an existing file (no such file)",
        "checkpoint:notes.txt": "a checkpoint in one of the formats safetensors, torch.save (a state dict), TorchScript or torch.export (.pt2)",
        "{checkpoint:w.safetensors,depth:3}": "a mapping {checkpoint: FILE} with options among arch, arch_params, width, normalize, trust",
    }  # fmt: skip
    for entry, allowed in cases.items():
        proc = source_job(base, "refused", "imbalance=over", f"attack.sources=[same,{entry}]")
        assert proc.returncode == 2, (entry, proc.stderr[-2000:])
        assert proc.stderr.strip() == refused.format(entry, allowed), entry
        assert not (base / "refused").exists()
    # weights that do not fit the architecture: refused when the job loads the file, before it
    # trains its own model (over-0, in no store yet)
    entry = "{checkpoint:w.safetensors,arch:resnet18}"
    proc = source_job(base, "refused", "imbalance=over", f"attack.sources=[same,{entry}]")
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = proc.stderr.strip()  # an arch given: none of the job's options
    assert line == refused.format(
        entry, "weights that fit resnet18 (missing stem.weight; unexpected classifier.1.bias)"
    )
    assert (base / "store" / "trainings.jsonl").read_text() == trainings  # nothing trained
    assert not list((base / "refused").glob("results.json"))


def test_not_finite_names_the_first_tensors_with_their_counts():
    from imbadv.models.checkpoint import not_finite

    nan, inf = float("nan"), float("inf")
    tensors = {
        "features.0.weight": torch.full((8, 3, 3, 3), nan),
        "features.0.bias": torch.zeros(8),  # finite: not named
        "steps": torch.zeros(1, dtype=torch.long),  # integers are always finite
        "classifier.3.bias": torch.tensor([inf, -inf, 0.0, 1.0]),
        "mixed": torch.tensor([nan, inf], dtype=torch.float16),
        "partly": torch.tensor([nan, 1.0, inf]),
        "last": torch.tensor([nan]),
    }
    assert not_finite(tensors) == (
        "features.0.weight (all 216 NaN), classifier.3.bias (2 inf), mixed (all 2: 1 NaN and 1 inf)"
        " and 2 more"
    )
    assert not_finite(tensors, shown=5).endswith("partly (1 NaN and 1 inf), last (all 1 NaN)")
    assert not_finite({k: v for k, v in tensors.items() if k in ("features.0.bias", "steps")}) == ""


def _broken(model: nn.Module) -> nn.Module:
    """`model` with its first convolution all NaN and two biases of its last layer infinite."""
    with torch.no_grad():
        model.features[0].weight.fill_(float("nan"))
        model.classifier[3].bias[:2] = float("inf")
    return model


def test_every_format_refuses_weights_that_are_not_finite(tmp_path, monkeypatch):
    """safetensors, a wrapped and prefixed state dict, TorchScript and a .pt2 program alike."""
    from imbadv.core.errors import ConfigError
    from imbadv.models import MODELS
    from imbadv.models.checkpoint import load

    card = DataCard(("a",) * 10, 3, 32, (0.5,) * 3, (0.25,) * 3)
    model, x = _broken(build(card, VGGParams(width=WIDTH)).eval()), sample(card, 2)
    state = model.state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, tmp_path / "w.safetensors")
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, tmp_path / "s.pt")
    torch.jit.save(torch.jit.trace(model, x), tmp_path / "ts.pt")
    torch.export.save(torch.export.export(model, (x,)), tmp_path / "p.pt2")
    monkeypatch.chdir(tmp_path)
    named = "features.0.weight (all 216 NaN), classifier.3.bias (2 inf)"
    for name in ("w.safetensors", "s.pt", "ts.pt", "p.pt2"):
        arch = {} if name in ("ts.pt", "p.pt2") else {"arch": "vgg", "width": WIDTH}
        params = MODELS.parse("model", "checkpoint", {"path": name, **arch}).params
        with pytest.raises(ConfigError) as refused:
            load(card, params)
        line = str(refused.value)
        assert line == f"model.path={name} is not allowed: expected finite weights (not finite: {named})"  # fmt: skip


def _cut_files(base: Path, state: dict) -> dict[str, str]:
    """A safetensors file cut in half and inside its header, a zip-based .pt cut in half; each with
    the refusal it gets."""
    save_file({k: v.contiguous() for k, v in state.items()}, base / "whole.safetensors")
    torch.save(state, base / "whole.pt")
    whole, pt = (base / "whole.safetensors").read_bytes(), (base / "whole.pt").read_bytes()
    header = 8 + int.from_bytes(whole[:8], "little")
    (base / "half.safetensors").write_bytes(whole[: len(whole) // 2])
    (base / "head.safetensors").write_bytes(whole[: header // 2])
    (base / "half.pt").write_bytes(pt[: len(pt) // 2])
    complete = "a complete safetensors file (it has {:,} bytes, {} {:,}: cut short)"
    return {
        "half.safetensors": complete.format(len(whole) // 2, "its header describes", len(whole)),
        "head.safetensors": complete.format(header // 2, "its header alone needs", header),
        "half.pt": "a complete zip archive, as torch.save, TorchScript and torch.export write "
        "(no directory at its end: cut short or damaged)",
    }


def test_a_file_cut_short_is_refused_before_torch(tmp_path, monkeypatch):
    from imbadv.core.errors import ConfigError
    from imbadv.models.files import checkpoint_format

    card = DataCard(("a",) * 10, 3, 32, (0.5,) * 3, (0.25,) * 3)
    refusals = _cut_files(tmp_path, build(card, VGGParams(width=WIDTH)).state_dict())
    monkeypatch.chdir(tmp_path)
    assert checkpoint_format("whole.safetensors") == "safetensors"
    for name, allowed in refusals.items():
        with pytest.raises(ConfigError) as refused:
            checkpoint_format(name)
        assert str(refused.value) == f"model.path={name} is not allowed: expected {allowed}"


def test_a_file_cut_short_is_refused_in_one_line(trained):
    """As `model.path` and as a gradient source: refused before any job starts."""
    base = trained["base"]
    refusals = _cut_files(base, trained["model"].state_dict())
    for name, allowed in refusals.items():
        proc = checkpoint_job(base, f"model.path={name}", "model.arch=vgg", run_dir="cut_job")
        assert proc.returncode == 2, (name, proc.stderr[-2000:])
        assert proc.stderr.strip() == f"imbadv: error: model.path={name} is not allowed: expected {allowed}"  # fmt: skip
        assert not (base / "cut_job").exists()  # refused before any job folder
    entry = "checkpoint:half.safetensors"
    proc = source_job(base, "cut", "imbalance=over", f"attack.sources=[same,{entry}]")
    assert proc.returncode == 2, proc.stderr[-2000:]
    line = f"imbadv: error: attack.sources={entry} is not allowed: expected {refusals['half.safetensors']}"  # fmt: skip
    assert proc.stderr.strip() == line
    assert not (base / "cut").exists()


@pytest.mark.slow
def test_weights_that_are_not_finite_are_refused_in_one_line(trained):
    """As `model.path` and as a gradient source: refused when the job loads the file, before any
    model is trained or attacked."""
    base = trained["base"]
    state = _broken(copy.deepcopy(trained["model"])).state_dict()
    save_file({k: v.contiguous() for k, v in state.items()}, base / "nan.safetensors")
    trainings = (base / "store" / "trainings.jsonl").read_text()
    named = "features.0.weight (all 216 NaN), classifier.3.bias (2 inf)"
    proc = checkpoint_job(base, "model.path=nan.safetensors", "model.arch=vgg", run_dir="nan_job")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
        "imbadv: error: model.path=nan.safetensors is not allowed: expected finite weights "
        f"(not finite: {named})"
    )
    assert "images made" not in proc.stdout + proc.stderr
    entry = "checkpoint:nan.safetensors"
    proc = source_job(base, "nan_source", "imbalance=over", f"attack.sources=[same,{entry}]")
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert proc.stderr.strip() == (
        f"imbadv: error: attack.sources={entry} is not allowed: expected finite weights "
        f"(not finite: {named})"
    )
    assert (base / "store" / "trainings.jsonl").read_text() == trainings  # over-0 never trained
    assert not list(base.glob("nan_*/results.json"))
