"""Every course notebook is clean in git and runs top to bottom under the ``ci`` profile.

Static checks (milliseconds): kernel ``python3``, a ``parameters`` cell with literal values,
no outputs except on cells tagged ``keep_output`` (the golden cells), and no papermill
leftovers. Execution (seconds): papermill with ``PROFILE="ci"``; the executed copies go to
``$TINYLAB_NOTEBOOK_OUTPUT`` (CI keeps them as artifacts, and builds the site from them) or a
temporary folder. The same execution is checked against the golden cells, the way ``pytest
--nbval-lax`` would (cells tagged ``nbval-check-output``, outputs masked by
``tests/nbval_sanitize.cfg``), so each notebook runs once per test run, not once per tool.
(``pytest --nbval-lax --nbval-sanitize-with tests/nbval_sanitize.cfg notebooks`` still works
by hand and checks the same cells.)
"""
from __future__ import annotations

import ast
import os
import re
from pathlib import Path

import nbformat
import pytest

NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(p for p in NOTEBOOK_DIR.glob("*.ipynb") if re.match(r"^\d\d_", p.name))
IDS = [p.stem for p in NOTEBOOKS]
GOLDEN_TAGS = {"nbval-check-output", "keep_output"}


def _read(path: Path) -> nbformat.NotebookNode:
    return nbformat.read(path, as_version=4)


def _tags(cell) -> set[str]:
    return set(cell.get("metadata", {}).get("tags", []))


def _sanitizers() -> list[tuple[re.Pattern, str]]:
    """The ``regex`` / ``replace`` pairs of ``tests/nbval_sanitize.cfg``, in file order."""
    import configparser

    parser = configparser.ConfigParser(interpolation=None)
    parser.read(Path(__file__).with_name("nbval_sanitize.cfg"), encoding="utf-8")
    return [(re.compile(parser[s]["regex"]), parser[s]["replace"]) for s in parser.sections()]


def _printed(cell, sanitizers) -> str:
    """What a golden cell printed (its stdout), masked like nbval masks it."""
    text = "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == "stdout")
    for pattern, replacement in sanitizers:
        text = pattern.sub(replacement, text)
    return text


def golden_differences(source: nbformat.NotebookNode, executed: nbformat.NotebookNode) -> list[str]:
    """Golden cells (``nbval-check-output``) whose fresh output differs from the stored one."""
    sanitizers = _sanitizers()
    fresh = {c.get("id"): c for c in executed.cells}
    problems = []
    for cell in source.cells:
        if "nbval-check-output" not in _tags(cell):
            continue
        if cell.get("id") not in fresh:
            problems.append(f"golden cell {cell.get('id')} is missing from the executed copy")
            continue
        stored, now = _printed(cell, sanitizers), _printed(fresh[cell["id"]], sanitizers)
        if stored != now:
            problems.append(f"golden cell {cell['id']} printed:\n{now}\nstored:\n{stored}")
    return problems


def test_notebooks_are_numbered_without_gaps():
    assert NOTEBOOKS, f"no course notebooks (NN_name.ipynb) in {NOTEBOOK_DIR}"
    numbers = [int(p.name[:2]) for p in NOTEBOOKS]
    assert numbers == list(range(1, len(numbers) + 1)), f"notebook numbers {numbers} have gaps"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_is_valid_and_uses_python3_kernel(path):
    nb = _read(path)
    nbformat.validate(nb)
    kernelspec = nb.metadata.get("kernelspec", {})
    assert kernelspec.get("name") == "python3", (
        f"{path.name}: kernelspec name is {kernelspec.get('name')!r}; papermill and nbval need "
        f"'python3' (set metadata.kernelspec.name)")
    assert nb.metadata.get("language_info", {}).get("name") == "python"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_has_literal_parameters_cell(path):
    nb = _read(path)
    cells = [c for c in nb.cells if "parameters" in _tags(c)]
    assert len(cells) == 1, f"{path.name}: expected one cell tagged 'parameters', got {len(cells)}"
    cell = cells[0]
    assert cell.cell_type == "code"
    tree = ast.parse(cell.source)
    names = set()
    for node in tree.body:
        assert isinstance(node, ast.Assign) and len(node.targets) == 1, (
            f"{path.name}: the parameters cell may only assign literal values, found "
            f"{ast.unparse(node)!r}")
        ast.literal_eval(node.value)  # raises ValueError on anything but a literal
        names.add(node.targets[0].id)
    assert {"PROFILE", "OUTPUT_DIR"} <= names, f"{path.name}: parameters cell defines {names}"
    assert not any("injected-parameters" in _tags(c) for c in nb.cells), (
        f"{path.name}: remove papermill's injected-parameters cell before committing")
    assert "papermill" not in nb.metadata, f"{path.name}: strip papermill metadata"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_has_no_stray_outputs(path):
    nb = _read(path)
    stray = [i for i, c in enumerate(nb.cells)
             if c.cell_type == "code" and c.get("outputs") and "keep_output" not in _tags(c)]
    assert not stray, (f"{path.name}: cells {stray} carry outputs but are not tagged keep_output; "
                       f"run `nbstripout --keep-count --keep-id {path}`")
    for i, cell in enumerate(nb.cells):
        tags = _tags(cell)
        if tags & GOLDEN_TAGS:
            assert GOLDEN_TAGS <= tags, f"{path.name}: golden cell {i} needs both {GOLDEN_TAGS}"
            assert cell.get("execution_count") is not None and cell.get("outputs"), (
                f"{path.name}: golden cell {i} needs its stored output and execution count")


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_structure(path):
    """Title + goals first, the Colab cell second, the parameters cell third, a summary last."""
    nb = _read(path)
    first, second, third, last = nb.cells[0], nb.cells[1], nb.cells[2], nb.cells[-1]
    assert first.cell_type == "markdown" and first.source.lstrip().startswith("# ")
    assert "google.colab" in second.source
    assert "parameters" in _tags(third)
    assert last.cell_type == "markdown"
    assert "import *" not in "\n".join(c.source for c in nb.cells if c.cell_type == "code")


HARD_CODED_DEVICE = re.compile(r"""device\s*=\s*["'](cpu|cuda|mps)|\.cuda\(\)|"""
                               r"""\.to\(\s*["'](cpu|cuda|mps)""")


def _tokenizer_tensor_calls(tree: ast.AST) -> tuple[list[ast.Call], set[int]]:
    """Calls ``tokenizer(..., return_tensors="pt")`` and the ids of those moved by ``.to(...)``."""
    calls, moved = [], set()
    for node in ast.walk(tree):
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
                and node.func.id == "tokenizer"
                and any(k.arg == "return_tensors" for k in node.keywords)):
            calls.append(node)
        if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                and node.func.attr == "to" and isinstance(node.func.value, ast.Call)):
            moved.add(id(node.func.value))
    return calls, moved


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_cells_follow_the_model_device(path):
    """What a CPU run cannot show: a batch left on the CPU while the model sits on a GPU.

    Statically: no cell names a device ("cpu", "cuda") - batches go to ``model.device`` or the
    configured ``device`` - and every tensor batch a tokenizer returns is moved with ``.to``.
    """
    nb = _read(path)
    for i, cell in enumerate(nb.cells):
        if cell.cell_type != "code":
            continue
        # IPython magics (%pip, !tinylab) are not Python: keep their indentation, drop the rest.
        code = "\n".join(l[:len(l) - len(l.lstrip())] + "pass"
                         if l.lstrip().startswith(("%", "!")) else l
                         for l in cell.source.splitlines())
        found = HARD_CODED_DEVICE.search(code)
        assert not found, f"{path.name} cell {i} hard-codes a device: {found.group(0)!r}"
        calls, moved = _tokenizer_tensor_calls(ast.parse(code))
        stray = [ast.unparse(c)[:60] for c in calls if id(c) not in moved]
        assert not stray, (f"{path.name} cell {i}: tokenizer tensors not moved to the model's "
                           f"device (add .to(model.device)): {stray}")


@pytest.mark.slow
@pytest.mark.notebooks
@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_runs_alone_under_ci_profile(path, tmp_path, monkeypatch):
    """Each notebook as on a fresh Colab machine: an empty cache (only the offline assets the
    install cell fetches) and an empty output folder, so it must build its teacher, general
    student and students itself.

    One execution checks three things: the notebook runs with every exercise still open (the
    cells fall back to the references), its golden cells print what they stored, and the
    answer key passes every check in that same kernel (hidden cells that
    ``tinylab.course.answer_key.with_answer_key_checks`` adds, which the site drops)."""
    from tinylab.course.answer_key import with_answer_key_checks
    from tinylab.course import fresh_cache, run_notebook

    monkeypatch.setenv("TINYLAB_CACHE", str(fresh_cache(tmp_path / "cache")))
    root = Path(os.environ.get("TINYLAB_NOTEBOOK_OUTPUT") or tmp_path / "executed")
    out_dir = root / path.stem
    out_dir.mkdir(parents=True, exist_ok=True)
    executed = out_dir / path.name
    source = _read(path)
    with_key = tmp_path / path.name
    nbformat.write(with_answer_key_checks(source), with_key)
    wall = run_notebook(with_key, executed, parameters={"PROFILE": "ci",
                                                        "OUTPUT_DIR": str(out_dir)},
                        cwd=NOTEBOOK_DIR, progress=False, execution_timeout=600)
    nb = _read(executed)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])
              if o.get("output_type") == "error"]
    assert not errors
    assert not golden_differences(source, nb), "\n".join(golden_differences(source, nb))
    printed = "".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                      for o in c.get("outputs", []))
    for name in sorted(set(re.findall(r"""\b(?:check|use|predict)\(\s*["'](nb\d\d\.\w+)["']""",
                                      "\n".join(c.source for c in source.cells)))):
        assert (f"[{name}] correct: your function passes" in printed
                or f"[{name}] correct: your prediction matches the measurement" in printed), \
            f"the answer key of {name} did not pass"
    print(f"{path.name}: {wall:.1f} s under PROFILE='ci', alone, empty cache, with the answer key")


def test_golden_comparison_masks_what_may_change_and_catches_what_may_not():
    """The comparison behind the golden cells, on a stored cell and three fresh outputs."""
    def notebook(text):
        cell = nbformat.v4.new_code_cell("print(x)", id="golden")
        cell.metadata["tags"] = ["nbval-check-output", "keep_output"]
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=text)]
        return nbformat.v4.new_notebook(cells=[cell])

    stored = notebook("loss 0.1234 in 12.5 ms at 0x7f00aa\n")
    assert golden_differences(stored, notebook("loss 0.1234 in 3 s at 0x55bb01\n")) == []
    assert golden_differences(stored, notebook("loss 0.1235 in 12.5 ms at 0x7f00aa\n"))
    assert golden_differences(stored, nbformat.v4.new_notebook(cells=[]))


@pytest.mark.parametrize("path", NOTEBOOKS, ids=IDS)
def test_notebook_title_carries_its_file_number(path):
    """The first heading says ``# NN · ...`` with the file's own number (renumbering a notebook
    must renumber its title: the site's sidebar shows it)."""
    first = _read(path).cells[0].source
    assert first.startswith(f"# {path.stem[:2]} · "), (path.name, first.splitlines()[0])
