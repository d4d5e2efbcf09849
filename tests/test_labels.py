"""Label and text problems in a task file: warned about, or refused naming the row/label."""
from __future__ import annotations

import warnings

import pytest

from tinylab import cli
from tinylab.config import DataConfig
from tinylab.data import load_task


def _csv(path, rows):
    import csv

    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def _balanced(n=60):
    return [(f"an ordinary review number {i}", "pos" if i % 2 else "neg") for i in range(n)]


def test_labels_that_differ_only_in_case_or_spaces_are_named(tmp_path):
    rows = _balanced() + [(f"another fine review {i}", "Pos ") for i in range(30)]
    with pytest.warns(UserWarning, match=r"labels 'Pos ' and 'pos' differ only in case"):
        data = load_task(DataConfig(task=str(_csv(tmp_path / "t.csv", rows))))
    assert data["train"].features["label"].names == ["Pos ", "neg", "pos"]


def test_a_class_with_few_training_examples_is_warned_about(tmp_path):
    rows = _balanced() + [(f"a rare kind of review {i}", "mixed") for i in range(4)]
    with pytest.warns(UserWarning, match=r"fewer than 5 training examples: \{'mixed': \d\}"):
        load_task(DataConfig(task=str(_csv(tmp_path / "t.csv", rows))))


def test_no_warning_for_a_clean_file(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        load_task(DataConfig(task=str(_csv(tmp_path / "t.csv", _balanced()))))


def test_a_class_without_training_examples_is_refused(tmp_path):
    """A rare class that the training subsample leaves out (the model could never predict
    it, and every test example of it would count as an error)."""
    rows = _balanced() + [("the only review of its kind", "mixed")]
    task = _csv(tmp_path / "t.csv", rows)
    with pytest.raises(ValueError, match=r"'mixed' have no training example.*"
                                         r"data\.train_size=10"):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            load_task(DataConfig(task=str(task), train_size=10))


def test_a_huge_text_is_refused_naming_its_row(tmp_path, capsys, monkeypatch):
    rows = _balanced()
    rows[17] = ("word " * 25_000, "pos")                       # 125,000 characters
    task = _csv(tmp_path / "t.csv", rows)
    with pytest.raises(ValueError, match=r"row 17 has 125,000 characters"):
        load_task(DataConfig(task=str(task)))
    monkeypatch.setattr("tinylab.pipeline.finetune_teacher",
                        lambda *a, **k: pytest.fail("trained on a refused file"))
    code = cli.main(["distill", "--profile", "ci", "--output", str(tmp_path / "o"),
                     "--set", f"data.task={task}"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "row 17" in err, err
