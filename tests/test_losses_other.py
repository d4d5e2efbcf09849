"""Notebook 08's loss terms (DistilBERT's cosine loss, MiniLM's attention and value-relation KL)
against independent references: explicit loops over examples, heads and tokens with
``torch.distributions`` and ``torch.nn.CosineEmbeddingLoss``, padding included."""
from __future__ import annotations

import math

import pytest
import torch
from torch.distributions import Categorical, kl_divergence

from tinylab.losses import cosine_hidden_loss, minilm_attention_kl, minilm_value_relation_kl

NEG = torch.finfo(torch.float32).min


def padding_mask() -> torch.Tensor:
    """Three examples of 6 positions: 6, 4 and 2 real tokens."""
    return torch.tensor([[1, 1, 1, 1, 1, 1], [1, 1, 1, 1, 0, 0], [1, 1, 0, 0, 0, 0]])


def scores_pair(seed: int = 0, heads: int = 3, length: int = 6, mask=None):
    """Student and teacher pre-softmax scores (B, H, L, L), with Hugging Face's additive mask
    (finfo.min at padded keys) when ``mask`` is given."""
    gen = torch.Generator().manual_seed(seed)
    batch = 3
    student = torch.randn(batch, heads, length, length, generator=gen)
    teacher = 2 * torch.randn(batch, heads, length, length, generator=gen)
    if mask is not None:
        additive = torch.where(mask.bool()[:, None, None, :], 0.0, NEG)
        student, teacher = student + additive, teacher + additive
    return student.requires_grad_(), teacher


def loop_kl(student_logits, teacher_logits, mask) -> float:
    """Mean over real (example, head, query) of KL(teacher row || student row), real keys only."""
    total, rows = 0.0, 0
    for b in range(student_logits.shape[0]):
        n = int(mask[b].sum())
        for a in range(student_logits.shape[1]):
            for t in range(n):
                p = Categorical(logits=teacher_logits[b, a, t, :n])
                q = Categorical(logits=student_logits[b, a, t, :n])
                total += kl_divergence(p, q).item()
                rows += 1
    return total / rows


# ---------------------------------------------------------------------------------------------
# DistilBERT: cosine loss
# ---------------------------------------------------------------------------------------------

def hidden_pair(seed: int = 0, width: int = 5):
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(3, 6, width, generator=gen, requires_grad=True)
    teacher = torch.randn(3, 6, width, generator=gen)
    return student, teacher


def test_cosine_hidden_loss_matches_cosine_embedding_loss_on_real_tokens():
    s, t = hidden_pair()
    mask = padding_mask()
    real = mask.bool()
    # Hugging Face's distiller: select the real tokens, then CosineEmbeddingLoss with target +1.
    reference = torch.nn.CosineEmbeddingLoss(reduction="mean")(
        s[real].detach(), t[real], torch.ones(int(real.sum())))
    assert cosine_hidden_loss(s, t, mask).item() == pytest.approx(reference.item(), rel=1e-6)
    # and by hand, token by token
    by_hand = [1 - sum(x * y for x, y in zip(s[b, l].tolist(), t[b, l].tolist()))
               / (math.dist(s[b, l].tolist(), [0] * 5) * math.dist(t[b, l].tolist(), [0] * 5))
               for b in range(3) for l in range(6) if mask[b, l]]
    assert cosine_hidden_loss(s, t, mask).item() == pytest.approx(sum(by_hand) / len(by_hand),
                                                                  rel=1e-5)


def test_cosine_hidden_loss_ignores_padding_and_scale_and_reaches_zero():
    s, t = hidden_pair(seed=1)
    mask = padding_mask()
    garbage = torch.where(mask.bool()[..., None], s.detach(), 1e6 * torch.randn_like(s))
    torch.testing.assert_close(cosine_hidden_loss(garbage, t, mask),
                               cosine_hidden_loss(s.detach(), t, mask))
    # Direction only: a positive scale per token changes nothing.
    scale = torch.rand(3, 6, 1) * 10 + 0.1
    torch.testing.assert_close(cosine_hidden_loss(s.detach() * scale, t, mask),
                               cosine_hidden_loss(s.detach(), t, mask))
    assert cosine_hidden_loss(3 * t, t, mask).item() == pytest.approx(0.0, abs=1e-6)
    assert cosine_hidden_loss(-t, t, mask).item() == pytest.approx(2.0, abs=1e-6)
    # No mask: every position counts.
    reference = (1 - torch.nn.functional.cosine_similarity(s, t, dim=-1)).mean()
    torch.testing.assert_close(cosine_hidden_loss(s, t), reference)


def test_cosine_hidden_loss_gradient_reaches_only_the_student():
    s, t = hidden_pair()
    t.requires_grad_()
    cosine_hidden_loss(s, t, padding_mask()).backward()
    assert s.grad is not None and t.grad is None
    assert torch.all(s.grad[~padding_mask().bool()] == 0)   # padded tokens get no gradient


def test_cosine_hidden_loss_refuses_other_shapes():
    with pytest.raises(ValueError, match=r"student shape \(3, 6, 4\) != teacher shape"):
        cosine_hidden_loss(torch.randn(3, 6, 4), torch.randn(3, 6, 5))
    with pytest.raises(ValueError, match=r"attention_mask must have shape"):
        cosine_hidden_loss(torch.randn(3, 6, 4), torch.randn(3, 6, 4), torch.ones(3, 5))


# ---------------------------------------------------------------------------------------------
# MiniLM: self-attention distributions
# ---------------------------------------------------------------------------------------------

def test_minilm_attention_kl_matches_a_loop_over_examples_heads_and_queries():
    mask = padding_mask()
    s, t = scores_pair(mask=mask)
    assert minilm_attention_kl(s, t, mask).item() == pytest.approx(loop_kl(s, t, mask), rel=1e-5)


def test_minilm_attention_kl_without_padding_is_the_plain_mean_kl():
    s, t = scores_pair(seed=2)
    p, q = Categorical(logits=t), Categorical(logits=s)   # rows over the key axis
    reference = kl_divergence(p, q).mean()
    torch.testing.assert_close(minilm_attention_kl(s, t), reference)
    torch.testing.assert_close(minilm_attention_kl(s, t, torch.ones(3, 6)), reference)


def test_minilm_attention_kl_ignores_what_padded_positions_hold():
    mask = padding_mask()
    s, t = scores_pair(seed=3, mask=mask)
    pad = ~mask.bool()
    noisy = s.detach().clone()
    noisy[pad[:, None, :, None].expand_as(noisy)] = 123.0        # padded query rows
    noisy[pad[:, None, None, :].expand_as(noisy)] = -7.0         # padded key columns, not -inf
    torch.testing.assert_close(minilm_attention_kl(noisy, t, mask),
                               minilm_attention_kl(s.detach(), t, mask))


def test_minilm_attention_kl_is_zero_for_equal_distributions_and_finite_gradient():
    mask = padding_mask()
    s, t = scores_pair(seed=4, mask=mask)
    # A constant added to a row does not change its softmax.
    shifted = t + torch.randn(3, 3, 6, 1)
    assert minilm_attention_kl(shifted, t, mask).item() == pytest.approx(0.0, abs=1e-6)
    minilm_attention_kl(s, t, mask).backward()
    assert torch.isfinite(s.grad).all()
    assert torch.all(s.grad[~mask.bool()[:, None, None, :].expand_as(s)] == 0)


def test_minilm_attention_kl_refuses_probabilities_and_head_mismatch():
    s, t = scores_pair(seed=5)
    with pytest.raises(ValueError, match="look like softmax probabilities"):
        minilm_attention_kl(s.detach().softmax(-1), t)
    with pytest.raises(ValueError, match="student shape"):
        minilm_attention_kl(s[:, :2], t)


# ---------------------------------------------------------------------------------------------
# MiniLM: value relations
# ---------------------------------------------------------------------------------------------

def values_pair(seed: int = 0, heads: int = 3, d_student: int = 4, d_teacher: int = 8):
    gen = torch.Generator().manual_seed(seed)
    student = torch.randn(3, heads, 6, d_student, generator=gen, requires_grad=True)
    teacher = torch.randn(3, heads, 6, d_teacher, generator=gen)
    return student, teacher


def test_minilm_value_relation_kl_matches_a_loop_with_different_head_widths():
    mask = padding_mask()
    s, t = values_pair()
    total, rows = 0.0, 0
    for b in range(3):
        n = int(mask[b].sum())
        for a in range(3):
            for i in range(n):
                # VR[i, j] = softmax_j(<v_i, v_j> / sqrt(d_k)), each model with its own d_k
                rel_t = [sum(x * y for x, y in zip(t[b, a, i].tolist(), t[b, a, j].tolist()))
                         / math.sqrt(8) for j in range(n)]
                rel_s = [sum(x * y for x, y in zip(s[b, a, i].tolist(), s[b, a, j].tolist()))
                         / math.sqrt(4) for j in range(n)]
                total += kl_divergence(Categorical(logits=torch.tensor(rel_t)),
                                       Categorical(logits=torch.tensor(rel_s))).item()
                rows += 1
    assert minilm_value_relation_kl(s, t, mask).item() == pytest.approx(total / rows, rel=1e-5)


def test_minilm_value_relation_kl_ignores_padded_values_and_reaches_only_the_student():
    mask = padding_mask()
    s, t = values_pair(seed=1)
    pad = ~mask.bool()[:, None, :, None]
    noisy_t = torch.where(pad, 50 * torch.randn_like(t), t)
    noisy_s = torch.where(pad, 50 * torch.randn_like(s), s.detach())
    torch.testing.assert_close(minilm_value_relation_kl(noisy_s, noisy_t, mask),
                               minilm_value_relation_kl(s.detach(), t, mask))
    t.requires_grad_()
    minilm_value_relation_kl(s, t, mask).backward()
    assert t.grad is None and torch.isfinite(s.grad).all()
    assert torch.all(s.grad[pad.expand_as(s)] == 0)
    # The same values (any width) relate alike: zero loss.
    assert minilm_value_relation_kl(t.detach(), t.detach(), mask).item() == pytest.approx(
        0.0, abs=1e-6)


def test_minilm_value_relation_kl_refuses_mismatched_heads():
    s, t = values_pair(heads=3)
    with pytest.raises(ValueError, match=r"must agree in \(batch, heads, L\)"):
        minilm_value_relation_kl(s, t[:, :2])
    with pytest.raises(ValueError, match="student values must be"):
        minilm_value_relation_kl(s[0], t)


@pytest.mark.parametrize("loss", ["attention", "values", "cosine"])
def test_losses_compute_in_float32_from_bfloat16_inputs(loss):
    mask = padding_mask()
    if loss == "attention":
        s, t = scores_pair(seed=6)
        fn = minilm_attention_kl
    elif loss == "values":
        s, t = values_pair(seed=6, d_student=8)
        fn = minilm_value_relation_kl
    else:
        s, t = hidden_pair(seed=6)
        fn = cosine_hidden_loss
    out = fn(s.detach().bfloat16(), t.bfloat16(), mask)
    assert out.dtype == torch.float32
    reference = fn(s.detach().bfloat16().float(), t.bfloat16().float(), mask)
    torch.testing.assert_close(out, reference)
