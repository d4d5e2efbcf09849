"""Exercises of notebook 02 (teacher inference): masked attention probabilities, the confusion
matrix."""
from __future__ import annotations

import torch

from tinylab.exercises import register


# -- 1. attention probabilities from scores and a padding mask ----------------------------------

def attention_probabilities(scores: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """softmax over keys of ``scores`` (B, H, L, L) with padded keys (mask 0 in the (B, L)
    ``attention_mask``) given probability exactly 0."""
    additive = (1.0 - attention_mask[:, None, None, :].to(scores.dtype)) * torch.finfo(
        scores.dtype).min
    return torch.softmax(scores + additive, dim=-1)


def _check_attention(candidate) -> None:
    gen = torch.Generator().manual_seed(2)
    scores = torch.randn(2, 3, 5, 5, generator=gen) * 4
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 1, 0, 0]])
    got = candidate(scores.clone(), mask.clone())
    assert isinstance(got, torch.Tensor) and got.shape == scores.shape, (
        f"return a tensor of shape {tuple(scores.shape)} (batch, heads, queries, keys)")
    assert torch.isfinite(got).all(), "probabilities must be finite (no nan or inf)"
    torch.testing.assert_close(got.sum(-1), torch.ones(2, 3, 5),
                               msg="each query's probabilities must sum to 1 over the keys "
                                   "(softmax over the last dimension)")
    assert got[1, :, :, 3:].abs().max() < 1e-6, ("padded keys (mask 0) must get probability 0: "
                                                 "add a very negative number to their scores")
    torch.testing.assert_close(got, attention_probabilities(scores, mask))


register("nb02.attention_probabilities", checker=_check_attention,
         reference=attention_probabilities,
         forbidden=("torch.masked.softmax", "torch.masked.log_softmax", "torch._masked_softmax"),
         why="this exercise asks you to apply the padding mask yourself (torch.softmax is "
             "fine)",
         hint="Turn the (B, L) mask into an additive (B, 1, 1, L) term: 0 for real keys, a huge "
              "negative number (torch.finfo(scores.dtype).min) for padded ones; add it to the "
              "scores and take torch.softmax over dim=-1 (the keys).")


# -- 2. the confusion matrix ---------------------------------------------------------------------

def confusion_matrix(predictions: torch.Tensor, labels: torch.Tensor,
                     num_classes: int) -> torch.Tensor:
    """``C[i, j]`` = number of examples of gold class ``i`` predicted as class ``j``."""
    matrix = torch.zeros(num_classes, num_classes, dtype=torch.long)
    for gold, predicted in zip(labels.tolist(), predictions.tolist()):
        matrix[gold, predicted] += 1
    return matrix


def _check_confusion(candidate) -> None:
    gen = torch.Generator().manual_seed(4)
    for num_classes, n in ((2, 50), (3, 40), (4, 7)):
        labels = torch.randint(0, num_classes, (n,), generator=gen)
        predictions = torch.randint(0, num_classes, (n,), generator=gen)
        got = torch.as_tensor(candidate(predictions.clone(), labels.clone(), num_classes))
        want = confusion_matrix(predictions, labels, num_classes)
        assert got.shape == want.shape, (f"{num_classes} classes need a {num_classes}x"
                                         f"{num_classes} matrix, got {tuple(got.shape)}")
        if torch.equal(got.long(), want.T):
            raise AssertionError("rows and columns are swapped: rows are the gold class, "
                                 "columns the prediction")
        assert torch.equal(got.long(), want), f"counts differ for {num_classes} classes"


register("nb02.confusion_matrix", checker=_check_confusion, reference=confusion_matrix,
         forbidden=("tinylab.evaluate.classification_metrics", "tinylab.evaluate.evaluate_model",
                    "sklearn.metrics.confusion_matrix"),
         why="this exercise asks you to count the (gold, predicted) pairs yourself",
         hint="Start from a num_classes x num_classes tensor of zeros and add 1 at "
              "[gold, predicted] for every example (rows: gold class, columns: prediction). "
              "A one-liner: torch.bincount(labels * num_classes + predictions, "
              "minlength=num_classes**2).reshape(num_classes, num_classes).")
