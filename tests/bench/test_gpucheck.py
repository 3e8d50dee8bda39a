"""The GPU check's scheduling and verdict lines, and its real paths run on a CPU."""

from __future__ import annotations

import json
import threading

import pytest
import torch

from imbadv.bench import gpucheck


def fake_paths(monkeypatch, behaviour: dict[str, tuple[tuple[str, ...], object]]) -> list[str]:
    """PATHS replaced by `behaviour`: name -> (needs, a result string or an exception to raise)."""
    ran: list[str] = []
    lock = threading.Lock()

    def make(name, outcome):
        def fn(check):
            with lock:
                ran.append(name)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome

        return fn

    paths = {n: (f"what {n}", needs, make(n, out)) for n, (needs, out) in behaviour.items()}
    monkeypatch.setattr(gpucheck, "PATHS", paths)
    return ran


def test_needed_adds_what_a_path_needs_in_declared_order():
    assert gpucheck.needed(["stack-rows"]) == [
        "sweep-off",
        "matrix-stack-off",
        "matrix-stack-on",
        "stack-rows",
    ]
    assert gpucheck.needed(["nope"]) == ["nope"]


def test_a_failed_path_fails_what_needs_it_without_running_it(monkeypatch, tmp_path, capsys):
    ran = fake_paths(
        monkeypatch,
        {
            "a": ((), gpucheck.CheckFailed("exit 1: boom")),
            "b": (("a",), "fine"),
            "c": ((), gpucheck.Skipped("not here")),
            "d": ((), KeyError("x")),
            "e": ((), "ok"),
        },
    )
    rows = gpucheck.run_all(gpucheck.Check("cpu", tmp_path), 2, list(gpucheck.PATHS))
    status = {r["path"]: r["status"] for r in rows}
    assert status == {"a": "FAIL", "b": "FAIL", "c": "SKIP", "d": "FAIL", "e": "PASS"}
    assert "b" not in ran and rows[1]["detail"] == "needs a, which failed"
    assert rows[3]["detail"] == "KeyError: 'x'"  # a broken path is a line, not a traceback
    lines = capsys.readouterr().out.splitlines()
    assert sorted(line.split()[0] + " " + line.split()[1] for line in lines) == [
        "FAIL a",
        "FAIL b",
        "FAIL d",
        "PASS e",
        "SKIP c",
    ]


def test_main_exits_1_on_a_fail_and_writes_every_row(monkeypatch, tmp_path):
    fake_paths(monkeypatch, {"a": ((), "ok"), "b": ((), gpucheck.CheckFailed("bad"))})
    out = tmp_path / "check"
    assert gpucheck.main(["--device", "cpu", "--out", str(out)]) == 1
    summary = json.loads((out / "gpu_check.json").read_text())
    assert summary["passed"] is False and [r["status"] for r in summary["paths"]] == [
        "PASS",
        "FAIL",
    ]
    fake_paths(monkeypatch, {"a": ((), "ok"), "c": ((), gpucheck.Skipped("no"))})
    assert gpucheck.main(["--device", "cpu", "--out", str(out)]) == 0


def test_an_unknown_path_is_refused_in_one_line(capsys):
    with pytest.raises(SystemExit) as stop:
        gpucheck.main(["--device", "cpu", "--only", "sweep-off,sweep-of"])
    assert stop.value.code == 2
    assert "--only sweep-of: not a path" in capsys.readouterr().err


def test_a_few_flipped_weights_pass_and_a_real_divergence_fails():
    gen = torch.Generator().manual_seed(0)
    a = {"w": torch.randn(100, 100, generator=gen), "b": torch.randn(100, generator=gen)}
    rounding = {n: t + 1e-7 * torch.randn(t.shape, generator=gen) for n, t in a.items()}
    flipped = {n: t.clone() for n, t in rounding.items()}
    flipped["w"][3, :4] += 2e-4  # one ReLU's few weights
    missed = {n: t + 1e-3 * torch.randn(t.shape, generator=gen) for n, t in a.items()}
    bound = 1.6e-4
    for b, ok in ((rounding, True), (flipped, True), (missed, False)):
        bulk, largest = gpucheck.weight_gap(a, b)
        assert (bulk <= bound and largest <= gpucheck.FLIP_FACTOR * bound) is ok
    assert gpucheck.weight_gap(a, flipped)[1] == pytest.approx(2e-4, rel=0.01)


@pytest.mark.slow
def test_the_real_paths_pass_on_a_cpu(tmp_path, capsys):
    """A sweep, grouped training against alone, a stored model as a checkpoint, report and
    status: real commands, as make gpu-check runs them (the rest run in make gpu-check itself)."""
    only = "group-on-vs-off,checkpoint,report"
    out = tmp_path / "check"
    code = gpucheck.main(["--device", "cpu", "--out", str(out), "--only", only])
    printed = capsys.readouterr().out
    assert code == 0, printed
    rows = json.loads((out / "gpu_check.json").read_text())["paths"]
    assert [r["path"] for r in rows] == [
        "sweep-off",
        "sweep-on",
        "group-on-vs-off",
        "checkpoint",
        "report",
    ]
    assert all(r["status"] == "PASS" for r in rows), printed
