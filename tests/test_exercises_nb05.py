"""The two hand-written exercises of notebook 05: one stage-a training step and TinyBERT's
augmentation sampler. Each checker accepts its reference and other correct answers, names the
usual mistakes, says when nothing was attempted, and refuses the package's own functions; the
references agree with the package (train_stage's step, tinylab.augment.augment_sentence)."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tinylab.exercises import check, get
# The checker's own set-up (_step_setup, _tinylab_steps, _optimizer, _trained, the sampler's
# word lists) is private to nb05; these tests are about that set-up, so they import it.
from tinylab.exercises.nb05 import (_AUG_CANDIDATES, _AUG_WORDS, _optimizer, _step_setup,
                                    _tinylab_steps, _trained, augment_sentence,
                                    distillation_step)


def _out(capsys) -> str:
    return capsys.readouterr().out


def test_nb05_registers_three_exercises():
    from tinylab.exercises import names

    assert names("nb05") == ["nb05.augment_sentence", "nb05.distillation_step",
                             "nb05.stage_plan"]


@pytest.mark.parametrize("name", ["nb05.distillation_step", "nb05.augment_sentence"])
def test_reference_passes(name, capsys):
    assert check(name, get(name).reference) is True
    assert _out(capsys).strip() == f"[{name}] the reference solution passes"


@pytest.mark.parametrize("name", ["nb05.distillation_step", "nb05.augment_sentence"])
def test_blank_stub_is_not_attempted(name, capsys):
    def stub(*args):
        raise NotImplementedError

    assert check(name, stub) is False
    assert f"[{name}] not attempted yet" in _out(capsys)


# -- nb05.distillation_step ----------------------------------------------------------------------

def _step(student, teacher, criterion, optimizer, batch, *, teacher_grad=False,
          student_grad=True, backward=True, step=True, zero_grad=True, mask=True):
    """distillation_step with one part switched off (the mistakes the checker names)."""
    with torch.set_grad_enabled(student_grad):
        student_out = student(**batch, output_hidden_states=True, output_attentions=True)
    with torch.set_grad_enabled(teacher_grad):
        teacher_out = teacher(**batch, output_hidden_states=True, output_attentions=True)
    loss = criterion(student_out, teacher_out, batch["attention_mask"] if mask else None)["total"]
    if backward:
        loss.backward()
    if step:
        optimizer.step()
    if zero_grad:
        optimizer.zero_grad()
    return loss.item()


def test_the_tiny_models_stay_tiny():
    setup = _step_setup()
    total = sum(p.numel() for m in (setup.teacher, setup.student, setup.criterion)
                for p in m.parameters())
    assert total < 300_000
    assert setup.student.config.hidden_size != setup.teacher.config.hidden_size  # W_e, W_h learn


def test_the_reference_step_is_train_stage_step():
    """Independent of the checker: two reference steps, then the same two of train_stage."""
    from tinylab.device import make_accelerator

    setup = _step_setup()
    accelerator = make_accelerator(device="cpu", precision="fp32")
    batches, after, losses = _tinylab_steps(setup, accelerator)
    student, criterion = _copy(setup.student), _copy(setup.criterion)
    before = _trained(student, criterion)
    optimizer = _optimizer(setup, student, criterion, "cpu")
    for batch, expected, loss in zip(batches, after, losses):
        assert distillation_step(student, setup.teacher, criterion, optimizer, batch) == \
            pytest.approx(loss, rel=1e-5)
        got = _trained(student, criterion)
        for name in expected:
            torch.testing.assert_close(got[name], expected[name])
    # the step moved every trained tensor that got a gradient, the projections included
    assert not torch.equal(before["criterion.projections.hidden_projection.weight"],
                           got["criterion.projections.hidden_projection.weight"])
    assert any(batch["attention_mask"].eq(0).any() for batch in batches)  # padding is tested


def _copy(module):
    import copy

    return copy.deepcopy(module)


def test_other_correct_steps_pass(capsys):
    def zero_first(student, teacher, criterion, optimizer, batch):
        optimizer.zero_grad()
        student_out = student.bert(**batch, output_hidden_states=True, output_attentions=True)
        with torch.inference_mode():
            teacher_out = teacher(**batch, output_hidden_states=True, output_attentions=True)
        losses = criterion(student_out, teacher_out, batch["attention_mask"])
        total = losses["embedding"] + losses["attention"] + losses["hidden"]
        total.backward()
        optimizer.step()
        return total.item()

    assert check("nb05.distillation_step", zero_first) is True
    assert "correct: your function passes" in _out(capsys)


@pytest.mark.parametrize("mistake, message", [
    ({"teacher_grad": True}, "the teacher ran with gradients on"),
    ({"student_grad": False}, "the student's forward pass ran without gradients"),
    ({"zero_grad": False}, "Call optimizer.zero_grad() after optimizer.step()"),
    ({"step": False}, "optimizer.step() was never called"),
    ({"backward": False}, "call loss.backward() before optimizer.step()"),
    ({"mask": False}, "pass batch['attention_mask'] to the criterion"),
])
def test_step_mistakes_are_named(mistake, message, capsys):
    def wrong(*args):
        return _step(*args, **mistake)

    assert check("nb05.distillation_step", wrong) is False
    out = _out(capsys)
    assert "[nb05.distillation_step] not yet:" in out
    assert message in out


def test_step_must_return_the_loss_as_a_float(capsys):
    def tensor_loss(student, teacher, criterion, optimizer, batch):
        student_out = student(**batch, output_hidden_states=True, output_attentions=True)
        with torch.no_grad():
            teacher_out = teacher(**batch, output_hidden_states=True, output_attentions=True)
        loss = criterion(student_out, teacher_out, batch["attention_mask"])["total"]
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        return loss

    assert check("nb05.distillation_step", tensor_loss) is False
    assert "return loss.item(), a Python float" in _out(capsys)

    def returns_nothing(*args):
        _step(*args)

    assert check("nb05.distillation_step", returns_nothing) is False
    assert "returned None" in _out(capsys)


def test_step_shortcut_is_refused(capsys):
    def shortcut(student, teacher, criterion, optimizer, batch):
        from tinylab.distill import train_stage

        return train_stage("intermediate", modules={"student": student}, loss_fn=None,
                           train=None, tokenizer=None, stage=None, seed=0)

    assert check("nb05.distillation_step", shortcut) is False
    assert ("[nb05.distillation_step] refused: your code calls tinylab.distill.loop.train_stage"
            in _out(capsys))


def test_step_check_leaves_the_random_streams_alone(capsys):
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    check("nb05.distillation_step", distillation_step)
    after = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    assert torch.equal(after[0], torch.rand(3))
    assert after[1:] == (random.random(), np.random.rand())


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
