"""The exercise framework: registering exercises, checking answers, hints and solutions.

Each notebook ``NN`` keeps its exercises in ``tinylab/exercises/nbNN.py``. An exercise is a name
(``"nbNN.short_name"``), a *checker* that tests a learner's answer, a *hint*, a *reference*
solution, and the library functions the answer must not call. In a notebook::

    from tinylab.exercises import check, hint, solution, use

    def softmax_with_temperature(logits, T):
        raise NotImplementedError  # your code here

    softmax_with_temperature = use("nb03.softmax_with_temperature", softmax_with_temperature)
    hint("nb03.softmax_with_temperature")       # a nudge; call it again for the idea
    solution("nb03.softmax_with_temperature")                           # prints the source

``use`` checks the answer (printing what is wrong, never raising) and returns it when it
passes, the reference solution otherwise: the cells below always run, and they run the
learner's own function as soon as it is right. ``check`` does the checking alone and returns
``True`` or ``False``.

Hints come in two levels: ``hint(name)`` prints a nudge (where to look, what to think about),
a second ``hint(name)`` (or ``hint(name, level=2)``) the idea (the method, in words). Neither is
the code: that is ``solution(name)``, and the answer key (:mod:`tinylab.course.answer_key`).

Predictions: an exercise registered with ``kind="prediction"`` asks for a value, not a
function. The learner writes it down before anything is computed, and a later cell measures the
truth and compares::

    predicted_pads = predict("nb01.dynamic_padding", ...)   # replace ... with your number
    ...                                                     # the cells that measure it
    check("nb01.dynamic_padding", predicted_pads, truth=pads_counted)

Its ``checker(prediction, truth)`` returns the explanation of the measured value, and raises
``AssertionError`` (with that explanation) when the prediction is wrong; its ``reference`` takes
no argument and returns the reasoned answer (``solution`` prints the reasoning).

Writing an exercise module (``nbNN.py``)::

    from tinylab.exercises import register

    def _reference(logits, T): ...
    def _checker(candidate):            # raise AssertionError("what is wrong") if wrong
        ...
    register("nbNN.short_name", checker=_checker, reference=_reference,
             hint=("a nudge: where to look", "the idea: the method in words, no code"),
             forbidden=("torch.softmax", "torch.Tensor.softmax"),
             why="this exercise asks you to write the softmax yourself")

The checker receives the learner's function and signals a wrong answer by raising
``AssertionError`` with a message that says what is wrong (e.g. from
``torch.testing.assert_close``). ``check`` turns every failure, including the
``NotImplementedError`` of an unattempted stub, into a printed message and ``False``, so a
notebook still runs top to bottom. The module ``tinylab.exercises.nbNN`` is imported the first
time one of its exercise names is used (:func:`get`).

Shortcuts: ``forbidden`` lists dotted names of library functions that would solve the exercise
in one call (``"tinylab.losses.attention_mse"``, ``"torch.Tensor.softmax"``, a class such as
``"torch.nn.KLDivLoss"`` for all of its methods). The checker is handed a *guarded* candidate:
while the learner's function runs, a ``sys.setprofile`` hook watches every call it makes,
directly or through other libraries, and a call to a forbidden function stops it with
:class:`ShortcutUsed`; ``check`` then names the function and ``why`` it is refused. Python
functions are recognised by their code object, C functions by identity, C methods (such as
``Tensor.softmax``) by name and owner type. The checker's own code, which may compute the
expected values with those very functions, is not watched. A guard, not a sandbox: it catches
the library doing the work, not code written to evade it.
"""
from __future__ import annotations

import functools
import importlib
import importlib.util
import inspect
import sys
import textwrap
from dataclasses import dataclass
from typing import Any, Callable

import torch

__all__ = ["Exercise", "ShortcutUsed", "register", "check", "use", "hint", "solution", "get",
           "names", "predict", "judge_choice", "assert_matches"]


@dataclass(frozen=True)
class Exercise:
    """One exercise: ``checker(candidate)`` raises ``AssertionError`` when the answer is wrong.

    ``hints``: the hint levels, a nudge first, then the idea; ``forbidden``: dotted names of the
    library functions the answer must not call; ``why``: one sentence saying why they are
    refused; ``kind``: ``"function"`` (the learner writes a function) or ``"prediction"`` (the
    learner predicts a value that a notebook cell then measures).
    """

    name: str
    checker: Callable[..., Any]
    hints: tuple[str, ...]
    reference: Callable[..., Any]
    forbidden: tuple[str, ...] = ()
    why: str | None = None
    kind: str = "function"

    @property
    def hint(self) -> str:
        """The first hint level (what ``check`` prints under a wrong answer)."""
        return self.hints[0]


# The package of the exercise modules: "nb03.name" lives in tinylab.exercises.nb03.
_PACKAGE = __name__.rpartition(".")[0]

_REGISTRY: dict[str, Exercise] = {}
_HINTS_SHOWN: dict[str, int] = {}       # exercise name -> highest hint level printed so far

_DEFAULT_WHY = "this exercise asks you to write that computation yourself"


KINDS = ("function", "prediction")


def register(name: str, *, checker: Callable[..., Any], hint: str | tuple[str, ...] | list[str],
             reference: Callable[..., Any], forbidden: tuple[str, ...] | list[str] = (),
             why: str | None = None, kind: str = "function") -> Exercise:
    """Add an exercise to the registry (called at import time by ``nbNN.py``).

    ``name`` must look like ``"nbNN.short_name"``: the part before the dot names the module that
    defines it, so ``check`` can import that module on first use. ``forbidden``: dotted names
    of library functions (or classes) the answer must not call, e.g. ``("torch.softmax",
    "torch.Tensor.softmax")``; ``why``: one sentence saying why (printed when one is called).
    ``hint``: the hint levels, ``("nudge", "idea")`` (a single string is one level).
    ``kind``: ``"function"`` or ``"prediction"`` (see the module docstring).
    """
    module, dot, short = name.partition(".")
    if not dot or not module or not short:
        raise ValueError(f"exercise name {name!r} must look like 'nb03.short_name'")
    if not callable(checker) or not callable(reference):
        raise TypeError(f"exercise {name!r}: checker and reference must be callables")
    hints = (hint,) if isinstance(hint, str) else tuple(hint)
    if not hints or not all(isinstance(h, str) and h.strip() for h in hints):
        raise ValueError(f"exercise {name!r}: give a non-empty hint (or non-empty hint levels)")
    if kind not in KINDS:
        raise ValueError(f"exercise {name!r}: kind must be one of {KINDS}, got {kind!r}")
    if isinstance(forbidden, str):
        raise TypeError(f"exercise {name!r}: forbidden must be a tuple of dotted names, got the "
                        f"string {forbidden!r}")
    bad = [f for f in forbidden if not isinstance(f, str) or f.count(".") < 1]
    if bad:
        raise ValueError(f"exercise {name!r}: forbidden names must be dotted paths such as "
                         f"'torch.softmax', got {bad}")
    exercise = Exercise(name=name, checker=checker, hints=tuple(h.strip() for h in hints),
                        reference=reference, forbidden=tuple(forbidden),
                        why=why.strip() if why else None, kind=kind)
    _REGISTRY[name] = exercise
    _GUARDS.pop(name, None)
    _HINTS_SHOWN.pop(name, None)
    return exercise


def get(name: str) -> Exercise:
    """The registered exercise called ``name`` (imports ``tinylab.exercises.<prefix>`` first)."""
    if name not in _REGISTRY:
        module = name.partition(".")[0]
        try:
            importlib.import_module(f"{_PACKAGE}.{module}")
        except ModuleNotFoundError as err:
            if err.name != f"{_PACKAGE}.{module}":
                raise
        if name not in _REGISTRY:
            known = ", ".join(sorted(_REGISTRY)) or "none loaded"
            raise KeyError(f"no exercise called {name!r} (known: {known}); exercise names look "
                           f"like 'nb03.short_name' and live in tinylab/exercises/nb03.py")
    return _REGISTRY[name]


def names(module: str | None = None) -> list[str]:
    """Names of the registered exercises, optionally only those of ``module`` (e.g. ``"nb03"``)."""
    if module is not None:
        importlib.import_module(f"{_PACKAGE}.{module}")
    return sorted(n for n in _REGISTRY if module is None or n.startswith(module + "."))


# --------------------------------------------------------------------------------------------
# The shortcut guard
# --------------------------------------------------------------------------------------------

class ShortcutUsed(Exception):
    """Raised inside the learner's function when it calls a forbidden library function."""

    def __init__(self, function: str) -> None:
        super().__init__(f"your code calls {function}")
        self.function = function


def resolve(dotted: str) -> Any:
    """The object a dotted name refers to (``"torch.Tensor.softmax"``), importing its module.

    Returns ``None`` when the top-level package is not installed (``"sklearn..."`` on a machine
    without scikit-learn: nothing to refuse). Raises ``AttributeError`` / ``ImportError`` for a
    name that does not exist in an installed package (a typo in ``forbidden``).
    """
    parts = dotted.split(".")
    if importlib.util.find_spec(parts[0]) is None:
        return None
    obj, last_error = None, None
    for cut in range(len(parts), 0, -1):          # the longest importable module prefix
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError as err:
            last_error = err
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ImportError(f"cannot import {dotted!r}") from last_error


def _python_code(obj: Any) -> Any:
    """The code object a call to ``obj`` runs (the innermost one of a decorated function)."""
    if isinstance(obj, (staticmethod, classmethod)):
        obj = obj.__func__
    if isinstance(obj, property):
        obj = obj.fget
    obj = inspect.unwrap(obj) if callable(obj) else obj
    obj = getattr(obj, "__func__", obj)            # bound methods
    return getattr(obj, "__code__", None)


class _Guard:
    """What an exercise refuses, resolved to code objects and C callables, and the hook."""

    def __init__(self, forbidden: tuple[str, ...]) -> None:
        self.codes: dict[Any, str] = {}              # Python functions and class methods
        self.builtins: dict[int, tuple[Any, str]] = {}   # C functions, by identity
        self.c_names: dict[str, list[tuple[Any, str]]] = {}  # C functions, by name + __self__
        self.methods: dict[str, list[tuple[type, str]]] = {}  # C methods, by name + owner type
        self.classes: dict[int, tuple[type, str]] = {}
        for dotted in forbidden:
            try:
                obj = resolve(dotted)
            except (ImportError, AttributeError):  # another library version: nothing to refuse
                continue                           # (tests/test_exercises.py: all resolve here)
            if obj is not None:
                self._add(obj, dotted)

    def _add(self, obj: Any, dotted: str) -> None:
        kind = type(obj).__name__
        if inspect.isclass(obj):
            self.classes[id(obj)] = (obj, dotted)
            for attr, value in vars(obj).items():
                code = _python_code(value) if callable(value) or isinstance(
                    value, (staticmethod, classmethod, property)) else None
                if code is not None:
                    self.codes.setdefault(code, dotted)
        elif kind in ("method_descriptor", "wrapper_descriptor", "classmethod_descriptor"):
            self.methods.setdefault(obj.__name__, []).append((obj.__objclass__, dotted))
        elif kind == "builtin_function_or_method":
            self.builtins[id(obj)] = (obj, dotted)
            self.c_names.setdefault(obj.__name__, []).append((obj.__self__, dotted))
        elif _python_code(obj) is not None:
            self.codes[_python_code(obj)] = dotted
        else:
            raise TypeError(f"cannot forbid {dotted!r}: {kind} is neither a Python function, a "
                            f"class nor a C function or method")

    def __bool__(self) -> bool:
        return bool(self.codes or self.builtins or self.methods or self.classes)

    def c_function(self, fn: Any) -> str | None:
        """The forbidden name a C callable (the ``arg`` of a ``c_call`` event) stands for."""
        hit = self.builtins.get(id(fn))
        if hit is not None and hit[0] is fn:
            return hit[1]
        name = getattr(fn, "__name__", None)
        if name is None:
            return None
        owner = getattr(fn, "__self__", None)
        for cls, dotted in self.methods.get(name, ()):
            if isinstance(owner, cls):
                return dotted
        for self_, dotted in self.c_names.get(name, ()):
            if owner is self_ and owner is not None:
                return dotted
        return None

    def matches(self, candidate: Any) -> str | None:
        """The forbidden name ``candidate`` itself is (passing ``torch.softmax`` as the answer)."""
        while isinstance(candidate, functools.partial):
            candidate = candidate.func
        if inspect.isclass(candidate):
            hit = self.classes.get(id(candidate))
            return hit[1] if hit and hit[0] is candidate else None
        kind = type(candidate).__name__
        if kind in ("method_descriptor", "wrapper_descriptor", "classmethod_descriptor"):
            for cls, dotted in self.methods.get(candidate.__name__, ()):
                if issubclass(candidate.__objclass__, cls):
                    return dotted
            return None
        if kind in ("builtin_function_or_method", "method-wrapper"):
            return self.c_function(candidate)
        try:
            code = _python_code(candidate)
        except Exception:  # an exotic callable: let the hook judge it when it runs
            return None
        return self.codes.get(code) if code is not None else None


_GUARDS: dict[str, _Guard] = {}


def _guard(exercise: Exercise) -> _Guard | None:
    if not exercise.forbidden:
        return None
    if exercise.name not in _GUARDS:
        _GUARDS[exercise.name] = _Guard(exercise.forbidden)
    return _GUARDS[exercise.name] or None


class _Guarded:
    """The learner's function, run under the guard's profile hook (what the checker calls)."""

    def __init__(self, function: Callable[..., Any], guard: _Guard) -> None:
        self.function = function
        self.guard = guard
        self.used: str | None = None         # the first forbidden call, even if it was caught
        functools.update_wrapper(self, function, updated=())

    def _hook(self, frame: Any, event: str, arg: Any) -> None:
        if event == "call":
            hit = self.guard.codes.get(frame.f_code)
        elif event == "c_call":
            hit = self.guard.c_function(arg)
        else:
            return
        if hit is not None:
            self.used = self.used or hit
            raise ShortcutUsed(hit)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.used:
            raise ShortcutUsed(self.used)
        previous = sys.getprofile()
        sys.setprofile(self._hook)
        try:
            return self.function(*args, **kwargs)
        finally:
            sys.setprofile(previous)


# --------------------------------------------------------------------------------------------
# check, use, hint, solution
# --------------------------------------------------------------------------------------------

def _refused(exercise: Exercise, function: str) -> bool:
    print(f"[{exercise.name}] refused: your code calls {function} - "
          f"{exercise.why or _DEFAULT_WHY}")
    print(f"hint: {exercise.hint}")
    return False


_NO_TRUTH = object()


def check(name: str, candidate: Any, *, truth: Any = _NO_TRUTH) -> bool:
    """Check a learner's answer; print whether it passes, or what is wrong plus the hint.

    Never raises for a wrong or unattempted answer (``NotImplementedError``), so a notebook runs
    top to bottom before the learner has solved anything. Returns ``True`` only when correct.
    An answer that calls one of the exercise's forbidden library functions is refused, with
    the function named. The registered reference solution itself prints "the reference
    solution passes", a learner's function "correct: your function passes".

    For a prediction exercise, ``candidate`` is the learner's prediction and ``truth`` the
    value the notebook measured: the checker compares the two and explains the measurement.
    """
    exercise = get(name)
    if exercise.kind == "prediction":
        if truth is _NO_TRUTH:
            raise TypeError(f"{name} is a prediction: pass the measured value, "
                            f"check({name!r}, prediction, truth=measured)")
        return _check_prediction(exercise, candidate, truth)
    if truth is not _NO_TRUTH:
        raise TypeError(f"{name} checks a function; truth= is for prediction exercises")
    guard = _guard(exercise)
    if guard is not None:
        direct = guard.matches(candidate)
        if direct is not None:
            return _refused(exercise, direct)
    tested = _Guarded(candidate, guard) if guard is not None and callable(candidate) else candidate
    failure: BaseException | None = None
    try:
        exercise.checker(tested)
    except Exception as err:  # noqa: BLE001 - every failure is reported, none is raised
        failure = err
    if isinstance(tested, _Guarded) and tested.used:      # even if the learner caught it
        return _refused(exercise, tested.used)
    if isinstance(failure, ShortcutUsed):
        return _refused(exercise, failure.function)
    if isinstance(failure, NotImplementedError):
        print(f"[{name}] not attempted yet: replace `raise NotImplementedError` with your code.")
        print(f"hint: {exercise.hint}")
        return False
    if isinstance(failure, AssertionError):
        message = str(failure).strip() or "the answer does not match the reference"
        print(f"[{name}] not yet: {message}")
        print(f"hint: {exercise.hint}")
        return False
    if failure is not None:  # the learner's code crashed: report it, keep the notebook going
        print(f"[{name}] your code raised {type(failure).__name__}: {failure}")
        print(f"hint: {exercise.hint}")
        return False
    if candidate is exercise.reference:
        print(f"[{name}] the reference solution passes")
    else:
        print(f"[{name}] correct: your function passes")
    return True


def _check_prediction(exercise: Exercise, prediction: Any, truth: Any) -> bool:
    name = exercise.name
    if prediction is None or prediction is Ellipsis:
        print(f"[{name}] no prediction yet: replace ... in the prediction cell with yours and "
              f"run the cells again (the measurement is explained once you have committed to "
              f"an answer)")
        return False
    try:
        explanation = exercise.checker(prediction, truth)
    except AssertionError as err:
        print(f"[{name}] not what was measured: {str(err).strip()}")
        print(f"hint: {exercise.hint}")
        return False
    print(f"[{name}] correct: your prediction matches the measurement ({prediction!r})."
          + (f" {explanation.strip()}" if explanation else ""))
    return True


def assert_matches(got: Any, expected: Any, mistakes: Callable[[], dict[str, Any]],
                   where: str, *, rtol: float = 1e-4, atol: float = 1e-6) -> None:
    """A checker's comparison of a learner's tensor with the reference's ``expected``.

    On a mismatch it calls ``mistakes()`` (``{description: what that mistake computes}``) and
    names the first mistake the answer reproduces (unless that mistake happens to give the
    right value here); otherwise it raises ``torch.testing``'s own message, prefixed with
    ``where`` (the shapes or settings of the failing case).
    """
    got, expected = got.detach(), expected.detach()
    if torch.allclose(got, expected, rtol=rtol, atol=atol):
        return
    for mistake, value in mistakes().items():
        if (torch.allclose(got, value, rtol=rtol, atol=atol)
                and not torch.allclose(value, expected, rtol=rtol, atol=atol)):
            raise AssertionError(f"{where}: got {got.item():.6g}, expected "
                                 f"{expected.item():.6g}: {mistake}")
    torch.testing.assert_close(got, expected, rtol=rtol, atol=atol, msg=lambda m: f"{where}: {m}")


def judge_choice(prediction: Any, answer: str, choices: dict[str, str], explanation: str) -> str:
    """The checker's verdict on a multiple-choice prediction: ``explanation`` when
    ``prediction`` (``"b"``, ``"(B)"``, ...) is ``answer``, else an ``AssertionError`` that
    says which choice the measurement gave, or lists the choices for an answer outside them."""
    choice = str(prediction).strip().lower().strip("()")
    if choice not in choices:
        raise AssertionError(f"choose one of {sorted(choices)}, got {prediction!r}. "
                             f"{explanation}")
    if choice != answer:
        raise AssertionError(f"you chose ({choice}), the measurement says ({answer}). "
                             f"{explanation}")
    return explanation


def predict(name: str, prediction: Any) -> Any:
    """Note a learner's prediction for the prediction exercise ``name``; return it unchanged.

    Write it in the cell *before* the cells that measure the answer::

        predicted_pads = predict("nb01.dynamic_padding", ...)   # replace ... with your answer
    """
    exercise = get(name)
    if exercise.kind != "prediction":
        raise TypeError(f"{name} is not a prediction exercise; use check() or use()")
    if prediction is None or prediction is Ellipsis:
        print(f"[{name}] no prediction yet: replace ... with your answer before you run the "
              f"cells below (they run either way)")
    else:
        print(f"[{name}] prediction noted: {prediction!r}")
    return prediction


def use(name: str, candidate: Callable[..., Any]) -> Callable[..., Any]:
    """Check ``candidate`` and return the function the following cells should use.

    Returns ``candidate`` itself when it passes :func:`check`; otherwise prints that the cells
    below use the reference solution and returns that, so the notebook keeps running (with
    correct numbers) while the exercise is open. Write it right under the exercise::

        softmax_with_temperature = use("nb03.softmax_with_temperature", softmax_with_temperature)
    """
    exercise = get(name)
    if exercise.kind != "function":
        raise TypeError(f"{name} is a prediction; check it with check({name!r}, prediction, "
                        f"truth=measured)")
    if check(name, candidate):
        return candidate
    print(f"[{name}] the cells below use the reference solution until yours passes")
    return exercise.reference


def hint(name: str, level: int | None = None) -> str:
    """Print (and return) a hint of exercise ``name``: the first call a nudge, the next the idea.

    ``level``: ask for one level directly (1 = the nudge, 2 = the idea). Without it each call
    goes one level further, up to the last. No level is the solution: ``solution(name)`` is.
    """
    exercise = get(name)
    levels = len(exercise.hints)
    if level is None:
        level = min(_HINTS_SHOWN.get(name, 0) + 1, levels)
    if not isinstance(level, int) or not 1 <= level <= levels:
        raise ValueError(f"{name} has hint levels 1..{levels}, got {level!r}")
    _HINTS_SHOWN[name] = max(_HINTS_SHOWN.get(name, 0), level)
    text = exercise.hints[level - 1]
    if levels == 1:
        print(text)
        return text
    following = (f'hint("{name}") again for the next one' if level < levels
                 else f'the full answer: solution("{name}")')
    print(f"hint {level} of {levels}: {text}\n({following})")
    return text


def solution(name: str) -> str:
    """Print (and return) the source code of the reference solution of exercise ``name``."""
    source = textwrap.dedent(inspect.getsource(get(name).reference))
    print(source)
    return source
