"""Results archives: a sweep folder archived, read back by the report as the folder; damage refused."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from imbadv.report import cli
from imbadv.report.archive import read_archive


def report_cli(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "imbadv.report", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.fixture(scope="module")
def archived(smoke_sweep, tmp_path_factory) -> dict[str, Path]:
    base = tmp_path_factory.mktemp("archive")
    sweep = base / "sweep"
    shutil.copytree(smoke_sweep["sweep"], sweep)
    (sweep / "pending-job" / ".hydra").mkdir(parents=True)  # a job that never finished
    archive = base / "results" / "smoke.tar.gz"
    assert cli.main([str(sweep), "--archive", str(archive)]) == 0
    return {"base": base, "sweep": sweep, "archive": archive}


def members(archive: Path) -> dict[str, bytes]:
    with tarfile.open(archive) as tar:
        return {m.name: tar.extractfile(m).read() for m in tar if m.isfile()}


def write_tar(dest: Path, files: dict[str, bytes], names: dict[str, str] | None = None) -> Path:
    with tarfile.open(dest, "w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo((names or {}).get(name, name))
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return dest


@pytest.mark.slow
def test_the_manifest_holds_every_job_its_sha256_commit_and_data(archived):
    files = members(archived["archive"])
    manifest = json.loads(files.pop("manifest.json"))
    jobs = sorted(
        p.parent.relative_to(archived["sweep"]).as_posix()
        for p in archived["sweep"].rglob("results.json")
    )
    assert manifest["jobs"] == len(jobs) == 6 and manifest["pending"] == ["pending-job"]
    assert sorted(files) == sorted([f"jobs/{j}/results.json" for j in jobs] + ["multirun.yaml"])
    for name, data in files.items():
        assert manifest["sha256"][name] == hashlib.sha256(data).hexdigest()
        if name.startswith("jobs/"):  # the sweep's own bytes
            assert data == (archived["sweep"] / name[5:]).read_bytes()
    meta = json.loads(next(b for n, b in files.items() if n.startswith("jobs/")))["meta"]
    assert manifest["code_git"] == [meta["versions"]["git"]]
    assert manifest["data"] == [meta["dataset_source"]]
    assert manifest["command"].startswith("python -m imbadv.run -m ")
    # made twice, the same bytes: an archive committed once can be checked by its sha256
    again = archived["base"] / "again.tar.gz"
    assert cli.main([str(archived["sweep"]), "--archive", str(again)]) == 0
    assert again.read_bytes() == archived["archive"].read_bytes()


def test_the_report_from_the_archive_is_the_report_from_the_folder(archived, tmp_path):
    for name, source in (("folder", archived["sweep"]), ("archive", archived["archive"])):
        page = tmp_path / name / "results.md"
        args = [str(source), "--out", str(tmp_path / name / "report")]
        assert cli.main([*args, "--results-page", str(page), "--section", "paper"]) == 0
    folder, archive = ((tmp_path / n / "results.md").read_text() for n in ("folder", "archive"))
    # everything from the setup on is the same text; only the sources (which path, which
    # archive, its manifest) and the report command name their inputs
    assert "## Setup" in folder and "## Models that never learned" in folder
    assert folder.split("## Setup")[1] == archive.split("## Setup")[1]
    head = archive.split("## Setup")[0]
    assert (
        f"`{archived['archive']}`: results archive of sweep `sweep`, made by `python -m imbadv.run"
        in head
    )
    assert "every file checked against the manifest's sha256" in head
    assert "job `pending-job`: no results.json" in archive  # pending jobs travel with the archive
    for csv in ("table1.csv",):
        assert (tmp_path / "folder" / "report" / csv).read_bytes() == (
            tmp_path / "archive" / "report" / csv
        ).read_bytes()
    figures = sorted(p.name for p in (tmp_path / "archive" / "results").glob("*.png"))
    assert figures and figures == sorted(
        p.name for p in (tmp_path / "folder" / "results").glob("*.png")
    )


def test_the_archive_is_read_without_writing_next_to_it(archived, tmp_path):
    copy = tmp_path / "smoke.tar.gz"
    shutil.copy(archived["archive"], copy)
    proc = report_cli([str(copy)], cwd=tmp_path)  # default out: ./report, as for several sweeps
    assert proc.returncode == 0, proc.stderr
    assert (tmp_path / "report" / "report.md").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "smoke.tar.gz"]


def damaged(archived: dict, tmp_path: Path) -> dict[str, Path]:
    good = members(archived["archive"])
    job = next(n for n in good if n.startswith("jobs/"))
    flipped = bytearray(archived["archive"].read_bytes())
    flipped[len(flipped) // 2] ^= 0x01  # one bit of the compressed stream
    edited = {**good, job: good[job].replace(b'"seed": 0', b'"seed": 1', 1)}
    assert edited[job] != good[job]
    (tmp_path / "flipped.tar.gz").write_bytes(bytes(flipped))
    return {
        "flipped": tmp_path / "flipped.tar.gz",
        "edited": write_tar(tmp_path / "edited.tar.gz", edited),  # manifest left as it was
        "extra": write_tar(tmp_path / "extra.tar.gz", {**good, "jobs/x/results.json": good[job]}),
        "dotdot": write_tar(tmp_path / "dotdot.tar.gz", good, {job: "../" + job}),
        "absolute": write_tar(tmp_path / "absolute.tar.gz", good, {job: "/" + job}),
    }


@pytest.mark.parametrize(
    "kind, reason",
    [
        ("flipped", ""),
        ("edited", "does not match its sha256 in the manifest"),
        ("extra", "members and manifest differ"),
        ("dotdot", "points outside the archive"),
        ("absolute", "points outside the archive"),
    ],
)
def test_a_damaged_archive_is_refused_with_one_line(archived, tmp_path, kind, reason):
    path = damaged(archived, tmp_path)[kind]
    proc = report_cli([str(path)], cwd=tmp_path)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("imbadv.report: error: ") and reason in lines[0]
    assert str(path) in lines[0] and not (tmp_path / "report").exists()  # refused before any work
    assert not list(tmp_path.rglob("results.json"))  # nothing was extracted, anywhere


def test_archive_option_errors_are_one_line(archived, tmp_path):
    proc = report_cli([str(archived["sweep"]), "--archive", str(tmp_path / "x.zip")], cwd=tmp_path)
    assert proc.returncode == 2 and "must end with .tar.gz or .tgz" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    manifest, results = read_archive(archived["archive"])
    assert len(results) == manifest["jobs"] and all(r is not None for r in results.values())
