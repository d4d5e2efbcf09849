"""The cache of trained models: keys, folders, saving and loading.

Fine-tuning the teacher and general distillation are the expensive, reusable results of a run,
so they are kept under ``tinylab.assets.cache_dir()`` (``$TINYLAB_CACHE``, default
``~/.cache/tinylab``) by a hash of the configuration that produced them::

    teachers/<teacher_cache_key(cfg)>/     the fine-tuned teacher   (finetune_teacher)
    general/<general_cache_key(cfg)>/      the general student      (general_student)
    teacher-outputs/                       teacher outputs runs share (shared_outputs_dir)

Each folder is a plain ``save_pretrained`` folder (model and tokenizer) plus ``history.json``
(the training history, also the sign that the folder is complete) and ``tinylab.json`` (what
it is, its key and the full configuration). Folders are written atomically by the main
process (:func:`tinylab.atomic.atomic_directory`): a reader sees no folder or a whole one.

A key covers every setting that changes the cached model (model names, recipe, data, seed,
precision) and the content of local files among them (:mod:`tinylab.fingerprint`); settings
added later enter a key only when they differ from their defaults, so older keys stay valid.
"""
from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from tinylab.assets import cache_dir
from tinylab.atomic import atomic_directory
from tinylab.config import Config, config_hash
from tinylab.device import resolve_device_and_precision
from tinylab.distill.history import History
from tinylab.fingerprint import input_fingerprints

__all__ = ["teacher_cache_key", "general_cache_key", "teacher_cache_setting", "teacher_folder",
           "general_folder", "is_cached", "cached_history", "save_cached_model",
           "shared_outputs_dir"]


# --------------------------------------------------------------------------------------------
# Keys
# --------------------------------------------------------------------------------------------

def teacher_cache_key(cfg: Config) -> str:
    """Hash of everything the fine-tuned teacher depends on (model, recipe, task data, seed),
    including the content of a local task file and of a local teacher folder."""
    d = cfg.data
    data = {k: getattr(d, k) for k in ("task", "text_column", "label_column", "max_length",
                                       "train_size", "validation_size", "test_size",
                                       "split_seed")}
    teacher = {k: v for k, v in dataclasses.asdict(cfg.teacher).items() if k != "general_model"}
    # v2: batches inside a length-grouped mega-batch come in random order (data.batching), so a
    # model trained by v1 code saw another order: not the same model.
    return config_hash("teacher-v2", teacher, data, cfg.seed, cfg.group_by_length,
                       # added later: only when set, so earlier keys stay valid
                       *([{"text_pair_column": d.text_pair_column}] if d.text_pair_column
                         else []),
                       *_precision_part(cfg), *_files_part(cfg, ("data.task", "teacher.model")))


def general_cache_key(cfg: Config) -> str:
    """Hash of everything the general student depends on, including the content of a local
    teacher folder, general-corpus file or pre-trained student folder."""
    d, loss = cfg.data, cfg.loss
    return config_hash(  # v2: see teacher_cache_key
        "general-v2", cfg.teacher.general_model or cfg.teacher.model, cfg.student, cfg.general,
        {k: getattr(loss, k) for k in ("layer_mapping", "embedding_weight", "attention_weight",
                                        "hidden_weight", "official_attention",
                                        "shared_projection")},
        {k: getattr(d, k) for k in ("general_corpus", "general_size", "general_max_length",
                                    "split_seed")},
        cfg.seed, cfg.group_by_length,
        # Added later: only when they differ from the defaults, so earlier keys stay valid.
        *([{"official_hidden": True}] if loss.official_hidden else []),
        *([{"text_column": d.text_column}] if d.text_column != "text" else []),
        *([{"general_exclude": d.general_exclude}] if d.general_exclude else []),
        # The cache stores teacher targets in float16; on the fly they are float32.
        *([{"cache_teacher_outputs": False}] if not teacher_cache_setting(cfg)["enabled"]
          else []),
        *_precision_part(cfg),
        *_files_part(cfg, ("teacher.general_model" if cfg.teacher.general_model
                           else "teacher.model", "data.general_corpus", "student.init")))


def teacher_cache_setting(cfg: Config) -> dict[str, Any]:
    """``enabled`` / ``why_disabled`` for the layer-distilling
    :class:`~tinylab.distill.teacher_outputs.TeacherOutputs`.

    The cache keeps each example unpadded and pads batches with zeros (hidden states) and the
    mask value (scores); the teacher run on the fly keeps the real values it computes at padded
    positions. The paper's masked losses never look there, so both give the same loss; the
    official-code switches (``loss.official_hidden``, ``loss.official_attention``) do look, so
    with either one on the teacher always runs on the fly - the official code's behaviour -
    and the result never depends on whether the cache fitted in memory.
    """
    if cfg.loss.official_hidden or cfg.loss.official_attention:
        return {"enabled": False, "why_disabled": "official_hidden/official_attention compare "
                                                  "padded positions, which the cache drops"}
    return {"enabled": cfg.cache_teacher_outputs}


def _files_part(cfg: Config, keys: tuple[str, ...]) -> tuple[Any, ...]:
    """The content of the local files among ``keys`` (:mod:`tinylab.fingerprint`): a task
    file with one label fixed, or a teacher folder with new weights, gives a new key. Nothing
    when every setting names an offline asset or a hub name, which keeps those keys as they
    were."""
    files = input_fingerprints(cfg, keys)
    return ({"files": files},) if files else ()


def _precision_part(cfg: Config) -> tuple[Any, ...]:
    """Mixed precision changes what training computes, so it is part of a cache key; fp32 adds
    nothing, which keeps the keys of every fp32 result made before the setting existed.
    ``auto`` enters as what it resolves to on this machine
    (:func:`tinylab.device.resolve_device_and_precision`: bf16 where it is native, fp32
    elsewhere), so ``auto`` and the explicit setting share one cache entry. An explicit
    setting enters as it is, unchecked: a result trained in bf16 elsewhere is still found on
    a machine that could not train it (training checks the hardware when it starts)."""
    precision = cfg.precision
    if precision == "auto":
        precision = resolve_device_and_precision(cfg.device, "auto")[1]
    return () if precision == "fp32" else ({"precision": precision},)


# --------------------------------------------------------------------------------------------
# Folders, saving and loading
# --------------------------------------------------------------------------------------------

def teacher_folder(cfg: Config) -> Path:
    """``cache_dir()/"teachers"/<teacher_cache_key(cfg)>``: where the fine-tuned teacher of
    ``cfg`` is (or will be) kept."""
    return cache_dir() / "teachers" / teacher_cache_key(cfg)


def general_folder(cfg: Config) -> Path:
    """``cache_dir()/"general"/<general_cache_key(cfg)>``: where the general student of
    ``cfg`` is (or will be) kept."""
    return cache_dir() / "general" / general_cache_key(cfg)


def shared_outputs_dir() -> Path:
    """``$TINYLAB_CACHE/teacher-outputs``: teacher outputs that runs on the same training set
    and teacher share, by notebook as much as by run. Pass it as
    ``RunOptions(shared_teacher_outputs=shared_outputs_dir())``: the first logits-only run
    (Hinton KD, notebook 03's temperature sweep) writes the teacher's logits there once, and
    every later one loads them instead of running the teacher
    (:class:`~tinylab.distill.teacher_outputs.TeacherOutputs`, ``shared_dir``). The files are
    named by a hash of the token ids, the teacher's weights and the precision, so a changed
    teacher or data set gets a new file; deleting the folder only costs a teacher pass."""
    return cache_dir() / "teacher-outputs"


def is_cached(folder: str | Path) -> bool:
    """Whether ``folder`` holds a complete cached model (its ``history.json`` is written last,
    inside the same atomic rename)."""
    return (Path(folder) / "history.json").exists()


def cached_history(folder: str | Path) -> History:
    """The training history saved with a cached model."""
    return History.from_json(Path(folder) / "history.json")


def save_cached_model(folder: str | Path, model, tokenizer, history: History, *, kind: str,
                      cfg: Config, accelerator) -> None:
    """Store a trained model in ``folder`` (:func:`teacher_folder` / :func:`general_folder`).

    The main process writes the model and tokenizer (``save_pretrained``), ``history.json``
    and ``tinylab.json`` (``{"kind": kind, "key": <folder name>, "config": cfg.to_dict()}``)
    into a temporary sibling and renames it into place; every process then waits for it, so
    none reads a half-written folder.
    """
    folder = Path(folder)
    if accelerator.is_main_process:
        with atomic_directory(folder) as tmp:
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
            history.to_json(tmp / "history.json")
            (tmp / "tinylab.json").write_text(json.dumps(
                {"kind": kind, "key": folder.name, "config": cfg.to_dict()}, indent=1))
    accelerator.wait_for_everyone()
