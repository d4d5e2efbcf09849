"""Exercises of notebook 05 (general distillation and data augmentation), Jiao et al. 2020,
"TinyBERT learning" and the data augmentation:

* ``stage_plan``: which teacher, which data and which loss terms each of the three training
  runs uses;
* ``augment_sentence``: the sampling loop of TinyBERT's data augmentation (Algorithm 1) on one
  sentence with a fixed candidate table, checked by the properties every correct sampler has
  (on thousands of seeded draws), not by comparing random sentences.
"""
from __future__ import annotations

import copy
import math

import numpy as np

from tinylab.exercises import register

# -- 1. the recipe -----------------------------------------------------------------------------

STAGES = ("general", "intermediate", "prediction")
TEACHERS = ("pretrained", "finetuned")
DATA = ("general corpus", "augmented task data", "task data with gold labels")
TERMS = ("embedding", "attention", "hidden", "prediction")


def stage_plan(stage: str) -> dict:
    """TinyBERT's recipe for one stage: the teacher, the data and the loss terms.

    ``stage``: ``"general"`` (general distillation), ``"intermediate"`` (task distillation,
    stage a) or ``"prediction"`` (task distillation, stage b). Returns
    ``{"teacher": ..., "data": ..., "terms": [...]}`` with values from ``TEACHERS``, ``DATA``
    and ``TERMS``.
    """
    if stage == "general":
        return {"teacher": "pretrained", "data": "general corpus",
                "terms": ["embedding", "attention", "hidden"]}
    if stage == "intermediate":
        return {"teacher": "finetuned", "data": "augmented task data",
                "terms": ["embedding", "attention", "hidden"]}
    if stage == "prediction":
        return {"teacher": "finetuned", "data": "augmented task data", "terms": ["prediction"]}
    raise ValueError(f"unknown stage {stage!r}")


_WHY = {
    ("general", "teacher"): "general distillation imitates the pre-trained (not fine-tuned) "
                            "BERT: there is no task yet",
    ("general", "data"): "general distillation runs on a large unlabelled general corpus "
                         "(the paper: Wikipedia)",
    ("general", "terms"): "general distillation has no task predictions to imitate, so only the "
                          "transformer-layer and embedding terms",
    ("intermediate", "teacher"): "task distillation imitates the teacher fine-tuned on the task",
    ("intermediate", "data"): "task distillation runs on the augmented task sentences (no gold "
                              "labels needed: the teacher provides every target)",
    ("intermediate", "terms"): "stage a distils the embeddings, attention scores and hidden "
                               "states",
    ("prediction", "teacher"): "the soft targets come from the fine-tuned teacher",
    ("prediction", "data"): "stage b uses the same augmented data; the gold labels are never "
                            "used as targets",
    ("prediction", "terms"): "stage b distils the prediction layer only (soft cross-entropy)",
}


def _check_stage_plan(candidate) -> None:
    for stage in STAGES:
        got = candidate(stage)
        assert isinstance(got, dict), f"stage {stage!r}: return a dict, got {type(got).__name__}"
        missing = {"teacher", "data", "terms"} - set(got)
        assert not missing, f"stage {stage!r}: the dict needs the keys {sorted(missing)}"
        expected = stage_plan(stage)
        for key in ("teacher", "data"):
            allowed = TEACHERS if key == "teacher" else DATA
            assert got[key] in allowed, (f"stage {stage!r}: {key}={got[key]!r} is not one of "
                                         f"{allowed}")
            assert got[key] == expected[key], f"stage {stage!r}: {_WHY[(stage, key)]}"
        terms = got["terms"]
        unknown = set(terms) - set(TERMS)
        assert not unknown, f"stage {stage!r}: unknown terms {sorted(unknown)}; use {TERMS}"
        assert sorted(terms) == sorted(expected["terms"]), f"stage {stage!r}: {_WHY[(stage, 'terms')]}"


register("nb05.stage_plan", checker=_check_stage_plan, reference=stage_plan,
         hint=("Three runs, in order: general distillation, then task distillation in two "
               "stages. Which teacher exists before there is a task? What data has no task? "
               "Which loss term needs the task's predictions?",
               "General distillation imitates a teacher that has seen no task, on text without "
               "a task, so it cannot distil predictions. Task distillation imitates the "
               "teacher fine-tuned on the task, on the augmented task data: stage a everything "
               "except the predictions, stage b the predictions alone."))


# -- 2. data augmentation, Algorithm 1 ----------------------------------------------------------

def augment_sentence(words: list[str], candidates: dict[int, list[str]], p_t: float,
                     n_aug: int, rng: np.random.Generator) -> list[list[str]]:
    """``n_aug`` new versions of a sentence (TinyBERT, Jiao et al. 2020, Alg. 1).

    ``words``: the sentence as a list of words. ``candidates[i]``: the replacement words of
    word ``i`` (up to K candidates; empty or absent: never replaced). For each attempt, every word
    with candidates is replaced with probability ``p_t`` (one coin per word) by a candidate
    drawn uniformly; the other words stay. Every attempt starts from the original sentence.
    Returns ``n_aug`` lists of words, one per attempt (repeats included). All randomness
    comes from ``rng``. (The coins and candidate indices are drawn in the same order as
    :func:`tinylab.augment.augment_sentence` draws them.)
    """
    slots = [i for i in sorted(candidates) if candidates[i]]
    out = []
    for _ in range(n_aug):
        replace = rng.random(len(slots)) < p_t                         # one coin per word
        pick = rng.integers(0, [len(candidates[i]) for i in slots])    # uniform in 0..K_i-1
        new = list(words)                                               # from the original
        for i, hit, j in zip(slots, replace, pick):
            if hit:
                new[i] = candidates[i][j]
        out.append(new)
    return out


# "the plot is slow , the acting dull and the ending strangely moving"; word 11 is eligible
# but found no neighbours. No list holds its own word, so every replacement is visible.
_AUG_WORDS = "the plot is slow , the acting dull and the ending strangely moving".split()
_AUG_CANDIDATES = {
    1: ["story", "script", "premise"],
    3: ["sluggish", "tedious"],
    6: ["cast", "performances", "casting", "direction"],
    7: ["boring", "flat", "lifeless"],
    10: ["finale", "conclusion"],
    12: ["touching", "affecting", "powerful", "stirring", "poignant"],
}
_AUG_ATTEMPTS = 1500
_AUG_SIGMAS = 5.0  # tolerance of every frequency check, in binomial standard deviations


def _sentences(candidate, words, candidates, p_t, n_aug, seed) -> list[list[str]]:
    """Call the learner's function on copies and check the shape of what comes back."""
    given_words, given_cands = list(words), copy.deepcopy(candidates)
    out = candidate(given_words, given_cands, p_t, n_aug, np.random.default_rng(seed))
    assert given_words == list(words), ("you changed the `words` list you were given: copy it "
                                        "(new = list(words)) and replace words in the copy")
    assert given_cands == candidates, "you changed the candidate table you were given"
    assert out is not None, "your function returned None: return the list of new sentences"
    assert isinstance(out, (list, tuple)), (f"return a list of sentences, got "
                                            f"{type(out).__name__}")
    assert len(out) == n_aug, (f"N_a = {n_aug} gave {len(out)} sentences: return exactly one per "
                               f"attempt, repeats included (tinylab.augment drops repeats "
                               f"afterwards; this exercise does not)")
    for s in out:
        assert not isinstance(s, str), ("return each sentence as a list of words (like `words`), "
                                        "not a joined string")
        assert len(s) == len(words), (f"a sentence has {len(s)} words, the original "
                                      f"{len(words)}: replace words one for one, never insert "
                                      f"or drop")
    if n_aug > 1 and len({id(s) for s in out}) < len(out):
        raise AssertionError("some of your sentences are the same list object: build a new "
                             "list (list(words)) for every attempt")
    return [[str(w) for w in s] for s in out]


def _check_augment_sentence(candidate) -> None:
    words, cands = _AUG_WORDS, _AUG_CANDIDATES
    eligible = sorted(cands)

    # shape, and the two ends of p_t
    _sentences(candidate, words, cands, 0.4, 5, seed=0)
    out = _sentences(candidate, words, cands, 0.0, 20, seed=1)
    changed = [(i, s[i]) for s in out for i in range(len(words)) if s[i] != words[i]]
    assert not changed, (f"with p_t = 0 nothing may change, but word {changed[0][0]} "
                         f"({words[changed[0][0]]!r}) became {changed[0][1]!r}: replace a word "
                         f"only when its draw is below p_t (rng.random() < p_t)")
    out = _sentences(candidate, words, cands, 1.0, 20, seed=2)
    kept = [i for s in out for i in eligible if s[i] == words[i]]
    assert not kept, (f"with p_t = 1 every word with candidates is replaced, but word {kept[0]} "
                      f"({words[kept[0]]!r}) was kept: replace a word when its draw is below "
                      f"p_t (rng.random() < p_t, always true for p_t = 1)")
    assert _sentences(candidate, words, cands, 0.4, 0, seed=3) == [], (
        "N_a = 0 asks for no sentences: return an empty list")
    out = _sentences(candidate, words, {}, 0.5, 3, seed=4)
    assert all(s == words for s in out), ("without any candidates every attempt is the "
                                          "original sentence")
    with_empty = {**cands, 11: []}
    try:
        out = _sentences(candidate, words, with_empty, 0.5, 20, seed=5)
    except (IndexError, ValueError, ZeroDivisionError, KeyError) as err:
        raise AssertionError(f"word 11 ({words[11]!r}) has an empty candidate list and your code "
                             f"raised {type(err).__name__}: {err}. A word without candidates "
                             f"is never replaced: skip it") from None
    assert all(s[11] == words[11] for s in out), (f"word 11 ({words[11]!r}) has an empty "
                                                  f"candidate list, yet it was replaced")

    # the same generator state must give the same sentences
    first = _sentences(candidate, words, cands, 0.4, 30, seed=6)
    again = _sentences(candidate, words, cands, 0.4, 30, seed=6)
    assert first == again, ("two calls with identically seeded generators gave different "
                            "sentences: draw every random number from `rng` (not from random, "
                            "np.random or torch)")

    # many attempts: where replacements happen, what they are, how often
    p_t, n = 0.4, _AUG_ATTEMPTS
    out = _sentences(candidate, words, cands, p_t, n, seed=7)
    for s in out:
        for i, w in enumerate(s):
            if w == words[i]:
                continue
            assert i in cands, (f"word {i} ({words[i]!r}) has no candidates but became {w!r}: "
                                f"words without candidates stay as they are")
            assert w in cands[i], (f"word {i} ({words[i]!r}) became {w!r}, which is not one of "
                                   f"its candidates {cands[i]}")
    tol = _AUG_SIGMAS * math.sqrt(p_t * (1 - p_t) / n)
    for i in eligible:
        rate = sum(s[i] != words[i] for s in out) / n
        if abs(rate - p_t) <= tol:
            continue
        why = ""
        if abs(rate - (1 - p_t)) <= tol:
            why = (" - that is 1 - p_t: replace when the draw is below p_t "
                   "(rng.random() < p_t), not above")
        elif rate > p_t:
            why = (" - too often: does every attempt start again from the original words? "
                   "Replacements must not pile up from one attempt to the next")
        raise AssertionError(f"word {i} ({words[i]!r}) was replaced in {rate:.1%} of {n} "
                             f"attempts, expected p_t = {p_t:.0%} (within ±{tol:.1%}){why}")
    # one coin per word: "all or none replaced" is rare for independent coins
    k = len(eligible)
    all_or_none = sum(all(s[i] != words[i] for i in eligible) or
                      all(s[i] == words[i] for i in eligible) for s in out) / n
    expected = p_t ** k + (1 - p_t) ** k
    spread = _AUG_SIGMAS * math.sqrt(expected * (1 - expected) / n)
    assert all_or_none <= expected + spread, (
        f"in {all_or_none:.0%} of the attempts either every word with candidates was replaced or "
        f"none was; with one independent coin per word that happens in {expected:.1%}. Draw a "
        f"separate random number for every word, not one per sentence")
    # uniform choice among a word's candidates
    for i in eligible:
        drawn = [s[i] for s in out if s[i] != words[i]]
        counts = {c: drawn.count(c) for c in cands[i]}
        if len(drawn) and counts[cands[i][0]] == len(drawn):
            raise AssertionError(f"word {i} ({words[i]!r}) was always replaced by its first "
                                 f"candidate {cands[i][0]!r}: choose one of its {len(cands[i])} "
                                 f"candidates uniformly at random")
        never = [c for c, m in counts.items() if m == 0]
        assert not never, (f"word {i} ({words[i]!r}): candidate {never[0]!r} was never chosen in "
                           f"{len(drawn)} replacements. Draw an index from all "
                           f"{len(cands[i])} candidates: rng.integers(0, K) already excludes K")
        share = 1 / len(cands[i])
        sd = math.sqrt(len(drawn) * share * (1 - share))
        for c, m in counts.items():
            assert abs(m - len(drawn) * share) <= _AUG_SIGMAS * sd, (
                f"word {i} ({words[i]!r}): candidate {c!r} was chosen {m} times out of "
                f"{len(drawn)}, expected about {len(drawn) * share:.0f} for a uniform choice "
                f"among {len(cands[i])} candidates")


register("nb05.augment_sentence", checker=_check_augment_sentence, reference=augment_sentence,
         forbidden=("tinylab.augment.augment_sentence", "tinylab.augment.augment_dataset"),
         why="this exercise asks you to write the sampling loop of Algorithm 1 yourself",
         hint=("Every one of the n_aug attempts starts again from the original words. Which "
               "words can change at all, how many coins do you toss per attempt, and where must "
               "every random number come from?",
               "For each attempt take a fresh copy of the words; for each position with a "
               "non-empty candidate list, draw a uniform number from rng and replace the word "
               "when it is below p_t, by one of its candidates picked uniformly (an index drawn "
               "from rng in 0..K-1). Positions without candidates stay. Keep one list per "
               "attempt, repeats included."))
