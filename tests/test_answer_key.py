"""The answer key (``tinylab course solutions``): every exercise filled in, and it passes."""
from __future__ import annotations

import re
from pathlib import Path

import nbformat
import pytest

from tinylab.course import list_notebooks
from tinylab.course.answer_key import (EXERCISE_CALL, PREDICTION_STUB, prediction_cell,
                                       write_solutions)
from tinylab.exercises import names

NOTEBOOKS = list_notebooks()


def _exercises(path: Path) -> set[str]:
    """The exercises of a notebook: those of ``tinylab/exercises/nbNN.py``, none without one."""
    import importlib.util

    module = f"nb{path.stem[:2]}"
    if importlib.util.find_spec(f"tinylab.exercises.{module}") is None:
        return set()
    return set(names(module))


WITH_EXERCISES = [p for p in NOTEBOOKS if _exercises(p)]
PREDICTION = re.compile(r"""\bpredict\(\s*["'](nb\d\d\.\w+)["']""")


@pytest.fixture(scope="module")
def key(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("answer_key")
    write_solutions(folder)
    return folder


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_exercise_is_filled_in(key, path):
    nb = nbformat.read(key / path.name, as_version=4)
    code = [c.source for c in nb.cells if c.cell_type == "code"]
    assert not any("raise NotImplementedError" in c and EXERCISE_CALL.search(c) for c in code)
    assert not any(PREDICTION_STUB.search(c) for c in code), "a prediction left open"
    filled = {m.group(1) for c in code if "Answer key" in c for m in EXERCISE_CALL.finditer(c)}
    filled |= {m.group(1) for c in code if "Answer key" in c
               for m in PREDICTION.finditer(c)}
    assert filled == _exercises(path), path.name
    original = nbformat.read(path, as_version=4)
    assert len(nb.cells) == len(original.cells)        # only exercise cells were replaced


def test_answer_key_never_replaces_existing_files(tmp_path):
    (tmp_path / NOTEBOOKS[0].name).write_text("my edited copy")
    with pytest.raises(FileExistsError, match="already exists"):
        write_solutions(tmp_path)
    assert (tmp_path / NOTEBOOKS[0].name).read_text() == "my edited copy"


def test_answer_key_checks_join_the_notebook_hidden_and_in_place():
    """CI runs the answer key inside each notebook's one execution (tests/test_notebooks.py):
    every exercise gets a hidden cell, predictions right after their check, functions last."""
    from tinylab.course.answer_key import ANSWER_KEY_TAGS, with_answer_key_checks

    for path in WITH_EXERCISES:
        nb = nbformat.read(path, as_version=4)
        keyed = with_answer_key_checks(nb)
        added = [c for c in keyed.cells if "answer-key" in c.metadata.get("tags", [])]
        assert len(added) == len(_exercises(path)), path.name
        assert all(c.metadata["tags"] == ANSWER_KEY_TAGS for c in added)
        assert [c for c in keyed.cells if c not in added] == nb.cells   # nothing else changes
        for cell in added:
            assert cell.source.splitlines()[-1].startswith("assert check(")


def test_exercise_cells_are_found_by_check_and_by_use():
    cell = ('def softmax_with_temperature(logits, T):\n    raise NotImplementedError\n\n'
            'softmax_with_temperature = use("nb03.softmax_with_temperature", '
            'softmax_with_temperature)')
    match = EXERCISE_CALL.search(cell)
    assert match.groups() == ("nb03.softmax_with_temperature", "softmax_with_temperature")
    assert EXERCISE_CALL.search('check("nb02.confusion_matrix", mine)').group(2) == "mine"
    assert EXERCISE_CALL.search('recheck("nb02.confusion_matrix", mine)') is None


def test_prediction_cells_are_filled_with_the_reasoned_prediction():
    cell = ('from tinylab.exercises import predict\n\n'
            'predicted_pads = predict("nb01.dynamic_padding", ...)     # your number')
    filled = prediction_cell(cell)
    assert filled.startswith('# Answer key: the reasoned prediction of "nb01.dynamic_padding"')
    assert 'predicted_pads = predict("nb01.dynamic_padding", 7)' in filled
    assert PREDICTION_STUB.search(filled) is None
    assert PREDICTION_STUB.search('predict("nb01.dynamic_padding", 7)') is None
