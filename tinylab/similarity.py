"""What distillation changed: how close a student's layers are to the teacher's, layer by layer.

Loss curves say a stage ran; they do not show *what* the student now does like its teacher.
This module compares the two models on the same sentences, for every mapped pair of layers
m -> g(m) (:func:`tinylab.losses.layer_map`):

* ``attention_mse``: the mean squared difference of the pre-softmax attention scores over the
  real (query, key) pairs and all heads - exactly TinyBERT's attention loss L_attn
  (:func:`tinylab.losses.attention_mse`), so it is what stage a drives down;
* ``attention_tv``: the total-variation distance between the attention *distributions*,
  ``0.5 * sum_k |softmax(A^S)_qk - softmax(A^T)_qk|``, averaged over heads and real queries.
  0 means the same distribution, 1 disjoint ones; unlike the MSE it is on a fixed scale and
  ignores the scores' offset per row (softmax does not see it);
* ``hidden_cka``: linear centred kernel alignment (Kornblith et al. 2019) between the student's
  and the teacher's hidden states over all real tokens. It needs no projection W_h (the widths
  differ) and is invariant to rotations and isotropic scaling: 1 means one representation
  is a rotated, rescaled copy of the other, values near 0 unrelated ones.

Typical use (notebook 05)::

    table = layer_similarity(teacher, {"init": s0, "after GD": s1, "after TD": s2},
                             texts, tokenizer)
    table.pivot(index="student_layer", columns="model", values="attention_tv")
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import torch

from tinylab.attention import use_attention_scores, uses_attention_scores
from tinylab.losses import attention_mse, layer_map

__all__ = ["linear_cka", "attention_tv", "layer_similarity", "attention_maps"]


def linear_cka(x: torch.Tensor, y: torch.Tensor) -> float:
    """Linear CKA between two sets of representations of the same n examples.

    Shapes: ``x`` (n, d1), ``y`` (n, d2); the widths may differ. With column-centred X, Y
    (Kornblith et al. 2019, "Similarity of Neural Network Representations Revisited", Sec. 3)::

        CKA(X, Y) = ||Y^T X||_F^2 / (||X^T X||_F * ||Y^T Y||_F)

    Computed in float64. Returns a float in [0, 1].
    """
    if x.dim() != 2 or y.dim() != 2 or x.shape[0] != y.shape[0]:
        raise ValueError(f"linear_cka needs (n, d1) and (n, d2) with the same n, got "
                         f"{tuple(x.shape)} and {tuple(y.shape)}")
    if x.shape[0] < 2:
        raise ValueError(f"linear_cka needs at least 2 examples, got {x.shape[0]}")
    x = x.double() - x.double().mean(0, keepdim=True)
    y = y.double() - y.double().mean(0, keepdim=True)
    cross = (y.T @ x).pow(2).sum()
    norm = torch.linalg.matrix_norm(x.T @ x) * torch.linalg.matrix_norm(y.T @ y)
    if norm == 0:
        raise ValueError("linear_cka: one representation is constant over the examples")
    return float(cross / norm)


def attention_tv(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                 attention_mask: torch.Tensor) -> float:
    """Mean total-variation distance between attention distributions over real queries.

    Shapes: scores (B, H, L, L) pre-softmax with the additive padding mask applied (as
    :mod:`tinylab.attention` returns them), ``attention_mask`` (B, L). Per (batch, head, real
    query): ``0.5 * sum_k |p^S_k - p^T_k|`` with p = softmax over the keys; padded keys get
    probability 0 on both sides. Returns the mean, in [0, 1].
    """
    if student_scores.shape != teacher_scores.shape or student_scores.dim() != 4:
        raise ValueError(f"attention_tv needs two (B, H, L, L) tensors of one shape, got "
                         f"{tuple(student_scores.shape)} and {tuple(teacher_scores.shape)}")
    real = attention_mask.bool()
    keys = real[:, None, None, :]
    p_s = torch.softmax(student_scores.float().masked_fill(~keys, float("-inf")), -1)
    p_t = torch.softmax(teacher_scores.float().masked_fill(~keys, float("-inf")), -1)
    tv = 0.5 * (p_s - p_t).abs().sum(-1)                                   # (B, H, L)
    queries = real[:, None, :].expand_as(tv)
    return float(tv[queries].mean())


@torch.no_grad()
def _outputs(model, batch: Mapping[str, torch.Tensor]):
    """Hidden states and pre-softmax scores, the model's attention implementation restored."""
    before = model.config._attn_implementation
    was_training = model.training
    model.eval()
    try:
        if not uses_attention_scores(model):
            use_attention_scores(model)
        out = model(**batch, output_hidden_states=True, output_attentions=True)
    finally:
        if model.config._attn_implementation != before:
            model.set_attn_implementation(before)
        model.train(was_training)
    return out


def _batch(texts: Sequence[str], tokenizer: Any, max_length: int, device) -> dict:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    return {k: v.to(device) for k, v in enc.items()}


def layer_similarity(teacher, students: Mapping[str, Any], texts: Sequence[str], tokenizer: Any,
                     *, layer_mapping: str = "uniform", max_length: int = 64):
    """Per mapped layer, how close each student is to ``teacher`` on ``texts``.

    ``students``: ``{name: model}``, e.g. the same student before general distillation, after
    it, and after task distillation; all must have the same depth M. Returns a
    ``pandas.DataFrame`` with one row per (model, student layer m = 1..M): ``model``,
    ``student_layer``, ``teacher_layer`` (g(m)), ``attention_mse``, ``attention_tv`` and
    ``hidden_cka`` (see the module docstring). The head counts must match (the attention
    comparisons pair head i with head i).
    """
    if not students:
        raise ValueError("layer_similarity: pass at least one student, e.g. {'student': model}")
    if len(texts) < 2:
        raise ValueError(f"layer_similarity needs at least 2 sentences (CKA compares token "
                         f"sets), got {len(texts)}")
    device = next(teacher.parameters()).device
    batch = _batch(texts, tokenizer, max_length, device)
    real = batch["attention_mask"].bool()
    t_out = _outputs(teacher, batch)
    rows = []
    for name, student in students.items():
        s_out = _outputs(student, batch)
        m_layers = len(s_out.attentions)
        if s_out.attentions[0].shape[1] != t_out.attentions[0].shape[1]:
            raise ValueError(f"{name}: {s_out.attentions[0].shape[1]} heads, teacher "
                             f"{t_out.attentions[0].shape[1]}; attention is compared head by "
                             f"head, so the counts must match")
        for m, n in enumerate(layer_map(m_layers, len(t_out.attentions), layer_mapping), 1):
            s_att, t_att = s_out.attentions[m - 1], t_out.attentions[n - 1]
            rows.append({
                "model": name, "student_layer": m, "teacher_layer": n,
                "attention_mse": float(attention_mse(s_att, t_att, batch["attention_mask"])),
                "attention_tv": attention_tv(s_att, t_att, batch["attention_mask"]),
                "hidden_cka": linear_cka(s_out.hidden_states[m][real],
                                         t_out.hidden_states[n][real]),
            })
    return pd.DataFrame(rows)


def attention_maps(model, text: str, tokenizer: Any, *, max_length: int = 64
                   ) -> tuple[list[str], list[torch.Tensor]]:
    """Attention probabilities of one sentence, trimmed to its real tokens.

    Returns ``(tokens, maps)``: the L token strings (with [CLS] and [SEP]) and one tensor per
    layer of shape (H, L, L), ``softmax`` of the pre-softmax scores over the keys. Ready for
    :func:`tinylab.plots.plot_attention` (``head="mean"`` averages the heads).
    """
    device = next(model.parameters()).device
    batch = _batch([text], tokenizer, max_length, device)
    out = _outputs(model, batch)
    tokens = tokenizer.convert_ids_to_tokens(batch["input_ids"][0].tolist())
    return tokens, [torch.softmax(a[0].float(), -1).cpu() for a in out.attentions]
