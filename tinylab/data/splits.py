"""Splits: grouping keys, deterministic stratified splits and sub-samples.

Whenever tinylab makes a split itself it is deterministic (it depends only on the texts and
``split_seed``, never on the training seed or a library's random stream), stratified by label,
and grouped: texts that are equal after normalisation (case, punctuation, spacing) always land
in the same split (:func:`normalize_text`, :func:`row_keys`), so the test set never contains a
near-copy of a training example. A hub dataset's own splits are kept, with one exception: when
its test labels are hidden (GLUE puts ``-1`` there, as in SST-2), the hub ``validation`` split
becomes ``test`` and a new ``validation`` split is carved from ``train`` (10 %)
(:func:`tinylab.data.tasks.load_task`). In every case a text found in two splits is removed
from the earlier one (train before validation before test; :func:`drop_cross_split_duplicates`).

Every seeded order here is :func:`seeded_order`: a sha256 of seed, salt and key, so it is the
same across Python, numpy and ``datasets`` versions, and adding or removing one example does not
reshuffle all the others.
"""
from __future__ import annotations

import hashlib
import re
import unicodedata
from typing import Sequence

import numpy as np
import pandas as pd

__all__ = ["SPLITS", "SPLIT_FRACTIONS", "normalize_text", "row_keys", "seeded_order",
           "stratified_group_split", "stratified_subsample", "drop_cross_split_duplicates"]

SPLITS = ("train", "validation", "test")
SPLIT_FRACTIONS = (0.8, 0.1, 0.1)

_NON_WORD = re.compile(r"[^\w\s]|_")


def normalize_text(text: str) -> str:
    """The grouping key of a text: Unicode-normalised, lower-cased, punctuation removed,
    whitespace collapsed. ``"A pretentious mess."`` and ``"a pretentious mess"`` share a key."""
    text = unicodedata.normalize("NFKC", text).lower()
    return " ".join(_NON_WORD.sub(" ", text).split())


def row_keys(frame: pd.DataFrame) -> pd.Series:
    """The grouping key of each row: :func:`normalize_text` of ``text``, or of both texts of a
    pair (``text`` and ``text_pair``), so a pair and its near-copy share a key."""
    keys = frame["text"].map(normalize_text)
    if "text_pair" in frame.columns:
        keys = keys + " || " + frame["text_pair"].astype(str).map(normalize_text)
    return keys


def seeded_order(keys: Sequence[str], seed: int, salt: str = "") -> np.ndarray:
    """A seeded pseudo-random order of ``keys`` that depends only on the keys themselves.

    sha256 of ``seed/salt/key``: stable across Python, numpy and datasets versions, and adding
    or removing one example does not reshuffle all the others.
    """
    digests = [int.from_bytes(hashlib.sha256(f"{seed}\0{salt}\0{k}".encode()).digest()[:8],
                              "big") for k in keys]
    return np.argsort(np.asarray(digests, dtype=np.uint64), kind="stable")


def stratified_group_split(frame: pd.DataFrame, seed: int,
                           fractions: Sequence[float] = SPLIT_FRACTIONS) -> dict[str, pd.DataFrame]:
    """Split ``frame`` (columns ``text``, ``label``) into ``train`` / ``validation`` / ``test``.

    Groups = texts with the same :func:`normalize_text` key. Within each label, groups are put
    in a seeded order and cut where the running example count passes 80 % and 90 % of that
    label's examples, so each split keeps the label proportions and no group straddles two
    splits. Rows keep the seeded order (labels interleaved).
    """
    if len(fractions) != 3 or abs(sum(fractions) - 1.0) > 1e-9:
        raise ValueError(f"fractions must be three numbers summing to 1, got {fractions}")
    frame = frame.assign(_key=row_keys(frame))
    cuts = np.cumsum(fractions)[:2]
    assignment = pd.Series("", index=frame.index)
    for _, part in frame.groupby("label", sort=True):
        groups = part.groupby("_key", sort=False).size()
        groups = groups.iloc[seeded_order(list(groups.index), seed, "split")]
        start = (groups.cumsum() - groups) / len(part)  # share of examples before each group
        names = np.where(start < cuts[0], "train", np.where(start < cuts[1], "validation",
                                                             "test"))
        mapping = dict(zip(groups.index, names))
        assignment[part.index] = part["_key"].map(mapping)
    raw = frame["text"] + ("\0" + frame["text_pair"].astype(str)
                           if "text_pair" in frame.columns else "")
    order = seeded_order(list(frame["_key"] + "\0" + raw), seed, "order")
    frame = frame.iloc[order]
    assignment = assignment.iloc[order]
    return {name: frame[assignment == name].drop(columns="_key").reset_index(drop=True)
            for name in SPLITS}


def stratified_subsample(frame: pd.DataFrame, size: int | None, seed: int,
                         salt: str = "subsample") -> pd.DataFrame:
    """At most ``size`` rows, label proportions kept (largest-remainder quotas), chosen in a
    seeded order: a smaller sample is always a subset of a larger one with the same seed."""
    if size is None or size >= len(frame):
        return frame
    if size <= 0:
        raise ValueError(f"a split size must be positive or None, got {size}")
    counts = frame["label"].value_counts().sort_index()
    exact = counts / counts.sum() * size
    quota = np.floor(exact).astype(int)
    remainder = (exact - quota).sort_values(ascending=False, kind="stable")
    for label in remainder.index[: size - int(quota.sum())]:
        quota[label] += 1
    keys = list(frame["text"] + ("\0" + frame["text_pair"].astype(str)
                                 if "text_pair" in frame.columns else ""))
    keep = np.zeros(len(frame), dtype=bool)
    taken = {label: 0 for label in counts.index}
    labels = frame["label"].to_numpy()
    for i in seeded_order(keys, seed, salt):
        if taken[labels[i]] < quota[labels[i]]:
            taken[labels[i]] += 1
            keep[i] = True
    return frame[keep].reset_index(drop=True)


def drop_cross_split_duplicates(splits: dict[str, pd.DataFrame]) -> dict[str, pd.DataFrame]:
    """Remove from train (then validation) every text whose key also occurs in a later split."""
    later: set[str] = set()
    out = {}
    for name in reversed(SPLITS):
        keys = row_keys(splits[name])
        out[name] = splits[name][~keys.isin(later)].reset_index(drop=True)
        later |= set(keys)
    return out
