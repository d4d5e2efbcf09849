"""``tinylab course run`` and ``course solutions`` claim their output folder as ``distill``
does: a user's files there are never replaced, and nothing is written through a link."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from tinylab import cli, course
from tinylab.course import list_notebooks, runner

NOTEBOOKS = list_notebooks()


def _toy(folder: Path) -> Path:
    folder.mkdir()
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_code_cell("print('hi')")]
    nbformat.write(nb, folder / "01_toy.ipynb")
    return folder


@pytest.fixture()
def no_kernel(monkeypatch):
    """``run_notebook`` that writes the executed copy without starting a kernel, and counts."""
    calls = []

    def fake(path, output_path, **kwargs):
        calls.append(Path(output_path))
        Path(output_path).write_text(Path(path).read_text())
        return 0.1

    monkeypatch.setattr(runner, "run_notebook", fake)
    return calls


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    return err


def test_course_run_refuses_a_folder_with_the_users_summary(tmp_path, no_kernel, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "summary.md").write_text("my own summary")
    (out / "01_toy.ipynb").write_text("my notebook")
    toy = _toy(tmp_path / "nbs")
    with pytest.raises(ValueError, match="--overwrite"):
        course.run_course("ci", out, notebook_dir=toy, progress=False)
    assert (out / "summary.md").read_text() == "my own summary"
    assert (out / "01_toy.ipynb").read_text() == "my notebook" and no_kernel == []


def test_course_run_reuses_its_own_folder_and_keeps_other_files(tmp_path, no_kernel):
    out, toy = tmp_path / "out", _toy(tmp_path / "nbs")
    assert course.run_course("ci", out, notebook_dir=toy, progress=False) == 0
    (out / "notes.md").write_text("mine")
    assert course.run_course("ci", out, notebook_dir=toy, progress=False) == 0   # its folder
    assert (out / "notes.md").read_text() == "mine" and len(no_kernel) == 2


def test_course_run_never_writes_through_a_link(tmp_path, no_kernel, capsys, monkeypatch):
    out, toy = tmp_path / "out", _toy(tmp_path / "nbs")
    out.mkdir()
    precious = tmp_path / "precious.md"
    precious.write_text("do not touch")
    (out / "summary.md").symlink_to(precious)
    monkeypatch.setenv("TINYLAB_PROFILE", "ci")
    assert cli.main(["course", "run", "--output", str(out), "--overwrite"]) == 2
    assert "summary.md is a symbolic link" in _one_error_line(capsys)
    assert precious.read_text() == "do not touch" and no_kernel == []


def test_course_run_checks_device_and_output_before_any_kernel(tmp_path, no_kernel, capsys,
                                                               monkeypatch):
    monkeypatch.setenv("TINYLAB_DEVICE", "cuda")   # no GPU here (the CPU-only torch build)
    assert cli.main(["course", "run", "--profile", "ci", "--output",
                     str(tmp_path / "out")]) == 2
    assert "cuda" in _one_error_line(capsys) and no_kernel == []
    assert not (tmp_path / "out").exists()
    monkeypatch.delenv("TINYLAB_DEVICE")
    dangling = tmp_path / "link"
    dangling.symlink_to(tmp_path / "gone")
    assert cli.main(["course", "run", "--profile", "ci", "--output", str(dangling)]) == 2
    err = _one_error_line(capsys)
    assert str(dangling) in err and "does not exist" in err and no_kernel == []


def test_solutions_claim_their_folder(tmp_path, capsys):
    folder = tmp_path / "key"
    folder.mkdir()
    (folder / "grades.csv").write_text("alice,A\n")
    assert cli.main(["course", "solutions", str(folder)]) == 2
    assert "grades.csv" in _one_error_line(capsys)
    assert sorted(p.name for p in folder.iterdir()) == ["grades.csv"]
    assert cli.main(["course", "solutions", str(folder), "--overwrite"]) == 0
    assert (folder / "grades.csv").read_text() == "alice,A\n"
    assert all((folder / p.name).is_file() for p in NOTEBOOKS)


def test_solutions_never_write_through_a_link(tmp_path, capsys):
    folder = tmp_path / "key"
    folder.mkdir()
    target = tmp_path / "original.ipynb"
    target.write_text("the instructor's own notebook")
    (folder / NOTEBOOKS[0].name).symlink_to(target)
    assert cli.main(["course", "solutions", str(folder), "--overwrite"]) == 2
    assert "symbolic link" in _one_error_line(capsys)
    assert target.read_text() == "the instructor's own notebook"
