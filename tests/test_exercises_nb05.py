"""The hand-written augmentation exercise of notebook 05, TinyBERT's augmentation sampler. The
checker accepts its reference and other correct answers, names the usual mistakes, says when
nothing was attempted, and refuses the package's own function; the reference agrees with
tinylab.augment.augment_sentence."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tinylab.exercises import check, get
# The sampler's word lists are private to nb05's checker; these tests are about that
# checker's set-up, so they import them.
from tinylab.exercises.nb05 import _AUG_CANDIDATES, _AUG_WORDS, augment_sentence


def _out(capsys) -> str:
    return capsys.readouterr().out


def test_nb05_registers_two_exercises():
    from tinylab.exercises import names

    assert names("nb05") == ["nb05.augment_sentence", "nb05.stage_plan"]


@pytest.mark.parametrize("name", ["nb05.augment_sentence", "nb06.distillation_step"])
def test_reference_passes(name, capsys):
    assert check(name, get(name).reference) is True
    assert _out(capsys).strip() == f"[{name}] the reference solution passes"


@pytest.mark.parametrize("name", ["nb05.augment_sentence", "nb06.distillation_step"])
def test_blank_stub_is_not_attempted(name, capsys):
    def stub(*args):
        raise NotImplementedError

    assert check(name, stub) is False
    assert f"[{name}] not attempted yet" in _out(capsys)


# -- nb05.augment_sentence -----------------------------------------------------------------------

def test_reference_draws_like_the_package():
    """Same generator seed: the package's sentences are the reference's, minus repeats."""
    from tinylab.augment import augment_sentence as package_augment
    from tinylab.config import AugmentConfig

    text = " ".join(_AUG_WORDS)
    for seed, p_t, n_aug in ((0, 0.4, 30), (1, 0.1, 12), (2, 0.9, 20)):
        mine = augment_sentence(_AUG_WORDS, _AUG_CANDIDATES, p_t, n_aug,
                                np.random.default_rng(seed))
        assert len(mine) == n_aug
        unique = []
        for words in mine:
            sentence = " ".join(words)
            if sentence != text and sentence not in unique:
                unique.append(sentence)
        cfg = AugmentConfig(p_t=p_t, n_aug=n_aug)
        assert package_augment(text, _AUG_CANDIDATES, cfg, np.random.default_rng(seed)) == unique


def test_reference_replacement_rate_over_many_draws():
    rng = np.random.default_rng(11)
    out = augment_sentence(_AUG_WORDS, _AUG_CANDIDATES, 0.4, 4000, rng)
    for i, options in _AUG_CANDIDATES.items():
        drawn = [s[i] for s in out if s[i] != _AUG_WORDS[i]]
        assert abs(len(drawn) / 4000 - 0.4) < 0.04
        assert set(drawn) == set(options)
    untouched = set(range(len(_AUG_WORDS))) - set(_AUG_CANDIDATES)
    assert all(s[i] == _AUG_WORDS[i] for s in out for i in untouched)


def _sampler(*, above=False, first=False, short=False, one_coin=False, pile_up=False,
             skip_empty=True, rng_source=None):
    """augment_sentence written with one of the usual mistakes."""
    def sample(words, candidates, p_t, n_aug, rng):
        draw = rng_source or rng
        out, new = [], list(words)
        for _ in range(n_aug):
            if not pile_up:
                new = list(words)
            coin = draw.random()
            for i, options in candidates.items():
                if skip_empty and not options:
                    continue
                u = coin if one_coin else draw.random()
                if (u > p_t) if above else (u < p_t):
                    if first:
                        j = 0
                    elif short and len(options) > 1:
                        j = int(draw.integers(len(options) - 1))
                    else:
                        j = int(draw.integers(len(options)))
                    new[i] = options[j]
            out.append(list(new))
        return out
    return sample


def test_a_loop_with_one_draw_per_word_passes(capsys):
    assert check("nb05.augment_sentence", _sampler()) is True
    assert "correct: your function passes" in _out(capsys)


@pytest.mark.parametrize("mistake, message", [
    ({"above": True}, "only when its draw is below p_t"),
    ({"first": True}, "always replaced by its first candidate"),
    ({"short": True}, "was never chosen"),
    ({"one_coin": True}, "not one per sentence"),
    ({"pile_up": True}, "start again from the original words"),
    ({"skip_empty": False}, "has an empty candidate list"),
    ({"rng_source": np.random.default_rng()}, "draw every random number from `rng`"),
])
def test_augment_mistakes_are_named(mistake, message, capsys):
    assert check("nb05.augment_sentence", _sampler(**mistake)) is False
    out = _out(capsys)
    assert "[nb05.augment_sentence] not yet:" in out
    assert message in out


def test_augment_shape_mistakes_are_named(capsys):
    def dedup(words, candidates, p_t, n_aug, rng):
        out = []
        for s in augment_sentence(words, candidates, p_t, n_aug, rng):
            if s not in out:
                out.append(s)
        return out

    assert check("nb05.augment_sentence", dedup) is False
    assert "return exactly one per attempt, repeats included" in _out(capsys)

    def joined(*args):
        return [" ".join(s) for s in augment_sentence(*args)]

    assert check("nb05.augment_sentence", joined) is False
    assert "not a joined string" in _out(capsys)

    def in_place(words, candidates, p_t, n_aug, rng):
        out = augment_sentence(words, candidates, p_t, n_aug, rng)
        if out:
            words[:] = out[-1]
        return out

    assert check("nb05.augment_sentence", in_place) is False
    assert "you changed the `words` list" in _out(capsys)


def test_augment_shortcut_is_refused(capsys):
    def shortcut(words, candidates, p_t, n_aug, rng):
        from tinylab.augment import augment_sentence as package_augment
        from tinylab.config import AugmentConfig

        return [s.split() for s in package_augment(" ".join(words), candidates,
                                                   AugmentConfig(p_t=p_t, n_aug=n_aug), rng)]

    assert check("nb05.augment_sentence", shortcut) is False
    assert ("[nb05.augment_sentence] refused: your code calls tinylab.augment.augment_sentence"
            in _out(capsys))
