"""Self-checking exercises for the course notebooks.

Each notebook ``NN`` keeps its exercises in ``tinylab/exercises/nbNN.py``, each registered under
a name such as ``"nb03.softmax_with_temperature"``; the module is imported the first time one of
its names is used. The framework that registers, checks and explains them (``check``, ``use``,
``predict``, ``hint``, ``solution``, ``register``, the shortcut guard) is
:mod:`tinylab.exercises.framework`; its names are importable from here::

    from tinylab.exercises import check, hint, solution, use
"""
from __future__ import annotations

from tinylab.exercises.framework import (KINDS, Exercise, ShortcutUsed, assert_matches, check,
                                         get, hint, judge_choice, names, predict, register,
                                         resolve, solution, use)

__all__ = ["Exercise", "ShortcutUsed", "register", "check", "use", "hint", "solution", "get",
           "names", "predict", "judge_choice", "assert_matches"]
