"""Exercise of notebook 08 (other ways to distil): MiniLM's value-relation loss.

MiniLM (Wang et al. 2020, Sec. 3) copies the teacher's last layer through the relations between
its values: per head, ``VR = softmax(V V^T / sqrt(d_k))`` over the last axis, with each model's
own head width ``d_k``, and the loss is the mean over the real (example, head, query) rows of
``KL(VR^T row || VR^S row)``, padded tokens left out as keys and as rows. The checker compares
the learner's function with :func:`tinylab.losses.minilm_value_relation_kl` on random values
(student and teacher of different head widths, rows of different lengths) and names the usual
mistakes: the softmax over the wrong axis, the mask forgotten (keys or rows), the missing
``sqrt(d_k)``, the KL the wrong way round.
"""
from __future__ import annotations

import torch

from tinylab.exercises import assert_matches, register

# What only the checkers (and their helpers) need is imported inside them: the answer key
# copies this module's top-level imports into every solution cell
# (tinylab.course.answer_key), and the learner's notebook should not receive them.


def value_relation_kl(student_values: torch.Tensor, teacher_values: torch.Tensor,
                      attention_mask: torch.Tensor) -> torch.Tensor:
    """MiniLM's L_VR: mean over real (example, head, query) rows of KL(VR^T row || VR^S row).

    Shapes: values (B, H, L, d_k) for the student, (B, H, L, d_k') for the teacher;
    attention_mask (B, L), 1 = real token, 0 = padding. Returns a scalar.
    """
    real = attention_mask.bool()                                   # (B, L)
    keys = real[:, None, None, :]                                  # (B, 1, 1, L): real keys
    rows = real[:, None, :].expand(student_values.shape[:3])       # (B, H, L): real queries

    def log_relation(values: torch.Tensor) -> torch.Tensor:
        d_k = values.shape[-1]                                     # each model's own head width
        scores = values @ values.transpose(-1, -2) / d_k ** 0.5    # (B, H, L, L)
        scores = scores.masked_fill(~keys, torch.finfo(scores.dtype).min)
        return scores - torch.logsumexp(scores, dim=-1, keepdim=True)   # log softmax over keys

    log_p_teacher = log_relation(teacher_values.detach())          # the target: no gradient
    log_p_student = log_relation(student_values)
    # KL(p_T || p_S) = sum over real keys of p_T (log p_T - log p_S), one value per row
    per_key = log_p_teacher.exp() * (log_p_teacher - log_p_student)
    per_row = torch.where(keys, per_key, torch.zeros_like(per_key)).sum(-1)   # (B, H, L)
    return per_row[rows].mean()


def _cases(seed: int = 0) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """(student values, teacher values, mask): head widths 3 and 5 (the first case) or 4 and 8,
    padded rows of different lengths; values large enough that sqrt(d_k) matters."""
    gen = torch.Generator().manual_seed(seed)
    cases = []
    for lengths, heads, d_s, d_t in (([5, 3], 2, 3, 5), ([4, 2, 6], 3, 4, 8), ([3, 3], 2, 2, 6)):
        width = max(lengths)
        mask = torch.zeros(len(lengths), width, dtype=torch.long)
        for row, n in enumerate(lengths):
            mask[row, :n] = 1
        student = 1.5 * torch.randn(len(lengths), heads, width, d_s, generator=gen)
        teacher = 1.5 * torch.randn(len(lengths), heads, width, d_t, generator=gen)
        cases.append((student, teacher, mask))
    return cases


def _row_kl(s_logits, t_logits, keys, rows, *, axis=-1, teacher_first=True) -> torch.Tensor:
    """The mean over ``rows`` of a KL between row softmaxes, with the knobs the mistakes turn."""
    lowest = torch.finfo(torch.float32).min
    log_s = torch.log_softmax(s_logits.masked_fill(~keys, lowest), dim=axis)
    log_t = torch.log_softmax(t_logits.masked_fill(~keys, lowest), dim=axis)
    p, log_p, log_q = (log_t.exp(), log_t, log_s) if teacher_first else (log_s.exp(), log_s, log_t)
    per_row = torch.where(keys, p * (log_p - log_q), torch.zeros_like(p)).sum(-1)
    return per_row[rows].mean()


def _mistakes(student, teacher, mask) -> dict[str, torch.Tensor]:
    """What the usual wrong versions of the loss return, keyed by the message that names them."""
    real = mask.bool()
    keys = real[:, None, None, :].expand(*student.shape[:3], student.shape[2])
    rows = real[:, None, :].expand(student.shape[:3])
    every_key = torch.ones_like(keys)
    every_row = torch.ones_like(rows)

    def rel(v, scale=True):
        out = v @ v.transpose(-1, -2)
        return out / v.shape[-1] ** 0.5 if scale else out

    s, t = rel(student), rel(teacher)
    return {
        "the softmax runs over the wrong axis: each query row is a distribution over the keys, "
        "so normalise over the last dimension (dim=-1)":
            _row_kl(s, t, keys, rows, axis=-2),
        "the KL is the wrong way round: KL(VR^S || VR^T) weights by the student; MiniLM takes "
        "KL(VR^T || VR^S), sum over keys of p_T (log p_T - log p_S), the teacher as the target":
            _row_kl(s, t, keys, rows, teacher_first=False),
        "V V^T is not divided by sqrt(d_k): scale each model's relation by the square root of "
        "its own head width (V.shape[-1]) before the softmax":
            _row_kl(rel(student, False), rel(teacher, False), keys, rows),
        "the scale uses the same d_k for both models: the student's head width and the "
        "teacher's differ; divide each relation by sqrt of its own V.shape[-1]":
            _row_kl(s, teacher @ teacher.transpose(-1, -2) / student.shape[-1] ** 0.5, keys,
                    rows),
        "the padding mask is ignored: padded keys must get probability 0 in both softmaxes, "
        "and padded query rows must not count in the mean":
            _row_kl(s, t, every_key, every_row),
        "padded keys are masked but padded query rows still count in the mean: average over "
        "the rows of real tokens only":
            _row_kl(s, t, keys, every_row),
        "padded query rows are left out, but padded keys still take part in the softmax: give "
        "them probability 0 (fill their relation scores with a very negative number)":
            _row_kl(s, t, every_key, rows),
        "the KL is averaged over the keys instead of summed: KL sums over the keys of a row; "
        "the mean is over the rows":
            _row_kl(s, t, keys, rows) / mask.sum(-1).float().mean(),
    }


def _check_value_relation(candidate) -> None:
    from tinylab.losses import minilm_value_relation_kl

    for student, teacher, mask in _cases():
        lengths, d_s, d_t = mask.sum(1).tolist(), student.shape[-1], teacher.shape[-1]
        where = f"lengths {lengths}, {student.shape[1]} heads, d_k {d_s} (student) / {d_t} (teacher)"
        leaf = student.clone().requires_grad_(True)
        got = candidate(leaf, teacher.clone(), mask.clone())
        assert isinstance(got, torch.Tensor), f"return a tensor, got {type(got).__name__}"
        assert got.dim() == 0, (f"return a scalar (0-dim tensor, the mean over real rows), got "
                                f"shape {tuple(got.shape)}")
        assert torch.isfinite(got), (f"{where}: the loss is {got.item()}. A padded key with "
                                     f"probability 0 on both sides must add 0, not 0 * (-inf): "
                                     f"select the real keys (torch.where) before you sum")
        expected = minilm_value_relation_kl(student, teacher, mask)
        assert_matches(got, expected, lambda: _mistakes(student, teacher, mask), where)
        assert got.requires_grad, (f"{where}: the loss does not depend on the student's values "
                                   f"any more (a .detach(), .item() or torch.no_grad() inside?); "
                                   f"training needs its gradient")
        (grad,) = torch.autograd.grad(got, leaf)
        ref_leaf = student.clone().requires_grad_(True)
        (want,) = torch.autograd.grad(minilm_value_relation_kl(ref_leaf, teacher, mask), ref_leaf)
        torch.testing.assert_close(grad, want, rtol=1e-4, atol=1e-6,
                                   msg=lambda m: f"{where}: the gradient w.r.t. the student's "
                                                 f"values differs: {m}")


register("nb08.value_relation_kl", checker=_check_value_relation, reference=value_relation_kl,
         forbidden=("tinylab.losses.minilm_value_relation_kl",
                    "tinylab.losses.minilm_attention_kl", "tinylab.losses._masked_row_kl"),
         why="this exercise asks you to write MiniLM's value-relation loss yourself; "
             "minilm_value_relation_kl is what the checker compares you with (torch.softmax, "
             "log_softmax and F.kl_div are fine)",
         hint=("Work per head on (B, H, L, L) matrices: first the relation of each model from "
               "its own values, then one distribution per query row, then a KL per row. Which "
               "axis is a distribution, which model is the target, and which entries (keys and "
               "rows) belong to padding?",
               "Relation = V V^T / sqrt(d_k), d_k being that model's own V.shape[-1]. Give padded "
               "keys a very negative score before a log-softmax over the last axis (keys). Per "
               "row, KL(teacher || student) sums p_T (log p_T - log p_S) over the real keys "
               "only (select them, do not multiply by the mask: the log of 0 is -inf). Finally "
               "average the per-row KLs over the rows of real tokens, every head alike."))
