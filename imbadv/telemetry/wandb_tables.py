"""W&B tables and model artifacts: the long table's rows (imbadv.table) and the store's models."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path
from typing import Any

from imbadv.table import Table, job_rows, read

log = logging.getLogger(__name__)

# A record's curve is in the job's run already (train/<role>/...); the clean summary is in the
# job's tables. Neither belongs in an artifact's metadata, which W&B shows on every version.
_NOT_METADATA = ("spec", "history", "clean")


def wandb_table(table: Table) -> Any:
    """`table` as a wandb.Table: its columns in table order, one W&B row per long-table row.

    Mixed types are allowed: a column can hold a number in one job and nothing (None) in another.
    """
    import wandb

    columns = table.columns
    data = [[cell(row.get(c)) for c in columns] for row in table.rows]
    return wandb.Table(columns=columns, data=data, allow_mixed_types=True)


def cell(value: Any) -> Any:
    """A list (confusion row, train counts) or dict as JSON text: one W&B cell type per column."""
    return json.dumps(value) if isinstance(value, list | dict) else value


def job_table(full: dict[str, Any], job: str) -> Any:
    """The job's per-class results: the rows the sweep's long table has for this job."""
    return wandb_table(Table(rows=job_rows(full, "", job)))


def sweep_table(sweep_dir: Path) -> Any:
    """The sweep's long table (every job with results), as `python -m imbadv.results` writes it."""
    return wandb_table(read(sweep_dir))


def log_models(run: Any, full: dict[str, Any]) -> None:
    """Each model this job trained as a `model` artifact named by its store key (`logger.artifacts`);
    every model of the job, trained here or not, is named in the summary as `<role>/model_artifact`.
    """
    for artifact in model_artifacts(full):
        run.log_artifact(artifact)
    run.summary.update({f"{r}/model_artifact": e["key"] for r, e in full["models"].items()})


def model_artifacts(full: dict[str, Any]) -> list[Any]:
    """One artifact per model this job trained, named by its store key; models trained by other
    jobs are left to those jobs (their store key is in this run's summary, `<role>/model_key`).

    The weights file comes from the store the job used (`paths.store_dir`), checked by sha256
    against the record before it is added.
    """
    import wandb

    store = Path(full["config"]["paths"]["store_dir"]) / "models"
    trained = full["meta"].get("trained_here", {})
    out = []
    for role, entry in full["models"].items():
        if not trained.get(role):
            continue
        key = entry["key"]
        weights = store / f"{key}.safetensors"
        if sha256(weights) != entry.get("sha256"):
            log.warning("model %s: %s differs from its record; no artifact", key, weights)
            continue
        record = {k: v for k, v in entry.items() if k not in _NOT_METADATA}
        artifact = wandb.Artifact(
            name=key,
            type="model",
            description=f"imbadv model {key} ({role} of job {full['key']})",
            metadata={"store_key": key, "spec": entry.get("spec"), "record": record},
        )
        artifact.add_file(str(weights), name=f"{key}.safetensors")
        artifact.add_file(str(store / f"{key}.json"), name=f"{key}.json")
        out.append(artifact)
    return out


def sha256(path: Path) -> str | None:
    """The file's sha256 (as the store records it), None when it cannot be read."""
    digest = hashlib.sha256()
    try:
        with path.open("rb") as f:
            for chunk in iter(lambda: f.read(1 << 20), b""):
                digest.update(chunk)
    except OSError:
        return None
    return digest.hexdigest()
