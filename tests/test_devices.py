"""Devices: GPU slots claimed by file locks, checked with a faked GPU count (no GPU needed)."""

import multiprocessing as mp
import time

import pytest
import torch
from conftest import run_cli

from imbadv.core.errors import ConfigError
from imbadv.devices import claim_gpu_slot, cpu_has_bf16, job_device, slot_order
from imbadv.run import check_jobs


def test_slot_order_spreads_over_gpus_first():
    assert slot_order(2, 2) == [(0, 0), (1, 0), (0, 1), (1, 1)]


def test_nested_claims_get_distinct_slots_and_release(tmp_path):
    with claim_gpu_slot(tmp_path, 2, 1) as a, claim_gpu_slot(tmp_path, 2, 1) as b:
        assert {a, b} == {0, 1}
    with claim_gpu_slot(tmp_path, 2, 1) as c, claim_gpu_slot(tmp_path, 2, 1) as d:
        assert {c, d} == {0, 1}  # released slots are free again


def test_a_worker_keeps_its_gpu_between_jobs(tmp_path):
    with claim_gpu_slot(tmp_path, 3, 1) as first, claim_gpu_slot(tmp_path, 3, 1) as second:
        assert (first, second) == (0, 1)
    with claim_gpu_slot(tmp_path, 3, 1) as again:  # GPU 0 is free, but this process was on 1
        assert again == 1
    with claim_gpu_slot(tmp_path / "other", 3, 1) as elsewhere:  # another store's slots
        assert elsewhere == 0
    assert slot_order(2, 2, last=(1, 1)) == [(1, 1), (0, 0), (1, 0), (0, 1)]
    assert slot_order(2, 2, last=(5, 0)) == slot_order(2, 2)  # a slot this machine lacks


def _hold(lock_dir, n_gpus, per_gpu, seconds, queue):
    with claim_gpu_slot(lock_dir, n_gpus, per_gpu, poll_s=0.05) as gpu:
        queue.put(("start", gpu, time.time()))
        time.sleep(seconds)
        queue.put(("end", gpu, time.time()))


@pytest.mark.slow
def test_processes_never_share_a_slot_and_never_wait_while_one_is_free(tmp_path):
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    procs = [ctx.Process(target=_hold, args=(str(tmp_path), 2, 2, 0.8, queue)) for _ in range(6)]
    for p in procs:
        p.start()
    events = sorted((queue.get(timeout=120) for _ in range(12)), key=lambda e: e[2])
    for p in procs:
        p.join(60)
    assert all(p.exitcode == 0 for p in procs)
    running = {0: 0, 1: 0}
    peak = 0
    for kind, gpu, _ in events:
        running[gpu] += 1 if kind == "start" else -1
        assert running[gpu] <= 2  # k = 2 jobs per GPU at most
        peak = max(peak, sum(running.values()))
    assert peak == 4  # all four slots were used at once: nobody waited while a slot was free


def test_cpu_when_no_gpu(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with job_device("auto", 1, tmp_path) as device:
        assert device.type == "cpu"


def test_one_visible_gpu_is_used_without_locks(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with job_device("auto", 1, tmp_path) as device:
        assert str(device) == "cuda:0"
    assert list(tmp_path.iterdir()) == []


def test_several_gpus_take_a_slot(tmp_path, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 3)
    with job_device("auto", 1, tmp_path) as a, job_device("auto", 1, tmp_path) as b:
        assert {str(a), str(b)} == {"cuda:0", "cuda:1"}


AVX2_EPYC = "processor\t: 0\nflags\t\t: fpu sse sse2 avx avx2 fma\n"
GENOA = "processor\t: 0\nflags\t\t: fpu avx2 avx512f avx512_bf16 avx512_vnni\n"
GRAVITON3 = "processor\t: 0\nFeatures\t: fp asimd sve bf16 i8mm\n"


def test_bf16_units_from_cpuinfo_and_onednn_cap():
    assert not cpu_has_bf16(AVX2_EPYC, {})
    assert cpu_has_bf16(GENOA, {}) and cpu_has_bf16(GRAVITON3, {})
    assert not cpu_has_bf16(GENOA, {"ONEDNN_MAX_CPU_ISA": "AVX2"})  # oneDNN told not to use them
    assert not cpu_has_bf16(GENOA, {"DNNL_MAX_CPU_ISA": "avx512_core"})
    assert cpu_has_bf16(GENOA, {"ONEDNN_MAX_CPU_ISA": "AVX512_CORE_AMX"})
    assert not cpu_has_bf16("", {})


@pytest.mark.slow
def test_a_bf16_preset_on_a_cpu_without_bf16_is_refused_before_any_work(tmp_path):
    # experiment=longtail trains in bf16-mixed; on this CPU told to use AVX2 only it is emulated
    args = ["experiment=longtail", "class=0", "device=cpu", "logger=none"]
    args += [f"paths.store_dir={tmp_path / 'store'}", f"hydra.run.dir={tmp_path / 'job'}"]
    proc = run_cli(args, tmp_path, env={"ONEDNN_MAX_CPU_ISA": "AVX2"}, timeout=120)
    assert proc.returncode == 2 and not (tmp_path / "job").exists()
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("imbadv: error: trainer.precision=bf16-mixed is not allowed: expected")
    assert "32-true on this CPU" in line


def test_32_true_passes_the_check_where_bf16_does_not(tmp_path, monkeypatch):
    monkeypatch.setenv("ONEDNN_MAX_CPU_ISA", "AVX2")
    args = [
        "experiment=longtail",
        "dataset=synthetic",
        "counts.majority=500",
        "class=0",
        "device=cpu",
    ]
    args += [f"paths.store_dir={tmp_path / 'store'}", f"hydra.run.dir={tmp_path / 'job'}"]
    assert check_jobs([*args, "trainer.precision=32-true"]) == 1
    with pytest.raises(ConfigError, match="trainer.precision=bf16-mixed"):
        check_jobs(args)
