"""Tracking stage: send one job's results to an experiment tracker (W&B), never failing the job."""

from __future__ import annotations

import csv
import json
import logging
import math
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from imbadv.telemetry.wandb_tables import job_table, log_models, sweep_table

log = logging.getLogger(__name__)

MODES = ("offline", "online", "disabled")


def log_job(cfg: DictConfig, full: dict[str, Any], output_dir: Path) -> None:
    """Log the finished job `full` (the results.json content) in one go; never raises."""
    start_job(cfg, output_dir).finish(full)


def start_job(cfg: DictConfig, output_dir: Path) -> JobRun:
    """The job's W&B run, opened when the job starts so curves stream while models train.

    Returns a JobRun that does nothing when `cfg.logger` asks for no W&B or W&B fails to start.
    """
    logger = cfg.logger
    if logger.name == "none":
        return JobRun(None)
    if logger.name != "wandb":
        log.warning("logger=%s is unknown: nothing logged (results.json is written)", logger.name)
        return JobRun(None)
    mode = choose_mode(logger.get("mode", "offline"), os.environ.get("WANDB_MODE"))
    if mode is None:
        log.warning("logger.mode=%s is not one of %s: W&B skipped", logger.get("mode"), MODES)
    if mode in (None, "disabled"):
        return JobRun(None)
    try:
        return JobRun(_init_job(cfg, mode, output_dir), artifacts=logger.get("artifacts") is True)
    except Exception as err:  # the job goes on; results.json will hold every number
        _warn(err)
        _finish(1)
        return JobRun(None)


class JobRun:
    """A job's open W&B run; after any W&B error it does nothing, so W&B never fails a job."""

    def __init__(self, run: Any, artifacts: bool = False) -> None:
        self.run, self.roles, self.artifacts = run, set(), artifacts

    def epoch(self, role: str, row: dict[str, Any]) -> None:
        """One epoch of the model `role` (target, balanced) under `train/<role>/...`."""
        if self.run is None:
            return
        try:
            if role not in self.roles:
                self.run.define_metric(f"train/{role}/*", step_metric=f"train/{role}/epoch")
                self.roles.add(role)
            names = {
                "epoch": "epoch",
                "train/loss": "loss",
                "val/loss": "val_loss",
                "val/acc": "val_acc",
                "val/robust_acc": "val_robust_acc",
                "train/lr": "lr",
                "seconds": "seconds",
            }
            self.run.log({f"train/{role}/{n}": row[k] for k, n in names.items() if k in row})
        except Exception as err:
            _warn(err)
            self.close(1)

    def finish(self, full: dict[str, Any]) -> None:
        """The job's numbers (results.json is written already), then the run is closed."""
        if self.run is None:
            return
        try:
            # what results.json holds: plain JSON (a source can still be a Source enum here, and
            # a W&B table refuses a column mixing it with the stored rows' strings)
            full = json.loads(json.dumps(full, default=str))
            self.run.config.update({"meta": run_config(full)["meta"]}, allow_val_change=True)
            write_run(self.run, full)
            if self.artifacts:  # opt-in: weights are the largest thing a run can upload
                log_models(self.run, full)
        except Exception as err:
            _warn(err)
        self.close(0)

    def close(self, exit_code: int = 1) -> None:
        """Finish the run (bounded by logger.finish_timeout); 1 marks a job that did not finish."""
        if self.run is not None:
            self.run = None
            _finish(exit_code)


def _warn(err: Exception) -> None:
    log.warning("W&B logging failed (%s: %s); results.json is unaffected", type(err).__name__, err)


def _finish(exit_code: int) -> None:
    import wandb

    try:
        wandb.finish(exit_code=exit_code)  # an open run would be silently reused by the next job
    except Exception as err:
        _warn(err)


def choose_mode(configured: Any, env_mode: str | None) -> str | None:
    """The W&B mode, fixed before the first `wandb.init` (an online init without network stalls).

    `WANDB_MODE=disabled` in the environment can switch W&B off (tests, CI) but never on: the
    config decides between offline and online. None for a mode W&B does not have.
    """
    if env_mode == "disabled":
        return "disabled"
    mode = str(configured).lower()
    return mode if mode in MODES else None


def _init_job(cfg: DictConfig, mode: str, output_dir: Path) -> Any:
    import wandb

    logger = cfg.logger
    group, name = run_identity()
    output_dir.mkdir(parents=True, exist_ok=True)
    return wandb.init(
        mode=mode,
        project=logger.get("project", "imbadv"),
        entity=logger.get("entity"),
        group=logger.get("group") or group,
        name=name,
        job_type="experiment",
        tags=[*map(str, logger.get("tags") or []), str(cfg.dataset.name), str(cfg.imbalance.name)],
        config=OmegaConf.to_container(cfg, resolve=True),
        dir=str(output_dir),
        settings=_settings(logger),
        reinit="finish_previous",
    )


def _settings(logger: Any) -> Any:
    import wandb

    return wandb.Settings(
        init_timeout=float(logger.get("init_timeout", 60)),
        finish_timeout=float(logger.get("finish_timeout", 60)),
        console="off",  # the job's output is in Hydra's log; capturing it would wrap stdout
        quiet=True,  # no run summary after the results table: results.json holds it
    )


def write_run(run: Any, full: dict[str, Any]) -> None:
    """The final scalars, confusion matrices and tables, the summary, and where each model came from.

    Curves were streamed while each model trained (`train/<role>/...`); a model another job
    trained is referenced by its store key, not logged again.
    """
    import wandb

    names = class_names(full)
    scalars = job_scalars(full, names)
    media = {}
    for role, entry in full["models"].items():
        y_true, preds = expand_confusion(entry["clean"]["confusion"])
        media[f"{role}/clean/confusion"] = wandb.plot.confusion_matrix(
            y_true=y_true, preds=preds, class_names=names, title=f"{role} model, clean test set"
        )
    columns, rows = destination_rows(full["attacks"], names)
    media["attacks/destinations"] = wandb.Table(columns=columns, data=rows)
    media["results/per_class"] = job_table(full, run.name or "")
    run.log({**scalars, **media})
    trained = full["meta"].get("trained_here", {})
    origin = {f"{role}/model_key": entry.get("key") for role, entry in full["models"].items()}
    origin |= {f"{role}/trained_here": bool(trained.get(role)) for role in full["models"]}
    run.summary.update({**scalars, **origin})


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
        # the balanced model's own rows (measured with the transfer images) under balanced/
        other = "balanced/" if row.get("role") == "balanced" else ""
        if row["source"] == "same" and not other:  # clean numbers: the attacked model's
            out["clean/acc"] = row["clean_acc"]
            out["clean/acc_ci95_lo"], out["clean/acc_ci95_hi"] = row["clean_acc_ci95"]
            out |= {f"clean/to/{c}": k / n for c, k in zip(names, row["clean_row"], strict=False)}
        p = other + attack_prefix(row, several_eps)
        out[f"{p}/acc"] = row["adv_acc"]
        out[f"{p}/acc_ci95_lo"], out[f"{p}/acc_ci95_hi"] = row["adv_acc_ci95"]
        for key in ("relative_drop", "success_rate", "zero_grad_fraction"):
            out[f"{p}/{key}"] = row[key]
        out |= {f"{p}/to/{c}": k / n for c, k in zip(names, row["adv_row"], strict=False)}
    return out


def destination_rows(attacks: list[dict[str, Any]], names: list[str]) -> tuple[list[str], list]:
    """A table: per attack and source, how many target images each class got, clean and attacked."""
    columns = ["model", "method", "eps", "source", "predicted", "clean", "adversarial"]
    rows = [
        [r.get("model", r["imbalance"]), r["method"], r["eps"], r["source"], name, clean, adv]
        for r in attacks
        for name, clean, adv in zip(names, r["clean_row"], r["adv_row"], strict=False)
    ]
    return columns, rows


def _number(value: Any) -> float:
    """A float for W&B; None (a metric that does not exist, e.g. drop with no clean hits) is NaN."""
    return math.nan if value is None else float(value)


def report_media(
    run: Any, tables: dict[str, Path], figures: list[Path], documents: dict[str, Path]
) -> dict[str, Any]:
    """The report run's figures, CSV tables, findings (counted in `run`'s summary) and pages."""
    import wandb

    media: dict[str, Any] = {f"figures/{p.stem}": wandb.Image(str(p)) for p in figures}
    for name, path in tables.items():
        with path.open(newline="") as f:
            rows = list(csv.reader(f))
        media[name] = wandb.Table(columns=rows[0], data=typed_rows(rows[1:]))
    for name, path in documents.items():
        if path.suffix == ".md":
            verdicts = findings_rows(path.read_text())
            media["findings"] = wandb.Table(columns=["verdict", "finding"], data=verdicts)
            run.summary.update(
                {f"findings/{v}": sum(r[0] == v for r in verdicts) for v, _ in verdicts}
            )
        else:
            media[name] = wandb.Html(path.read_text(), inject=False)
    return media


def log_report(
    sweep_dir: Path,
    tables: dict[str, Path],
    figures: list[Path],
    documents: dict[str, Path] | None = None,
    mode: str | None = None,
) -> bool:
    """One summary run in the sweep's group: CSV `tables`, `figures`, the findings and documents.

    W&B settings come from the sweep's jobs (`logger.*` in a results.json), `mode` overrides
    theirs. Returns whether the run was written; any W&B error is a warning, never an exception.
    """
    import wandb

    logger = OmegaConf.create(sweep_logger(Path(sweep_dir)))
    mode = choose_mode(mode or logger.get("mode", "offline"), os.environ.get("WANDB_MODE"))
    if mode in (None, "disabled"):
        log.warning("W&B mode %s: no report run written", mode)
        return False
    try:
        run = wandb.init(
            mode=mode,
            project=logger.get("project", "imbadv"),
            entity=logger.get("entity"),
            group=logger.get("group") or sweep_group(sweep_dir),
            name="report",
            job_type="report",
            dir=str(sweep_dir),
            settings=_settings(logger),
            reinit="finish_previous",
        )
        media = report_media(run, tables, figures, documents or {})
        media["results/long_table"] = sweep_table(Path(sweep_dir))  # imbadv.results' rows
        run.log(media)
        return True
    except Exception as err:
        _warn(err)
        return False
    finally:
        _finish(0)


def sweep_logger(sweep_dir: Path) -> dict[str, Any]:
    """The `logger` settings of the sweep's first job with results ({} when there is none)."""
    for path in sorted(sweep_dir.rglob("results.json")):
        try:
            return dict(json.loads(path.read_text())["config"].get("logger") or {})
        except (OSError, ValueError, KeyError):
            continue
    return {}


def findings_rows(markdown: str) -> list[list[str]]:
    """(verdict, claim and evidence) for each `- **verdict**: ...` bullet of the findings section."""
    section = markdown.split("findings", 1)[-1]
    found = re.findall(r"^- \*\*([^*]+)\*\*: (.+)$", section, flags=re.MULTILINE)
    return [[verdict, text] for verdict, text in found]


def typed_rows(rows: list[list[str]]) -> list[list[Any]]:
    """CSV cells as numbers where a whole column is numeric (W&B wants one type per column)."""

    def number(text: str) -> float | None:
        try:
            return float(text)
        except ValueError:
            return None

    numeric = [all(number(c) is not None for c in col) for col in zip(*rows, strict=True)]
    return [[float(c) if num else c for c, num in zip(r, numeric, strict=True)] for r in rows]
