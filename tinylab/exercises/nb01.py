"""Exercises of notebook 01 (tokenization): padding a batch by hand, measuring padding waste."""
from __future__ import annotations

import torch

from tinylab.exercises import register


def _sequences(seed: int) -> list[list[int]]:
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.randint(1, 12, (7,), generator=gen).tolist()
    return [torch.randint(5, 1000, (n,), generator=gen).tolist() for n in lengths]


# -- 1. dynamic padding by hand --------------------------------------------------------------------

def pad_batch(sequences: list[list[int]], pad_token_id: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Right-pad token-id lists to the longest one; return ``(input_ids, attention_mask)``, (B, L)."""
    longest = max(len(seq) for seq in sequences)
    input_ids = torch.full((len(sequences), longest), pad_token_id, dtype=torch.long)
    attention_mask = torch.zeros((len(sequences), longest), dtype=torch.long)
    for row, seq in enumerate(sequences):
        input_ids[row, :len(seq)] = torch.tensor(seq, dtype=torch.long)
        attention_mask[row, :len(seq)] = 1
    return input_ids, attention_mask


def _check_pad_batch(candidate) -> None:
    for seed, pad in ((0, 0), (1, 0), (2, 3)):
        sequences = _sequences(seed)
        got = candidate([list(s) for s in sequences], pad)
        assert isinstance(got, tuple) and len(got) == 2, \
            "return a tuple (input_ids, attention_mask)"
        want_ids, want_mask = pad_batch(sequences, pad)
        ids, mask = (torch.as_tensor(t) for t in got)
        assert ids.shape == want_ids.shape, (f"input_ids shape {tuple(ids.shape)}, expected "
                                             f"{tuple(want_ids.shape)} (batch, longest length)")
        assert torch.equal(ids.long(), want_ids), ("input_ids differ: keep each sequence at the "
                                                   "start of its row and fill the rest with the "
                                                   "pad id (right padding)")
        assert torch.equal(mask.long(), want_mask), ("attention_mask differs: 1 on real tokens, "
                                                     "0 on padding")


register("nb01.pad_batch", checker=_check_pad_batch, reference=pad_batch,
         forbidden=("transformers.PreTrainedTokenizerBase.pad",
                    "transformers.DataCollatorWithPadding"),
         why="this exercise asks you to pad the batch yourself (the tokenizer's pad() does it "
             "all; torch.nn.utils.rnn.pad_sequence is allowed)",
         hint="Find the longest sequence, start from a (B, L) tensor full of pad_token_id and a "
              "(B, L) tensor of zeros, then copy each sequence into the start of its row and set "
              "the mask to 1 there. (torch.nn.utils.rnn.pad_sequence does the first half.)")


# -- 2. how much of a batch is padding -------------------------------------------------------------

def padding_fraction(lengths: list[int], batch_size: int) -> float:
    """Share of padded positions when consecutive ``batch_size`` examples form a batch that is
    padded to its own longest example (the last batch may be smaller)."""
    padded = real = 0
    for start in range(0, len(lengths), batch_size):
        batch = lengths[start:start + batch_size]
        padded += len(batch) * max(batch)
        real += sum(batch)
    return 1 - real / padded


def _check_padding_fraction(candidate) -> None:
    gen = torch.Generator().manual_seed(3)
    cases = [([5, 5, 5, 5], 2), ([1, 9], 2), ([3, 1, 4, 1, 5], 2), ([7], 4)]
    cases += [(torch.randint(2, 64, (n,), generator=gen).tolist(), b)
              for n, b in ((100, 32), (37, 8), (10, 16))]
    for lengths, batch_size in cases:
        got = candidate(list(lengths), batch_size)
        want = padding_fraction(lengths, batch_size)
        assert abs(float(got) - want) < 1e-9, (
            f"lengths {lengths[:8]}{'...' if len(lengths) > 8 else ''}, batch_size {batch_size}: "
            f"got {float(got):.4f}, expected {want:.4f}")


register("nb01.padding_fraction", checker=_check_padding_fraction, reference=padding_fraction,
         forbidden=("tinylab.data.padding_efficiency",),
         why="this exercise asks you to count the padded positions yourself",
         hint="Walk over the lengths in slices of batch_size; a slice costs len(slice) * max(slice) "
              "positions of which sum(slice) are real tokens. The answer is 1 - real / padded "
              "over all slices (the last slice can be shorter).")
