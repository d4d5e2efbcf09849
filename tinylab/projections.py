"""TinyBERT's learnable width projections W_e and W_h, the only parameters its loss has.

A student narrower than its teacher (d' < d) cannot be compared with it directly: the
embedding and hidden-state losses first map the student's states into the teacher's width,
``E^S W_e`` and ``H_m^S W_h`` with ``W: (d', d)`` (Jiao et al. 2020, "Transformer
distillation"). The paper has two matrices, one W_h shared by all layers; the authors' code has
one ``fit_dense`` for both (``shared=True``). The projections are trained with the student and
thrown away afterwards: the deployed student never uses them.

    projections = TinyBertProjections(d_student=192, d_teacher=384)
    projections.embedding(E_s)          # (B, L, 192) -> (B, L, 384), W_e
    projections.hidden(H_s)             # (B, L, 192) -> (B, L, 384), W_h
    projections.train_only({"hidden"})  # W_e frozen: a stage without the embedding loss
"""
from __future__ import annotations

from typing import Collection

import torch
from torch import nn

__all__ = ["TinyBertProjections", "width_projection"]


def width_projection(d_student: int, d_teacher: int) -> nn.Linear:
    """A learnable ``nn.Linear(d_student, d_teacher)`` mapping student states into the
    teacher's width (TinyBERT's W_e / W_h); the identity when the widths match, so a student
    copied from the teacher starts at zero loss. Draws its random weights from the global
    stream: seed it (or fork the RNG) around the call."""
    layer = nn.Linear(d_student, d_teacher)
    if d_student == d_teacher:
        with torch.no_grad():
            layer.weight.copy_(torch.eye(d_teacher))
            layer.bias.zero_()
    return layer


class TinyBertProjections(nn.Module):
    """W_e and W_h as two ``nn.Linear(d', d)`` (``embedding_projection``,
    ``hidden_projection``), or one shared ``fit_dense`` (``shared=True``, the official code).

    Shapes: ``embedding(x)`` and ``hidden(x)`` map ``(..., d')`` to ``(..., d)``.
    """

    def __init__(self, d_student: int, d_teacher: int, *, shared: bool = False) -> None:
        super().__init__()
        self.shared = shared
        if shared:
            self.fit_dense = width_projection(d_student, d_teacher)
        else:
            self.embedding_projection = width_projection(d_student, d_teacher)   # W_e
            self.hidden_projection = width_projection(d_student, d_teacher)      # W_h

    @property
    def w_e(self) -> nn.Linear:
        return self.fit_dense if self.shared else self.embedding_projection

    @property
    def w_h(self) -> nn.Linear:
        return self.fit_dense if self.shared else self.hidden_projection

    def embedding(self, student_embedding: torch.Tensor) -> torch.Tensor:
        """E^S W_e: (B, L, d') -> (B, L, d)."""
        return self.w_e(student_embedding)

    def hidden(self, student_hidden: torch.Tensor) -> torch.Tensor:
        """H^S W_h: (B, L, d') -> (B, L, d)."""
        return self.w_h(student_hidden)

    def train_only(self, terms: Collection[str]) -> "TinyBertProjections":
        """Freeze the projections that no term in ``terms`` uses (``"embedding"`` uses W_e,
        ``"hidden"`` W_h; the shared one trains if either does). Nothing would train them, and
        data-parallel training refuses parameters that get no gradient."""
        terms = set(terms)
        if self.shared:
            self.fit_dense.requires_grad_(bool(terms & {"embedding", "hidden"}))
        else:
            self.embedding_projection.requires_grad_("embedding" in terms)
            self.hidden_projection.requires_grad_("hidden" in terms)
        return self

    def extra_repr(self) -> str:
        return f"shared={self.shared}"
