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

Every stage is one call of :func:`tinylab.distill.loop.train_stage` with its own ``loss_fn``;
students are trained in place and each function returns a :class:`History`. The expensive,
reusable results are cached by a hash of the configuration that produced them, under
``tinylab.assets.cache_dir()``: fine-tuned teachers in ``teachers/<hash>/`` and general
students in ``general/<hash>/`` (both plain ``save_pretrained`` folders plus ``history.json``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import json
from typing import Any, Callable, Iterator, Mapping, Sequence

import torch
import torch.nn.functional as F

from tinylab.config import Config, StageConfig, config_hash
from tinylab.atomic import atomic_directory
from tinylab.distill.history import History
from tinylab.distill.loop import EXAMPLE_INDEX, MODEL_INPUTS, model_inputs, train_stage
from tinylab.distill.options import RunOptions, as_run_options
from tinylab.distill.teacher_outputs import TeacherOutputs, expected_passes, merge_needs

__all__ = ["finetune_teacher", "general_distillation", "general_student", "task_distillation",
           "train_baseline", "teacher_cache_key", "general_cache_key", "BASELINES",
           "teacher_cache_setting"]

BASELINES = ("gold", "kd", "hinton")
# Parts of BertForSequenceClassification that only the prediction layer uses: frozen while the
# intermediate layers are distilled (nothing would train them, and data-parallel training
# refuses parameters that get no gradient).
HEAD_PARAMETERS = ("bert.pooler.", "classifier.")


# --------------------------------------------------------------------------------------------
# Helpers
# --------------------------------------------------------------------------------------------

def _tokenizer_for(model, tokenizer):
    """The given tokenizer, else the one saved next to ``model`` (students share the teacher's)."""
    if tokenizer is not None:
        return tokenizer
    from transformers import AutoTokenizer

    source = getattr(model, "name_or_path", "") or ""
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError):
        raise ValueError(f"no tokenizer given and none found next to the teacher "
                         f"(name_or_path={source!r}); pass tokenizer=...") from None


def _training_set(ds, tokenizer, max_length: int, *, labels: bool):
    """Tokenised copy of ``ds`` with only the model inputs, ``label`` if ``labels`` (gold
    targets) and ``example_idx`` (row number, to find cached teacher outputs)."""
    from tinylab.data import tokenize

    if "input_ids" not in ds.column_names:
        ds = tokenize(ds, tokenizer, max_length)
    if labels and "label" not in ds.column_names:
        raise ValueError(f"training on gold labels needs a 'label' column (columns: "
                         f"{ds.column_names})")
    keep = [c for c in MODEL_INPUTS if c in ds.column_names] + (["label"] if labels else [])
    ds = ds.select_columns(keep)
    return ds.add_column(EXAMPLE_INDEX, list(range(len(ds))))


def _label_names(ds) -> list[str]:
    feature = ds.features.get("label")
    names = getattr(feature, "names", None)
    if not names:
        raise ValueError("the task data must have a ClassLabel 'label' column (tinylab.data."
                         "load_task gives one)")
    return list(names)


@contextlib.contextmanager
def _frozen(model: torch.nn.Module, prefixes: Sequence[str]) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on parameters whose name starts with a prefix."""
    changed = [p for n, p in model.named_parameters() if n.startswith(tuple(prefixes))
               and p.requires_grad]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


def _accuracy_fn(model, validation, tokenizer, cfg: Config, accelerator
                 ) -> Callable[[], dict[str, float]] | None:
    """Validation accuracy and macro-F1 of ``model`` (gold labels), for the loop's evaluations:
    every process predicts its share and the predictions are gathered."""
    if validation is None:
        return None
    from tinylab.evaluate import evaluate_model

    def evaluate() -> dict[str, float]:
        m = evaluate_model(model, validation, tokenizer, batch_size=cfg.eval_batch_size,
                           max_length=cfg.data.max_length, accelerator=accelerator)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    return evaluate


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


def teacher_cache_setting(cfg: Config) -> dict[str, Any]:
    """``enabled`` / ``why_disabled`` for the layer-distilling :class:`TeacherOutputs`.

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


def _teacher_stage(cfg: Config) -> StageConfig:
    t = cfg.teacher
    return StageConfig(epochs=t.epochs, learning_rate=t.learning_rate, batch_size=t.batch_size,
                       warmup_ratio=t.warmup_ratio, weight_decay=t.weight_decay,
                       max_steps=t.max_steps, schedule="linear", eval_every=t.eval_every,
                       patience=t.patience)


def _device(cfg: Config, run: RunOptions):
    """Where results go: the run's accelerator's device, else the one ``cfg.device`` names."""
    from tinylab.device import resolve_device

    return run.accelerator.device if run.accelerator is not None else resolve_device(cfg.device)


def _cache_options(cfg: Config, run: RunOptions) -> dict[str, Any]:
    """The :class:`TeacherOutputs` arguments that come from the run, not the method."""
    return dict(memory_budget=run.memory_budget, batch_size=cfg.eval_batch_size,
                accelerator=run.accelerator, progress=run.progress,
                shared_dir=run.shared_teacher_outputs)


def _loss_module(cfg: Config, teacher, student, stage: str):
    """``TinyBertLoss`` for the config; projections a stage does not use are frozen."""
    from tinylab.losses import TinyBertLoss

    # The projections W_e, W_h start random: draw them from the seed, not from whatever the
    # global random stream holds at this point (cached and fresh runs must agree).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        criterion = TinyBertLoss.from_config(cfg.loss, student.config, teacher.config)
    criterion.projections.train_only(criterion.active_terms(stage))
    return criterion


def _layer_loss_fn(targets: Callable, stage: str, terms: Sequence[str]):
    """Transformer-layer distillation step (GD and TD stage a), L_embd + L_attn + L_hidn."""
    def loss_fn(m, batch):
        student_out = m["student"](**model_inputs(batch), output_hidden_states=True,
                                   output_attentions=True)
        teacher_out = targets(batch)                      # cached, or one inference-mode pass
        losses = m["projections"](student_out, teacher_out, batch["attention_mask"], stage=stage)
        return {k: losses[k] for k in [*terms, "total"]}
    return loss_fn


# --------------------------------------------------------------------------------------------
# Teacher fine-tuning
# --------------------------------------------------------------------------------------------

def teacher_cache_key(cfg: Config) -> str:
    """Hash of everything the fine-tuned teacher depends on (model, recipe, task data, seed),
    including the content of a local task file and of a local teacher folder."""
    d = cfg.data
    data = {k: getattr(d, k) for k in ("task", "text_column", "label_column", "max_length",
                                       "train_size", "validation_size", "test_size",
                                       "split_seed")}
    teacher = {k: v for k, v in dataclasses.asdict(cfg.teacher).items() if k != "general_model"}
    # v2: batches inside a length-grouped mega-batch come in random order (data.py), so a
    # model trained by v1 code saw another order: not the same model.
    return config_hash("teacher-v2", teacher, data, cfg.seed, cfg.group_by_length,
                       *_precision_part(cfg), *_files_part(cfg, ("data.task", "teacher.model")))


def _files_part(cfg: Config, keys: tuple[str, ...]) -> tuple[Any, ...]:
    """The content of the local files among ``keys`` (:mod:`tinylab.fingerprint`): a task
    file with one label fixed, or a teacher folder with new weights, gives a new key. Nothing
    when every setting names an offline asset or a hub name, which keeps those keys as they
    were."""
    from tinylab.fingerprint import input_fingerprints

    files = input_fingerprints(cfg, keys)
    return ({"files": files},) if files else ()


def _precision_part(cfg: Config) -> tuple[Any, ...]:
    """Mixed precision changes what training computes, so it is part of a cache key; fp32 adds
    nothing, which keeps the keys of every fp32 result made before the setting existed.
    ``auto`` enters as what it resolves to on this machine (bf16 here, fp32 on a CPU without
    bf16), so ``auto`` and the explicit setting share one cache entry."""
    from tinylab.device import resolve_device, resolve_precision

    precision = cfg.precision
    if precision == "auto":
        precision = resolve_precision("auto", resolve_device(cfg.device))
    return () if precision == "fp32" else ({"precision": precision},)


def finetune_teacher(cfg: Config, data, *, cache: bool = True, run: RunOptions | None = None):
    """Fine-tune the teacher backbone on the task; returns ``(model, tokenizer, History)``.

    TinyBERT's task-specific distillation needs a teacher that already solves the task (the paper's
    "TinyBERT learning"; forgetting this step is a classic reason for poor reproductions). The backbone
    ``cfg.teacher.model`` gets a new classification head and is trained with cross-entropy on
    the gold labels of ``data["train"]`` (``cfg.teacher``: epochs, lr, batch size, linear
    warm-up/decay), evaluated on ``data["validation"]`` after every epoch.

    ``data``: the ``DatasetDict`` of :func:`tinylab.data.load_task`. With ``cache`` the result
    is stored under ``cache_dir()/"teachers"/<teacher_cache_key(cfg)>`` and later calls with
    the same configuration load it instead of training (the history comes along). The model is
    returned in eval mode, on ``run.accelerator.device`` (default: the device of
    ``cfg.device``), whether it was trained now or loaded from the cache: send batches to
    ``model.device``. ``run``: :class:`~tinylab.distill.options.RunOptions` (checkpoints,
    resume, callbacks, progress bar, accelerator).
    """
    from tinylab.assets import cache_dir
    from tinylab.models import load_teacher

    run = as_run_options(run)
    device = _device(cfg, run)
    labels = _label_names(data["train"])
    folder = cache_dir() / "teachers" / teacher_cache_key(cfg)
    if cache and (folder / "history.json").exists():
        model, tokenizer = load_teacher(folder)
        cached = [model.config.id2label[i] for i in range(model.config.num_labels)]
        if cached != labels:
            raise ValueError(f"the cached teacher in {folder} predicts labels {cached} but the "
                             f"data has {labels}; delete that folder to fine-tune again")
        return model.to(device).eval(), tokenizer, History.from_json(folder / "history.json")

    from accelerate.utils import set_seed

    run = run.with_accelerator(cfg)
    accelerator = run.accelerator
    set_seed(cfg.seed)  # the new classification head is drawn from the seeded generator
    model, tokenizer = load_teacher(cfg.teacher.model, num_labels=len(labels), id2label=labels)
    train = _training_set(data["train"], tokenizer, cfg.data.max_length, labels=True)

    def loss_fn(m, batch):
        logits = m["teacher"](**model_inputs(batch)).logits
        return {"total": F.cross_entropy(logits, batch["labels"])}

    model.train()
    history = train_stage(
        "teacher", modules={"teacher": model}, loss_fn=loss_fn, train=train,
        tokenizer=tokenizer, stage=_teacher_stage(cfg), seed=cfg.seed,
        evaluate=_accuracy_fn(model, data.get("validation"), tokenizer, cfg, accelerator),
        run=run, group_by_length=cfg.group_by_length,
        info={"model": cfg.teacher.model, "cache_key": folder.name})
    if cache:
        if accelerator.is_main_process:
            with atomic_directory(folder) as tmp:
                model.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                history.to_json(tmp / "history.json")
                (tmp / "tinylab.json").write_text(json.dumps(
                    {"kind": "teacher", "key": folder.name, "config": cfg.to_dict()}, indent=1))
        accelerator.wait_for_everyone()
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
    from tinylab.models import check_compatible

    tokenizer = _tokenizer_for(teacher, tokenizer)
    run = as_run_options(run).with_accelerator(cfg)
    check_compatible(teacher, student, tokenizer=tokenizer,
                     need_attention=cfg.loss.attention_weight != 0,
                     layer_mapping=cfg.loss.layer_mapping)
    train = _training_set(corpus, tokenizer, cfg.data.general_max_length, labels=False)
    criterion = _loss_module(cfg, teacher, student, "general")
    targets = TeacherOutputs(teacher, train, tokenizer, criterion.teacher_layers("general"),
                             passes=expected_passes(cfg.general, len(train),
                                                    run.accelerator.num_processes),
                             **teacher_cache_setting(cfg), **_cache_options(cfg, run))
    student.train()
    with _frozen(student, HEAD_PARAMETERS):
        history = train_stage(
            "general", modules={"student": student, "projections": criterion},
            loss_fn=_layer_loss_fn(targets, "general", criterion.active_terms("general")),
            train=train, tokenizer=tokenizer, stage=cfg.general, seed=cfg.seed, run=run,
            group_by_length=cfg.group_by_length)
    history["general"].info["teacher"] = targets.summary()
    return history


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
        # The cache stores teacher targets in float16; on the fly they are float32.
        *([{"cache_teacher_outputs": False}] if not teacher_cache_setting(cfg)["enabled"]
          else []),
        *_precision_part(cfg),
        *_files_part(cfg, ("teacher.general_model" if cfg.teacher.general_model
                           else "teacher.model", "data.general_corpus", "student.init")))


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
    from accelerate.utils import set_seed

    from tinylab.assets import cache_dir
    from tinylab.models import build_student, load_teacher

    run = as_run_options(run)
    device = _device(cfg, run)

    if teacher is None:
        teacher, loaded_tok = load_teacher(cfg.teacher.general_model or cfg.teacher.model,
                                           num_labels=num_labels, id2label=id2label)
        tokenizer = tokenizer or loaded_tok
    folder = cache_dir() / "general" / general_cache_key(cfg)
    labels = {"num_labels": num_labels, "id2label": id2label}
    if cache and cfg.general.enabled and (folder / "history.json").exists():
        spec = dataclasses.replace(cfg.student, init=str(folder))
        student = _seeded_head(build_student(teacher, spec, **labels), cfg.seed)
        return student.to(device), History.from_json(folder / "history.json")

    set_seed(cfg.seed)  # the student's random initialisation is part of the experiment
    student = build_student(teacher, cfg.student, **labels)
    if not cfg.general.enabled:
        return student.to(device), History()
    run = run.with_accelerator(cfg)
    accelerator = run.accelerator
    tokenizer = _tokenizer_for(teacher, tokenizer)
    if corpus is None:
        from tinylab.data import load_general_corpus

        corpus = load_general_corpus(cfg.data)
    history = general_distillation(cfg, teacher, student, corpus, tokenizer=tokenizer, run=run)
    if cache:
        if accelerator.is_main_process:
            with atomic_directory(folder) as tmp:
                student.save_pretrained(tmp)
                tokenizer.save_pretrained(tmp)
                history.to_json(tmp / "history.json")
                (tmp / "tinylab.json").write_text(json.dumps(
                    {"kind": "general student", "key": folder.name, "config": cfg.to_dict()},
                    indent=1))
        accelerator.wait_for_everyone()
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
    from tinylab.models import check_compatible

    tokenizer = _tokenizer_for(teacher, tokenizer)
    run = as_run_options(run).with_accelerator(cfg)
    accelerator = run.accelerator
    a, b = cfg.task_intermediate, cfg.task_prediction
    ds = _training_set(train, tokenizer, cfg.data.max_length, labels=False)
    world = accelerator.num_processes
    evaluate = _accuracy_fn(student, validation, tokenizer, cfg, accelerator)
    common = dict(train=ds, tokenizer=tokenizer, seed=cfg.seed,
                  group_by_length=cfg.group_by_length)
    cache_args = dict(**teacher_cache_setting(cfg), **_cache_options(cfg, run))
    criterion = _loss_module(cfg, teacher, student, "intermediate")
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
        with _frozen(student, HEAD_PARAMETERS):
            out["intermediate"] = train_stage(
                "intermediate", modules={"student": student, "projections": criterion},
                loss_fn=_layer_loss_fn(targets.subset(need_a), "intermediate",
                                       criterion.active_terms("intermediate")),
                stage=a, run=run.sub("intermediate"), **common)
        out["intermediate"]["intermediate"].info["teacher"] = targets.summary()

    if b.enabled:
        if not a.enabled:  # stage a checked the pair; alone, stage b still needs the labels
            check_compatible(teacher, student, tokenizer=tokenizer, need_attention=False,
                             layer_mapping=None)
        criterion.to(accelerator.device)
        logits = targets.subset(need_b)

        def prediction_loss(m, batch):
            student_out = m["student"](**model_inputs(batch))
            losses = criterion(student_out, logits(batch), batch["attention_mask"],
                               stage="prediction")
            return {"prediction": losses["prediction"], "total": losses["total"]}

        student.train()
        out["prediction"] = train_stage(
            "prediction", modules={"student": student}, loss_fn=prediction_loss, stage=b,
            evaluate=evaluate, run=run.sub("prediction"), **common)
        out["prediction"]["prediction"].info["teacher"] = targets.summary()
    return out


# --------------------------------------------------------------------------------------------
# Baselines
# --------------------------------------------------------------------------------------------

def train_baseline(cfg: Config, teacher, student, data, kind: str = "gold", *,
                   stage: StageConfig | None = None, tokenizer=None,
                   run: RunOptions | None = None) -> History:
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
    The history's stage is named ``kind``.
    """
    run = as_run_options(run)
    if kind not in BASELINES:
        raise ValueError(f"unknown baseline kind {kind!r}; choose one of {BASELINES}")
    if kind != "gold" and teacher is None:
        raise ValueError(f"the {kind!r} baseline needs the fine-tuned teacher")
    from tinylab.losses import hinton_kd_loss, kd_kl_div

    stage = stage or dataclasses.replace(cfg.task_prediction, enabled=True)
    tokenizer = _tokenizer_for(teacher if teacher is not None else student, tokenizer)
    run = run.with_accelerator(cfg)
    accelerator = run.accelerator
    ds = _training_set(data["train"], tokenizer, cfg.data.max_length, labels=kind != "kd")
    info: dict[str, Any] = {"baseline": kind}
    if kind == "hinton":
        info.update(temperature=cfg.kd.temperature, alpha=cfg.kd.alpha)

    if kind == "gold":
        def loss_fn(m, batch):
            logits = m["student"](**model_inputs(batch)).logits
            return {"total": F.cross_entropy(logits, batch["labels"])}
    else:
        from tinylab.models import check_compatible

        # Class c of the teacher must be class c of the student (the KD loss pairs them).
        check_compatible(teacher, student, tokenizer=tokenizer, need_attention=False,
                         layer_mapping=None)
        targets = TeacherOutputs(teacher, ds, tokenizer, {"hidden_states": [], "attentions": [],
                                                          "logits": True},
                                 passes=expected_passes(stage, len(ds), accelerator.num_processes),
                                 enabled=cfg.cache_teacher_outputs, **_cache_options(cfg, run))

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
        stage=stage, seed=cfg.seed, evaluate=_accuracy_fn(student, data.get("validation"),
                                                          tokenizer, cfg, accelerator),
        run=run, group_by_length=cfg.group_by_length, info=info)
    if kind != "gold":
        history[kind].info["teacher"] = targets.summary()
    return history
