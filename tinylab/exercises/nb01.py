"""Exercises of notebook 01 (tokenization): two predictions, checked against measurements.

* ``dynamic_padding``: how many ``[PAD]`` positions dynamic padding puts into a few batches
  whose lengths are given (the notebook counts them in ``make_dataloader``'s batches);
* ``sorted_padding``: how much of the padding sorting by length removes, on the real lengths
  of the training split (the notebook measures both orders).

The learner writes the prediction down first (``predict``), the notebook measures the truth,
and ``check(name, prediction, truth=measured)`` compares the two and explains the measurement.
"""
from __future__ import annotations

from tinylab.exercises import judge_choice, register


# -- 1. dynamic padding, predicted -----------------------------------------------------------------

def dynamic_padding() -> int:
    """Five reviews of 4, 11, 7, 7 and 3 tokens, batch_size 2, dataset order, dynamic padding."""
    # The batches are (4, 11), (7, 7) and (3): each is padded to its own longest review.
    # (4, 11): 2 rows x 11 = 22 positions for 4 + 11 = 15 tokens -> 7 [PAD]
    # (7, 7): both already 7 long -> 0;  (3): alone in its batch -> 0
    return 7


def _batch_facts(truth) -> list[tuple[int, int, int]]:
    """``truth``: one (rows, padded length, real tokens) triple per batch."""
    facts = [tuple(int(x) for x in batch) for batch in truth]
    assert facts and all(len(f) == 3 for f in facts), \
        "truth: one (rows, padded length, real tokens) triple per batch"
    return facts


def _check_dynamic_padding(prediction, truth) -> str:
    facts = _batch_facts(truth)
    pads = sum(rows * length - real for rows, length, real in facts)
    parts = "; ".join(f"batch {i + 1}: {rows} x {length} = {rows * length} positions for {real} "
                      f"tokens, {rows * length - real} [PAD]"
                      for i, (rows, length, real) in enumerate(facts))
    explanation = (f"{parts}. Each batch is padded to its own longest review, so a batch of "
                   f"equal lengths, or of one review, needs no padding at all.")
    try:
        guess = float(prediction)
    except (TypeError, ValueError):
        raise AssertionError(f"predict a number of [PAD] positions, got {prediction!r}. "
                             f"{explanation}") from None
    if guess == pads:
        return explanation
    longest = max(length for _, length, _ in facts)
    everything = sum(rows for rows, _, _ in facts) * longest - sum(r for _, _, r in facts)
    why = ""
    if guess == everything:
        why = (f" {everything} is what padding every review to the longest of all ({longest}) "
               f"gives: dynamic padding pads each batch to its own longest.")
    raise AssertionError(f"you predicted {prediction!r}, the batches hold {pads} [PAD] "
                         f"positions.{why} {explanation}")


register("nb01.dynamic_padding", kind="prediction", checker=_check_dynamic_padding,
         reference=dynamic_padding,
         hint=("Which reviews end up in the same batch when the order is kept? Each batch is "
               "padded separately.",
               "Cut the lengths into consecutive groups of batch_size; in each group every "
               "review is padded up to the group's longest, so a group costs (size x longest) "
               "positions of which the sum of its lengths are real. Add up the differences."))


# -- 2. sorting by length, predicted -----------------------------------------------------------

SORTED_CHOICES = {
    "a": "sorting changes little: more than 2/3 of the dataset-order padding remains",
    "b": "sorting removes about half of it: between 1/3 and 2/3 remains",
    "c": "sorting removes most of it: less than 1/3 remains",
}


def sorted_padding() -> str:
    """Consecutive batches of the real training lengths: sorted by length versus dataset order."""
    # Sorted, a batch holds neighbours in length: its longest review is at most a few tokens
    # longer than its shortest, whereas in dataset order a batch of random reviews likely
    # holds one long review that sets the length for all. What remains is the small steps
    # between neighbouring lengths (and the longest batch, where the lengths spread out):
    # well under a third.
    return "c"


def _check_sorted_padding(prediction, truth) -> str:
    order, by_length = float(truth["dataset order"]), float(truth["sorted"])
    assert order > 0, "truth: the dataset-order padding share must be positive"
    ratio = by_length / order
    answer = "a" if ratio > 2 / 3 else "b" if ratio >= 1 / 3 else "c"
    explanation = (f"Measured: {order:.1%} of the positions are padding in dataset order, "
                   f"{by_length:.1%} sorted by length ({ratio:.1%} of it remains: "
                   f"({answer}) {SORTED_CHOICES[answer]}). Sorted, each batch holds neighbours "
                   f"in length, so only the small steps between neighbouring lengths are "
                   f"padded; length-grouped batching gets most of this gain while keeping the "
                   f"order random (it sorts inside random chunks).")
    return judge_choice(prediction, answer, SORTED_CHOICES, explanation)


register("nb01.sorted_padding", kind="prediction", checker=_check_sorted_padding,
         reference=sorted_padding,
         hint=("In dataset order, what decides the padded length of a batch of random "
               "reviews? After sorting, how different are the lengths inside one batch?",
               "A batch costs (size x its longest length). In random order, one long review "
               "in the batch sets that length for everyone; after sorting, the longest of a "
               "batch is only slightly longer than its shortest, so the padding per batch "
               "shrinks to the steps between neighbouring lengths."))
