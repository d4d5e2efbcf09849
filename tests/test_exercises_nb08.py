"""The exercise of notebook 08 (MiniLM's value-relation loss): the reference agrees with the
package and with a loop over rows, the checker names each usual mistake, refuses the library
function, and accepts an answer built on F.kl_div."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tinylab.exercises import check, names, use
from tinylab.exercises.nb08 import _cases, value_relation_kl
from tinylab.losses import minilm_value_relation_kl


def test_notebook_07_registers_its_exercise():
    assert names("nb08") == ["nb08.value_relation_kl"]


def test_reference_agrees_with_the_package_and_a_loop_over_rows():
    for student, teacher, mask in _cases(seed=3):
        total, rows = 0.0, 0
        for b in range(student.shape[0]):
            n = int(mask[b].sum())
            for a in range(student.shape[1]):
                vs, vt = student[b, a, :n].double(), teacher[b, a, :n].double()
                rs = vs @ vs.T / vs.shape[-1] ** 0.5          # each model's own d_k
                rt = vt @ vt.T / vt.shape[-1] ** 0.5
                for q in range(n):                            # real queries, real keys only
                    p = torch.softmax(rt[q], -1)
                    total += float((p * (p.log() - torch.log_softmax(rs[q], -1))).sum())
                    rows += 1
        expected = torch.tensor(total / rows, dtype=torch.float32)
        torch.testing.assert_close(value_relation_kl(student, teacher, mask), expected)
        torch.testing.assert_close(minilm_value_relation_kl(student, teacher, mask), expected)


def _relation(v, scale=True):
    out = v @ v.transpose(-1, -2)
    return out / v.shape[-1] ** 0.5 if scale else out


def _kl(s_logits, t_logits, mask, *, axis=-1, teacher_target=True, mask_keys=True,
        mask_rows=True):
    real = mask.bool()
    keys = real[:, None, None, :] if mask_keys else torch.ones_like(real)[:, None, None, :]
    ls = F.log_softmax(s_logits.masked_fill(~keys, -1e9), axis)
    lt = F.log_softmax(t_logits.masked_fill(~keys, -1e9), axis)
    p, log_p, log_q = (lt.exp(), lt, ls) if teacher_target else (ls.exp(), ls, lt)
    per_row = (p * (log_p - log_q)).masked_fill(~keys, 0).sum(-1)
    rows = real[:, None, :].expand_as(per_row) if mask_rows else torch.ones_like(per_row).bool()
    return per_row[rows].mean()


@pytest.mark.parametrize("wrong, message", [
    (lambda s, t, m: _kl(_relation(s), _relation(t), m, axis=-2), "wrong axis"),
    (lambda s, t, m: _kl(_relation(s), _relation(t), m, teacher_target=False),
     "the KL is the wrong way round"),
    (lambda s, t, m: _kl(_relation(s, False), _relation(t, False), m),
     "is not divided by sqrt(d_k)"),
    (lambda s, t, m: _kl(_relation(s), t @ t.transpose(-1, -2) / s.shape[-1] ** 0.5, m),
     "the same d_k for both models"),
    (lambda s, t, m: _kl(_relation(s), _relation(t), m, mask_keys=False, mask_rows=False),
     "the padding mask is ignored"),
    (lambda s, t, m: _kl(_relation(s), _relation(t), m, mask_rows=False),
     "padded query rows still count"),
    (lambda s, t, m: _kl(_relation(s), _relation(t), m, mask_keys=False),
     "padded keys still take part"),
    (lambda s, t, m: _kl(_relation(s), _relation(t), m).detach(),
     "does not depend on the student's values"),
])
def test_the_usual_mistakes_are_named(wrong, message, capsys):
    assert check("nb08.value_relation_kl", wrong) is False
    out = capsys.readouterr().out
    assert "[nb08.value_relation_kl] not yet: lengths [5, 3], 2 heads" in out and message in out, out


def test_an_answer_built_on_kl_div_passes(capsys):
    def with_kl_div(s, t, m):
        real = m.bool()
        keys = real[:, None, None, :]
        ls = F.log_softmax(_relation(s).masked_fill(~keys, -1e9), -1)
        lt = F.log_softmax(_relation(t).masked_fill(~keys, -1e9), -1)
        per_row = F.kl_div(ls, lt, log_target=True, reduction="none").sum(-1)
        return per_row[real[:, None, :].expand_as(per_row)].mean()
    assert check("nb08.value_relation_kl", with_kl_div) is True
    assert "correct: your function passes" in capsys.readouterr().out


def test_calling_the_package_is_refused_and_use_falls_back_to_the_reference(capsys):
    def shortcut(s, t, m):
        return minilm_value_relation_kl(s, t, m)
    assert check("nb08.value_relation_kl", shortcut) is False
    assert ("refused: your code calls tinylab.losses.minilm_value_relation_kl"
            in capsys.readouterr().out)
    assert check("nb08.value_relation_kl", minilm_value_relation_kl) is False
    assert use("nb08.value_relation_kl", shortcut) is value_relation_kl
    assert "use the reference solution until yours passes" in capsys.readouterr().out
