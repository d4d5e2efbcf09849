"""The course runner: notebook selection, results files, the summary, failures, the CLI wiring.

Runs tiny throw-away notebooks (a print and a results file), not the course itself
(tests/test_notebooks.py does that).
"""
from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from tinylab import course
from tinylab.course import runner
from tinylab.course import (build_summary, list_notebooks, load_results, run_course,
                            save_results, select_notebooks, summary_markdown)


def _notebook(path: Path, *cells: str) -> Path:
    """A notebook with a parameters cell (PROFILE, OUTPUT_DIR) followed by ``cells``."""
    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('PROFILE = None\nOUTPUT_DIR = None')
    params.metadata["tags"] = ["parameters"]
    nb.cells = [nbformat.v4.new_markdown_cell("# toy"), params,
                *(nbformat.v4.new_code_cell(src) for src in cells)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nbformat.write(nb, path)
    return path


WRITE_RESULTS = """
from tinylab.course import save_results
save_results(OUTPUT_DIR, "{stem}", profile=PROFILE,
             models={{"teacher": {{"accuracy": 0.8, "parameters": 22700000}},
                      "student": {{"accuracy": 0.75, "parameters": 7300000}}}},
             metrics={{"speed_up": 7.5}})
print("ran with", PROFILE)
"""


@pytest.fixture()
def toy_course(tmp_path) -> Path:
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_first.ipynb", WRITE_RESULTS.format(stem="01_first"))
    _notebook(folder / "02_second.ipynb", "x = 1 + 1", "print(x)")
    (folder / "notes.ipynb").write_text("{}")  # not NN_name: never picked up
    return folder


def test_list_and_select_notebooks(toy_course):
    assert [p.name for p in list_notebooks(toy_course)] == ["01_first.ipynb", "02_second.ipynb"]
    assert [p.stem for p in select_notebooks(None, toy_course)] == ["01_first", "02_second"]
    picked = select_notebooks(["02", "01_first.ipynb"], toy_course)
    assert [p.stem for p in picked] == ["01_first", "02_second"]  # course order kept
    with pytest.raises(ValueError, match="unknown notebook '08'.*01_first"):
        select_notebooks(["08"], toy_course)
    with pytest.raises(FileNotFoundError, match="source checkout"):
        list_notebooks(toy_course / "missing")


def test_save_and_load_results_roundtrip(tmp_path):
    path = save_results(tmp_path, "05_demo", profile="ci", models={"student": {"accuracy": 0.5}},
                        metrics={"steps": 3})
    assert path.name == "05_demo_results.json"
    assert not list(tmp_path.glob(".*tmp"))  # atomic: no temp files left behind
    assert load_results(tmp_path) == {"05_demo": {"notebook": "05_demo", "profile": "ci",
                                                  "models": {"student": {"accuracy": 0.5}},
                                                  "metrics": {"steps": 3}}}
    with pytest.raises(ValueError, match="stem"):
        save_results(tmp_path, "demo", profile="ci")
    with pytest.raises(TypeError, match="float"):
        save_results(tmp_path, "05_demo", profile="ci", metrics={"bad": object()})


def test_summary_keeps_only_this_profile(tmp_path):
    save_results(tmp_path, "02_a", profile="quick", models={"teacher": {"accuracy": 0.81}})
    save_results(tmp_path, "05_b", profile="ci", models={"student": {"accuracy": 0.5}})
    runs = [course.NotebookRun("02_a", "ok", 3.0, "x"), course.NotebookRun("05_b", "ok", 2.0)]
    summary = build_summary(runs, tmp_path, "quick")
    assert [r["notebook"] for r in summary["models"]] == ["02_a"]
    assert summary["ignored_results"] == ["05_b"]
    assert summary["total_wall_time_s"] == 5.0
    text = summary_markdown(summary)
    assert "| 02_a | teacher | 0.81 |" in text and "| 05_b | ok | 2.0 |" in text
    assert "Ignored results from another profile: 05_b" in text


@pytest.mark.slow
def test_run_course_executes_in_order_and_summarises(toy_course, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_course(profile="ci", output_dir=out, notebook_dir=toy_course, progress=False) == 0
    executed = nbformat.read(out / "01_first.ipynb", as_version=4)
    printed = [o.get("text", "") for c in executed.cells for o in c.get("outputs", [])]
    assert "ran with ci\n" in printed  # papermill injected PROFILE
    summary = json.loads((out / "summary.json").read_text())
    assert [n["status"] for n in summary["notebooks"]] == ["ok", "ok"]
    assert all(n["wall_time_s"] > 0 for n in summary["notebooks"])
    assert {r["model"]: r["accuracy"] for r in summary["models"]} == {"teacher": 0.8,
                                                                      "student": 0.75}
    markdown = (out / "summary.md").read_text()
    assert "| 01_first | student | 0.75 | 7,300,000 |" in markdown
    assert "Teacher vs student" in capsys.readouterr().out


@pytest.mark.slow
def test_failing_notebook_stops_the_run_with_a_report(tmp_path, capsys):
    folder = tmp_path / "notebooks"
    folder.mkdir()
    _notebook(folder / "01_ok.ipynb", "print('fine')")
    _notebook(folder / "02_broken.ipynb", "a = 1", "raise RuntimeError('boom in cell')")
    _notebook(folder / "03_never.ipynb", "print('never runs')")
    out = tmp_path / "out"
    assert run_course(profile="ci", output_dir=out, notebook_dir=folder, progress=False) == 1
    err = capsys.readouterr().err
    assert "02_broken.ipynb FAILED" in err
    assert "raise RuntimeError('boom in cell')" in err and "RuntimeError: boom in cell" in err
    assert str(out / "02_broken.ipynb") in err and (out / "02_broken.ipynb").exists()
    assert not (out / "03_never.ipynb").exists()
    summary = json.loads((out / "summary.json").read_text())
    assert [n["status"] for n in summary["notebooks"]] == ["ok", "failed", "skipped"]
    assert summary["notebooks"][1]["failing_cell"]["source"] == "raise RuntimeError('boom in cell')"


def test_cli_course_run_is_wired_to_run_course(monkeypatch):
    from tinylab.cli import main

    seen = {}

    def fake_run_course(**kwargs):
        seen.update(kwargs)
        return 7

    monkeypatch.setattr(course, "run_course", fake_run_course)
    assert main(["course", "run", "--profile", "ci", "--output", "somewhere", "03"]) == 7
    assert seen == {"profile": "ci", "output_dir": "somewhere", "notebooks": ["03"],
                    "alone": False, "overwrite": False}


def test_cli_reports_bad_profile(tmp_path, capsys):
    from tinylab.cli import main

    assert main(["course", "run", "--profile", "nope", "--output", str(tmp_path)]) == 2
    assert "unknown profile 'nope'" in capsys.readouterr().err


def test_open_lab_starts_jupyterlab_on_the_notebooks(monkeypatch, toy_course):
    calls = []
    monkeypatch.setattr(runner.subprocess, "call", lambda cmd: calls.append(cmd) or 0)
    assert course.open_lab(["--no-browser"], notebook_dir=toy_course) == 0
    (command,) = calls
    assert command[1:3] == ["-m", "jupyterlab"]
    assert f"--ServerApp.root_dir={toy_course}" in command and command[-1] == "--no-browser"


@pytest.mark.parametrize("profile", ["ci", "quick"])
def test_prepare_covers_every_notebooks_teacher(profile):
    """Notebooks 02-08 reuse the teacher `course prepare` caches: the presets of notebooks 05,
    06 and 08 must leave the teacher's cache key alone, and notebooks 02-04 and 07 start from
    the plain profile."""
    from tinylab.config import get_config
    from tinylab.distill import teacher_cache_key

    for preset in ("two-stage", "methods"):
        assert teacher_cache_key(get_config(profile, preset=preset)) == teacher_cache_key(
            get_config(profile))
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    for name in ("02_teacher_inference", "03_soft_label_math", "04_tinybert_loss",
                 "07_deploying_the_student"):
        assert "cfg = get_config(PROFILE)" in (notebooks / f"{name}.ipynb").read_text(), name
    assert 'cfg = get_config(PROFILE, preset=\\"methods\\")' in (
        notebooks / "08_other_ways_to_distil.ipynb").read_text()


def test_an_installed_package_without_a_checkout_says_so_in_one_line(monkeypatch, capsys, tmp_path):
    """From an installed wheel (no notebooks/ beside the package) whatever needs the notebooks
    stops in one line naming what needs a checkout and how to get one."""
    from tinylab.cli import main
    from tinylab.course import checkout

    monkeypatch.setattr(checkout, "checkout_root", lambda: None)
    with pytest.raises(checkout.CheckoutNeeded, match="git clone .*pip install -e"):
        list_notebooks()
    assert main(["course", "run", "--profile", "ci", "--output", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "needs a source checkout" in err
    assert "the course notebooks" in err and not (tmp_path / "out").exists()


def test_only_the_checkout_module_finds_the_checkout():
    """The package finds the repository in one place (tinylab/course/checkout.py), and nothing
    in it writes into docs/ or notebooks/ (that is tools/, run by make)."""
    import re

    package = Path(__file__).resolve().parents[1] / "tinylab"
    found = [str(p.relative_to(package)) for p in package.rglob("*.py")
             if re.search(r"parents\[\d\]", p.read_text(encoding="utf-8"))]
    assert found == ["course/checkout.py"]
