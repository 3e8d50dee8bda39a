"""Tracking stage: send one job's results to an experiment tracker (W&B), never failing the job."""

from __future__ import annotations

import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")
EPOCH_KEYS = ("train/loss", "val/loss", "val/acc")


def log_job(cfg: DictConfig, full: dict[str, Any], output_dir: Path) -> None:
    """Log the finished job `full` (the results.json content) with the tracker `cfg.logger` names."""
    logger = cfg.logger
    if logger.name == "none":
        return
    if logger.name != "wandb":
        log.warning("logger=%s is unknown: nothing logged (results.json is written)", logger.name)
        return
    mode = choose_mode(logger.get("mode", "offline"), os.environ.get("WANDB_MODE"))
    if mode is None:
        log.warning("logger.mode=%s is not one of %s: W&B skipped", logger.get("mode"), MODES)
        return
    if mode == "disabled":
        return
    try:
        _log_wandb(logger, mode, full, output_dir)
    except Exception as err:  # the results are already on disk; W&B holds a copy
        log.warning(
            "W&B logging failed (%s: %s); results.json is unaffected", type(err).__name__, err
        )


def choose_mode(configured: Any, env_mode: str | None) -> str | None:
    """The W&B mode, fixed before the first `wandb.init` (an online init without network stalls).

    `WANDB_MODE=disabled` in the environment can switch W&B off (tests, CI) but never on: the
    config decides between offline and online. None for a mode W&B does not have.
    """
    if env_mode == "disabled":
        return "disabled"
    mode = str(configured).lower()
    return mode if mode in MODES else None


def _log_wandb(logger: DictConfig, mode: str, full: dict[str, Any], output_dir: Path) -> None:
    import wandb

    group, name = run_identity()
    settings = wandb.Settings(
        init_timeout=float(logger.get("init_timeout", 60)),
        finish_timeout=float(logger.get("finish_timeout", 60)),
        console="off",  # the job has finished; its output is already in Hydra's log
        quiet=True,  # no run summary after the results table: results.json holds it
    )
    output_dir.mkdir(parents=True, exist_ok=True)
    try:
        run = wandb.init(
            mode=mode, project=logger.get("project", "imbadv"), entity=logger.get("entity"),
            group=logger.get("group") or group, name=name, job_type="experiment",
            tags=[*map(str, logger.get("tags") or []), full["meta"]["dataset"], full["meta"]["imbalance"]],
            config=run_config(full), dir=str(output_dir), settings=settings, reinit="finish_previous",
        )  # fmt: skip
        write_run(run, full)
    finally:
        wandb.finish()  # an open run would be silently reused by the next job in this process


def write_run(run: Any, full: dict[str, Any]) -> None:
    """Curves per epoch, then the final scalars, confusion matrices and tables, and the summary."""
    import wandb

    names = class_names(full)
    run.define_metric("epoch")
    for role in full["models"]:
        for part in ("train", "val"):
            run.define_metric(f"{role}/{part}/*", step_metric="epoch")
    for row in history_rows(full["models"]):
        run.log(row)
    scalars = job_scalars(full, names)
    media = {}
    for role, entry in full["models"].items():
        y_true, preds = expand_confusion(entry["clean"]["confusion"])
        media[f"{role}/clean/confusion"] = wandb.plot.confusion_matrix(
            y_true=y_true, preds=preds, class_names=names, title=f"{role} model, clean test set"
        )
    columns, rows = destination_rows(full["attacks"], names)
    media["attacks/destinations"] = wandb.Table(columns=columns, data=rows)
    run.log({**scalars, **media})
    run.summary.update(scalars)


def run_identity() -> tuple[str | None, str]:
    """(group, name): the sweep folder and the job's overrides; no group outside a Hydra multirun."""
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode

    if not HydraConfig.initialized():
        return None, "single"
    hc = HydraConfig.get()
    name = hc.job.override_dirname or "single"
    if hc.mode != RunMode.MULTIRUN:
        return None, name
    # The folder the job really wrote to, minus its subdir: `sweep.dir` may hold `${now:...}`,
    # which a launcher running jobs in other processes could resolve to another time.
    depth = len(Path(str(hc.sweep.subdir)).parts)
    output = Path(hc.runtime.output_dir)
    return sweep_group(output.parents[depth - 1] if depth else output), name


def sweep_group(sweep_dir: str | Path) -> str:
    """The sweep folder's name; Hydra's default `<date>/<time>` keeps the date so days don't merge."""
    path = Path(sweep_dir)
    if re.fullmatch(r"\d{2}-\d{2}-\d{2}", path.name) and re.fullmatch(
        r"\d{4}-\d{2}-\d{2}", path.parent.name
    ):
        return f"{path.parent.name}_{path.name}"
    return path.name


def run_config(full: dict[str, Any]) -> dict[str, Any]:
    """The full resolved config plus what the job found out (class name, data copy, versions)."""
    meta = full["meta"]
    keep = ("dataset", "dataset_source", "class_name", "eps_space", "device", "versions")
    return {**full["config"], "meta": {k: meta[k] for k in keep if k in meta}}


def class_names(full: dict[str, Any]) -> list[str]:
    """Names of the data set's classes; the target's name comes from the job itself."""
    confusion = next(iter(full["models"].values()))["clean"]["confusion"]
    num = len(confusion)
    names = list(full["meta"].get("card", {}).get("classes") or [str(i) for i in range(num)])
    names[int(full["meta"]["class"])] = full["meta"]["class_name"]
    return names


def expand_confusion(counts: list[list[int]]) -> tuple[list[int], list[int]]:
    """(y_true, preds) with one entry per counted image: what `wandb.plot.confusion_matrix` takes."""
    cm = np.asarray(counts, dtype=np.int64)
    true, pred = np.indices(cm.shape)
    return np.repeat(true.ravel(), cm.ravel()).tolist(), np.repeat(
        pred.ravel(), cm.ravel()
    ).tolist()


def history_rows(models: dict[str, Any]) -> list[dict[str, float]]:
    """One dict per epoch with every model's curves, keyed `<role>/train/loss` etc."""
    rows: dict[int, dict[str, float]] = {}
    for role, entry in models.items():
        for point in entry.get("history", []):
            row = rows.setdefault(int(point["epoch"]), {"epoch": int(point["epoch"])})
            row.update({f"{role}/{k}": point[k] for k in EPOCH_KEYS if k in point})
    return [rows[e] for e in sorted(rows)]


def job_scalars(full: dict[str, Any], names: list[str]) -> dict[str, float]:
    """Every number a user compares across a sweep, under slash keys."""
    out: dict[str, float] = {}
    for role, entry in full["models"].items():
        out[f"{role}/clean/acc"] = entry["clean"]["acc"]
        for name, acc in zip(names, entry["clean"]["per_class_acc"], strict=False):
            out[f"{role}/clean/acc/{name}"] = acc
        for key in ("best_epoch", "epochs", "best_val_loss", "train_seconds"):
            if key in entry:
                out[f"{role}/{key}"] = entry[key]
    out |= attack_scalars(full["attacks"], names)
    return {k: _number(v) for k, v in out.items()}


def attack_prefix(row: dict[str, Any], several_eps: bool) -> str:
    """`adv/<method>/<source>`, with `eps=<e>` after the method when the job used several eps."""
    eps = f"/eps={row['eps']:g}" if several_eps else ""
    return f"adv/{row['method']}{eps}/{row['source']}"


def attack_scalars(attacks: list[dict[str, Any]], names: list[str]) -> dict[str, float]:
    """Target-class clean and attacked accuracy, drop, success and where the images went."""
    out: dict[str, float] = {}
    several_eps = len({r["eps"] for r in attacks}) > 1
    for row in attacks:
        n = max(1, row["n"])
        if row["source"] == "same":  # clean numbers are the attacked model's, whatever the source
            out["clean/acc"] = row["clean_acc"]
            out["clean/acc_ci95_lo"], out["clean/acc_ci95_hi"] = row["clean_acc_ci95"]
            out |= {f"clean/to/{c}": k / n for c, k in zip(names, row["clean_row"], strict=False)}
        p = attack_prefix(row, several_eps)
        out[f"{p}/acc"] = row["adv_acc"]
        out[f"{p}/acc_ci95_lo"], out[f"{p}/acc_ci95_hi"] = row["adv_acc_ci95"]
        for key in ("relative_drop", "success_rate", "zero_grad_fraction"):
            out[f"{p}/{key}"] = row[key]
        out |= {f"{p}/to/{c}": k / n for c, k in zip(names, row["adv_row"], strict=False)}
    return out


def destination_rows(attacks: list[dict[str, Any]], names: list[str]) -> tuple[list[str], list]:
    """A table: per attack and source, how many target images each class got, clean and attacked."""
    columns = ["method", "eps", "source", "predicted", "clean", "adversarial"]
    rows = [
        [r["method"], r["eps"], r["source"], name, clean, adv]
        for r in attacks
        for name, clean, adv in zip(names, r["clean_row"], r["adv_row"], strict=False)
    ]
    return columns, rows


def _number(value: Any) -> float:
    """A float for W&B; None (a metric that does not exist, e.g. drop with no clean hits) is NaN."""
    return math.nan if value is None else float(value)
