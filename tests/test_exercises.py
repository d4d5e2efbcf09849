"""The exercise machinery, and every registered exercise: its reference passes its own checker,
an unattempted stub or a wrong answer is reported (never raised), a library shortcut is refused
with the function named, every exercise has a nudge and an idea as hints (neither holding the
reference's code), and predictions are compared with what the notebook measures."""
from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch

import tinylab.exercises as ex
from tinylab.exercises import check, framework, hint, register, solution, use

MODULES = sorted(m.name for m in pkgutil.iter_modules(ex.__path__) if m.name.startswith("nb"))
for _module in MODULES:
    importlib.import_module(f"tinylab.exercises.{_module}")
ALL = ex.names()
FUNCTIONS = [n for n in ALL if ex.get(n).kind == "function"]
PREDICTIONS = [n for n in ALL if ex.get(n).kind == "prediction"]


def test_every_notebook_module_registers_exercises():
    assert MODULES, "no tinylab/exercises/nbNN.py modules"
    for module in MODULES:
        assert ex.names(module), f"tinylab/exercises/{module}.py registers no exercise"


@pytest.mark.parametrize("name", FUNCTIONS)
def test_reference_solution_passes_its_checker(name, capsys):
    exercise = ex.get(name)
    assert check(name, exercise.reference) is True
    assert capsys.readouterr().out.strip() == f"[{name}] the reference solution passes"


@pytest.mark.parametrize("name", ALL)
def test_forbidden_names_resolve(name):
    # A typo in `forbidden` would silently switch the guard off: every name must exist, unless
    # its package is not installed here (scikit-learn, scipy: present on Colab).
    import importlib.util

    for dotted in ex.get(name).forbidden:
        obj = ex.resolve(dotted)
        installed = importlib.util.find_spec(dotted.split(".")[0]) is not None
        assert (obj is not None) == installed, dotted


@pytest.mark.parametrize("name", FUNCTIONS)
def test_reference_does_not_call_what_it_forbids(name):
    # The answer key pastes the reference into the notebook as the learner's own function.
    exercise = ex.get(name)

    def copy(*args, **kwargs):
        return exercise.reference(*args, **kwargs)
    assert check(name, copy) is True


@pytest.mark.parametrize("name", FUNCTIONS)
def test_unattempted_stub_is_reported_not_raised(name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError

    assert check(name, stub) is False
    out = capsys.readouterr().out
    assert "not attempted yet" in out and ex.get(name).hint in out


@pytest.mark.parametrize("name", ALL)
def test_hint_and_solution_print(name, capsys):
    exercise = ex.get(name)
    framework._HINTS_SHOWN.pop(name, None)   # private: this test is about hint's level count
    assert hint(name) == exercise.hints[0] == exercise.hint
    out = capsys.readouterr().out
    assert out.startswith(f"hint 1 of 2: {exercise.hints[0]}\n") and "again" in out
    assert hint(name) == exercise.hints[1]                 # the second call: the idea
    assert f"hint 2 of 2: {exercise.hints[1]}" in capsys.readouterr().out
    assert hint(name) == exercise.hints[1]                 # and it stays there
    assert hint(name, level=1) == exercise.hints[0]
    capsys.readouterr()
    source = solution(name)
    assert source.startswith("def ") and "return" in source
    assert capsys.readouterr().out == source + "\n"
    with pytest.raises(ValueError, match="levels 1..2"):
        hint(name, level=3)


# -- hints: a nudge, then the idea, never the code -----------------------------------------------

def _code_fragments(function) -> set[str]:
    """The reference's statements and the right-hand sides of its assignments, each without
    spaces, as long as they are long enough to be code rather than a word (docstring and
    comments left out)."""
    import ast
    import inspect
    import textwrap

    tree = ast.parse(textwrap.dedent(inspect.getsource(function)))
    fragments = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            continue                                          # the docstring
        if isinstance(node, (ast.Assign, ast.AugAssign, ast.Return, ast.Expr)):
            fragments.add(ast.unparse(node))
            if getattr(node, "value", None) is not None:
                fragments.add(ast.unparse(node.value))
        if isinstance(node, ast.Call):
            fragments.add(ast.unparse(node))
    return {"".join(f.split()) for f in fragments if len("".join(f.split())) >= 16}


@pytest.mark.parametrize("name", ALL)
def test_every_exercise_has_a_nudge_and_an_idea(name):
    hints = ex.get(name).hints
    assert len(hints) == 2, f"{name}: give two hint levels, a nudge and the idea"
    assert len(hints[0]) < len(hints[1]) * 1.5, f"{name}: the nudge should be the shorter one"
    assert hints[0] != hints[1]


@pytest.mark.parametrize("name", ALL)
def test_no_hint_level_contains_the_reference_code(name):
    fragments = _code_fragments(ex.get(name).reference)
    for level, text in enumerate(ex.get(name).hints, 1):
        squeezed = "".join(text.split())
        leaked = sorted(f for f in fragments if f in squeezed)
        assert not leaked, f"{name}: hint level {level} holds the reference's code {leaked}"
    nudge = ex.get(name).hints[0]
    assert not any(token in nudge for token in (".sum(", ".mean(", ".backward(", "rng.", "[:, None")), (
        f"{name}: the first hint should nudge in words, not show calls: {nudge!r}")


def test_the_code_fragment_detector_finds_a_pasted_solution():
    from tinylab.exercises.nb03 import softmax_with_temperature

    fragments = _code_fragments(softmax_with_temperature)
    pasted = "subtract: scaled = scaled - scaled.max(dim=-1, keepdim=True).values then exp"
    assert any(f in "".join(pasted.split()) for f in fragments)


# -- predictions -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", PREDICTIONS)
def test_prediction_reference_is_a_value_the_checker_accepts_on_a_measurement(name, capsys):
    exercise = ex.get(name)
    answer = exercise.reference()
    assert answer is not None and answer is not Ellipsis
    truth = PREDICTION_TRUTHS[name]
    assert check(name, answer, truth=truth) is True
    out = capsys.readouterr().out
    assert out.startswith(f"[{name}] correct: your prediction matches the measurement")
    for wrong in PREDICTION_WRONG[name]:
        assert check(name, wrong, truth=truth) is False
        out = capsys.readouterr().out
        assert f"[{name}] not what was measured" in out and f"hint: {exercise.hint}" in out
    assert check(name, ..., truth=truth) is False           # not predicted yet: no reveal
    out = capsys.readouterr().out
    assert "no prediction yet" in out and "Measured" not in out


# What the notebooks measure (the truths of the ci run, written out), and wrong predictions.
PREDICTION_TRUTHS = {
    "nb01.dynamic_padding": [(2, 11, 15), (2, 7, 14), (1, 3, 3)],
    "nb01.sorted_padding": {"dataset order": 0.230, "sorted": 0.053},
    "nb02.padded_query_row": {"row_sums": [1.0] * 12, "on_padded_keys": 0.0, "finite": True},
    "nb09.official_layer_map": [1, 2, 3, 4],
}
PREDICTION_WRONG = {
    "nb01.dynamic_padding": [0, 23, "seven"],
    "nb01.sorted_padding": ["a", "b", "(b)", "d"],
    "nb02.padded_query_row": ["a", "c", "d", "x"],
    "nb09.official_layer_map": ["a", "c", "(a)", "[1, 2, 3, 4]"],
}


def test_every_prediction_has_a_truth_and_wrong_answers_here():
    assert set(PREDICTIONS) == set(PREDICTION_TRUTHS) == set(PREDICTION_WRONG)


def test_a_prediction_follows_the_measurement_not_the_reference(capsys):
    # The check compares with the truth it is given: another measurement, another answer.
    assert check("nb01.dynamic_padding", 0, truth=[(2, 7, 14), (1, 3, 3)]) is True
    assert "batch 1: 2 x 7 = 14 positions for 14 tokens, 0 [PAD]" in capsys.readouterr().out
    assert check("nb01.sorted_padding", "a", truth={"dataset order": 0.2, "sorted": 0.19})
    assert check("nb01.sorted_padding", "b", truth={"dataset order": 0.2, "sorted": 0.1})
    assert check("nb02.padded_query_row", "c",
                 truth={"row_sums": [float("nan")], "on_padded_keys": 0.0, "finite": False})
    assert check("nb02.padded_query_row", "a",
                 truth={"row_sums": [0.0, 0.0], "on_padded_keys": 0.0, "finite": True})
    assert check("nb02.padded_query_row", "b",
                 truth={"row_sums": [1.0], "on_padded_keys": 0.05, "finite": True}) is False
    capsys.readouterr()


def test_wrong_predictions_name_the_usual_mistake(capsys):
    truth = PREDICTION_TRUTHS["nb01.dynamic_padding"]
    assert check("nb01.dynamic_padding", 23, truth=truth) is False
    out = capsys.readouterr().out
    assert "padding every review to the longest of all (11)" in out
    assert "you predicted 23, the batches hold 7 [PAD] positions" in out
    assert check("nb02.padded_query_row", "a", truth=PREDICTION_TRUTHS["nb02.padded_query_row"])\
        is False
    assert "you chose (a), the measurement says (b)" in capsys.readouterr().out


def test_predict_notes_the_value_and_refuses_function_exercises(capsys):
    assert ex.predict("nb01.dynamic_padding", 7) == 7
    assert "[nb01.dynamic_padding] prediction noted: 7" in capsys.readouterr().out
    assert ex.predict("nb01.dynamic_padding", ...) is Ellipsis
    assert "no prediction yet" in capsys.readouterr().out
    with pytest.raises(TypeError, match="not a prediction"):
        ex.predict("nb03.softmax_with_temperature", 1)
    with pytest.raises(TypeError, match="truth=measured"):
        check("nb01.dynamic_padding", 7)
    with pytest.raises(TypeError, match="prediction"):
        use("nb01.dynamic_padding", lambda: 7)
    with pytest.raises(TypeError, match="truth= is for prediction"):
        check("nb03.softmax_with_temperature", _stable_softmax, truth=1)


# -- the notebooks: stubs, predictions and CI-only cells ---------------------------------------

def _notebook_cells():
    import nbformat

    from tinylab.course import list_notebooks

    for path in list_notebooks():
        nb = nbformat.read(path, as_version=4)
        yield path, [c for c in nb.cells if c.cell_type == "code"]


def test_reference_pass_cells_are_ci_only_and_hidden():
    """A cell that only proves "the reference solution passes" is tagged ci-only (the site drops
    it, tools/site.py) and collapsed in Jupyter; every other cell is not."""
    import re

    reference_check = re.compile(r"assert check\(\"nb\d\d\.\w+\", reference_\w+\)")
    found = 0
    for path, cells in _notebook_cells():
        for cell in cells:
            tags = set(cell.metadata.get("tags", []))
            if reference_check.search(cell.source):
                found += 1
                assert {"ci-only", "remove-cell"} <= tags, (path.name, cell.source[:80])
                assert cell.metadata.get("jupyter", {}).get("source_hidden") is True
                lines = [l for l in cell.source.splitlines() if l and not l.startswith("#")]
                assert len(lines) == 2, f"{path.name}: a CI-only cell holds only the check"
            else:
                assert "ci-only" not in tags, (path.name, cell.source[:80])
    assert found == len(FUNCTIONS)


@pytest.mark.parametrize("name", PREDICTIONS)
def test_each_prediction_is_written_down_before_it_is_measured(name):
    import re

    module = name.split(".")[0]
    for path, cells in _notebook_cells():
        if not path.name.startswith(module[2:]):
            continue
        sources = [c.source for c in cells]
        stub = [i for i, s in enumerate(sources) if f'predict("{name}", ...)' in s]
        checked = [i for i, s in enumerate(sources)
                   if re.search(rf'check\("{re.escape(name)}", \w+, truth=\w+\)', s)]
        assert len(stub) == 1 and len(checked) == 1, (path.name, stub, checked)
        assert stub[0] < checked[0], f"{path.name}: predict first, then measure"
        return
    raise AssertionError(f"no notebook for {name}")


def _stable_softmax(z):
    e = (z - z.max(-1, keepdim=True).values).exp()
    return e / e.sum(-1, keepdim=True)


def test_wrong_and_crashing_answers_return_false(capsys):
    # softmax without the temperature: wrong values
    assert check("nb03.softmax_with_temperature", lambda z, t: _stable_softmax(z)) is False
    assert "not yet: T=0.5" in capsys.readouterr().out
    # the naive exp() overflows on large logits: the checker names the fix
    naive = lambda z, t: torch.exp(z / t) / torch.exp(z / t).sum(-1, keepdim=True)  # noqa: E731
    assert check("nb03.softmax_with_temperature", naive) is False
    assert "subtract the maximum" in capsys.readouterr().out
    # the gradient without the 1/T factor
    no_t = lambda s, t_, T: _stable_softmax(s / T) - _stable_softmax(t_ / T)  # noqa: E731
    assert check("nb03.soft_loss_gradient", no_t) is False
    # a crash inside the learner's code is reported with its type
    assert check("nb03.soft_loss_gradient", lambda s: s) is False
    assert "your code raised TypeError" in capsys.readouterr().out


def test_register_validates_its_input():
    with pytest.raises(ValueError, match="'nb03.short_name'"):
        register("no_dot", checker=print, hint="h", reference=print)
    with pytest.raises(ValueError, match="hint"):
        register("nb99.x", checker=print, hint="  ", reference=print)
    with pytest.raises(ValueError, match="hint"):
        register("nb99.x", checker=print, hint=("nudge", " "), reference=print)
    with pytest.raises(TypeError, match="callables"):
        register("nb99.x", checker="nope", hint="h", reference=print)
    with pytest.raises(ValueError, match="kind"):
        register("nb99.x", checker=print, hint="h", reference=print, kind="quiz")


def test_unknown_exercise_names_the_known_ones():
    with pytest.raises(KeyError, match="no exercise called 'nb03.nope'.*nb03.softmax"):
        check("nb03.nope", None)
    with pytest.raises(KeyError, match="nb77.x"):
        hint("nb77.x")


# -- the shortcut guard, on a toy exercise ------------------------------------------------------

def _toy_softmax(z):
    e = (z - z.max(-1, keepdim=True).values).exp()
    return e / e.sum(-1, keepdim=True)


def _toy_checker(candidate):
    z = torch.randn(3, 4)
    torch.testing.assert_close(candidate(z), torch.softmax(z, -1))   # the checker may use it


@pytest.fixture
def toy():
    name = "nb99.toy_softmax"
    register(name, checker=_toy_checker, hint="exp, then divide by the sum",
             reference=_toy_softmax, why="write the softmax yourself",
             forbidden=("torch.softmax", "torch.nn.functional.softmax", "torch.Tensor.softmax",
                        "torch.nn.Softmax", "tinylab.losses.soft_cross_entropy"))
    yield name
    framework._REGISTRY.pop(name)            # private: the registry itself, left as it was
    framework._GUARDS.pop(name, None)


@pytest.mark.parametrize("shortcut, named", [
    (lambda z: torch.softmax(z, -1), "torch.softmax"),                  # C function
    (lambda z: z.softmax(-1), "torch.Tensor.softmax"),                  # C method, bound
    (lambda z: torch.Tensor.softmax(z, -1), "torch.Tensor.softmax"),    # C method, unbound
    (lambda z: torch.nn.functional.softmax(z, -1), "torch.nn.functional.softmax"),  # Python
    (lambda z: torch.nn.Softmax(-1)(z), "torch.nn.Softmax"),            # a class's methods
    (lambda z: torch.distributions.Categorical(logits=z).probs,         # inside a library
     "torch.nn.functional.softmax"),
])
def test_a_shortcut_is_refused_with_its_name(toy, shortcut, named, capsys):
    assert check(toy, shortcut) is False
    out = capsys.readouterr().out
    assert f"[{toy}] refused: your code calls {named} - write the softmax yourself" in out
    assert "hint: exp, then divide by the sum" in out


def test_passing_the_forbidden_function_itself_is_refused(toy, capsys):
    assert check(toy, torch.nn.functional.softmax) is False
    assert "refused: your code calls torch.nn.functional.softmax" in capsys.readouterr().out
    assert check(toy, torch.Tensor.softmax) is False
    assert "refused: your code calls torch.Tensor.softmax" in capsys.readouterr().out


def test_a_caught_shortcut_is_still_refused(toy, capsys):
    def sneaky(z):
        try:
            return torch.softmax(z, -1)
        except Exception:
            return _toy_softmax(z)
    assert check(toy, sneaky) is False
    assert "refused: your code calls torch.softmax" in capsys.readouterr().out


def test_the_guard_watches_only_the_learner_and_is_removed_afterwards(toy, capsys):
    import sys

    def own(z):
        return _toy_softmax(z)
    assert check(toy, own) is True            # the checker's own torch.softmax is not watched
    assert capsys.readouterr().out.strip() == f"[{toy}] correct: your function passes"
    assert sys.getprofile() is None
    assert check(toy, lambda z: torch.softmax(z, -1)) is False
    assert sys.getprofile() is None


def test_use_returns_the_learner_function_or_the_reference(toy, capsys):
    def own(z):
        return _toy_softmax(z)
    assert use(toy, own) is own
    assert "correct: your function passes" in capsys.readouterr().out

    def stub(z):
        raise NotImplementedError
    assert use(toy, stub) is _toy_softmax
    out = capsys.readouterr().out
    assert "not attempted yet" in out
    assert f"[{toy}] the cells below use the reference solution until yours passes" in out
    assert use(toy, lambda z: z.softmax(-1)) is _toy_softmax
    assert "refused" in capsys.readouterr().out
    assert use(toy, _toy_softmax) is _toy_softmax
    assert capsys.readouterr().out.strip() == f"[{toy}] the reference solution passes"


def test_register_refuses_bad_forbidden_names():
    with pytest.raises(TypeError, match="tuple"):
        register("nb99.x", checker=print, hint="h", reference=print, forbidden="torch.softmax")
    with pytest.raises(ValueError, match="dotted"):
        register("nb99.x", checker=print, hint="h", reference=print, forbidden=("softmax",))
    with pytest.raises(AttributeError):
        ex.resolve("torch.no_such_function")
    assert ex.resolve("no_such_package_xyz.f") is None


# -- nb03.soft_cross_entropy -----------------------------------------------------------------

def test_soft_cross_entropy_reference_agrees_with_the_package_and_a_loop():
    from tinylab.exercises.nb03 import _soft_ce_cases, soft_cross_entropy
    from tinylab.losses import soft_cross_entropy as package

    for student, teacher, t in _soft_ce_cases(seed=11):
        loop = 0.0
        for b in range(student.shape[0]):         # Hinton et al.: -sum_c p_T,c log p_S,c
            zs, zt = student[b].double() / t, teacher[b].double() / t
            p_t = zt.exp() / zt.exp().sum()
            log_p_s = zs - zs.exp().sum().log()
            loop += float(-(p_t * log_p_s).sum())
        expected = torch.tensor(loop / student.shape[0], dtype=torch.float32)
        torch.testing.assert_close(soft_cross_entropy(student, teacher, t), expected)
        torch.testing.assert_close(package(student, teacher, t), expected)


@pytest.mark.parametrize("wrong, message", [
    (lambda s, t, T: -(_stable_softmax(t / T) * _stable_softmax(s).log()).sum(-1).mean(),
     "the student's logits are not divided by T"),
    (lambda s, t, T: -(_stable_softmax(t) * _stable_softmax(s / T).log()).sum(-1).mean(),
     "the teacher's logits are not divided by T"),
    (lambda s, t, T: (_stable_softmax(t / T) * (_stable_softmax(t / T).log()
                                                 - _stable_softmax(s / T).log())).sum(-1).mean(),
     "that is KL(p_T || p_S)"),
    (lambda s, t, T: -(_stable_softmax(t / T).log() * _stable_softmax(s / T).log()).sum(-1).mean(),
     "the targets are the teacher's log-probabilities"),
    (lambda s, t, T: -(_stable_softmax(t / T) * _stable_softmax(s / T).log()).sum(),
     "summed over the batch"),
    (lambda s, t, T: -(_stable_softmax(t / T) * _stable_softmax(s / T).log()).mean(),
     "averaged over the classes too"),
    (lambda s, t, T: -(_stable_softmax(t / T) * _stable_softmax(s / T).log()).sum(-1).mean()
     .detach(), "does not depend on the student's logits"),
])
def test_soft_cross_entropy_names_the_usual_mistakes(wrong, message, capsys):
    assert check("nb03.soft_cross_entropy", wrong) is False
    out = capsys.readouterr().out
    assert "[nb03.soft_cross_entropy] not yet: B=4, C=3, T=2.0" in out and message in out, out


def test_soft_cross_entropy_accepts_the_learners_own_softmax(capsys):
    # The notebook invites the learner to build on exercise 1: log of their softmax is fine.
    from tinylab.exercises.nb03 import softmax_with_temperature

    def mine(student_logits, teacher_logits, T):
        p_teacher = softmax_with_temperature(teacher_logits, T)
        p_student = softmax_with_temperature(student_logits, T)
        return -(p_teacher * p_student.log()).sum(-1).mean()
    assert check("nb03.soft_cross_entropy", mine) is True
    assert "correct: your function passes" in capsys.readouterr().out


# -- notebook 02: wrong answers are named ----------------------------------------------------

def test_confusion_matrix_names_swapped_axes(capsys):
    from tinylab.exercises.nb02 import confusion_matrix

    assert check("nb02.confusion_matrix", lambda p, y, c: confusion_matrix(y, p, c)) is False
    assert "rows and columns are swapped" in capsys.readouterr().out
