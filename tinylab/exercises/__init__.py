"""Self-checking exercises for the course notebooks.

Each notebook ``NN`` keeps its exercises in ``tinylab/exercises/nbNN.py``. An exercise is a name
(``"nbNN.short_name"``), a *checker* that tests a learner's answer, a *hint*, and a *reference*
solution. In a notebook::

    from tinylab.exercises import check, hint, solution

    def softmax_with_temperature(logits, T):
        raise NotImplementedError  # your code here

    check("nb03.softmax_with_temperature", softmax_with_temperature)   # prints, never raises
    hint("nb03.softmax_with_temperature")
    solution("nb03.softmax_with_temperature")                           # prints the source

Writing an exercise module (``nbNN.py``)::

    from tinylab.exercises import register

    def _reference(logits, T): ...
    def _checker(candidate):            # raise AssertionError("what is wrong") if wrong
        ...
    register("nbNN.short_name", checker=_checker, hint="...", reference=_reference)

The checker receives whatever the learner passes to ``check`` (usually a function) and signals a
wrong answer by raising ``AssertionError`` with a message that says what is wrong (e.g. from
``torch.testing.assert_close``). ``check`` turns every failure, including the
``NotImplementedError`` of an unattempted stub, into a printed message and ``False``, so a
notebook still runs top to bottom. The module ``tinylab.exercises.nbNN`` is imported the first
time one of its exercise names is used.
"""
from __future__ import annotations

import importlib
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

__all__ = ["Exercise", "register", "check", "hint", "solution", "get", "names"]


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``checker(candidate)`` raises ``AssertionError`` when the answer is wrong."""

    name: str
    checker: Callable[[Any], Any]
    hint: str
    reference: Callable[..., Any]


_REGISTRY: dict[str, Exercise] = {}


def register(name: str, *, checker: Callable[[Any], Any], hint: str,
             reference: Callable[..., Any]) -> Exercise:
    """Add an exercise to the registry (called at import time by ``nbNN.py``).

    ``name`` must look like ``"nbNN.short_name"``: the part before the dot names the module that
    defines it, so ``check`` can import that module on first use.
    """
    module, dot, short = name.partition(".")
    if not dot or not module or not short:
        raise ValueError(f"exercise name {name!r} must look like 'nb03.short_name'")
    if not callable(checker) or not callable(reference):
        raise TypeError(f"exercise {name!r}: checker and reference must be callables")
    if not hint.strip():
        raise ValueError(f"exercise {name!r}: give a non-empty hint")
    exercise = Exercise(name=name, checker=checker, hint=hint.strip(), reference=reference)
    _REGISTRY[name] = exercise
    return exercise


def get(name: str) -> Exercise:
    """The registered exercise called ``name`` (imports ``tinylab.exercises.<prefix>`` first)."""
    if name not in _REGISTRY:
        module = name.partition(".")[0]
        try:
            importlib.import_module(f"{__name__}.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"{__name__}.{module}":
                raise
        if name not in _REGISTRY:
            known = ", ".join(sorted(_REGISTRY)) or "none loaded"
            raise KeyError(f"no exercise called {name!r} (known: {known}); exercise names look "
                           f"like 'nb03.short_name' and live in tinylab/exercises/nb03.py")
    return _REGISTRY[name]


def names(module: str | None = None) -> list[str]:
    """Names of the registered exercises, optionally only those of ``module`` (e.g. ``"nb03"``)."""
    if module is not None:
        importlib.import_module(f"{__name__}.{module}")
    return sorted(n for n in _REGISTRY if module is None or n.startswith(module + "."))


def check(name: str, candidate: Any) -> bool:
    """Check a learner's answer; print ``correct`` or what is wrong plus the hint.

    Never raises for a wrong or unattempted answer (``NotImplementedError``), so a notebook runs
    top to bottom before the learner has solved anything. Returns ``True`` only when correct.
    """
    exercise = get(name)
    try:
        exercise.checker(candidate)
    except NotImplementedError:
        print(f"[{name}] not attempted yet: replace `raise NotImplementedError` with your code.")
        print(f"hint: {exercise.hint}")
        return False
    except AssertionError as err:
        message = str(err).strip() or "the answer does not match the reference"
        print(f"[{name}] not yet: {message}")
        print(f"hint: {exercise.hint}")
        return False
    except Exception as err:  # the learner's code crashed: report it, keep the notebook going
        print(f"[{name}] your code raised {type(err).__name__}: {err}")
        print(f"hint: {exercise.hint}")
        return False
    print(f"[{name}] correct")
    return True


def hint(name: str) -> str:
    """Print (and return) the hint of exercise ``name``."""
    text = get(name).hint
    print(text)
    return text


def solution(name: str) -> str:
    """Print (and return) the source code of the reference solution of exercise ``name``."""
    source = textwrap.dedent(inspect.getsource(get(name).reference))
    print(source)
    return source
