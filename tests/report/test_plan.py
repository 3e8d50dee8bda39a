"""The analysis plan: read, quoted, one Holm family over every section, the rest descriptive."""

from __future__ import annotations

from pathlib import Path

import pytest

from imbadv.report import cli
from imbadv.report.errors import ReportError
from imbadv.report.plan import DESCRIPTIVE, check_section, load_plan, page_verdicts, plan_blocks
from imbadv.report.stats import CONFIRMED, INCONCLUSIVE, Finding

ROOT = Path(__file__).resolve().parents[2]


def write_plan(tmp_path: Path, family: list[str], version: int = 1) -> Path:
    path = tmp_path / "plan.yaml"
    members = "".join(f"  - {m}\n" for m in family)
    path.write_text(
        f"version: {version}\nalpha: 0.05\nfamily:\n{members}"
        "sections:\n  a: [a.tar.gz]\n  b: [b.tar.gz, --attack, pgd]\n"
        "rules:\n  floor: cells below 5 % clean accuracy are left out\n"
    )
    return path


def finding(key: str, p: float, mean: float = 0.1) -> Finding:
    return Finding(f"claim {key}", INCONCLUSIVE, f"evidence {key}", p=p, mean=mean, key=key)


FOUND = {
    "a": [finding("x", 0.015), finding("y", 0.6)],
    "b": [finding("z", 0.02), finding("w", 0.03)],
}


def test_a_finding_confirmed_in_a_small_family_is_inconclusive_in_a_wider_one(tmp_path):
    small = load_plan(write_plan(tmp_path, ["a:x", "a:y"]))
    (x, y) = page_verdicts(small, "a", FOUND)
    assert x.verdict == CONFIRMED and x.p_adj == pytest.approx(0.03)
    assert y.verdict == INCONCLUSIVE
    wide = load_plan(write_plan(tmp_path, ["a:x", "a:y", "b:z", "b:w"]))
    (x, _) = page_verdicts(wide, "a", FOUND)
    assert x.verdict == INCONCLUSIVE and x.p_adj == pytest.approx(0.06)
    assert "plan's 4 confirmatory findings" in x.evidence


def test_findings_outside_the_family_are_descriptive_never_confirmed(tmp_path):
    plan = load_plan(write_plan(tmp_path, ["a:y"]))
    (x, y) = page_verdicts(plan, "a", FOUND)
    assert x.verdict == DESCRIPTIVE and "descriptive, no correction" in x.evidence
    assert "p = 0.015" in x.evidence  # its raw p is shown, unadjusted
    assert y.verdict == INCONCLUSIVE


def test_a_member_without_a_p_value_stays_as_it_is_and_adds_no_hypothesis(tmp_path):
    plan = load_plan(write_plan(tmp_path, ["a:x", "b:z", "b:w"]))
    empty = Finding("claim w", INCONCLUSIVE, "all pairs left out", key="w")
    found = {"a": FOUND["a"], "b": [FOUND["b"][0], empty]}
    (z, w) = page_verdicts(plan, "b", found)
    assert w == empty and "plan's 2 confirmatory findings" in z.evidence


def test_the_plan_is_quoted_and_a_changed_plan_changes_the_quote(tmp_path):
    one = load_plan(write_plan(tmp_path, ["a:x", "b:z"]))
    text = plan_blocks(one, "a")[0][1]
    assert "version 1" in text and one.sha256[:12] in text and "(x)" in text
    assert plan_blocks(one, "a")[1] == (
        "ul",
        ["floor: cells below 5 % clean accuracy are left out"],
    )
    two = load_plan(write_plan(tmp_path, ["a:x", "a:y", "b:z"], version=2))
    assert plan_blocks(two, "a")[0][1] != text and "version 2" in plan_blocks(two, "a")[0][1]


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("version: 1\nfamily: []\n", "expected a mapping with version, family, sections"),
        ("version: 1\nfamily: [c:x]\nsections: {a: [a.tar.gz]}\n", "family member 'c:x'"),
        ("version: 1\nfamily: []\nsections: {a: []}\nalpah: 0.1\n", "unknown key alpah"),
        ("version: 1\nfamily: []\nsections: {a: []}\nalpha: 5\n", "alpha 5: must be in (0, 1)"),
    ],
)
def test_a_plan_that_cannot_be_used_is_one_line(tmp_path, text, says):
    path = tmp_path / "plan.yaml"
    path.write_text(text)
    with pytest.raises(ReportError, match=r"^--plan .*plan.yaml: ") as err:
        load_plan(path)
    assert says in str(err.value) and "\n" not in str(err.value)


def test_a_section_must_run_with_the_plan_s_arguments(tmp_path):
    plan = load_plan(write_plan(tmp_path, ["a:x"]))
    check_section(plan, "b", ["b.tar.gz", "--attack", "pgd"])
    with pytest.raises(ReportError, match="differ from the plan's"):
        check_section(plan, "b", ["b.tar.gz"])
    with pytest.raises(ReportError, match="not a section of the plan"):
        check_section(plan, "c", ["c.tar.gz"])


def test_the_page_s_plan_names_only_findings_the_report_makes():
    plan = load_plan(ROOT / "conf" / "report" / "plan.yaml")
    from imbadv.report.controlled import AT_CLEAN, TRANSFER
    from imbadv.report.paper import PAIRS, PAPER_KEYS
    from imbadv.report.studies import STUDY_KEYS

    pairs = [f"pair_{a}_{b}" for a, b in PAIRS]
    known = {*PAPER_KEYS, *STUDY_KEYS, *pairs, *(f"{p}_balanced" for p in pairs)}
    known |= {k for k, *_ in AT_CLEAN} | {f"{k}_shared_line" for k, *_ in AT_CLEAN}
    known |= {k for k, _ in TRANSFER}
    assert {m.split(":", 1)[1] for m in plan.family} <= known


def test_a_command_that_differs_from_its_plan_is_refused_before_any_work(tmp_path, capsys):
    plan = write_plan(tmp_path, ["a:x"])
    code = cli.main(["b.tar.gz", "--section", "b", "--plan", str(plan), "--results-page", "p.md"])
    assert code == 2
    assert "differ from the plan's" in capsys.readouterr().err
