"""The exercise machinery, and every registered exercise: its reference passes its own checker,
and an unattempted stub or a wrong answer is reported (never raised)."""
from __future__ import annotations

import importlib
import pkgutil

import pytest
import torch

import tinylab.exercises as ex
from tinylab.exercises import check, hint, register, solution

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
    assert capsys.readouterr().out.strip() == f"[{name}] correct"


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


def test_wrong_and_crashing_answers_return_false(capsys):
    # softmax without the temperature: wrong values
    assert check("nb03.softmax_with_temperature", lambda z, t: torch.softmax(z, -1)) is False
    assert "not yet: T=0.5" in capsys.readouterr().out
    # the naive exp() overflows on large logits: the checker names the fix
    naive = lambda z, t: torch.exp(z / t) / torch.exp(z / t).sum(-1, keepdim=True)  # noqa: E731
    assert check("nb03.softmax_with_temperature", naive) is False
    assert "subtract the maximum" in capsys.readouterr().out
    # the gradient without the 1/T factor
    no_t = lambda s, t_, T: torch.softmax(s / T, -1) - torch.softmax(t_ / T, -1)  # noqa: E731
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
