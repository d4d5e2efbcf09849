"""Exercises of notebook 09 (distil your own task): choosing the student.

* ``official_layer_map`` (a prediction): which teacher layers the authors' code distils into a
  4-layer student when the teacher has 6 layers, a depth the student's does not divide (the
  notebook computes the answer with the authors' indexing rule);
* ``pick_student``: pick a student shape from a measured speed/accuracy frontier, the most
  accurate shape that is at least a given factor faster than the teacher.
"""
from __future__ import annotations

from typing import Any

from tinylab.exercises import judge_choice, register

# What only the checkers (and their helpers) need is imported inside them: the answer key
# copies this module's top-level imports into every solution cell
# (tinylab.course.answer_key), and the learner's notebook should not receive them.

# -- 1. the authors' layer mapping when the depths do not divide ---------------------------------

LAYER_CHOICES = {
    "a": "[2, 3, 5, 6]: spread over the whole teacher, the last student layer on the last",
    "b": "[1, 2, 3, 4]: the teacher's first four layers",
    "c": "[3, 4, 5, 6]: the teacher's last four layers",
}
_CHOICE_LAYERS = {"a": [2, 3, 5, 6], "b": [1, 2, 3, 4], "c": [3, 4, 5, 6]}


def official_layer_map() -> str:
    """M = 4 student layers, N = 6 teacher layers, the authors' rule."""
    # layers_per_block = N // M = 1, and student layer i (0-based) reads teacher layer
    # i * 1 + 1 - 1 = i: the first four layers. Nothing tells the user; the top two teacher
    # layers, the most task-specific ones, are never distilled.
    return "b"


def _check_official_layer_map(prediction: Any, truth: Any) -> str:
    layers = [int(x) for x in truth]
    answer = next((k for k, v in _CHOICE_LAYERS.items() if v == layers), None)
    assert answer is not None, f"truth: expected one of {list(_CHOICE_LAYERS.values())}"
    explanation = (f"The authors' code computes layers_per_block = N // M = 6 // 4 = 1 and "
                   f"gives student layer m the last layer of block m, so it reads teacher "
                   f"layers {layers}: ({answer}) {LAYER_CHOICES[answer]}. The top of the teacher, "
                   f"where the task-specific features are, is never distilled, and nothing "
                   f"warns. tinylab refuses 'uniform' here: 'spread' (ceil(m N / M)) gives "
                   f"[2, 3, 5, 6], and 'bottom' is the authors' behaviour, chosen on purpose.")
    return judge_choice(prediction, answer, LAYER_CHOICES, explanation)


register("nb09.official_layer_map", kind="prediction", checker=_check_official_layer_map,
         reference=official_layer_map,
         hint=("Compute N // M in integers first: how many teacher layers form one block?",
               "With one teacher layer per block, student layer m (m = 1..4) reads block m's "
               "last layer, which is teacher layer m."))


# -- 2. picking the student from the frontier ------------------------------------------------------

def pick_student(frontier, min_speedup: float) -> str:
    """The shape (index of ``frontier``) with the highest ``accuracy`` among those whose
    ``speedup`` is at least ``min_speedup``; ties go to the faster shape. When no shape is fast
    enough, the fastest one."""
    fast_enough = frontier[frontier["speedup"] >= min_speedup]
    if fast_enough.empty:
        return str(frontier["speedup"].idxmax())
    return str(fast_enough.sort_values(["accuracy", "speedup"], ascending=False).index[0])


def _frontier(rows: dict[str, tuple[float, float]]):
    import pandas as pd

    return pd.DataFrame({"speedup": {k: v[0] for k, v in rows.items()},
                         "accuracy": {k: v[1] for k, v in rows.items()}})


# (rows: shape -> (speed-up, accuracy), min_speedup, what the case is about)
_CASES = [
    ({"L4-H312": (4.1, 0.81), "L3-H192": (9.1, 0.79), "L2-H192": (13.1, 0.78),
      "L2-H144": (18.4, 0.74)}, 10.0, "the usual case: the most accurate shape above the bar"),
    ({"L4-H312": (4.1, 0.81), "L3-H192": (10.0, 0.79), "L2-H192": (13.1, 0.78)}, 10.0,
     "a shape exactly at the bar counts as fast enough (>=)"),
    ({"L4-H312": (4.1, 0.81), "L3-H192": (9.1, 0.79)}, 10.0,
     "no shape is fast enough: fall back to the fastest"),
    ({"A": (11.0, 0.78), "B": (15.0, 0.78), "C": (6.0, 0.90)}, 10.0,
     "two shapes equally accurate: the faster one"),
    ({"L4-H312": (4.1, 0.81), "L3-H192": (9.1, 0.79)}, 2.0,
     "a low bar: the most accurate shape overall"),
]


def _expected(rows: dict[str, tuple[float, float]], min_speedup: float) -> str:
    # the rule spelt out as a loop, independent of the pandas reference
    best = None
    for name, (speed, acc) in rows.items():
        if speed >= min_speedup and (best is None or (acc, speed) > rows[best][::-1]):
            best = name
    if best is None:
        best = max(rows, key=lambda n: rows[n][0])
    return best


def _check_pick_student(candidate) -> None:
    for rows, bar, about in _CASES:
        got = candidate(_frontier(rows), bar)
        want = _expected(rows, bar)
        assert got == want, (f"{about}: with min_speedup={bar} and the frontier "
                             f"{ {k: {'speedup': v[0], 'accuracy': v[1]} for k, v in rows.items()} } "
                             f"the answer is {want!r}, yours returned {got!r}")


register("nb09.pick_student", checker=_check_pick_student, reference=pick_student,
         hint=("Two steps: first keep only the shapes that are fast enough, then choose among "
               "them. What if none is left?",
               "Filter with frontier['speedup'] >= min_speedup (at the bar counts), then take "
               "the row with the highest accuracy, breaking ties by speed-up (sort by both, "
               "descending). If the filter leaves nothing, return the index of the row with "
               "the largest speed-up."))
