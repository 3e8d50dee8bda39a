"""The bench's measurements at tiny sizes: real runs, positive throughputs, the JSON's keys.

No speed assertions: these machines are shared and noisy.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from conftest import TINY

from imbadv import bench
from imbadv.attacks.gradient_sign import fgsm
from imbadv.bench import attacks as bench_attacks
from imbadv.bench import processes as bench_processes
from imbadv.models.vgg import VGG
from imbadv.training import TrainSettings

TINY_BENCH = [
    "--device",
    "cpu",
    "--width",
    "0.0625",
    "--batch-size",
    "8",
    "--steps",
    "2",
    "--warmup",
    "1",
    "--repeats",
    "1",
    "--attack-images",
    "16",
    "--eval-images",
    "64",
    "--attack-steps",
    "2",
    "--group",
    "2",
    "--stack",
    "2",
]


def positive(value: float) -> bool:
    return isinstance(value, float) and math.isfinite(value) and value > 0


def write_result(path, wall: float, trained: dict[str, bool], train_seconds: dict[str, float]):
    path.mkdir(parents=True)
    models = {role: {"train_seconds": sec} for role, sec in train_seconds.items()}
    full = {"meta": {"wall_seconds": wall, "trained_here": trained}, "models": models}
    (path / "results.json").write_text(json.dumps(full))


@pytest.mark.slow
def test_main_writes_json_with_required_keys_and_finite_ratios(tmp_path, capsys):
    out = tmp_path / "bench.json"
    write_result(tmp_path / "sweep" / "a", 10.0, {"target": True}, {"target": 6.0})
    report = bench.main([*TINY_BENCH, "--json", str(out), "--sweep", str(tmp_path / "sweep")])
    written = json.loads(out.read_text())
    assert set(bench.REQUIRED_KEYS) <= set(written)
    assert written["device"].startswith("cpu (")
    for key in (
        "train_vs_raw",
        "attack_vs_torchattacks",
        "fgsm_vs_torchattacks",
        "pgd_vs_torchattacks",
        "pgd_l2_vs_torchattacks",
        "mifgsm_vs_torchattacks",
    ):
        assert positive(written[key]), key
    assert written["attack_vs_torchattacks"] == min(
        written["fgsm_vs_torchattacks"], written["bim_vs_torchattacks"]
    )
    for key in ("imbadv_images_per_s", "raw_images_per_s", "imbadv_gflops"):
        assert positive(written["train"][key]), key
    assert positive(written["predict"]["images_per_s"])
    grouped = written["grouped"]  # reported as measured: no target, no speed assertion
    assert grouped["members"] == 2 and written["grouped_vs_sequence"] == grouped["ratio"]
    for key in ("grouped_images_per_s_per_member", "sequence_images_per_s_per_member", "ratio"):
        assert positive(grouped[key]), key
    assert grouped["weights_max_abs_diff"] < 1e-4  # the same steps, members as if alone
    for side in ("grouped", "sequence"):  # the VGG's achieved rate beside the machine's matmul
        assert positive(grouped[f"{side}_gflops"]) and positive(grouped[f"{side}_of_matmul_rate"])
    per_member = (
        grouped["grouped_images_per_s_per_member"] / grouped["sequence_images_per_s_per_member"]
    )
    assert grouped["grouped_gflops"] / grouped["sequence_gflops"] == pytest.approx(per_member)
    stacked = written["stacked"]  # reported as measured, as the grouped row
    assert stacked["sources"] == 2 and written["stacked_vs_sequence"] == stacked["ratio"]
    for key in ("stacked_images_per_s_per_source", "sequence_images_per_s_per_source", "ratio"):
        assert positive(stacked[key]), key
    assert stacked["differing_pixel_fraction"] <= 1e-3  # each source's own images (sign flips)
    # the K-processes side: each spawned process trained its member (seed i, the same batches)
    # through fit's path, as the sequence did, so they end with the sequence's weights
    assert written["grouped_vs_processes"] == grouped["vs_processes"]
    assert positive(grouped["processes_images_per_s_per_member"]) and positive(
        grouped["processes_gflops"]
    )
    assert grouped["processes_weights_max_abs_diff"] < 1e-4
    assert grouped["threads_per_process"] == bench_processes.threads_per_process(
        torch.get_num_threads(), 2
    )
    assert positive(written["machine"]["matmul_fp32_gflops"])
    assert written["settings"]["seed"] == 0 and written["attacks_identical"] is True
    for row in written["attack"].values():
        assert row["identical"] is True and row["differing_images"] == 0
    assert written["sweep"]["train_seconds"] == 6.0
    assert report["train_vs_raw"] == written["train_vs_raw"]
    printed = capsys.readouterr().out
    assert "train" in printed and "stacked vs one by one" in printed


def test_threads_per_process_share_the_bench_threads():
    assert [bench_processes.threads_per_process(t, 2) for t in (1, 2, 5, 16)] == [1, 1, 2, 8]
    assert bench_processes.threads_per_process(16, 10) == 1


@pytest.mark.slow
def test_a_failing_member_process_raises_its_traceback_not_a_hang():
    # no images: the child's fit runs no step and its clock has no read; its traceback comes
    # back to the parent, which raises instead of waiting for a report
    s = TrainSettings(batch_size=8, max_epochs=1)
    model = bench.bench_model("vgg", 0.0625, 0)
    with pytest.raises(RuntimeError, match="member 0 failed"):
        bench_processes.processes_train(model, [model], 0, s, 1, torch.device("cpu"), 1)


def test_both_training_sides_take_the_same_optimizer_steps():
    model = VGG(width=0.0625)
    s = TrainSettings(batch_size=8, max_epochs=1)
    deterministic = torch.are_deterministic_algorithms_enabled()
    result = bench.bench_training(
        model, s, warmup=1, steps=2, repeats=1, device=torch.device("cpu")
    )
    assert positive(result["raw_images_per_s"]) and positive(result["imbadv_images_per_s"])
    # Same start, batches and optimizer: if the raw loop drifted from imbadv's path, this moves.
    assert result["weights_max_abs_diff"] < 1e-5
    # Trainer(deterministic=True) sets a process-wide flag; the bench puts it back.
    assert torch.are_deterministic_algorithms_enabled() == deterministic


def test_both_adversarial_training_sides_take_the_same_steps():
    model = VGG(width=0.0625)
    s = TrainSettings(batch_size=8, max_epochs=1)
    result = bench.bench_training(
        model, s, warmup=1, steps=2, repeats=1, device=torch.device("cpu"), at_eps=8 / 255
    )
    # the bare fast-FGSM loop draws the same random starts and takes the same inner step as
    # imbadv's AdversarialStep: the weights end alike (they would not if either side changed)
    assert result["weights_max_abs_diff"] < 1e-5
    plain = bench.bench_training(model, s, warmup=1, steps=2, repeats=1, device=torch.device("cpu"))
    assert plain["weights_max_abs_diff"] < 1e-5 and positive(result["imbadv_images_per_s"])


ATTACKS = ("fgsm", "bim", "pgd", "pgd_l2", "mifgsm")


def tiny_attacks(model: torch.nn.Module, n: int = 12, batch: int = 8, **kw) -> dict:
    x, y = bench.make_data(n, torch.device("cpu"), seed=3)
    # batches of 8 and 4: each batch's random start is seeded by its first index on both sides,
    # and the reference PGD-L2's guard follows the batch's size
    return bench_attacks.bench_attacks(model.eval(), x.float() / 255, y, 8 / 255, batch, 1, 3, **kw)


@pytest.mark.parametrize("shrink", [1.0, 1e-3])
@pytest.mark.parametrize("seed", [0, 1])
def test_attack_images_are_identical_to_torchattacks_on_two_seeds(seed, shrink):
    model = bench.bench_model("vgg", 0.0625, seed)
    with torch.no_grad():  # shrink: gradient norms ~3e-4, where a 1e-10 guard shows in float32
        model.classifier[-1].weight.mul_(shrink)
    result = tiny_attacks(model)
    for name in ATTACKS:
        assert result[name]["identical"] and result[name]["differing_images"] == 0, name
        # power-of-2 batches: the same arithmetic on both sides, bit for bit (with torchattacks'
        # own 1e-10 guard on the mean's norm, PGD-L2 differs here by 1.8e-7)
        assert result[name]["max_abs_diff"] == 0.0, name
        assert positive(result[name]["imbadv_images_per_s"]), name


def test_a_different_reference_is_reported_not_raised(monkeypatch):
    real = bench_attacks.attack_pairs

    def perturbed_guard(model, eps, steps):
        pairs = real(model, eps, steps)
        reference = bench_attacks.matched_pgdl2(model, bench_attacks.L2_EPS, 0.1, steps, guard=1.0)
        return pairs | {"pgd_l2": (pairs["pgd_l2"][0], reference)}

    monkeypatch.setattr(bench_attacks, "attack_pairs", perturbed_guard)
    result = tiny_attacks(bench.bench_model("vgg", 0.0625, 0), names=("pgd_l2", "fgsm"))
    assert not result["pgd_l2"]["identical"]
    assert 0 < result["pgd_l2"]["differing_images"] <= 12
    assert result["pgd_l2"]["max_abs_diff"] > bench_attacks.IDENTICAL_TOL
    assert result["fgsm"]["identical"]
    line = bench_attacks.differing(result, 12)
    assert "pgd_l2 (max |diff|" in line and "of 12 images" in line and "fgsm" not in line
    assert bench_attacks.differing({"fgsm": result["fgsm"]}, 12) is None


def changed_fgsm_step(monkeypatch):
    """The reference FGSM steps 2 eps: every image differs from imbadv's."""
    import torchattacks

    real = bench_attacks.attack_pairs

    def pairs(model, eps, steps):
        out = real(model, eps, steps)
        return out | {"fgsm": (out["fgsm"][0], torchattacks.FGSM(model, eps=2 * eps))}

    monkeypatch.setattr(bench_attacks, "attack_pairs", pairs)


@pytest.mark.slow
def test_a_differing_row_is_printed_and_recorded_and_strict_exits_1(tmp_path, monkeypatch, capsys):
    changed_fgsm_step(monkeypatch)
    seeds = []
    build = bench.bench_model
    monkeypatch.setattr(bench, "bench_model", lambda *a: seeds.append(a[2]) or build(*a))
    out = tmp_path / "bench.json"
    args = [*TINY_BENCH, "--attacks", "fgsm,bim", "--seed", "3", "--json", str(out)]
    report = bench.main(args)  # not strict: no exception, no exit
    assert seeds == [3] and report["settings"]["seed"] == 3
    written = json.loads(out.read_text())
    fgsm_row, bim_row = written["attack"]["fgsm"], written["attack"]["bim"]
    assert not fgsm_row["identical"] and fgsm_row["differing_images"] == 16
    assert bim_row["identical"] and bim_row["differing_images"] == 0
    assert written["attacks_identical"] is False
    printed = capsys.readouterr().out
    assert " NO " in printed and "fgsm (max |diff|" in printed and "16 of 16 images" in printed

    out.unlink()
    with pytest.raises(SystemExit) as exit_:
        bench.main([*args, "--strict"])
    assert exit_.value.code == 1
    # one line (Lightning may warn on stderr too, e.g. when it sees SLURM's srun)
    err = [line for line in capsys.readouterr().err.splitlines() if "bench --strict" in line]
    assert len(err) == 1 and err[0].startswith("bench --strict: ") and "16 of 16" in err[0]
    assert "fgsm" in err[0] and "bim" not in err[0]
    assert json.loads(out.read_text())["attacks_identical"] is False  # written before the exit


@pytest.mark.parametrize("name", ["vgg", "resnet18"])
def test_the_seed_sets_the_bench_model_weights(name):
    def weights(seed: int) -> list[torch.Tensor]:
        return [w.detach().clone() for w in bench.bench_model(name, 0.0625, seed).parameters()]

    torch.manual_seed(123)  # the global generator must not matter
    first = weights(0)
    torch.manual_seed(456)
    again, other = weights(0), weights(1)
    assert all(torch.equal(a, b) for a, b in zip(first, again, strict=True))
    assert not all(torch.equal(a, b) for a, b in zip(first, other, strict=True))


def test_compare_images_counts_the_differing_images():
    model = bench.bench_model("vgg", 0.0625, 0).eval()
    x, y = bench.make_data(4, torch.device("cpu"), seed=4)
    adv = fgsm(model, x.float() / 255, y, 0.01)
    same = bench_attacks.compare_images(adv, adv.clone())
    assert same == {"identical": True, "max_abs_diff": 0.0, "differing_images": 0}
    moved = adv.clone()
    moved[0, 0, 0, 0] += 1e-3
    moved[2, 1, 5, 5] += 1e-7  # within the tolerance
    moved[3, 2, 1, 1] = float("nan")
    result = bench_attacks.compare_images(adv, moved)
    assert not result["identical"] and result["differing_images"] == 2
    assert math.isnan(result["max_abs_diff"])
    one = adv.clone()
    one[1, 0, 0, 0] += 1e-3
    assert bench_attacks.compare_images(adv, one)["max_abs_diff"] == pytest.approx(1e-3, rel=1e-3)
    assert not bench_attacks.compare_images(adv, adv[:2])["identical"]


def test_sweep_totals_split_each_jobs_stages(tmp_path):
    stages = {"data": 1.0, "device_wait": 0.5, "models": 6.0, "clean_eval": 0.5, "attacks": 1.5, "lock_wait": 0.25}  # fmt: skip
    write_result(tmp_path / "a", 10.0, {"target": True}, {"target": 5.0})
    write_result(tmp_path / "b", 4.0, {"target": False}, {"target": 5.0})
    for name, start, st in (("a", 100.0, stages), ("b", 104.0, {**stages, "attacks": 0.0, "clean_eval": 0.0})):  # fmt: skip
        path = tmp_path / name / "results.json"
        full = json.loads(path.read_text())
        full["meta"] |= {"stage_seconds": st, "started_at": start, "finished_at": start + full["meta"]["wall_seconds"]}  # fmt: skip
        path.write_text(json.dumps(full))
    t = bench.sweep_totals(tmp_path)
    assert (
        t["attacks_seconds"] == 1.5
        and t["models_seconds"] == 12.0
        and t["lock_wait_seconds"] == 0.5
    )
    assert t["overhead_seconds"] == pytest.approx((10.0 - 9.5) + (4.0 - 7.5))
    assert t["results_reused"] == 1 and t["elapsed_seconds"] == 10.0 and t["concurrency"] == 1.4
    assert "jobs_without_stages" not in t
    assert t["trainings"] == 1 and t["train_seconds"] == 5.0 and t["helping_seconds"] == 0.0
    # job b trained another job's model while its own was busy: a training, in its models stage
    path = tmp_path / "b" / "results.json"
    full = json.loads(path.read_text())
    full["meta"]["helped"] = ["k2"]
    full["meta"]["stage_seconds"]["helping"] = 3.0
    path.write_text(json.dumps(full))
    t = bench.sweep_totals(tmp_path)
    assert t["trainings"] == 2 and t["train_seconds"] == 8.0 and t["helping_seconds"] == 3.0
    assert t["models_seconds"] == 12.0  # helping is inside `models`, as lock waits are


def test_sweep_totals_count_only_models_trained_in_the_job(tmp_path):
    write_result(
        tmp_path / "a",
        100.0,
        {"target": True, "balanced": True},
        {"target": 30.0, "balanced": 50.0},
    )
    # This job loaded the balanced model: its train_seconds belong to job "a".
    write_result(
        tmp_path / "b",
        40.0,
        {"target": True, "balanced": False},
        {"target": 20.0, "balanced": 50.0},
    )
    totals = bench.sweep_totals(tmp_path)
    assert totals == {
        "jobs": 2,
        "trainings": 3,
        "wall_seconds": 140.0,
        "train_seconds": 100.0,
        "other_seconds": 40.0,
        "jobs_without_stages": 2,
    }
    with pytest.raises(FileNotFoundError):
        bench.sweep_totals(tmp_path / "empty")


@pytest.mark.slow
def test_quick_job_reports_peak_rss_of_a_real_run():
    shrink = [x for x in TINY if x != "experiment=smoke"]
    result = bench.quick_job(None, torch.device("cpu"), 1, extra=tuple(shrink))
    assert positive(result["peak_rss_mib"]) and "experiment=smoke" in result["command"]


def test_a_batchnorm_model_takes_the_same_steps_on_both_sides():
    model = bench.bench_model("resnet18", 0.0625)
    s = TrainSettings(batch_size=8, max_epochs=1)
    result = bench.bench_training(
        model, s, warmup=1, steps=2, repeats=1, device=torch.device("cpu")
    )
    assert result["weights_max_abs_diff"] < 1e-5  # BatchNorm statistics included


def test_the_compile_row_reports_a_fallback_with_eager_weights(monkeypatch):
    from imbadv.training import compiled

    def broken(model, **_):
        def raises(x):
            raise RuntimeError("inductor: no compiler")

        return raises

    monkeypatch.setattr(compiled.torch, "compile", broken)
    s = TrainSettings(batch_size=8, max_epochs=1)
    result = bench.bench_compile(
        VGG(width=0.0625), s, warmup=1, steps=2, repeats=1, device=torch.device("cpu")
    )
    # the compiled side fell back at its first step: the same eager steps, bit for bit
    assert result["compiled"] is False and "inductor: no compiler" in result["compile_fallback"]
    assert result["weights_max_abs_diff"] == 0.0 and positive(result["compiled_images_per_s"])
    assert positive(result["ratio"]) and math.isfinite(result["compile_seconds"])


def test_attack_rows_without_torchattacks_are_refused_before_any_work(monkeypatch, capsys):
    found = bench.importlib.util.find_spec
    monkeypatch.setattr(
        bench.importlib.util, "find_spec", lambda n: None if n == "torchattacks" else found(n)
    )
    monkeypatch.setattr(bench, "run_bench", lambda args: pytest.fail("work started"))
    with pytest.raises(SystemExit) as stop:
        bench.main([*TINY_BENCH, "--attacks", "fgsm"])
    assert stop.value.code == 2
    line = capsys.readouterr().err.strip().splitlines()[-1]
    assert "--attacks=fgsm" in line and "torchattacks" in line and "--attacks none" in line


def test_unknown_attack_names_are_refused_in_one_line(capsys):
    with pytest.raises(SystemExit):
        bench.parse_args(["--device", "cpu", "--attacks", "fgsm,pgdx"])
    assert "unknown pgdx; allowed: fgsm,bim,pgd,pgd_l2,mifgsm or none" in capsys.readouterr().err


def test_attacks_none_measures_the_rest_without_torchattacks(monkeypatch, tmp_path):
    found = bench.importlib.util.find_spec
    monkeypatch.setattr(
        bench.importlib.util, "find_spec", lambda n: None if n == "torchattacks" else found(n)
    )
    monkeypatch.setattr(bench, "installed", lambda name: None)
    args = ["--group", "0", "--stack", "0", "--attacks", "none", "--json", str(tmp_path / "b.json")]
    report = bench.main([*TINY_BENCH, *args])
    assert report["attack"] == {} and positive(report["train_vs_raw"])
    assert math.isnan(report["attack_vs_torchattacks"])
    assert report["machine"]["torchattacks"] is None


def test_the_grouped_compiled_side_is_reported_beside_the_eager_group(monkeypatch):
    from imbadv.bench.grouped import bench_grouped
    from imbadv.bench.table import grouped_rates, optional_lines
    from imbadv.training import compiled

    def broken(model, **_):
        def raises(x):
            raise RuntimeError("inductor: no compiler")

        return raises

    monkeypatch.setattr(compiled.torch, "compile", broken)  # eager: the same steps, bit for bit
    s = TrainSettings(batch_size=8, max_epochs=1)
    cpu = torch.device("cpu")
    row = bench_grouped(VGG(width=0.0625), s, 2, 1, 2, 1, cpu, processes=False, compiled=True)
    assert row["compiled_weights_max_abs_diff"] == 0.0
    assert positive(row["compiled_images_per_s_per_member"]) and positive(
        row["compiled_vs_grouped"]
    )
    report = grouped_rates(row, 100.0, 1e6)
    assert report["grouped_compiled_vs_grouped"] == row["compiled_vs_grouped"]
    assert positive(row["compiled_gflops"])
    assert len(row["compiled_run_seconds"]) == len(row["grouped_run_seconds"]) == 1
    # the profiled runs: the share of the timed steps spent inside torch operators on this CPU
    assert set(row["busy_share"]) == {"alone", "grouped", "compiled"}
    assert all(0.0 < v <= 1.0 for v in row["busy_share"].values()), row["busy_share"]
    assert "torch operators on the CPU" in row["busy_what"]
    assert "device busy alone" in next(x for x in optional_lines(report) if "in sequence" in x)
    (line,) = [x for x in optional_lines(report) if "compiled vs eager" in x]
    assert "2 grouped compiled vs eager" in line


def test_busy_time_counts_overlapping_work_once():
    from imbadv.bench.busy import union_seconds

    assert union_seconds([]) == 0.0
    # nested (an operator inside another), overlapping (two streams), disjoint: in microseconds
    spans = [(0.0, 10.0), (2.0, 3.0), (8.0, 15.0), (20.0, 21.0)]
    assert union_seconds(spans) == pytest.approx(16e-6)


def test_formats_row_saves_the_choice_that_auto_reads(tmp_path, capsys):
    from imbadv.training import formats

    args = ["--group", "0", "--stack", "0", "--attacks", "none", "--formats"]
    report = bench.main([*TINY_BENCH, *args, "--store", str(tmp_path)])
    row = report["formats"]
    assert {"32-true/nhwc", "32-true/nchw"} <= set(row["images_per_s"])
    assert all(positive(v) for v in row["images_per_s"].values())
    table = formats.read_table(tmp_path / formats.FILE)
    entry = table[formats.cpu_name()][formats.entry_key("vgg", 0.0625, 8)]
    assert entry["precision"] == row["choice"]["precision"] and "--formats" in entry["command"]
    auto = TrainSettings(batch_size=8, precision="auto", channels_last="auto")
    key = formats.entry_key("vgg", 0.0625, 8)
    train, note = formats.resolve(auto, key, formats.cpu_name(), table)
    assert (train.precision, train.channels_last) == (entry["precision"], entry["channels_last"])
    assert "formats" in capsys.readouterr().out
