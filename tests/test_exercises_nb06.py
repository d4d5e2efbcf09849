"""The hand-written exercise of notebook 06, one stage-a training step. The checker accepts its
reference and other correct answers, names the usual mistakes and refuses the package's own
loop; the reference is train_stage's step."""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from tinylab.exercises import check, get
# The checker's own set-up (_step_setup, _tinylab_steps, _optimizer, _trained) is private to
# nb06; these tests are about that set-up, so they import it.
from tinylab.exercises.nb06 import (_optimizer, _step_setup, _tinylab_steps, _trained,
                                    distillation_step)


def _out(capsys) -> str:
    return capsys.readouterr().out


def test_nb06_registers_one_exercise():
    from tinylab.exercises import names

    assert names("nb06") == ["nb06.distillation_step"]


# -- nb06.distillation_step ----------------------------------------------------------------------

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

    assert check("nb06.distillation_step", zero_first) is True
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

    assert check("nb06.distillation_step", wrong) is False
    out = _out(capsys)
    assert "[nb06.distillation_step] not yet:" in out
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

    assert check("nb06.distillation_step", tensor_loss) is False
    assert "return loss.item(), a Python float" in _out(capsys)

    def returns_nothing(*args):
        _step(*args)

    assert check("nb06.distillation_step", returns_nothing) is False
    assert "returned None" in _out(capsys)


def test_step_shortcut_is_refused(capsys):
    def shortcut(student, teacher, criterion, optimizer, batch):
        from tinylab.distill import train_stage

        return train_stage("intermediate", modules={"student": student}, loss_fn=None,
                           train=None, tokenizer=None, stage=None, seed=0)

    assert check("nb06.distillation_step", shortcut) is False
    assert ("[nb06.distillation_step] refused: your code calls tinylab.distill.loop.train_stage"
            in _out(capsys))


def test_step_check_leaves_the_random_streams_alone(capsys):
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    check("nb06.distillation_step", distillation_step)
    after = (torch.rand(3), random.random(), np.random.rand())
    torch.manual_seed(123)
    random.seed(123)
    np.random.seed(123)
    assert torch.equal(after[0], torch.rand(3))
    assert after[1:] == (random.random(), np.random.rand())
