"""A model that never learned: flagged in its record, the job's table, status and the report; out of findings."""

from __future__ import annotations

import json
import math
import re
import shutil
from pathlib import Path

import pytest
from conftest import TINY, run_cli

from imbadv.report import cli
from imbadv.report.loading import attack_rows, load_sweep
from imbadv.results import (
    BALANCED_RULE,
    balanced_bar,
    bar,
    describe,
    format_table,
    judge,
    never_learned,
    with_flag,
)
from imbadv.status import sweep as status

# The balanced source model of `experiment=smoke adversarial=pgd_at` at the suite's TINY sizes,
# as it trained: loss ln 10 and accuracy 1/10 in every epoch, 12 validation images a class.
AT_CHANCE = [{"epoch": e, "val/loss": 2.302585, "val/acc": 0.1} for e in range(3)]
BALANCED_VAL = [12] * 10


def test_a_model_at_chance_is_flagged_and_the_bar_is_chance_plus_3_sd():
    chance, needed = bar(BALANCED_VAL)
    assert chance == pytest.approx(0.1)
    assert needed == pytest.approx(0.1 + 3 * math.sqrt(0.1 * 0.9 / 120))  # 0.182
    check = judge(AT_CHANCE, BALANCED_VAL)
    assert check["learned"] is False and check["learned_check"]["best_val_acc"] == 0.1
    assert "3 binomial sd" in check["learned_check"]["rule"]
    # the best epoch counts: one epoch above the bar is a model that learned
    assert judge([*AT_CHANCE, {"epoch": 3, "val/acc": 0.19}], BALANCED_VAL)["learned"] is True
    assert judge([*AT_CHANCE, {"epoch": 3, "val/acc": 0.18}], BALANCED_VAL)["learned"] is False
    assert judge([{"epoch": 0, "val/loss": 2.3}], BALANCED_VAL)["learned"] is None  # unknown


def test_chance_on_a_long_tailed_split_is_the_head_class_share():
    tail = [100, 60, 36, 22, 13, 10, 10, 10, 10, 10]  # a model answering "class 0" gets 100/281
    head_only = [{"epoch": 0, "val/acc": 100 / sum(tail)}]
    assert judge(head_only, tail)["learned"] is False
    assert judge(head_only, BALANCED_VAL)["learned"] is True  # 0.356 is far above 1/10 + 3 sd


def test_balanced_accuracy_judges_where_the_history_has_it():
    tail = [100, 60, 36, 22, 13, 10, 10, 10, 10, 10]
    chance, needed = balanced_bar(tail)
    sd = math.sqrt(sum(0.1 * 0.9 / n for n in tail)) / 10
    assert chance == pytest.approx(0.1) and needed == pytest.approx(0.1 + 3 * sd)
    # answering the head class only: accuracy 100/281, balanced accuracy exactly 1/10
    head_only = [{"epoch": 0, "val/acc": 100 / sum(tail), "val/balanced_acc": 0.1}]
    check = judge(head_only, tail)
    assert check["learned"] is False and check["learned_check"]["rule"] == BALANCED_RULE
    # an over-sampled split (the quick preset's over-3 flagged by the accuracy rule at 0.432):
    # accuracy under the head share's bar, and a balanced accuracy that says it learned
    over = [20] * 9 + [100]  # 280 validation images, the target class 100 of them
    traded = [{"epoch": 0, "val/acc": 0.432, "val/balanced_acc": 0.41}]
    assert judge([{"epoch": 0, "val/acc": 0.432}], over)["learned"] is False  # the old rule
    assert judge(traded, over)["learned"] is True
    entry = {"history": head_only, "val_counts": tail}
    assert "best balanced validation accuracy 0.100" in describe(entry)


def test_recalls_average_the_classes_present():
    import torch

    from imbadv.training.loop import Recalls

    recalls, y = Recalls(), torch.tensor([0, 0, 0, 1, 2, 2])
    guess = torch.tensor([0, 1, 1, 1, 0, 2])  # recalls 1/3, 1, 1/2; class 3 absent
    logits = torch.nn.functional.one_hot(guess, 4).float()
    recalls.add(logits[:4], y[:4])
    recalls.add(logits[4:], y[4:])  # summed over the pass's batches
    assert recalls.balanced() == pytest.approx((1 / 3 + 1 + 1 / 2) / 3)
    assert math.isnan(recalls.balanced())  # read once: the next pass starts empty


def test_old_records_get_the_flag_from_their_history_and_the_table_names_it():
    old = {"history": AT_CHANCE, "val_counts": BALANCED_VAL}  # written before the flag existed
    assert never_learned(old) and with_flag(old)["learned"] is False
    kept = {"learned": True, "learned_check": {"rule": "x"}, "history": AT_CHANCE}
    assert with_flag(kept) is kept and not never_learned(kept)  # a stored flag is not recomputed
    full = {
        "meta": {
            "dataset": "synthetic",
            "class": 0,
            "class_name": "class0",
            "imbalance": "balanced",
            "seed": 0,
            "eps_space": "pixel [0, 1]",
        },
        "models": {
            "target": {**old, "clean": {"acc": 0.1}, "train_counts": [108] * 10, "best_epoch": 2}
        },
        "attacks": [],
    }
    table = format_table(full)
    assert "never learned: best validation accuracy 0.100 <= 0.182" in table
    full["models"]["target"]["history"] = [{"epoch": 0, "val/acc": 0.6}]
    assert "never learned" not in format_table(full)


def spoil(sweep: Path) -> str:
    """Give the balanced model, in every job, the history of a model at chance; its key."""
    key = None
    for path in sweep.rglob("results.json"):
        full = json.loads(path.read_text())
        for entry in full["models"].values():
            if entry["spec"]["imbalance"]["name"] == "balanced":
                entry.update(
                    history=AT_CHANCE,
                    learned=False,
                    learned_check=judge(AT_CHANCE, BALANCED_VAL)["learned_check"],
                )
                key = entry["key"]
        path.write_text(json.dumps(full))
    return key


def test_report_and_status_name_it_and_findings_leave_its_rows_out(smoke_sweep, tmp_path):
    sweep = tmp_path / "sweep"
    shutil.copytree(smoke_sweep["sweep"], sweep)
    clean = load_sweep(sweep)
    # the TINY over-sampled models answer their target class for everything (val acc 0.4 =
    # its share, test acc 0.1): they never learned; balanced and under did
    for entry in (e for r in clean.results for e in r["models"].values()):
        assert entry["learned"] is (entry["spec"]["imbalance"]["name"] != "over"), entry["key"]
    key = spoil(sweep)
    rows = attack_rows(load_sweep(sweep))
    gone = [r for r in rows if not r["learned"]]
    # the balanced model's own rows and every transfer row made with its gradient
    assert gone and {r["source"] for r in gone} == {"same", "balanced"}
    assert {r["imbalance"] for r in gone if r["source"] == "same"} == {"balanced", "over"}
    assert all(not r["learned"] for r in rows if r["source"] == "balanced")  # its images
    assert cli.main([str(sweep)]) == 0
    text = (sweep / "report.md").read_text()
    assert "## Models that never learned" in text and key in text and " ‡" in text
    # every balanced row is out: the finding is tested, has nothing left, and says why
    under = next(line for line in text.splitlines() if "more vulnerable than the balanced" in line)
    assert under.startswith("- **inconclusive**") and "a model that never learned" in under
    assert "3 model(s) never learned" in text  # balanced, over-0, over-1
    # a job's own model is named with its setting too (names repeat across objectives/recipes)
    assert re.search(r"- `over-\d` \(over, seed \d+, model \w+\): never learned", text)
    st = status.collect(sweep, smoke_sweep["store"])
    lines = status.format_status(st)
    assert "models that never learned (left out of the report's findings): 3" in lines
    assert key in lines


@pytest.mark.slow
def test_a_job_whose_model_stays_at_chance_says_so_end_to_end(tmp_path):
    # lr 1e-12: the model keeps its initial weights (one epoch, ~20 s of CPU)
    out = tmp_path / "job"
    proc = run_cli(
        [
            *TINY,
            "trainer.max_epochs=1",
            "optimizer.lr=1e-12",
            "class=0",
            "imbalance=balanced",
            f"paths.store_dir={tmp_path / 'store'}",
            f"hydra.run.dir={out}",
            "progress=quiet",
        ],
        cwd=tmp_path,
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    entry = json.loads((out / "results.json").read_text())["models"]["target"]
    assert entry["learned"] is False and entry["learned_check"]["n_val"] == 120
    # judged on the balanced accuracy its training logged, equal to its per-class recalls' mean
    assert entry["learned_check"]["rule"] == BALANCED_RULE
    (epoch,) = entry["history"]
    assert entry["learned_check"]["best_balanced_acc"] == epoch["val/balanced_acc"] <= 0.2
    stored = json.loads((tmp_path / "store" / "models" / f"{entry['key']}.json").read_text())
    assert stored["learned"] is False and "learned" not in stored["spec"]  # keys unchanged
    assert "** never learned: best balanced validation accuracy" in proc.stdout
