"""The labelled task: :func:`load_task` returns a ``DatasetDict`` with ``train`` /
``validation`` / ``test``, columns ``text`` (str) and ``label`` (``ClassLabel``, names kept),
the data for the teacher's fine-tuning and task-specific distillation.

Where the task comes from is ``DataConfig.task``:

* ``"rotten_tomatoes_offline"``: the offline asset (``tinylab assets fetch``), Rotten Tomatoes
  snippets, fresh -> ``positive``, rotten -> ``negative``;
* ``"glue/sst2"``, ``"rotten_tomatoes"`` or ``"path:config"``: a hub dataset (needs the
  Hugging Face Hub; :func:`hub_spec` reads the name; a ``sentence`` column, as in SST-2, is
  used when ``text_column`` is left at ``"text"`` and the dataset has no ``text`` column);
* ``"reviews.csv"`` (or .tsv, .json, .jsonl, .parquet): a local file; ``text_column`` /
  ``label_column`` map its columns, string labels become class names (sorted)
  (:mod:`tinylab.data.files`);
* a folder written by ``datasets``' ``save_to_disk``: its splits are kept as a hub
  dataset's are (a single ``Dataset`` is split 80/10/10).

A hub dataset's own splits are kept, with one exception: when its test labels are hidden (GLUE
puts ``-1`` there, as in SST-2), the hub ``validation`` split becomes ``test`` and a new
``validation`` split is carved from ``train`` (10 %). Splits tinylab makes itself are
deterministic, stratified and grouped (:mod:`tinylab.data.splits`). Each split is then
sub-sampled to ``data.train_size`` / ``validation_size`` / ``test_size``; a class left with no
training example is refused, one with fewer than :data:`FEW_EXAMPLES` is warned about.
"""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Sequence

import datasets
import numpy as np
import pandas as pd
from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

from tinylab.config import DataConfig
from tinylab.data.files import (LOCAL_SUFFIXES, asset_folder, check_has_text, clean_examples,
                                encode_labels, pick_columns, read_rotten_tomatoes, read_table)
from tinylab.data.splits import (SPLITS, drop_cross_split_duplicates, stratified_group_split,
                                 stratified_subsample)

__all__ = ["OFFLINE_TASK", "FEW_EXAMPLES", "load_task", "hub_spec", "load_hub"]

OFFLINE_TASK = "rotten_tomatoes_offline"
# Hub datasets that need a configuration name: "glue/sst2" -> load_dataset("glue", "sst2").
# Any other dataset takes the explicit form "path:config" (e.g. "nyu-mll/glue:sst2").
_CONFIG_DATASETS = {"glue", "super_glue", "wikitext", "tweet_eval"}
#: Fewer training examples than this in a class: a warning (the class is barely learnable).
FEW_EXAMPLES = 5


# --------------------------------------------------------------------------------------------
# Splits -> DatasetDict
# --------------------------------------------------------------------------------------------

def _to_dataset_dict(splits: dict[str, pd.DataFrame], names: list[str], cfg: DataConfig,
                     source: str):
    splits = drop_cross_split_duplicates(splits)
    sizes = {"train": cfg.train_size, "validation": cfg.validation_size, "test": cfg.test_size}
    pair = "text_pair" in next(iter(splits.values())).columns
    columns = ["text", *(["text_pair"] if pair else []), "label"]
    features = Features({**{c: Value("string") for c in columns[:-1]},
                         "label": ClassLabel(names=names)})
    out = {}
    for name in SPLITS:
        frame = stratified_subsample(splits[name], sizes[name], cfg.split_seed, salt=name)
        if len(frame) == 0:
            raise ValueError(f"{source}: the {name} split is empty (split sizes: "
                             f"{ {k: len(v) for k, v in splits.items()} }); the data needs at "
                             f"least a few examples per label for an 80/10/10 split")
        if name == "train":
            _check_class_counts(frame, names, source, cfg.train_size)
        out[name] = Dataset.from_pandas(frame[columns], features=features,
                                        preserve_index=False)
    return DatasetDict(out)


def _check_class_counts(train: pd.DataFrame, names: Sequence[str], source: str,
                        train_size: int | None = None) -> None:
    """Refuse a class with no training example (the model could never predict it, and every
    test example of it would count as an error); warn about classes with very few."""
    counts = train["label"].value_counts()
    per_class = {name: int(counts.get(i, 0)) for i, name in enumerate(names)}
    empty = [name for name, n in per_class.items() if n == 0]
    if empty:
        raise ValueError(f"{source}: the class(es) {', '.join(map(repr, empty))} have no "
                         f"training example (training examples per class: {per_class}); add "
                         f"examples, merge the class, or drop its rows" +
                         (f"; data.train_size={train_size} may have sampled it away, raise it"
                          if train_size is not None else ""))
    few = {name: n for name, n in per_class.items() if n < FEW_EXAMPLES}
    if few:
        warnings.warn(f"{source}: class(es) with fewer than {FEW_EXAMPLES} training examples: "
                      f"{few}; their scores will mostly be noise", stacklevel=3)


# --------------------------------------------------------------------------------------------
# Task loaders
# --------------------------------------------------------------------------------------------

def _load_offline_rt(cfg: DataConfig):
    raw = read_rotten_tomatoes(asset_folder("rotten-tomatoes"))
    reviews = raw[raw["category"].isin(["fresh", "rotten"])]  # "plot" rows are summaries
    frame = pd.DataFrame({"text": reviews["text"],
                          "label": (reviews["category"] == "fresh").astype(np.int64)})
    frame = clean_examples(frame, "rotten-tomatoes")
    splits = stratified_group_split(frame, cfg.split_seed)
    return _to_dataset_dict(splits, ["negative", "positive"], cfg, "rotten-tomatoes")


def _load_local_task(path: Path, cfg: DataConfig):
    source = str(path)
    raw = read_table(path)
    if raw.empty:
        raise ValueError(f"{source} contains no rows")
    frame = pick_columns(raw, cfg, source)
    check_has_text(frame, cfg, source)
    frame = frame[frame["text"].notna()]
    codes, names = encode_labels(frame["label"], None, source)
    frame = clean_examples(frame.assign(label=codes), source)
    present = sorted(set(frame["label"].tolist()))
    if len(present) < 2:
        only = names[present[0]] if present else "none"
        raise ValueError(f"{source}: every example has the label {only!r}; a classifier needs "
                         f"at least 2 classes (check data.label_column="
                         f"{cfg.label_column!r})")
    return _to_dataset_dict(stratified_group_split(frame, cfg.split_seed), names, cfg, source)


def hub_spec(name: str) -> tuple[str, str | None]:
    """``"glue/sst2"`` -> ``("glue", "sst2")``; ``"path:config"`` -> ``("path", "config")``."""
    if ":" in name:
        path, config = name.split(":", 1)
        return path, config or None
    head, _, rest = name.partition("/")
    if head in _CONFIG_DATASETS and rest:
        return head, rest
    return name, None


def load_hub(name: str, **kwargs):
    """``datasets.load_dataset`` with a clear error when the Hub cannot be reached."""
    path, config = hub_spec(name)
    try:
        return datasets.load_dataset(path, config, **kwargs)
    except (ConnectionError, OSError) as err:
        raise FileNotFoundError(
            f"could not load hub dataset {name!r} ({type(err).__name__}: {err}). Without the "
            f"Hugging Face Hub use data.task={OFFLINE_TASK} (or data.general_corpus=offline) "
            f"or a local csv/json/parquet file") from err


def _load_disk(path: Path):
    """A folder written by ``Dataset.save_to_disk`` / ``DatasetDict.save_to_disk``, as a
    ``DatasetDict`` (a single ``Dataset`` becomes its ``train`` split)."""
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError as err:
        raise ValueError(f"{path} is a folder but not one written by datasets' save_to_disk "
                         f"({str(err).splitlines()[0]}); give a csv/jsonl/parquet file or a "
                         f"save_to_disk folder") from None
    if isinstance(loaded, datasets.Dataset):
        loaded = datasets.DatasetDict({"train": loaded})
    return loaded


def _load_hub_task(name: str, cfg: DataConfig, raw=None):
    """A hub dataset (or, with ``raw``, an already loaded ``DatasetDict`` such as a
    ``save_to_disk`` folder) with its own splits, see the module docstring."""
    kind = "hub dataset" if raw is None else "dataset folder"
    raw = load_hub(name) if raw is None else raw
    if "train" not in raw:
        raise ValueError(f"{kind} {name!r} has no train split (splits: {list(raw)})")
    label_feature = raw["train"].features.get(cfg.label_column)
    names = list(label_feature.names) if isinstance(label_feature, datasets.ClassLabel) else None
    frames = {}
    for split, ds in raw.items():
        frame = pick_columns(ds.to_pandas(), cfg, f"{name} [{split}]")
        if split == "train":
            check_has_text(frame, cfg, f"{name} [{split}]")
        frames[split] = frame[frame["text"].notna()]

    def hidden(split: str) -> bool:  # absent, or every label is negative (GLUE's -1)
        if split not in frames:
            return True
        labels = frames[split]["label"]
        return pd.api.types.is_numeric_dtype(labels) and bool((labels < 0).all())

    if names is None:  # no declared label set: encode all labelled splits together
        labelled = pd.concat([f for s, f in frames.items() if not hidden(s)], keys=None)
        _, names = encode_labels(labelled["label"], None, name)
        if not pd.api.types.is_numeric_dtype(labelled["label"]):
            lookup = {n: i for i, n in enumerate(names)}
            frames = {s: f.assign(label=f["label"].astype(str).map(lookup)) if not hidden(s)
                      else f for s, f in frames.items()}
    for split, frame in frames.items():
        if not hidden(split):
            codes, _ = encode_labels(frame["label"], names, f"{name} [{split}]")
            frames[split] = clean_examples(frame.assign(label=codes), f"{name} [{split}]")

    if not hidden("validation") and not hidden("test"):
        splits = {s: frames[s] for s in SPLITS}  # the dataset's own splits (rotten_tomatoes)
    elif not hidden("validation"):
        # GLUE style: test labels hidden -> hub validation is our test, validation carved
        # from train (stratified, grouped, 10 % of train).
        carved = stratified_group_split(frames["train"], cfg.split_seed, (0.9, 0.1, 0.0))
        splits = {"train": carved["train"], "validation": carved["validation"],
                  "test": frames["validation"]}
    else:  # train only: split it 80/10/10 ourselves
        splits = stratified_group_split(frames["train"], cfg.split_seed)
    return _to_dataset_dict(splits, names, cfg, name)


def load_task(cfg: DataConfig):
    """The labelled task as a ``DatasetDict`` (``train``/``validation``/``test``; ``text``,
    ``label`` as ``ClassLabel``), sub-sampled to ``cfg.*_size`` (stratified, deterministic).

    >>> from tinylab.config import get_config
    >>> data = load_task(get_config("ci").data)                      # doctest: +SKIP
    >>> data["train"].features["label"].names                        # doctest: +SKIP
    ['negative', 'positive']
    """
    task = cfg.task
    if task == OFFLINE_TASK:
        return _load_offline_rt(cfg)
    path = Path(task).expanduser()
    if path.is_dir():
        return _load_hub_task(str(path), cfg, raw=_load_disk(path))
    if path.suffix.lower() in LOCAL_SUFFIXES or path.is_file():
        if not path.is_file():
            raise FileNotFoundError(f"task file {path} does not exist (data.task={task!r})")
        return _load_local_task(path, cfg)
    return _load_hub_task(task, cfg)
