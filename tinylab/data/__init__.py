"""The task and the general corpus as Hugging Face ``datasets``; tokenisation and batching.

Two kinds of text feed TinyBERT (Jiao et al. 2020):

* the **task data** (labelled) for the teacher's fine-tuning and task-specific distillation:
  :func:`load_task` returns a ``DatasetDict`` with ``train`` / ``validation`` / ``test``,
  columns ``text`` (str) and ``label`` (``ClassLabel``, names kept);
* the **general corpus** (unlabelled) for general distillation (the paper uses English
  Wikipedia): :func:`load_general_corpus` returns a ``Dataset`` with a ``text`` column.

For evaluation outside movie reviews, :func:`load_ood` returns an out-of-domain test set
(product-review snippets or tweets) with the task's labels.

One module per job; every name below is importable from ``tinylab.data`` itself:

=================================  =========================================================
:mod:`~tinylab.data.tasks`         :func:`load_task`: the offline Rotten Tomatoes task, a
                                   local file, a ``save_to_disk`` folder or a hub dataset
:mod:`~tinylab.data.files`         reading a local table (one-line errors), picking columns,
                                   encoding labels, cleaning; the offline asset folders
:mod:`~tinylab.data.splits`        grouping keys (:func:`normalize_text`), deterministic
                                   stratified splits and sub-samples
:mod:`~tinylab.data.ood`           :func:`load_ood`: the out-of-domain test sets
:mod:`~tinylab.data.general`       :func:`load_general_corpus`: the general corpus and its
                                   sources (:data:`GENERAL_SOURCES`)
:mod:`~tinylab.data.batching`      :func:`tokenize`, :func:`make_dataloader` (dynamic
                                   padding, length grouping), :func:`padding_efficiency`
=================================  =========================================================

Where the data comes from is ``DataConfig.task`` (see :mod:`~tinylab.data.tasks`) and
``DataConfig.general_corpus`` (see :mod:`~tinylab.data.general`).
"""
from __future__ import annotations

from tinylab.data.batching import (LengthGroupedEpochSampler, make_dataloader, padding_efficiency,
                                   set_epoch, tokenize)
from tinylab.data.files import LOCAL_SUFFIXES, MAX_TEXT_CHARS
from tinylab.data.general import (GENERAL_SOURCES, check_general_corpus_file,
                                  general_exclusions, load_general_corpus, split_sentences)
from tinylab.data.ood import OOD_SETS, load_ood
from tinylab.data.splits import (SPLIT_FRACTIONS, SPLITS, normalize_text, row_keys,
                                 stratified_group_split, stratified_subsample)
from tinylab.data.tasks import FEW_EXAMPLES, OFFLINE_TASK, hub_spec, load_task

__all__ = [
    "OFFLINE_TASK", "SPLITS", "load_task", "load_general_corpus", "tokenize", "make_dataloader",
    "padding_efficiency", "set_epoch", "LengthGroupedEpochSampler", "split_sentences",
    "normalize_text", "stratified_group_split", "stratified_subsample", "OOD_SETS", "load_ood",
    "GENERAL_SOURCES", "general_exclusions", "check_general_corpus_file", "row_keys",
    "hub_spec", "LOCAL_SUFFIXES",
]
