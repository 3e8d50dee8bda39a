"""Report, archives: a sweep's results.json files in one .tar.gz with a sha256 manifest, read as a sweep.

An archive holds `manifest.json` (format, the sweep's command, the git commits and data copies
its jobs name, every member's sha256, the jobs without results), the sweep's `multirun.yaml` and
`jobs/<job folder>/results.json` for every job. It is written byte for byte reproducibly (sorted
members, zero times and owners) and read as a stream into memory: nothing is ever extracted.

A sweep stopped part way is archived the same way: `pending` then names every job its command
line describes that has no results, started or not (the folder names Hydra gives them, from
multirun.yaml), `planned` counts the jobs the command describes and `partial` says whether any
lacks results. `restore` writes such an archive's results back into a sweep folder, where
`imbadv.status.chunks` finds the jobs still to run (scripts/gpu_reference.sh).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import subprocess
import tarfile
from pathlib import Path
from typing import Any

from imbadv.data.tarsafe import ARCHIVE_FORMAT as FORMAT
from imbadv.data.tarsafe import ARCHIVE_SUFFIXES as SUFFIXES
from imbadv.data.tarsafe import MANIFEST, read_verified
from imbadv.report.errors import ReportError
from imbadv.results import ResultsError, check

Job = list[str]  # one job's overrides, `key=value` each, as Hydra's basic sweeper writes them


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(SUFFIXES)


def members_of(
    sweep_dir: Path, planned: dict[str, Job] | None = None
) -> tuple[dict[str, bytes], list[str]]:
    """The files an archive of `sweep_dir` holds (by member name), and its jobs without results:
    those started without finishing and, from `planned`, those never started."""
    files = {
        f"jobs/{p.parent.relative_to(sweep_dir).as_posix()}/results.json": p.read_bytes()
        for p in sorted(sweep_dir.rglob("results.json"))
    }
    if (sweep_dir / "multirun.yaml").is_file():
        files["multirun.yaml"] = (sweep_dir / "multirun.yaml").read_bytes()
    started = {
        h.parent.relative_to(sweep_dir).as_posix()
        for h in sweep_dir.rglob(".hydra")
        if not (h.parent / "results.json").exists()
    }
    never = {job for job in planned or {} if not (sweep_dir / job / "results.json").exists()}
    return files, sorted(started | never)


def manifest_of(
    sweep_dir: Path,
    files: dict[str, bytes],
    pending: list[str],
    command: str | None,
    planned: int | None = None,
) -> dict[str, Any]:
    """What the archive holds and where its numbers come from (command, code commits, data copies)."""
    metas = [json.loads(b).get("meta", {}) for n, b in files.items() if n.startswith("jobs/")]
    return {
        "format": FORMAT,
        "sweep": sweep_dir.name,
        "command": command,
        "code_git": sorted({str(m.get("versions", {}).get("git")) for m in metas}),
        "data": sorted({str(m.get("dataset_source")) for m in metas}),
        "archived_at_git": git_head(),
        "jobs": sum(n.startswith("jobs/") for n in files),
        "planned": planned,  # None: multirun.yaml unreadable, `pending` has started jobs only
        "pending": pending,
        "partial": bool(pending),
        "sha256": {n: hashlib.sha256(b).hexdigest() for n, b in sorted(files.items())},
    }


def git_head() -> str:
    """The commit of the checkout the archive is made in (the sweep's own is in `code_git`)."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=5
        )
        return out.stdout.strip() or "unknown"
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def write_archive(sweep_dir: Path, dest: Path, command: str | None = None) -> dict[str, Any]:
    """Archive every job's results.json of `sweep_dir` into `dest` (.tar.gz); returns the manifest.
    `command`: the sweep's command line, as the report reads it (classdoc.sweep_command)."""
    if not sweep_dir.is_dir():
        raise ReportError(f"{sweep_dir}: no such sweep folder to archive")
    if not dest.name.endswith(SUFFIXES):
        raise ReportError(f"--archive {dest}: must end with .tar.gz or .tgz")
    planned = planned_jobs(sweep_dir)
    files, pending = members_of(sweep_dir, planned)
    if not any(n.startswith("jobs/") for n in files):
        raise ReportError(f"{sweep_dir}: no results.json to archive")
    count = None if planned is None else len(planned)
    manifest = manifest_of(sweep_dir, files, pending, command, count)
    blob = (json.dumps(manifest, indent=1, sort_keys=True) + "\n").encode()
    buffer = io.BytesIO()
    with (
        gzip.GzipFile(fileobj=buffer, mode="wb", mtime=0) as gz,  # no timestamp: same bytes
        tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar,
    ):
        for name, data in [(MANIFEST, blob), *sorted(files.items())]:
            info = tarfile.TarInfo(name)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    dest.parent.mkdir(parents=True, exist_ok=True)
    dest.write_bytes(buffer.getvalue())
    return manifest


def read_archive(path: Path) -> tuple[dict[str, Any], dict[str, dict[str, Any] | None]]:
    """The manifest and the results by job name (None: unreadable in the sweep too, as archived);
    ReportError (one line) when the archive is damaged or does not match its manifest."""
    manifest, blobs = read_verified(path, ReportError)
    results = {}
    for name, data in blobs.items():
        if name.startswith("jobs/") and name.endswith("/results.json"):
            job = name[len("jobs/") : -len("/results.json")]
            try:  # the bytes are the sweep's own (sha256 checked): unreadable there too
                results[job] = check(json.loads(data), f"{path}:{name}")
            except (ResultsError, ValueError):
                results[job] = None
    return manifest, results


def sweep_jobs(task: list[str], hydra: Any) -> dict[str, Job]:
    """Every job the task overrides describe, by the folder Hydra gives it: `hydra.sweep.subdir`
    (the `hydra` node of multirun.yaml or of a composed config) with the job's override_dirname."""
    from hydra._internal.config_loader_impl import get_overrides_dirname
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf

    import imbadv.config.folders  # noqa: F401  registers the imbadv_folder resolver the subdir names

    parser, named = OverridesParser.create(), hydra.job.config.override_dirname
    subdir = OmegaConf.to_container(hydra.sweep, resolve=False)["subdir"]
    out = {}
    for num, job in enumerate(BasicSweeper.split_arguments(parser.parse_overrides(task), None)[0]):
        dirname = get_overrides_dirname(
            parser.parse_overrides(job), list(named.exclude_keys), named.item_sep, named.kv_sep
        )
        node = {"job": {"override_dirname": dirname, "num": num}, "sweep": {"subdir": subdir}}
        out[str(OmegaConf.create({"hydra": node}).hydra.sweep.subdir)] = job
    return out


def planned_jobs(sweep_dir: Path) -> dict[str, Job] | None:
    """The jobs the sweep's multirun.yaml describes, by folder; None when it cannot say (no file,
    another sweeper's parameters, a subdir that needs more than the job's overrides)."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(sweep_dir / "multirun.yaml")
        if cfg.hydra.sweeper.get("params"):
            return None
        return sweep_jobs(list(cfg.hydra.overrides.task), cfg.hydra)
    except Exception:  # a damaged or unusual file: the folders alone say what is missing
        return None


def restore(archive: Path, sweep_dir: Path) -> int:
    """Write an archive's results.json files and multirun.yaml into `sweep_dir` where the folder
    lacks them (a rerun on a machine that kept nothing); returns how many results it wrote."""
    _, blobs = read_verified(archive, ReportError)  # member names vetted: no `..`, no links
    written = 0
    for name, data in sorted(blobs.items()):
        if not (name == "multirun.yaml" or name.startswith("jobs/")):
            continue
        path = sweep_dir / name.removeprefix("jobs/")
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        written += name.startswith("jobs/")
    return written
