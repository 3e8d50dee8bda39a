"""Experiment stage: one job in order: data, imbalance, models (stored or trained), attacks, metrics, write."""

from __future__ import annotations

import subprocess
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from imbadv import __version__
from imbadv.attack import EPS_SPACE, Method, bim_defaults
from imbadv.data import Dataset, load_dataset
from imbadv.devices import job_device, set_threads
from imbadv.errors import ImbadvError
from imbadv.evaluate import evaluate_attacks, predict
from imbadv.imbalance import Profile, class_counts, select
from imbadv.metrics import attack_summary, model_summary
from imbadv.model import VGG
from imbadv.progress import Watch, job_record
from imbadv.settings import Settings, Source, from_config, parse_target
from imbadv.store import FORMAT_VERSION, Store, atomic_write_json, content_key
from imbadv.tracking import start_job
from imbadv.train import fit


def data_identity(data: Dataset, s: Settings) -> dict[str, Any]:
    """What makes two data sets the same for the store: folders by content hash, the rest by options."""
    if data.name == "folder":
        return {"name": "folder", "source": data.source}
    return {k: v for k, v in s.dataset.items() if k != "root"}


def model_spec(data: Dataset, s: Settings, profile: Profile, target: int) -> dict[str, Any]:
    """Everything that defines one trained model; the balanced model does not depend on the class."""
    counts = class_counts(data.train_counts(), profile, target, s.majority, s.minority)
    return {
        "data": data_identity(data, s),
        "imbalance": profile.value,
        "class": None if profile is Profile.BALANCED else target,
        "counts": counts,
        "val_fraction": s.val_fraction,
        "model": {"arch": "vgg", "width": s.width, "fc": s.fc, "num_classes": data.num_classes,
                  "in_channels": data.x_train.shape[1], "image_size": data.x_train.shape[2]},
        "train": asdict(s.train),
        "seed": s.seed,
    }  # fmt: skip


def on_device(
    data: Dataset, idx: np.ndarray, device: torch.device, train: bool = True
) -> tuple[torch.Tensor, torch.Tensor]:
    """The chosen uint8 images and labels, moved once to the device the job computes on."""
    x, y = (data.x_train, data.y_train) if train else (data.x_test, data.y_test)
    return torch.from_numpy(x[idx]).to(device), torch.from_numpy(y[idx]).to(device)


def build_model(spec: dict[str, Any]) -> VGG:
    m = spec["model"]
    return VGG(m["num_classes"], m["in_channels"], m["image_size"], m["width"], m["fc"])


def obtain_model(
    data: Dataset,
    s: Settings,
    profile: Profile,
    target: int,
    device: torch.device,
    store: Store,
    watch: Watch | None = None,
) -> tuple[VGG, dict[str, Any]]:
    """The model for (profile, target) from the store, trained here first if no job has yet."""
    spec = model_spec(data, s, profile, target)
    key = content_key(spec)
    split = select(data.y_train, spec["counts"], s.val_fraction, s.seed)
    role = "target" if profile is s.imbalance else "balanced"
    label = (  # the balanced model is the same whichever job trains it, target or source
        "balanced"
        if spec["class"] is None
        else f"{role} {profile.value} class {target} ({data.classes[target]})"
    )

    def train(model: VGG) -> dict[str, Any]:
        model.reset_parameters(torch.Generator().manual_seed(s.seed))
        model.to(device)
        started = time.perf_counter()
        train_xy, val_xy = on_device(data, split.train, device), on_device(data, split.val, device)
        with (watch or Watch(lines=False)).training(key, role, label) as callbacks:
            record = fit(model, train_xy, val_xy, s.train, device, s.seed, callbacks=callbacks)
        return {"spec": spec, "train_counts": split.train_counts, "val_counts": split.val_counts,
                "train_seconds": time.perf_counter() - started, **record}  # fmt: skip

    model = build_model(spec)
    record, trained = store.model(key, model, train)
    model.to(device).eval()
    return model, {**record, "trained_here": trained}


def attack_rows(
    data: Dataset,
    s: Settings,
    target: int,
    models: dict[str, VGG],
    device: torch.device,
    watch: Watch | None = None,
) -> list[dict[str, Any]]:
    """Attack the target class's test images with every source and spec; one row per combination."""
    idx = np.flatnonzero(data.y_test == target)
    sources = {src.value: models[src.value] for src in s.sources}
    ev = evaluate_attacks(models["same"], sources, list(s.specs), on_device(data, idx, device, False),
                          device, s.attack_batch_size,
                          (watch or Watch(lines=False)).attacks(f"class {target}"))  # fmt: skip
    labels, preds = ev.collected()
    rows = []
    for src in sources:
        for spec in s.specs:
            key = f"{src}|{spec.name}"
            alpha, steps = bim_defaults(spec.eps)
            rows.append({
                "method": spec.method.value, "eps": spec.eps, "eps_space": EPS_SPACE,
                "direction": spec.direction.value, "source": src,
                "alpha": (spec.alpha or alpha) if spec.method is Method.BIM else None,
                "steps": (spec.steps or steps) if spec.method is Method.BIM else None,
                "seed": s.seed, "dataset": data.name, "class": target,
                "class_name": data.classes[target], "imbalance": s.imbalance.value,
                **attack_summary(labels, preds["clean"], preds[key], data.num_classes),
                "max_abs_delta": ev.max_delta[key],
                "zero_grad_fraction": ev.zero_grads[src] / max(1, len(labels)),
            })  # fmt: skip
    return rows


def model_entry(record: dict[str, Any], model: VGG, data: Dataset, device: torch.device) -> dict:
    """A stored model's record plus its clean accuracy on the whole test set."""
    preds = predict(model, torch.from_numpy(data.x_test).to(device))
    entry = {k: v for k, v in record.items() if k != "trained_here"}
    return entry | {"clean": model_summary(data.y_test, preds, data.num_classes)}


def compute(
    data: Dataset,
    s: Settings,
    target: int,
    device: torch.device,
    store: Store,
    watch: Watch | None = None,
) -> tuple[dict[str, Any], dict[str, bool]]:
    """Models, clean metrics and attack rows for one (class, imbalance, seed), computed once.

    Returns the result (from the store when another run already computed it) and, per model
    role, whether this job trained it.
    """
    models, records = {}, {}
    models["same"], records["target"] = obtain_model(
        data, s, s.imbalance, target, device, store, watch
    )
    if s.imbalance is Profile.BALANCED:
        s = replace(s, sources=(Source.SAME,))  # its own gradient is the balanced gradient: one row
    elif Source.BALANCED in s.sources:
        models["balanced"], records["balanced"] = obtain_model(
            data, s, Profile.BALANCED, target, device, store, watch
        )
    trained = {role: r["trained_here"] for role, r in records.items()}
    key = content_key({"models": {role: r["key"] for role, r in records.items()}, "class": target,
                       "specs": [asdict(x) for x in s.specs], "sources": list(s.sources)})  # fmt: skip
    roles = {"target": models["same"], "balanced": models.get("balanced")}
    result, _ = store.result(key, lambda: {
        "key": key,
        "models": {r: model_entry(records[r], roles[r], data, device) for r in records},
        "attacks": attack_rows(data, s, target, models, device, watch),
    })  # fmt: skip
    return result, trained


def resolve_class(target: int | str, data: Dataset) -> int:
    """The class index for an index or name, checked against the data set's classes."""
    return int(parse_target(target, data.classes))


def run(cfg: DictConfig, output_dir: Path, concurrent_jobs: int = 1) -> dict[str, Any]:
    """One experiment from a composed config: writes `output_dir/results.json`, prints a table.

    `concurrent_jobs` is how many jobs share this machine's cores (`threads: 0` splits them).
    """
    s = from_config(cfg)
    with job_record(output_dir, s.store_dir):  # job.json: what `python -m imbadv.status` reads
        # W&B opens first so curves stream while models train; it never fails the job.
        watch = Watch(s.progress == "lines", start_job(cfg, output_dir), s.store_dir / "locks")
        try:
            return _run_checked(cfg, s, output_dir, concurrent_jobs, watch)
        except ImbadvError as err:  # e.g. a diverged training: leave a record next to the results
            record = {"error": str(err), "type": type(err).__name__, "time": time.time(),
                      "config": OmegaConf.to_container(cfg, resolve=True)}  # fmt: skip
            atomic_write_json(output_dir / "failed.json", record)
            raise
        finally:
            watch.tracker.close()  # marks an unfinished job's run; nothing after finish()


def _run_checked(
    cfg: DictConfig, s: Settings, output_dir: Path, concurrent_jobs: int, watch: Watch
) -> dict[str, Any]:
    started = time.perf_counter()
    threads = set_threads(s.threads, concurrent_jobs)
    data = load_dataset(**s.dataset, cache_dir=s.cache_dir)
    target = resolve_class(s.target, data)
    store = Store(s.store_dir)
    with job_device(s.device, s.jobs_per_gpu, s.store_dir / "locks") as device:
        result, trained = compute(data, s, target, device, store, watch)
    meta = {
        "dataset": data.name, "dataset_source": data.source, "class": target,
        "class_name": data.classes[target], "imbalance": s.imbalance.value, "seed": s.seed,
        "eps_space": EPS_SPACE, "device": str(device), "threads": threads, "trained_here": trained,
        "wall_seconds": time.perf_counter() - started, "versions": versions(),
    }  # fmt: skip
    full = {"format": FORMAT_VERSION, "meta": meta, **result,
            "config": OmegaConf.to_container(cfg, resolve=True)}  # fmt: skip
    output_dir.mkdir(parents=True, exist_ok=True)
    atomic_write_json(output_dir / "results.json", full)
    print(format_table(full))
    watch.tracker.finish(full)  # W&B is quiet: the table stays the last thing printed
    return full


def versions() -> dict[str, str]:
    """Code and library versions, so a number can be traced to what produced it."""
    import lightning

    return {"imbadv": __version__, "git": git_commit(), "torch": torch.__version__,
            "lightning": lightning.__version__}  # fmt: skip


def git_commit() -> str:
    try:
        out = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                             text=True, timeout=5, cwd=Path(__file__).parent)  # fmt: skip
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def format_table(full: dict[str, Any]) -> str:
    """The run's numbers as a short text table (the same numbers as results.json)."""
    m = full["meta"]
    lines = [f"imbadv  {m['dataset']}  class {m['class']} ({m['class_name']})  "
             f"imbalance={m['imbalance']}  seed={m['seed']}  eps space: {m['eps_space']}"]  # fmt: skip
    for role, entry in full["models"].items():
        counts = ",".join(str(c) for c in entry["train_counts"])
        lines.append(f"  {role:<9} model: test acc {entry['clean']['acc']:.3f}  "
                     f"train counts [{counts}]  best epoch {entry['best_epoch']}")  # fmt: skip
    lines.append(f"  {'source':<9} {'attack':<6} {'eps':>6}  {'clean':>6}  {'adv':>6}  "
                 f"{'drop':>6}  {'success':>7}  {'95% CI adv':>13}")  # fmt: skip
    for r in full["attacks"]:
        lo, hi = r["adv_acc_ci95"]
        lines.append(f"  {r['source']:<9} {r['method']:<6} {r['eps']:>6g}  {r['clean_acc']:>6.3f}  "
                     f"{r['adv_acc']:>6.3f}  {r['relative_drop']:>6.3f}  {r['success_rate']:>7.3f}  "
                     f"[{lo:.3f},{hi:.3f}]")  # fmt: skip
    return "\n".join(lines)
