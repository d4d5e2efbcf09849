"""The general corpus: unlabelled text for general distillation.

The paper distils general knowledge on English Wikipedia; :func:`load_general_corpus` returns
the corpus a configuration names (``DataConfig.general_corpus``) as a ``Dataset`` with a
``text`` column: the offline corpus (``"offline"``, built from the ``general-text`` asset's
:data:`GENERAL_SOURCES`), a local ``.txt`` file or table, or a hub dataset. Documents are split
into sentences by a small rule-based splitter (:func:`split_sentences`); short sentences and
near-duplicates (:func:`tinylab.data.splits.normalize_text`) are dropped, and the rest comes in
a seeded order.

A task built from one of the offline sources must not meet its own test texts during general
distillation: ``DataConfig.general_exclude`` leaves sources out (:func:`general_exclusions`).
:func:`check_general_corpus_file` refuses an empty or non-UTF-8 local corpus before any work.
"""
from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator, Sequence

import pandas as pd
from datasets import Dataset
from tqdm.auto import tqdm

from tinylab.config import DataConfig
from tinylab.data.files import (LOCAL_SUFFIXES, asset_folder, pick_columns, read_rotten_tomatoes,
                                read_table)
from tinylab.data.splits import normalize_text, seeded_order
from tinylab.data.tasks import load_hub

__all__ = ["GENERAL_SOURCES", "split_sentences", "general_exclusions",
           "check_general_corpus_file", "load_general_corpus"]

_ABBREVIATIONS = {"mr", "mrs", "ms", "dr", "st", "jr", "sr", "vs", "no", "gen", "gov", "sen",
                  "rep", "prof", "inc", "co", "ltd", "mt", "lt", "col", "sgt", "fig", "etc"}
_BOUNDARY = re.compile(r"[.!?]+[\"'’”)\]]*\s+(?=[\"'‘“(\[]?[A-Z0-9])")


def split_sentences(text: str) -> list[str]:
    """A small rule-based sentence splitter.

    A boundary is ``.``, ``!`` or ``?`` (plus closing quotes/brackets), whitespace, then a
    capital letter or digit - unless the word before the period is a common abbreviation
    (``Mr.``, ``Dr.``, ``St.``) or a single initial (``J. Smith``). Good enough for speeches,
    headlines and plot summaries; a trained splitter (spaCy, NLTK punkt) does better on
    harder text.
    """
    text = " ".join(text.split())
    sentences, start = [], 0
    for match in _BOUNDARY.finditer(text):
        before = text[start:match.start()].rsplit(" ", 1)[-1].lstrip("\"'‘“([")
        if match.group().lstrip()[0] == "." and (
                before.lower() in _ABBREVIATIONS or (len(before) == 1 and before.isupper())):
            continue
        sentences.append(text[start:match.end()].strip())
        start = match.end()
    sentences.append(text[start:].strip())
    return [s for s in sentences if s]


def _strip_stage_notes(text: str) -> str:
    """Remove ``(Applause.)``-style notes and ``SPEAKER:`` prefixes from transcripts."""
    text = re.sub(r"\([^)]*\)|\[[^\]]*\]", " ", text)
    return re.sub(r"(^|\n)\s*[A-Z][A-Z .'\-]{1,40}:\s*", r"\1", text)


def _hamlet_passages(text: str) -> list[str]:
    """Join each speech's verse lines into one passage; drop speaker names, headings and
    stage directions (lines in capitals, ``ACT``/``SCENE`` headings, ``Enter``/``Exit``)."""
    passages, current = [], []
    for line in text.splitlines():
        line = line.strip()
        is_break = (not line or line.isupper() or "|" in line
                    or re.match(r"^(ACT|SCENE|Enter|Exit|Exeunt|Re-enter)\b", line))
        if is_break:
            if current:
                passages.append(" ".join(current))
            current = []
        else:
            current.append(line)
    if current:
        passages.append(" ".join(current))
    return passages


#: The sources of the offline general corpus, in the order they are read
#: (``DataConfig.general_exclude`` names the ones to leave out).
GENERAL_SOURCES = ("speeches", "debates", "headlines", "plots", "hamlet")


def general_exclusions(cfg: DataConfig) -> tuple[str, ...]:
    """The offline sources ``cfg.general_exclude`` leaves out, checked against
    :data:`GENERAL_SOURCES` (an unknown name is refused, naming the valid ones)."""
    names = tuple(n.strip() for n in cfg.general_exclude.split(",") if n.strip())
    unknown = [n for n in names if n not in GENERAL_SOURCES]
    if unknown:
        raise ValueError(f"data.general_exclude names unknown source(s) {unknown}; the offline "
                         f"general corpus has {', '.join(GENERAL_SOURCES)}")
    if names and cfg.general_corpus != "offline":
        raise ValueError(f"data.general_exclude={cfg.general_exclude!r} applies only to the "
                         f"offline general corpus, not data.general_corpus="
                         f"{cfg.general_corpus!r}; leave it empty")
    return names


def check_general_corpus_file(cfg: DataConfig) -> None:
    """Refuse, in one line naming the file, a local general corpus that is empty or not
    UTF-8 text: without this the run would fail only after the teacher's fine-tuning, when
    general distillation first reads it. (A missing file is refused by
    :func:`tinylab.preflight.check_sources`.)"""
    path = Path(cfg.general_corpus).expanduser()
    if cfg.general_corpus == "offline" or not path.is_file():
        general_exclusions(cfg)
        return
    data = path.read_bytes()
    if not data.strip():
        raise ValueError(f"general corpus file {path} is empty; it needs sentences of at least "
                         f"5 words (data.general_corpus={cfg.general_corpus!r})")
    if path.suffix.lower() in (".txt", ".csv", ".tsv", ".json", ".jsonl"):
        try:
            data.decode("utf-8")
        except UnicodeDecodeError as err:
            raise ValueError(f"general corpus file {path} is not UTF-8 text (byte {err.start}: "
                             f"{err.reason}); save it as UTF-8") from None


def _offline_general_documents(folder: Path, exclude: Sequence[str] = ()
                               ) -> Iterator[tuple[str, str]]:
    """(source, document) pairs from the general-text asset, in a fixed order, leaving out
    the sources in ``exclude``."""
    for source, document in _all_offline_general_documents(folder):
        if source not in exclude:
            yield source, document


def _all_offline_general_documents(folder: Path) -> Iterator[tuple[str, str]]:
    for party in json.loads((folder / "political_data.json").read_text()):
        for speech in party["speeches"]:
            for paragraph in _strip_stage_notes(speech).split("\n"):
                yield "speeches", paragraph
    debates = pd.read_csv(folder / "presidential_debates_2016.csv.gz")
    for statement in debates["statement"].dropna():
        yield "debates", _strip_stage_notes(str(statement))
    headlines = pd.read_csv(folder / "guardian_headlines.csv.bz2")
    for headline in headlines["Text"].dropna():
        yield "headlines", str(headline)
    rt = read_rotten_tomatoes(folder)
    for plot in rt.loc[rt["category"] == "plot", "text"].dropna():  # summaries, not reviews
        yield "plots", str(plot)
    for passage in _hamlet_passages((folder / "hamlet.txt").read_text(encoding="utf-8")):
        yield "hamlet", passage


def _general_sentences(documents, min_words: int) -> list[str]:
    seen: set[str] = set()
    out = []
    for _, doc in tqdm(documents, desc="general corpus", unit="doc"):
        for sentence in split_sentences(doc):
            key = normalize_text(sentence)
            if len(key.split()) >= min_words and key not in seen:
                seen.add(key)
                out.append(sentence)
    return out


def load_general_corpus(cfg: DataConfig, *, min_words: int = 5):
    """The unlabelled corpus for general distillation: a ``Dataset`` with one column ``text``.

    ``cfg.general_corpus``:

    * ``"offline"`` - sentences from the ``general-text`` asset: 2012 convention speeches,
      2016 debates, Guardian headlines, Rotten Tomatoes *plot summaries* (never the review
      snippets, which hold the test set) and Hamlet. About 25k sentences - tiny next to the
      paper's 2.5B-word Wikipedia, so general distillation here shows the mechanics more than
      it builds a strong student. ``cfg.general_exclude`` leaves sources out
      (:data:`GENERAL_SOURCES`): a task built from one of them must not meet its own test
      texts during general distillation.
    * a local ``.txt`` file (split into sentences) or csv/json/parquet (``cfg.text_column``);
    * a hub dataset, e.g. ``"wikitext/wikitext-103-raw-v1"`` (non-empty lines, headings
      dropped; ``general_size`` keeps a seeded sample).

    Sentences shorter than ``min_words`` are dropped and duplicates removed (by
    :func:`normalize_text`); the result is in a seeded order (``cfg.split_seed``) and capped to
    ``cfg.general_size``.
    """
    source = cfg.general_corpus
    path = Path(source).expanduser()
    check_general_corpus_file(cfg)
    if source == "offline":
        documents = _offline_general_documents(asset_folder("general-text"),
                                               general_exclusions(cfg))
        texts = _general_sentences(documents, min_words)
    elif path.suffix.lower() in LOCAL_SUFFIXES + (".txt",) or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"general corpus file {path} does not exist "
                                    f"(data.general_corpus={source!r})")
        if path.suffix.lower() in LOCAL_SUFFIXES:  # a table: one document per row
            frame = pick_columns(read_table(path), cfg, str(path), need_label=False)
            documents = (("file", str(t)) for t in frame["text"].dropna())
        else:  # plain text: paragraphs separated by blank lines
            documents = (("file", p) for p in path.read_text(encoding="utf-8").split("\n\n"))
        texts = _general_sentences(documents, min_words)
    else:
        ds = load_hub(source, split="train")
        frame = pick_columns(ds.to_pandas(), cfg, source, need_label=False)
        lines = (str(t).strip() for t in frame["text"].dropna())
        # wikitext: headings look like " = Title = "; keep paragraphs whole (long contexts)
        texts = list(dict.fromkeys(t for t in lines if len(t.split()) >= min_words
                                   and not re.fullmatch(r"=+ .* =+", t)))
    if not texts:
        raise ValueError(f"general corpus {source!r} yielded no text of at least {min_words} "
                         f"words")
    texts = [texts[i] for i in seeded_order(texts, cfg.split_seed, "general")]
    if cfg.general_size is not None:
        texts = texts[: cfg.general_size]
    return Dataset.from_dict({"text": texts})
