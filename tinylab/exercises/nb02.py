"""Exercises of notebook 02 (teacher inference): a prediction about a padded token's attention
row, checked against the model's own probabilities, and the confusion matrix."""
from __future__ import annotations

import torch

from tinylab.exercises import judge_choice, register


# -- 1. a padded query's attention row, predicted ------------------------------------------------

PADDED_ROW_CHOICES = {
    "a": "all zeros: a padded token attends to nothing",
    "b": "a distribution over the real keys: it sums to 1, padded keys get 0",
    "c": "NaN: every key of that row is masked",
    "d": "uniform over all keys, padded ones included",
}


def padded_query_row() -> str:
    """The attention probabilities of a [PAD] token's own row (query = a padded position)."""
    # The mask adds finfo.min to the scores of padded *keys* (columns), in every row alike.
    # A padded query's row still has the real keys, with ordinary scores: its softmax is a
    # normal distribution over them (sum 1), and the padded columns get 0 as in every row.
    return "b"


def _check_padded_row(prediction, truth) -> str:
    sums = torch.as_tensor(truth["row_sums"], dtype=torch.float64)
    on_padded = float(truth["on_padded_keys"])
    finite = bool(truth["finite"])
    if not finite:
        answer = "c"
    elif bool((sums.abs() < 1e-4).all()):
        answer = "a"
    elif bool(((sums - 1).abs() < 1e-4).all()) and on_padded < 1e-6:
        answer = "b"
    else:
        answer = "d"
    explanation = (f"Measured over the {sums.numel()} heads of layer 1: the padded token's rows "
                   f"sum to {float(sums.min()):.4f}..{float(sums.max()):.4f}, and their largest "
                   f"probability on a padded key is {on_padded:.1e}: ({answer}) "
                   f"{PADDED_ROW_CHOICES[answer]}. The mask acts on the key columns only; a "
                   f"[PAD] query still attends to the real tokens and gets a hidden state like "
                   f"any other position, which is why the distillation losses of notebook 04 "
                   f"leave padded rows out themselves.")
    return judge_choice(prediction, answer, PADDED_ROW_CHOICES, explanation)


register("nb02.padded_query_row", kind="prediction", checker=_check_padded_row,
         reference=padded_query_row,
         hint=("The additive mask has shape (B, 1, 1, L): along which axis of the (query, key) "
               "score matrix does it vary, and along which is it the same?",
               "The mask is a row vector over the keys, added to every query row alike, "
               "padded queries included. So look at a padded query's row: which of its "
               "entries are pushed to finfo.min, and what does a softmax do with the others?"))


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
         hint=("Rows are the gold class, columns the prediction. How many cells does the "
               "matrix have, and which single cell does one example add 1 to?",
               "Start from a num_classes x num_classes matrix of zeros and walk over the (gold, "
               "predicted) pairs, adding 1 to cell [gold, predicted] each time. Without a loop: "
               "turn each pair into one flat index (gold * num_classes + predicted), count the "
               "indices with torch.bincount (every index up to num_classes**2 - 1), reshape."))
