"""The stages of TinyBERT (Jiao et al. 2020, "TinyBERT learning") and the baselines they are judged against.

=====================================  ======================  =============================
function                               teacher                 loss (data)
=====================================  ======================  =============================
:func:`finetune_teacher`               -                       cross-entropy on gold labels
:func:`general_distillation` (GD)      pre-trained backbone    embedding + attention + hidden
                                                               (unlabelled general corpus)
:func:`task_distillation` stage a      fine-tuned teacher      embedding + attention + hidden
                                                               (augmented task data)
:func:`task_distillation` stage b      fine-tuned teacher      soft cross-entropy on the
                                                               teacher's predictions (same data)
:func:`train_baseline` ``"gold"``      -                       cross-entropy on gold labels
:func:`train_baseline` ``"kd"``        fine-tuned teacher      stage b alone, fresh student
:func:`train_baseline` ``"hinton"``    fine-tuned teacher      Hinton et al.: alpha CE(gold)
                                                               + (1-alpha) t^2 KL (labelled)
=====================================  ======================  =============================

Every stage is one call of :func:`tinylab.distill.loop.train_stage` with its own ``loss_fn``,
assembled from the parts in :mod:`~tinylab.distill.stage_parts`; students are trained in place
and each function returns a :class:`History`. The expensive, reusable results are cached by a
hash of the configuration that produced them (:mod:`~tinylab.distill.cache`): fine-tuned
teachers in ``teachers/<hash>/`` and general students in ``general/<hash>/`` under
``tinylab.assets.cache_dir()``.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from accelerate.utils import set_seed

from tinylab.config import Config, StageConfig
from tinylab.data import load_general_corpus
from tinylab.device import resolve_device
from tinylab.distill.cache import (cached_history, general_cache_key, general_folder, is_cached,
                                   save_cached_model, teacher_cache_key, teacher_cache_setting,
                                   teacher_folder)
from tinylab.distill.history import History
from tinylab.distill.loop import model_inputs, train_stage
from tinylab.distill.options import RunOptions, as_run_options
from tinylab.distill.stage_parts import (HEAD_PARAMETERS, accuracy_fn, frozen, layer_loss_fn,
                                         loss_module, prediction_stage, teacher_outputs_options,
                                         tokenizer_for, training_set)
from tinylab.distill.teacher_outputs import TeacherOutputs, expected_passes, merge_needs
from tinylab.losses import hinton_kd_loss, kd_kl_div
from tinylab.models import build_student, check_compatible, load_teacher

# The cache keys and teacher_cache_setting live in tinylab.distill.cache; they stay importable
# from here, where the stages that use them are.
__all__ = ["finetune_teacher", "general_distillation", "general_student", "task_distillation",
           "train_baseline", "teacher_cache_key", "general_cache_key", "BASELINES",
           "teacher_cache_setting"]

BASELINES = ("gold", "kd", "hinton")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _label_names(ds) -> list[str]:
    feature = ds.features.get("label")
    names = getattr(feature, "names", None)
    if not names:
        raise ValueError("the task data must have a ClassLabel 'label' column (tinylab.data."
                         "load_task gives one)")
    return list(names)


def _seeded_head(student, seed: int):
    """Re-initialise the classifier from a generator seeded with ``seed``.

    A general student is the same whether it was just trained or loaded from the cache, but
    its (task-specific, never trained in GD) head would otherwise depend on how much of the
    global random stream was used before; a seeded head makes both paths give equal students.
    """
    generator = torch.Generator().manual_seed(seed)
    head = student.classifier
    with torch.no_grad():
        head.weight.copy_(torch.randn(head.weight.shape, generator=generator)
                          * student.config.initializer_range)
        head.bias.zero_()
    return student


def _teacher_stage(cfg: Config) -> StageConfig:
    t = cfg.teacher
    return StageConfig(epochs=t.epochs, learning_rate=t.learning_rate, batch_size=t.batch_size,
                       warmup_ratio=t.warmup_ratio, weight_decay=t.weight_decay,
                       max_steps=t.max_steps, schedule="linear", eval_every=t.eval_every,
                       patience=t.patience)


def _device(cfg: Config, run: RunOptions):
    """Where results go: the run's accelerator's device, else the one ``cfg.device`` names."""
    return run.accelerator.device if run.accelerator is not None else resolve_device(cfg.device)


# --------------------------------------------------------------------------------------------
# Teacher fine-tuning
# --------------------------------------------------------------------------------------------

def finetune_teacher(cfg: Config, data, *, cache: bool = True, run: RunOptions | None = None):
    """Fine-tune the teacher backbone on the task; returns ``(model, tokenizer, History)``.

    TinyBERT's task-specific distillation needs a teacher that already solves the task (the paper's
    "TinyBERT learning"; forgetting this step is a classic reason for poor reproductions). The backbone
    ``cfg.teacher.model`` gets a new classification head and is trained with cross-entropy on
    the gold labels of ``data["train"]`` (``cfg.teacher``: epochs, lr, batch size, linear
    warm-up/decay), evaluated on ``data["validation"]`` after every epoch.

    ``data``: the ``DatasetDict`` of :func:`tinylab.data.load_task`. With ``cache`` the result
    is stored under ``cache_dir()/"teachers"/<teacher_cache_key(cfg)>``
    (:func:`~tinylab.distill.cache.teacher_folder`) and later calls with
    the same configuration load it instead of training (the history comes along). The model is
    returned in eval mode, on ``run.accelerator.device`` (default: the device of
    ``cfg.device``), whether it was trained now or loaded from the cache: send batches to
    ``model.device``. ``run``: :class:`~tinylab.distill.options.RunOptions` (checkpoints,
    resume, callbacks, progress bar, accelerator).
    """
    run = as_run_options(run)
    device = _device(cfg, run)
    labels = _label_names(data["train"])
    folder = teacher_folder(cfg)
    if cache and is_cached(folder):
        model, tokenizer = load_teacher(folder)
        cached = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if cached != labels:
            raise ValueError(f"the cached teacher in {folder} predicts labels {cached} but the "
                             f"data has {labels}; delete that folder to fine-tune again")
        return model.to(device).eval(), tokenizer, cached_history(folder)

    run = run.with_accelerator(cfg)
    accelerator = run.accelerator
    set_seed(cfg.seed)  # the new classification head is drawn from the seeded generator
    model, tokenizer = load_teacher(cfg.teacher.model, num_labels=len(labels), id2label=labels)
    train = training_set(data["train"], tokenizer, cfg.data.max_length, labels=True)

    def loss_fn(m, batch):
        logits = m["teacher"](**model_inputs(batch)).logits
        return {"total": F.cross_entropy(logits, batch["labels"])}

    model.train()
    history = train_stage(
        "teacher", modules={"teacher": model}, loss_fn=loss_fn, train=train,
        tokenizer=tokenizer, stage=_teacher_stage(cfg), seed=cfg.seed,
        evaluate=accuracy_fn(model, data.get("validation"), tokenizer, cfg, accelerator),
        run=run, group_by_length=cfg.group_by_length,
        info={"model": cfg.teacher.model, "cache_key": folder.name})
    if cache:
        save_cached_model(folder, model, tokenizer, history, kind="teacher", cfg=cfg,
                          accelerator=accelerator)
    return model.to(device).eval(), tokenizer, history


# --------------------------------------------------------------------------------------------
# General distillation
# --------------------------------------------------------------------------------------------

def general_distillation(cfg: Config, teacher, student, corpus, *, tokenizer=None,
                         run: RunOptions | None = None) -> History:
    """General distillation (the paper's "TinyBERT learning", first stage): train ``student`` in place.

    ``teacher``: the *pre-trained, not fine-tuned* backbone (``cfg.teacher.general_model``,
    default the backbone ``cfg.teacher.model``; its classification head is never used).
    ``corpus``: unlabelled text (a ``Dataset`` with ``text``, e.g. from
    :func:`tinylab.data.load_general_corpus`). Loss: embedding + attention + hidden-state MSE
    (L_embd, L_attn, L_hidn) through ``TinyBertLoss(stage="general")``; no prediction loss (there are no
    task predictions to imitate yet). The student's pooler and classifier stay frozen.
    Budget: ``cfg.general``; max length ``cfg.data.general_max_length``.
    The paper runs this on 2.5B words of Wikipedia; the course corpus is ~400k words, so here
    GD mostly teaches the mechanics (and aligns the student's layers with the teacher's).
    """
    tokenizer = tokenizer_for(teacher, tokenizer)
    run = as_run_options(run).with_accelerator(cfg)
    check_compatible(teacher, student, tokenizer=tokenizer,
                     need_attention=cfg.loss.attention_weight != 0,
                     layer_mapping=cfg.loss.layer_mapping)
    train = training_set(corpus, tokenizer, cfg.data.general_max_length, labels=False)
    criterion = loss_module(cfg, teacher, student, "general")
    targets = TeacherOutputs(teacher, train, tokenizer, criterion.teacher_layers("general"),
                             passes=expected_passes(cfg.general, len(train),
                                                    run.accelerator.num_processes),
                             **teacher_cache_setting(cfg), **teacher_outputs_options(cfg, run))
    student.train()
    with frozen(student, HEAD_PARAMETERS):
        history = train_stage(
            "general", modules={"student": student, "projections": criterion},
            loss_fn=layer_loss_fn(targets, "general", criterion.active_terms("general")),
            train=train, tokenizer=tokenizer, stage=cfg.general, seed=cfg.seed, run=run,
            group_by_length=cfg.group_by_length)
    history["general"].info["teacher"] = targets.summary()
    return history


def general_student(cfg: Config, *, num_labels: int | None = None,
                    id2label: Mapping[int, str] | Sequence[str] | None = None, corpus=None,
                    teacher=None, tokenizer=None, cache: bool = True,
                    run: RunOptions | None = None):
    """The general TinyBERT of this configuration: ``(student, History)``, cached.

    Builds the student (``cfg.student``, initialised per ``cfg.student.init``) from the
    pre-trained teacher, runs :func:`general_distillation` on ``corpus`` (default
    ``load_general_corpus(cfg.data)``) and stores the result in
    ``cache_dir()/"general"/<general_cache_key(cfg)>``; later calls (other notebooks,
    benchmarks, the command line) load it. The loaded student gets a fresh classification head
    for ``num_labels`` / ``id2label``. ``cfg.general.enabled=False`` skips GD and returns the
    freshly built student with an empty history. The student is returned in training mode on
    ``run.accelerator.device`` (default: the device of ``cfg.device``).
    """
    run = as_run_options(run)
    device = _device(cfg, run)

    if teacher is None:
        teacher, loaded_tok = load_teacher(cfg.teacher.general_model or cfg.teacher.model,
                                           num_labels=num_labels, id2label=id2label)
        tokenizer = tokenizer or loaded_tok
    folder = general_folder(cfg)
    labels = {"num_labels": num_labels, "id2label": id2label}
    if cache and cfg.general.enabled and is_cached(folder):
        spec = dataclasses.replace(cfg.student, init=str(folder))
        student = _seeded_head(build_student(teacher, spec, **labels), cfg.seed)
        return student.to(device), cached_history(folder)

    set_seed(cfg.seed)  # the student's random initialisation is part of the experiment
    student = build_student(teacher, cfg.student, **labels)
    if not cfg.general.enabled:
        return student.to(device), History()
    run = run.with_accelerator(cfg)
    accelerator = run.accelerator
    tokenizer = tokenizer_for(teacher, tokenizer)
    if corpus is None:
        corpus = load_general_corpus(cfg.data)
    history = general_distillation(cfg, teacher, student, corpus, tokenizer=tokenizer, run=run)
    if cache:
        save_cached_model(folder, student, tokenizer, history, kind="general student", cfg=cfg,
                          accelerator=accelerator)
    return _seeded_head(student, cfg.seed).to(device), history


# --------------------------------------------------------------------------------------------
# Task-specific distillation
# --------------------------------------------------------------------------------------------

def task_distillation(cfg: Config, teacher, student, train, validation=None, *, tokenizer=None,
                      run: RunOptions | None = None) -> dict[str, History]:
    """Task-specific distillation (the paper's "TinyBERT learning", second stage); trains ``student`` in place.

    ``teacher``: the *fine-tuned* teacher (:func:`finetune_teacher`). ``student``: usually the
    general student (:func:`general_student`). ``train``: the (augmented) task texts, e.g.
    :func:`tinylab.augment.augment_dataset` output; its ``label`` column, if any, is dropped -
    every target comes from the teacher, which is what lets augmented sentences (which have no
    gold label) be used at all. ``validation``: labelled data for the accuracy curve.

    * stage a, ``"intermediate"`` (``cfg.task_intermediate``): embedding + attention + hidden
      losses against the fine-tuned teacher; new projections W_e, W_h; head frozen.
    * stage b, ``"prediction"`` (``cfg.task_prediction``): soft cross-entropy between the
      teacher's and the student's predictions (L_pred, temperature ``cfg.loss.temperature``).

    Returns ``{"intermediate": History, "prediction": History}`` (disabled stages left out).
    The final student is kept (no selection on the validation set: the test numbers stay
    honest). The official code also carries its ``fit_dense`` projection over from the general
    checkpoint; here stage a starts new projections, since the fine-tuned teacher's hidden
    space is not the pre-trained one the GD projections were fitted to. ``run``: the
    :class:`~tinylab.distill.options.RunOptions`; each stage checkpoints into its own
    sub-folder of ``run.checkpoint_dir`` (``intermediate/``, ``prediction/``).
    """
    tokenizer = tokenizer_for(teacher, tokenizer)
    run = as_run_options(run).with_accelerator(cfg)
    accelerator = run.accelerator
    a, b = cfg.task_intermediate, cfg.task_prediction
    ds = training_set(train, tokenizer, cfg.data.max_length, labels=False)
    world = accelerator.num_processes
    evaluate = accuracy_fn(student, validation, tokenizer, cfg, accelerator)
    common = dict(train=ds, tokenizer=tokenizer, seed=cfg.seed,
                  group_by_length=cfg.group_by_length)
    cache_args = dict(**teacher_cache_setting(cfg), **teacher_outputs_options(cfg, run))
    criterion = loss_module(cfg, teacher, student, "intermediate")
    need_a = criterion.teacher_layers("intermediate")
    need_b = criterion.teacher_layers("prediction")
    # One teacher-output source serves both stages: a cache built once if it fits, otherwise
    # forward passes whose logits are kept, so stage b re-uses what stage a computed.
    targets = TeacherOutputs(
        teacher, ds, tokenizer,
        merge_needs(*([need_a] if a.enabled else []), *([need_b] if b.enabled else [])),
        passes=expected_passes(a, len(ds), world) + expected_passes(b, len(ds), world),
        **cache_args)
    out: dict[str, History] = {}

    if a.enabled:
        check_compatible(teacher, student, tokenizer=tokenizer,
                         need_attention=cfg.loss.attention_weight != 0,
                         layer_mapping=cfg.loss.layer_mapping)
        student.train()
        with frozen(student, HEAD_PARAMETERS):
            out["intermediate"] = train_stage(
                "intermediate", modules={"student": student, "projections": criterion},
                loss_fn=layer_loss_fn(targets.subset(need_a), "intermediate",
                                      criterion.active_terms("intermediate")),
                stage=a, run=run.sub("intermediate"), **common)
        out["intermediate"]["intermediate"].info["teacher"] = targets.summary()

    if b.enabled:
        if not a.enabled:  # stage a checked the pair; alone, stage b still needs the labels
            check_compatible(teacher, student, tokenizer=tokenizer, need_attention=False,
                             layer_mapping=None)
        out["prediction"] = prediction_stage(student, criterion, targets, need_b, b,
                                             evaluate=evaluate, run=run, **common)
    return out


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------

def baseline_targets(cfg: Config, teacher, data, *, tokenizer=None, passes: float = 1.0,
                     run: RunOptions | None = None) -> TeacherOutputs:
    """The teacher's logits on ``data["train"]``, computed once, for several
    :func:`train_baseline` runs on the same labelled set (``targets=``).

    A logit does not depend on the distillation temperature or on alpha: only the loss does.
    So a temperature sweep computes the teacher's pass once and reuses it for every run;
    ``passes``: how often the runs together read each example (the cache is kept in memory
    when that is more than once). Every run must use the same ``cfg.data.max_length`` and
    training set.
    """
    run = as_run_options(run).with_accelerator(cfg)
    tokenizer = tokenizer_for(teacher, tokenizer)
    ds = training_set(data["train"], tokenizer, cfg.data.max_length, labels=True)
    return TeacherOutputs(teacher, ds, tokenizer, {"hidden_states": [], "attentions": [],
                                                   "logits": True},
                          passes=passes, enabled=cfg.cache_teacher_outputs,
                          **teacher_outputs_options(cfg, run))


def train_baseline(cfg: Config, teacher, student, data, kind: str = "gold", *,
                   stage: StageConfig | None = None, tokenizer=None,
                   run: RunOptions | None = None,
                   targets: TeacherOutputs | None = None) -> History:
    """Train ``student`` in place the simple way, for a fair comparison with TinyBERT.

    * ``kind="gold"``: cross-entropy on the gold labels of ``data["train"]`` - no teacher at
      all (``teacher`` may be ``None`` if ``tokenizer`` is given).
    * ``kind="kd"``: logits only, TinyBERT's prediction stage from a fresh student:
      ``KL(softmax(z_T/t) || softmax(z_S/t)) * t^2`` with ``t = cfg.loss.temperature`` and no
      gold labels. On the same (augmented) data as task distillation this is TinyBERT
      without its transformer-layer stage - the paper's "w/o Trm" ablation. It is *not*
      Hinton et al.'s recipe (that is ``"hinton"``).
    * ``kind="hinton"``: the classic recipe of Hinton et al. 2015,
      ``alpha * CE(gold) + (1 - alpha) * t^2 * KL`` with ``t = cfg.kd.temperature`` and
      ``alpha = cfg.kd.alpha`` (:func:`tinylab.losses.hinton_kd_loss`); needs gold labels,
      so ``data["train"]`` is the labelled set, not the augmented one.

    Same loop, same seed, and by default the same budget and optimiser settings as TinyBERT's
    prediction stage (``cfg.task_prediction``); pass ``stage`` for another budget. ``data``:
    a mapping with ``"train"`` (texts; labels needed for ``"gold"``) and ``"validation"``.
    The history's stage is named ``kind``. ``targets``: the teacher's logits from
    :func:`baseline_targets`, shared by several runs on the same labelled set (``"kd"`` and
    ``"hinton"``); by default each run computes its own.
    """
    run = as_run_options(run)
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline kind {kind!r}; choose one of {BASELINES}")
    if kind != "gold" and teacher is None:
        raise ValueError(f"the {kind!r} baseline needs the fine-tuned teacher")

    stage = stage or dataclasses.replace(cfg.task_prediction, enabled=True)
    tokenizer = tokenizer_for(teacher if teacher is not None else student, tokenizer)
    run = run.with_accelerator(cfg)
    accelerator = run.accelerator
    ds = training_set(data["train"], tokenizer, cfg.data.max_length, labels=kind != "kd")
    info: dict[str, Any] = {"baseline": kind}
    if kind == "hinton":
        info.update(temperature=cfg.kd.temperature, alpha=cfg.kd.alpha)

    if kind == "gold":
        def loss_fn(m, batch):
            logits = m["student"](**model_inputs(batch)).logits
            return {"total": F.cross_entropy(logits, batch["labels"])}
    else:
        # Class c of the teacher must be class c of the student (the KD loss pairs them).
        check_compatible(teacher, student, tokenizer=tokenizer, need_attention=False,
                         layer_mapping=None)
        if targets is None:
            targets = TeacherOutputs(teacher, ds, tokenizer, {"hidden_states": [],
                                                              "attentions": [], "logits": True},
                                     passes=expected_passes(stage, len(ds),
                                                            accelerator.num_processes),
                                     enabled=cfg.cache_teacher_outputs,
                                     **teacher_outputs_options(cfg, run))
        elif len(targets) != len(ds):
            raise ValueError(f"targets cover {len(targets)} examples, the training set has "
                             f"{len(ds)}: build them with baseline_targets on the same data")

        if kind == "kd":
            def loss_fn(m, batch):
                logits = m["student"](**model_inputs(batch)).logits
                kd = kd_kl_div(logits, targets(batch)["logits"], cfg.loss.temperature)
                return {"kd": kd, "total": kd}
        else:
            def loss_fn(m, batch):
                logits = m["student"](**model_inputs(batch)).logits
                return hinton_kd_loss(logits, targets(batch)["logits"], batch["labels"],
                                      cfg.kd.temperature, cfg.kd.alpha)

    student.train()
    history = train_stage(
        kind, modules={"student": student}, loss_fn=loss_fn, train=ds, tokenizer=tokenizer,
        stage=stage, seed=cfg.seed, evaluate=accuracy_fn(student, data.get("validation"),
                                                         tokenizer, cfg, accelerator),
        run=run, group_by_length=cfg.group_by_length, info=info)
    if kind != "gold":
        history[kind].info["teacher"] = targets.summary()
    return history
