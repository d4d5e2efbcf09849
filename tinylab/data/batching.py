"""Tokenisation and batching: from texts to the padded tensors a model reads.

:func:`tokenize` truncates but does not pad; :func:`make_dataloader` pads each batch to its own
longest sequence (dynamic padding, ``transformers.DataCollatorWithPadding``) and, when
shuffling, groups examples of similar length into the same batch
(:class:`LengthGroupedEpochSampler`), which removes most padding. :func:`padding_efficiency`
measures how much. The order of every epoch is a pure function of the seed and the epoch
(:func:`set_epoch` chooses it, e.g. on resume).
"""
from __future__ import annotations

from typing import Any, Iterator, Sequence

import torch
from datasets import ClassLabel, Value
from torch.utils.data import BatchSampler, DataLoader, SequentialSampler
from transformers import DataCollatorWithPadding
from transformers.trainer_pt_utils import get_length_grouped_indices

__all__ = ["tokenize", "LengthGroupedEpochSampler", "make_dataloader", "set_epoch",
           "padding_efficiency"]


def tokenize(ds, tokenizer, max_length: int, *, remove_text: bool = False):
    """Add ``input_ids``, ``attention_mask`` (and ``token_type_ids`` for BERT), truncated to
    ``max_length`` tokens including ``[CLS]``/``[SEP]`` and *not* padded (the collator pads
    each batch). A ``text_pair`` column makes each example ``[CLS] text [SEP] text_pair [SEP]``
    with ``token_type_ids`` 0 then 1 (BERT's segments). Works on a ``Dataset`` or a
    ``DatasetDict``; keeps ``label`` and every other column, and drops the texts only when
    ``remove_text``."""
    if max_length < 2:
        raise ValueError(f"max_length must leave room for [CLS] and [SEP], got {max_length}")
    columns = ds.column_names
    columns = next(iter(columns.values())) if isinstance(columns, dict) else columns
    if "text" not in columns:
        raise ValueError(f"tokenize needs a 'text' column; found {columns}")

    pair = "text_pair" in columns

    def encode(batch):
        if pair:  # [CLS] text [SEP] text_pair [SEP]; the longer text is truncated first
            return tokenizer(batch["text"], batch["text_pair"], truncation=True,
                             max_length=max_length)
        return tokenizer(batch["text"], truncation=True, max_length=max_length)

    drop = (["text", "text_pair"] if pair else ["text"]) if remove_text else None
    return ds.map(encode, batched=True, remove_columns=drop, desc="tokenize")


class LengthGroupedEpochSampler:
    """Seeded, length-grouped order of a dataset's indices, different in every epoch.

    Each epoch: a random permutation (``torch.Generator`` seeded with ``seed + epoch``), cut
    into mega-batches of ``mega_batch_mult * batch_size`` examples, each sorted by length
    (``transformers.trainer_pt_utils.get_length_grouped_indices``, the same recipe as the
    ``Trainer``'s ``group_by_length``). Consecutive ``batch_size`` slices then hold examples
    of similar length, so dynamic padding adds few ``[PAD]`` tokens while batches stay random.
    With ``lengths=None`` it is a plain seeded shuffle.

    Sorted mega-batches alone would feed the model its batches from the longest sentences to
    the shortest, 50 batches at a time, and every loss curve would show that as a saw-tooth
    (long sentences have a different loss). So the order of the *batches* inside each
    mega-batch is shuffled too. The batches themselves, and hence the padding saved, are
    exactly the ``Trainer``'s; the batch holding the longest example still comes first (an
    out-of-memory error shows at step 1, not mid-epoch), and a short last batch stays last.

    Iterating advances the epoch; ``set_epoch(e)`` chooses it explicitly (e.g. on resume), so
    the order of epoch ``e`` is a pure function of ``(seed, e)``.
    """

    def __init__(self, num_examples: int, batch_size: int, seed: int,
                 lengths: Sequence[int] | None = None, mega_batch_mult: int | None = None):
        self.num_examples = num_examples
        self.batch_size = batch_size
        self.seed = seed
        self.lengths = list(lengths) if lengths is not None else None
        self.mega_batch_mult = mega_batch_mult
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def indices(self, epoch: int) -> list[int]:
        generator = torch.Generator().manual_seed(self.seed + epoch)
        if self.lengths is None:
            return torch.randperm(self.num_examples, generator=generator).tolist()
        order = get_length_grouped_indices(self.lengths, self.batch_size,
                                           mega_batch_mult=self.mega_batch_mult,
                                           generator=generator)
        return self._shuffle_batches(order, generator)

    def _mega_batch_size(self) -> int:
        """``get_length_grouped_indices``'s mega-batch, in examples (its default multiplier)."""
        mult = self.mega_batch_mult
        if mult is None:
            mult = min(len(self.lengths) // (self.batch_size * 4), 50) or 1
        return mult * self.batch_size

    def _shuffle_batches(self, order: list[int], generator) -> list[int]:
        """Shuffle whole ``batch_size`` slices within each mega-batch of ``order``."""
        size, bs = self._mega_batch_size(), self.batch_size
        out: list[int] = []
        for start in range(0, len(order), size):
            chunk = order[start:start + size]
            batches = [chunk[i:i + bs] for i in range(0, len(chunk), bs)]
            tail = [batches.pop()] if len(batches[-1]) < bs else []  # a short batch stays last
            perm = torch.randperm(len(batches), generator=generator).tolist()
            batches = [batches[i] for i in perm]
            if start == 0 and batches:  # the longest example's batch first, as before
                first = next(i for i, b in enumerate(batches) if order[0] in b)
                batches[0], batches[first] = batches[first], batches[0]
            out += [i for batch in batches + tail for i in batch]
        return out

    def __iter__(self) -> Iterator[int]:
        order = self.indices(self.epoch)
        self.epoch += 1
        return iter(order)

    def __len__(self) -> int:
        return self.num_examples


def _batch_columns(ds, tokenizer) -> list[str]:
    """Model inputs, ``label`` and any other numeric scalar column (e.g. an ``idx``)."""
    inputs = [c for c in tokenizer.model_input_names if c in ds.column_names]
    if "input_ids" not in inputs:
        raise ValueError(f"the dataset has no 'input_ids' (columns: {ds.column_names}); call "
                         f"tinylab.data.tokenize(ds, tokenizer, max_length) first")
    extra = [name for name, feature in ds.features.items() if name not in inputs
             and (isinstance(feature, ClassLabel) or (isinstance(feature, Value) and (
                 feature.dtype.startswith(("int", "uint", "float")) or feature.dtype == "bool")))]
    return inputs + extra


def make_dataloader(ds, tokenizer, batch_size: int, *, shuffle: bool, seed: int = 0,
                    group_by_length: bool = True, drop_last: bool = False):
    """A ``torch.utils.data.DataLoader`` over a tokenised dataset.

    Each batch is a dict of tensors: ``input_ids``, ``attention_mask`` (and
    ``token_type_ids``), shape ``(B, L_batch)`` where ``L_batch`` is the longest sequence in
    *this* batch (dynamic padding, ``transformers.DataCollatorWithPadding``); ``labels`` (B,)
    from ``label``; and any other numeric scalar column as a (B,) tensor (e.g. ``idx`` to look
    up cached teacher outputs). String columns such as ``text`` are left out.

    ``shuffle=True``: a seeded order (:class:`LengthGroupedEpochSampler`, length-grouped when
    ``group_by_length``), new in every pass over the loader and reproducible per epoch:
    ``set_epoch(loader, e)`` before a pass gives epoch ``e``'s order. ``shuffle=False``: the
    dataset's own order (``group_by_length`` is ignored, so predictions line up with rows).
    """
    if batch_size <= 0:
        raise ValueError(f"batch_size must be positive, got {batch_size}")
    if len(ds) == 0:
        raise ValueError("cannot batch an empty dataset")
    ds = ds.select_columns(_batch_columns(ds, tokenizer))
    if shuffle:
        lengths = [len(ids) for ids in ds["input_ids"]] if group_by_length else None
        sampler = LengthGroupedEpochSampler(len(ds), batch_size, seed, lengths)
    else:
        sampler = SequentialSampler(range(len(ds)))
    collator = DataCollatorWithPadding(tokenizer, padding="longest", return_tensors="pt")
    # Its own generator: every pass over a DataLoader draws a base seed for worker processes,
    # from the global torch RNG unless the loader has a generator. Dropout draws from that
    # global stream, so an evaluation (or a resumed run's first pass) would otherwise shift
    # every later dropout mask.
    return DataLoader(ds, batch_sampler=BatchSampler(sampler, batch_size, drop_last),
                      collate_fn=collator, generator=torch.Generator().manual_seed(seed))


def set_epoch(loader, epoch: int) -> None:
    """Make the next pass over a shuffling loader from :func:`make_dataloader` use epoch
    ``epoch``'s order (no-op for a non-shuffling loader)."""
    sampler = getattr(loader.batch_sampler, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def padding_efficiency(loader) -> dict[str, Any]:
    """How much of what the model computes is real text: one pass over ``loader``.

    Returns ``real_tokens`` (sum of ``attention_mask``), ``padded_tokens`` (sum of B x L over
    batches, what the model processes), ``efficiency`` = real / padded, ``batches``, and
    ``mean_padded_length`` (the average padded length L of an example). Padding every batch
    to a fixed ``max_length`` is the worst case; dynamic padding and length grouping push
    ``efficiency`` towards 1.
    For a shuffling loader this consumes one epoch of its order.
    """
    real = padded = batches = examples = 0
    for batch in loader:
        mask = batch["attention_mask"]
        real += int(mask.sum())
        padded += mask.numel()
        batches += 1
        examples += mask.shape[0]
    if batches == 0:
        raise ValueError("the loader yielded no batches")
    return {"real_tokens": real, "padded_tokens": padded, "efficiency": real / padded,
            "batches": batches, "mean_padded_length": padded / examples}
