"""Out-of-domain evaluation: :func:`load_ood` returns a test set from outside movie reviews
(product-review snippets or tweets) with the task's labels, so a model's accuracy there shows
how far its sentiment knowledge carries beyond the in-domain task.

The texts were rated by people (Hutto & Gilbert 2014, the ``vader-ood`` offline asset, fetched
on first use); :func:`load_ood`'s docstring gives the rule that turns a mean rating into a
label, and what each set holds.
"""
from __future__ import annotations

import html
from pathlib import Path

import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, Features, Value

from tinylab.data.files import asset_folder
from tinylab.data.splits import stratified_subsample

__all__ = ["OOD_SETS", "load_ood"]

#: Out-of-domain test sets (:func:`load_ood`) -> their file in the ``vader-ood`` asset.
OOD_SETS = ("amazon", "tweets")
_OOD_FILES = {"amazon": "amazon_reviews.txt", "tweets": "tweets.txt"}


def _unescape(text: str) -> str:
    """HTML entities decoded until none is left (some texts are escaped twice:
    ``&amp;#38;`` -> ``&#38;`` -> ``&``)."""
    for _ in range(5):
        decoded = html.unescape(text)
        if decoded == text:
            break
        text = decoded
    return text


def _read_ood(path: Path, neutral: float) -> pd.DataFrame:
    """``id<TAB>mean rating<TAB>text`` lines -> the polar rows as ``text`` / ``label``."""
    texts, labels = [], []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        fields = line.split("\t", 2)
        try:
            rating = float(fields[1])
            text = fields[2]
        except (IndexError, ValueError):
            raise ValueError(f"{path}:{number}: expected id<TAB>mean rating<TAB>text, got "
                             f"{line[:60]!r}") from None
        if abs(rating) < neutral:  # neither clearly positive nor clearly negative
            continue
        texts.append(_unescape(text).strip())
        labels.append(int(rating > 0))
    frame = pd.DataFrame({"text": texts, "label": np.asarray(labels, dtype=np.int64)})
    frame = frame[frame["text"] != ""]
    conflicting = frame.groupby("text")["label"].nunique()  # a text rated both ways: dropped
    frame = frame[~frame["text"].isin(set(conflicting[conflicting > 1].index))]
    return frame.drop_duplicates("text").reset_index(drop=True)  # first copy, file order


def load_ood(name: str, *, neutral: float = 1.0, size: int | None = None, seed: int = 2020):
    """An out-of-domain sentiment test set: a ``Dataset`` with ``text`` and ``label``
    (``ClassLabel(names=["negative", "positive"])``, the task's labels).

    ``name`` is one of :data:`OOD_SETS`:

    * ``"amazon"`` - sentence-level snippets of 309 customer reviews of five electronics
      products (cameras, a phone, an MP3 player, a DVD player; Hu & Liu 2004), lower-cased;
    * ``"tweets"`` - short social-media posts with slang, emoticons, capitals and
      ``@anonymous`` mentions.

    Both come from Hutto & Gilbert, "VADER: A Parsimonious Rule-based Model for Sentiment
    Analysis of Social Media Text" (ICWSM 2014): at least 20 human raters scored each text from
    -4 (extremely negative) to +4 (extremely positive). The ``vader-ood`` offline asset holds
    their ``*_GroundTruth.txt`` files (``id<TAB>mean rating<TAB>text``), taken from the
    ``vaderSentiment==3.3.2`` source distribution (MIT); it is fetched on first use.

    The rule: a text with mean rating ``>= neutral`` is ``positive``, ``<= -neutral``
    ``negative``; texts in between are dropped (the in-domain task has no neutral class, and a
    rating near 0 is neither). HTML entities are decoded (``&amp;`` -> ``&``), whitespace is
    stripped, empty texts and exact duplicates dropped (the first copy kept; a text rated
    both ways would be dropped entirely, none is). Rows keep the file order.

    With the default ``neutral=1.0`` (measured: ``collections.Counter(load_ood(n)["label"])``):

    * ``amazon``: 2,447 of 3,708 snippets, 1,508 positive (62 %) / 939 negative;
    * ``tweets``: 2,667 of 4,200 tweets, 1,830 positive (69 %) / 837 negative.

    (``neutral=0.5``: 2,977 and 3,432.) The in-domain data are film critics' snippets from
    Rotten Tomatoes, each labelled by its whole review's verdict; here the vocabulary
    (batteries, screens, customer service; slang, emoticons, hashtags), the writers
    (customers, anyone on Twitter) and the labelling (the text itself, rated by crowd raters)
    all differ, so the accuracy a model keeps here measures how far its sentiment knowledge
    carries beyond movie reviews.

    ``size``: at most this many texts, a stratified sample drawn with ``seed`` (the class
    shares kept; a smaller sample is a subset of a larger one), rows still in file order. The
    ``ci`` profile scores 256 of each (``data.ood_size``); ``None`` keeps every text.

    >>> ood = load_ood("tweets")                                     # doctest: +SKIP
    >>> ood.features["label"].names                                  # doctest: +SKIP
    ['negative', 'positive']
    """
    if name not in _OOD_FILES:
        raise ValueError(f"unknown out-of-domain set {name!r}; valid names: "
                         f"{', '.join(OOD_SETS)}")
    if not 0 < neutral <= 4:
        raise ValueError(f"neutral must be in (0, 4] (ratings lie in [-4, 4]), got {neutral}")
    frame = _read_ood(asset_folder("vader-ood") / _OOD_FILES[name], neutral)
    if frame.empty:
        raise ValueError(f"out-of-domain set {name!r}: no text has |mean rating| >= {neutral}")
    frame = stratified_subsample(frame, size, seed, salt=f"ood-{name}")  # keeps file order
    features = Features({"text": Value("string"),
                         "label": ClassLabel(names=["negative", "positive"])})
    return Dataset.from_pandas(frame, features=features, preserve_index=False)
