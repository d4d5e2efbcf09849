"""The reference figures a notebook compares its run with (tinylab.course.expected and
tools/expected.py): which figures count, where they come from, and the warning."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from tinylab.course import expected
from tinylab.course.results import save_results

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
import expected as tool  # noqa: E402  (tools/expected.py)


def _results(tmp_path, profile="quick", teacher=0.82, student=0.79):
    return save_results(tmp_path, "06_task_distillation", profile=profile,
                        models={"teacher": {"accuracy": teacher, "latency_b1_ms": 13.0},
                                "TinyBERT": {"accuracy": student, "size_mb": 26.4}},
                        metrics={"student_of_teacher_accuracy": student / teacher,
                                 "augmented_rows": 50000, "teacher_agreement": 0.93,
                                 "seconds": 0.5, "flag": True})


def test_only_fractions_that_say_what_they_are_are_compared(tmp_path):
    figures = expected.figures_of(json.loads(_results(tmp_path).read_text()))
    assert figures == pytest.approx({"teacher accuracy": 0.82, "TinyBERT accuracy": 0.79,
                                     "student_of_teacher_accuracy": 0.79 / 0.82,
                                     "teacher_agreement": 0.93})


def test_the_tool_files_a_profile_and_refuses_another(tmp_path):
    runs = tmp_path / "runs"
    _results(runs / "06")
    target = tmp_path / "expected.json"
    tool.write_expected([runs], "quick", "make course", path=target)
    table = json.loads(target.read_text())
    entry = table["profiles"]["quick"]
    assert entry["command"] == "make course" and entry["date"] and "cores" in entry["machine"]
    assert entry["notebooks"]["06_task_distillation"]["teacher accuracy"] == 0.82
    with pytest.raises(ValueError, match=r"06_task_distillation_results.json was written under "
                                         r"profile 'quick', not 'ci'"):
        tool.write_expected([runs], "ci", "make test", path=target)
    assert tool.main([str(tmp_path / "empty"), "--profile", "ci", "--command", "x"]) == 2


def test_a_run_far_from_the_reference_is_named_in_a_warning(tmp_path, capsys):
    reference = tmp_path / "reference"
    _results(reference)
    target = tmp_path / "expected.json"
    tool.write_expected([reference], "quick", "make course", path=target)
    mine = _results(tmp_path / "mine", student=0.70)                 # 9 points below
    table = expected.compare_with_expected(mine, path=target)
    out = capsys.readouterr().out
    assert "WARNING: TinyBERT accuracy, student_of_teacher_accuracy lie more than 5%" in out
    assert table.loc["TinyBERT accuracy", "far"] and not table.loc["teacher accuracy", "far"]
    close = _results(tmp_path / "close", student=0.78)
    expected.compare_with_expected(close, path=target)
    assert "every figure is within 5% of the reference run" in capsys.readouterr().out
    other = _results(tmp_path / "full", profile="full")
    assert expected.compare_with_expected(other, path=target).empty
    assert "no reference figures for 06_task_distillation under profile 'full'" in (
        capsys.readouterr().out)


def test_the_package_carries_reference_figures_for_every_notebook_that_saves_results():
    table = json.loads(expected.EXPECTED_FILE.read_text())
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    saving = sorted(p.stem for p in notebooks.glob("*.ipynb")
                    if "save_results(" in p.read_text())
    for profile in ("ci", "quick"):
        have = table["profiles"][profile]["notebooks"]
        assert sorted(have) == saving, profile
        comparing = [p.stem for p in notebooks.glob("*.ipynb")
                     if "compare_with_expected(" in p.read_text()]
        assert sorted(comparing) == saving
