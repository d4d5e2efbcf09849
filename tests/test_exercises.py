"""The exercise machinery, and every registered exercise: its reference passes its own checker,
an unattempted stub or a wrong answer is reported (never raised), and a library shortcut is
refused with the function named."""
from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch

import tinylab.exercises as ex
from tinylab.exercises import check, hint, register, solution, use

MODULES = sorted(m.name for m in pkgutil.iter_modules(ex.__path__) if m.name.startswith("nb"))
for _module in MODULES:
    importlib.import_module(f"tinylab.exercises.{_module}")
ALL = ex.names()


def test_every_notebook_module_registers_exercises():
    assert MODULES, "no tinylab/exercises/nbNN.py modules"
    for module in MODULES:
        assert ex.names(module), f"tinylab/exercises/{module}.py registers no exercise"


@pytest.mark.parametrize("name", ALL)
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


@pytest.mark.parametrize("name", ALL)
def test_reference_does_not_call_what_it_forbids(name):
    # The answer key pastes the reference into the notebook as the learner's own function.
    exercise = ex.get(name)

    def copy(*args, **kwargs):
        return exercise.reference(*args, **kwargs)
    assert check(name, copy) is True


@pytest.mark.parametrize("name", ALL)
def test_unattempted_stub_is_reported_not_raised(name, capsys):
    def stub(*args, **kwargs):
        raise NotImplementedError

    assert check(name, stub) is False
    out = capsys.readouterr().out
    assert "not attempted yet" in out and ex.get(name).hint in out


@pytest.mark.parametrize("name", ALL)
def test_hint_and_solution_print(name, capsys):
    assert hint(name) == ex.get(name).hint
    source = solution(name)
    assert source.startswith("def ") and "return" in source
    assert capsys.readouterr().out == ex.get(name).hint + "\n" + source + "\n"


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
    with pytest.raises(TypeError, match="callables"):
        register("nb99.x", checker="nope", hint="h", reference=print)


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
    ex._REGISTRY.pop(name)
    ex._GUARDS.pop(name, None)


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


# -- notebooks 01 and 02: wrong answers are named ---------------------------------------------

def test_pad_batch_and_padding_fraction_name_wrong_answers(capsys):
    from tinylab.exercises.nb01 import pad_batch, padding_fraction

    def left_padded(sequences, pad_token_id):
        ids, mask = pad_batch([s[::-1] for s in sequences], pad_token_id)
        return ids.flip(-1), mask.flip(-1)
    assert check("nb01.pad_batch", left_padded) is False
    assert "right padding" in capsys.readouterr().out

    def no_mask(sequences, pad_token_id):
        ids, mask = pad_batch(sequences, pad_token_id)
        return ids, torch.ones_like(mask)
    assert check("nb01.pad_batch", no_mask) is False
    assert "1 on real tokens, 0 on padding" in capsys.readouterr().out

    def whole_dataset_as_one_batch(lengths, batch_size):
        return padding_fraction(lengths, len(lengths))
    assert check("nb01.padding_fraction", whole_dataset_as_one_batch) is False
    assert "not yet: lengths [3, 1, 4, 1, 5], batch_size 2" in capsys.readouterr().out


def test_attention_probabilities_and_confusion_matrix_name_wrong_answers(capsys):
    from tinylab.exercises.nb02 import confusion_matrix

    assert check("nb02.attention_probabilities", lambda s, m: torch.softmax(s, -1)) is False
    assert "padded keys (mask 0) must get probability 0" in capsys.readouterr().out
    assert check("nb02.attention_probabilities",
                 lambda s, m: torch.softmax(s, -1) * m[:, None, None, :]) is False
    assert "must sum to 1" in capsys.readouterr().out
    assert check("nb02.confusion_matrix", lambda p, y, c: confusion_matrix(y, p, c)) is False
    assert "rows and columns are swapped" in capsys.readouterr().out
