"""The answer key: copies of the course notebooks with every exercise filled in.

``tinylab course solutions DIR`` writes them. In each copy, every exercise cell (a stub ending
in ``raise NotImplementedError``, then ``function = use("nbNN.name", function)`` or
``check("nbNN.name", function)``) is replaced by the reference solution's source from
``tinylab/exercises/nbNN.py`` - the same function the checker is tested against - defined under
the learner's name, and a ``check`` call that must pass. In a prediction cell
(``predict("nbNN.name", ...)``) the ``...`` becomes the reference prediction, so the later
``check(..., truth=measured)`` compares it with what the copy measures. CI executes the copies
(``tests/test_answer_key.py``), so the key and the checks cannot drift apart.
"""
from __future__ import annotations

import ast
import copy
import importlib
import inspect
import re
import textwrap
from pathlib import Path

from tinylab.atomic import atomic_write_text
from tinylab.course.runner import list_notebooks
from tinylab.run_folder import claim_folder

__all__ = ["EXERCISE_CALL", "PREDICTION_STUB", "prediction_cell", "solution_cell",
           "with_answer_key_checks",
           "write_solutions"]

#: ``check("nb03.name", candidate)`` or ``use("nb03.name", candidate)`` in an exercise cell.
EXERCISE_CALL = re.compile(r"""\b(?:check|use)\(\s*["'](nb\d\d\.\w+)["']\s*,\s*(\w+)\s*\)""")
#: ``predict("nb01.name", ...)``: a prediction the learner has not written yet.
PREDICTION_STUB = re.compile(r"""\bpredict\(\s*["'](nb\d\d\.\w+)["']\s*,\s*\.\.\.\s*\)""")


def _module_imports(module) -> list[str]:
    """The top-level ``import`` lines of an exercise module (what its references use)."""
    tree = ast.parse(inspect.getsource(module))
    lines = []
    for node in tree.body:
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            text = ast.unparse(node)
            if "__future__" not in text and "tinylab.exercises" not in text:
                lines.append(text)
    return lines


def solution_cell(name: str, learner_name: str) -> str:
    """The source of the filled-in exercise cell for exercise ``name``."""
    # The exercises load torch: imported here, so `import tinylab.course` stays light.
    from tinylab.exercises import get

    exercise = get(name)
    module = importlib.import_module(exercise.reference.__module__)
    source = textwrap.dedent(inspect.getsource(exercise.reference)).rstrip()
    lines = [f'# Answer key: the reference solution of "{name}" '
             f"({module.__name__.replace('.', '/')}.py).", *_module_imports(module), "", source]
    if exercise.reference.__name__ != learner_name:
        lines += ["", f"{learner_name} = {exercise.reference.__name__}"]
    lines += ["", f'assert check("{name}", {learner_name})']
    return "\n".join(lines)


def prediction_cell(source: str) -> str:
    """``source`` (a prediction cell) with every ``predict("nbNN.name", ...)`` filled in with
    the reference prediction of that exercise, under a comment naming the answer key."""
    from tinylab.exercises import get  # (loads torch, see solution_cell)

    names = []

    def fill(match: re.Match) -> str:
        name = match.group(1)
        names.append(name)
        return f'predict("{name}", {get(name).reference()!r})'

    filled = PREDICTION_STUB.sub(fill, source)
    header = "".join(f'# Answer key: the reasoned prediction of "{n}" (solution("{n}") '
                     f'explains it).\n' for n in names)
    return header + filled


def write_solutions(out_dir: str | Path, notebook_dir: str | Path | None = None, *,
                    overwrite: bool = False) -> list[Path]:
    """Write the answer-key copies of every course notebook into ``out_dir``; return them.

    The folder is claimed first (:func:`tinylab.run_folder.claim_folder`): a folder holding
    other files is refused unless ``overwrite``, and a symbolic link named like one of the
    copies is always refused (writing would change what it points at). Without ``overwrite``
    it also refuses (``FileExistsError``, one line) to replace a copy that is already there:
    the folder may hold someone's edited copies. Each copy is written atomically. Outputs and
    everything but the exercise cells are kept as they are; the copies keep their
    ``parameters`` cell, so papermill and ``tinylab course run --notebook-dir`` run them like
    the originals.
    """
    import nbformat  # the `course` / `dev` extras: absent from a plain install

    out = Path(out_dir)
    sources = list_notebooks(notebook_dir)
    clashes = [out / p.name for p in sources if (out / p.name).exists()]
    if clashes and not overwrite:
        raise FileExistsError(f"{clashes[0]} already exists; write the answer key into a new "
                              f"or empty folder (or pass --overwrite to replace the copies)")
    claim_folder(out, "tinylab course solutions", overwrite=overwrite,
                 writes=[p.name for p in sources])
    written = []
    for path in sources:
        nb = nbformat.read(path, as_version=4)
        for cell in nb.cells:
            if cell.cell_type == "code" and PREDICTION_STUB.search(cell.source):
                cell.source = prediction_cell(cell.source)
                continue
            if cell.cell_type != "code" or "raise NotImplementedError" not in cell.source:
                continue
            match = EXERCISE_CALL.search(cell.source)
            if match:
                cell.source = solution_cell(match.group(1), match.group(2))
        nb.metadata.setdefault("tinylab", {})["answer_key"] = True
        text = nbformat.writes(nb)
        atomic_write_text(out / path.name, text if text.endswith("\n") else text + "\n")
        written.append(out / path.name)
    return written


#: ``check("nbNN.name", prediction, truth=expression)`` alone on the last line of a cell.
PREDICTION_CHECK = re.compile(
    r"""^check\(\s*["'](nb\d\d\.\w+)["']\s*,\s*\w+\s*,\s*truth=(.+)\)\s*$""", re.M)
ANSWER_KEY_TAGS = ["ci-only", "remove-cell", "answer-key"]


def with_answer_key_checks(nb):
    """A copy of notebook ``nb`` that also runs the answer key, in the same kernel and state.

    CI executes each notebook once; this is the copy it executes. It is the learner's notebook
    (exercise stubs, ``use`` falling back to the references) plus hidden cells that run the
    answer key against the state the notebook built: after each prediction check, the same
    check with the reasoned prediction (it must match the measurement); at the end, each
    function exercise's reference solution, defined from its source under the learner's name
    as :func:`write_solutions` writes it, and checked. The new cells are tagged ``ci-only`` /
    ``remove-cell`` (the site drops them) and ``answer-key``.
    """
    import nbformat  # (optional, see write_solutions)

    from tinylab.exercises import get  # (loads torch, see solution_cell)

    def hidden(source: str):
        cell = nbformat.v4.new_code_cell(source)
        cell.metadata["tags"] = list(ANSWER_KEY_TAGS)
        cell.metadata["jupyter"] = {"source_hidden": True, "outputs_hidden": True}
        return cell

    out = copy.deepcopy(nb)
    cells, at_end = [], []
    for cell in out.cells:
        cells.append(cell)
        if cell.cell_type != "code":
            continue
        for name, truth in PREDICTION_CHECK.findall(cell.source):
            cells.append(hidden(f'# Answer key: the reasoned prediction of "{name}".\n'
                                f'assert check("{name}", {get(name).reference()!r}, '
                                f"truth={truth})"))
        match = EXERCISE_CALL.search(cell.source)
        if match and "raise NotImplementedError" in cell.source:
            at_end.append(hidden(solution_cell(match.group(1), match.group(2))))
    out.cells = cells + at_end
    return out

