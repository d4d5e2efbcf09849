"""Pre-softmax attention scores out of Hugging Face BERT models (TinyBERT's attention target).

TinyBERT distils the attention matrix *before* the softmax (Jiao et al. 2020, the attention loss L_attn:
"unnormalised attention scores converge faster"). Hugging Face models cannot give it to you out
of the box:

* ``attn_implementation="sdpa"`` (the default) computes attention in one fused kernel and
  returns no attention weights at all;
* ``attn_implementation="eager"`` returns the *post*-softmax probabilities.

Instead of forking BERT's code, tinylab uses the library's own extension point: an attention
function registered by name with transformers' ``AttentionInterface``. It computes exactly what
the eager implementation computes (scores, mask, softmax, dropout, weighted sum of values), so
the model's outputs do not change, but it hands back the scores instead of the probabilities::

    scores = Q K^T / sqrt(d_k) + mask          # (batch, heads, L_query, L_key)
    output = dropout(softmax(scores)) V

The same name must also be registered with ``AttentionMaskInterface`` (we reuse the eager mask
builder): transformers 5.x builds *no* padding mask at all for an implementation it has no mask
function for, so padded keys would silently be attended to.

What the returned tensor holds. ``mask`` is additive: 0 where the key is a real token and
``torch.finfo(dtype).min`` (about -3.4e38 in float32) where the key is padding. In float32 any
score is absorbed by that number (the spacing of floats there is ~2e31), so padded *key
columns* hold exactly ``finfo.min``; padded *query rows* hold ordinary scores against the real
keys (BERT masks keys only). The official TinyBERT code used -10000 instead, and the authors'
``where(x <= -1e2, 0, x)`` exists to remove it. Two float32 models padded alike therefore hold
identical values in padded columns: a plain MSE stays finite and equals the official clamped
one (padded cells add 0 to the sum but count in the mean). It becomes ``inf`` as soon as one
side is masked where the other is not (different padding, a -10000 convention, mixed
precision). :func:`tinylab.losses.attention_mse` with the mask ignores padding properly.
Without any padding in the batch transformers may skip the mask: the tensor is then just the
scores.

Usage::

    model = use_attention_scores(model)     # or load with attn_implementation=SCORES_ATTN
    out = model(**batch, output_attentions=True)
    out.attentions[0]                       # layer 1 scores: (batch, heads, L, L)

Saving is safe: ``save_pretrained`` never writes the attention implementation into
``config.json`` (transformers drops ``_attn_implementation_internal`` when serialising), so a
model saved after switching loads with the default ``sdpa`` for users without tinylab.
"""
from __future__ import annotations

import torch
from torch import nn
from transformers import AttentionInterface, PreTrainedModel
from transformers.masking_utils import AttentionMaskInterface, eager_mask

__all__ = ["SCORES_ATTN", "scores_attention_forward", "register_attention_scores",
           "use_attention_scores", "uses_attention_scores"]

SCORES_ATTN = "tinylab_scores"


def scores_attention_forward(
    module: nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    scaling: float | None = None,
    dropout: float = 0.0,
    **kwargs,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Eager attention that returns the pre-softmax scores as its "attention weights".

    Shapes: ``query``/``key``/``value`` (B, H, L, d_k) (transformers already split the heads),
    ``attention_mask`` additive, broadcastable to (B, H, L_q, L_k), or ``None``.
    Returns ``(output, scores)``: ``output`` (B, L, H, d_k) exactly as the eager implementation
    returns it, ``scores`` = ``Q K^T * scaling + mask`` of shape (B, H, L_q, L_k).
    ``dropout`` is the attention-probability dropout rate BERT passes in training mode (0.0 in
    eval mode); it is applied to the probabilities, never to the returned scores.
    """
    if scaling is None:
        scaling = query.size(-1) ** -0.5
    scores = torch.matmul(query, key.transpose(2, 3)) * scaling
    if attention_mask is not None:
        scores = scores + attention_mask
    probs = nn.functional.softmax(scores, dim=-1)
    probs = nn.functional.dropout(probs, p=dropout, training=module.training)
    output = torch.matmul(probs, value).transpose(1, 2).contiguous()
    return output, scores


def register_attention_scores() -> None:
    """Register :data:`SCORES_ATTN` with both transformers interfaces (idempotent).

    Runs when this module is imported, so ``from_pretrained(..., attn_implementation=SCORES_ATTN)``
    works as soon as tinylab's models module is loaded.
    """
    AttentionInterface.register(SCORES_ATTN, scores_attention_forward)
    AttentionMaskInterface.register(SCORES_ATTN, eager_mask)


register_attention_scores()


def use_attention_scores(model: PreTrainedModel) -> PreTrainedModel:
    """Switch a loaded model to :data:`SCORES_ATTN` in place and return it.

    Afterwards ``model(..., output_attentions=True).attentions`` is a tuple with one tensor of
    pre-softmax scores (B, H, L, L) per layer; logits and hidden states are unchanged.
    Raises ``TypeError`` for a model that does not dispatch attention through
    ``AttentionInterface`` (then no score capture is possible without forking its code).
    """
    if not isinstance(model, PreTrainedModel):
        raise TypeError(f"use_attention_scores expects a transformers PreTrainedModel, got "
                        f"{type(model).__name__}")
    register_attention_scores()
    model.set_attn_implementation(SCORES_ATTN)
    if model.config._attn_implementation != SCORES_ATTN:
        raise TypeError(f"{type(model).__name__} cannot switch its attention implementation "
                        f"(it does not use transformers' AttentionInterface), so tinylab cannot "
                        f"capture its pre-softmax attention scores; use a BERT-family model")
    return model


def uses_attention_scores(model: PreTrainedModel) -> bool:
    """True when ``model`` currently returns pre-softmax scores as its attentions."""
    return getattr(model.config, "_attn_implementation", None) == SCORES_ATTN
