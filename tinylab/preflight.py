"""Before any work: every model and data source the settings name, checked to exist.

A run that names a file that is not there, a hub model while the hub is out of reach, a
sequence length longer than the teacher's positions or an empty general corpus would
otherwise fail minutes later, deep inside a library. :func:`check_sources` finds all of that
first, from the settings and the file system alone (no model or data is loaded), and raises
one ``ValueError`` naming every bad key. ``tinylab distill`` (:func:`tinylab.pipeline.run_pipeline`)
calls it first; the value checks of the settings themselves (types, ranges, choices) happen
earlier still, in :func:`tinylab.config.get_config`.
"""
from __future__ import annotations

import json
import os
from pathlib import Path

import datasets
from huggingface_hub import constants

from tinylab.assets import ASSETS, cache_dir
from tinylab.config import INIT_KEYWORDS, Config
from tinylab.data import LOCAL_SUFFIXES, OFFLINE_TASK, check_general_corpus_file, hub_spec

__all__ = ["check_sources"]


def _truthy(var: str) -> bool:
    return os.environ.get(var, "").strip().lower() in {"1", "true", "yes", "on"}


def _hub_cached(name: str, kind: str) -> bool:
    """Whether the Hugging Face cache holds anything for hub ``name`` (``kind``: ``"model"``
    or ``"dataset"``); only folder names are looked at, nothing is read or fetched."""
    if kind == "dataset":   # "glue/sst2" is the dataset "glue", configuration "sst2"
        name = hub_spec(name)[0]
    repo = name.replace("/", "--")
    hub = Path(constants.HF_HUB_CACHE)
    if any(hub.glob(f"{kind}s--{repo}")) or any(hub.glob(f"{kind}s--*--{repo}")):
        return True
    if kind == "dataset":   # the datasets library's own cache: "owner___name" folders
        flat = name.replace("/", "___")
        cache = Path(datasets.config.HF_DATASETS_CACHE)
        return any(cache.glob(flat)) or any(cache.glob(f"*___{flat}"))
    return False


def _positions(ref: str) -> tuple[int, Path] | None:
    """``max_position_embeddings`` from the ``config.json`` of a local model folder or a
    cached offline asset (``None`` for anything else; nothing is downloaded)."""

    if ref.startswith("offline:"):
        folder = cache_dir() / "assets" / ref[len("offline:"):]
    else:
        folder = Path(ref).expanduser()
    try:
        value = json.loads((folder / "config.json").read_text()).get("max_position_embeddings")
    except (OSError, ValueError, AttributeError):
        return None
    return (int(value), folder / "config.json") if isinstance(value, int) else None


def check_sources(cfg: Config) -> None:
    """Check, before any work, that every model and data set the settings name can be found.

    Each of ``teacher.model``, ``teacher.general_model``, ``student.init`` (a folder or hub
    name), ``augment.mlm_model``, ``data.task`` and ``data.general_corpus`` must be an
    ``offline:`` asset tinylab knows, an existing file or folder, or a hub name. A name with a
    data-file suffix (``reviews.csv``) that does not exist is refused. With ``$HF_HUB_OFFLINE``
    (or ``$HF_DATASETS_OFFLINE`` for data) set, a hub name must already be in the Hugging Face
    cache: otherwise loading it would fail only after retries, deep inside a library, so it is
    refused here, in one line saying where tinylab looked. Also checked: ``data.max_length``
    and ``data.general_max_length`` against the teacher's ``max_position_embeddings`` when its
    ``config.json`` is on disk, and ``$TINYLAB_CACHE`` naming a folder rather than a file.
    Raises one ``ValueError`` naming every bad key.
    """
    problems: list[str] = []
    root = cache_dir()
    if root.exists() and not root.is_dir():
        problems.append(f"the tinylab cache {root} (from $TINYLAB_CACHE) is a file; point "
                        f"$TINYLAB_CACHE at a folder")
    init = cfg.student.init
    models = {"teacher.model": cfg.teacher.model, "teacher.general_model":
              cfg.teacher.general_model, "augment.mlm_model": cfg.augment.mlm_model,
              "student.init": None if init in INIT_KEYWORDS else init}
    data = {"data.task": None if cfg.data.task == OFFLINE_TASK else cfg.data.task,
            "data.general_corpus": None if cfg.data.general_corpus == "offline"
            else cfg.data.general_corpus}
    offline = {"model": _truthy("HF_HUB_OFFLINE"),
               "dataset": _truthy("HF_HUB_OFFLINE") or _truthy("HF_DATASETS_OFFLINE")}
    for kind, refs in (("model", models), ("dataset", data)):
        for key, ref in refs.items():
            if not ref:
                continue
            path = Path(ref).expanduser()
            if ref.startswith("offline:"):
                if kind == "model" and ref[len("offline:"):] not in ASSETS:
                    problems.append(f"{key}={ref!r}: no offline asset of that name (known: "
                                    f"{', '.join('offline:' + a for a in ASSETS)})")
            elif path.exists():
                continue
            elif path.suffix.lower() in (*LOCAL_SUFFIXES, ".txt"):
                problems.append(f"{key}={ref!r}: file {path.resolve()} does not exist")
            elif offline[kind] and not _hub_cached(ref, kind):
                problems.append(
                    f"{key}={ref!r}: not a file or folder (looked for {path.resolve()}), not an "
                    f"offline: asset, and not in the Hugging Face cache, which is all there is "
                    f"with $HF_HUB_OFFLINE set; check the spelling, or give a path")
    teacher_refs = {"data.max_length": cfg.teacher.model,
                    "data.general_max_length": cfg.teacher.general_model or cfg.teacher.model}
    for key, ref in teacher_refs.items():
        found = _positions(ref)
        value = getattr(cfg.data, key.split(".")[1])
        if found and value > found[0]:
            problems.append(f"{key}={value} is more than the teacher's {found[0]} positions "
                            f"(max_position_embeddings in {found[1]}); use at most {found[0]}")
    if cfg.general.enabled:
        try:  # an empty or non-UTF-8 corpus file, or an unknown data.general_exclude source
            check_general_corpus_file(cfg.data)
        except ValueError as err:
            problems.append(str(err))
    if problems:
        raise ValueError("cannot start: " + "; ".join(problems))
