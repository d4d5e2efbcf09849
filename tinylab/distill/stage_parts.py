"""The parts every distillation stage is built from: its data, its frozen head, its loss, its
accuracy curve, and TinyBERT's prediction stage.

A stage (TinyBERT's in :mod:`~tinylab.distill.stages`, the other objectives in
:mod:`~tinylab.distill.objectives`) is one call of :func:`~tinylab.distill.loop.train_stage`
with a ``loss_fn``; what goes into that call is assembled from these pieces:

=================================  =========================================================
:func:`training_set`               the tokenised training rows: model inputs, ``label``
                                   (gold targets, optional), ``example_idx`` (row number)
:func:`frozen`                     the classification head (:data:`HEAD_PARAMETERS`) kept
                                   still while only the transformer layers are distilled
:func:`loss_module`                ``TinyBertLoss`` with its projections W_e, W_h drawn
                                   from the seed
:func:`layer_loss_fn`              the transformer-layer step: L_embd + L_attn + L_hidn
:func:`accuracy_fn`                validation accuracy and macro-F1 for the evaluations
:func:`prediction_stage`           TinyBERT's stage b: soft cross-entropy on the teacher's
                                   predictions (also MiniLM's second stage)
:func:`teacher_outputs_options`    the ``TeacherOutputs`` arguments that come from the run
:func:`tokenizer_for`              the tokenizer saved next to the teacher, if none is given
=================================  =========================================================
"""
from __future__ import annotations

import contextlib
from typing import Any, Callable, Iterator, Sequence

import torch
from transformers import AutoTokenizer

from tinylab.config import Config, StageConfig
from tinylab.data import tokenize
from tinylab.distill.history import History
from tinylab.distill.loop import EXAMPLE_INDEX, MODEL_INPUTS, model_inputs, train_stage
from tinylab.distill.options import RunOptions
from tinylab.evaluate import evaluate_model
from tinylab.losses import TinyBertLoss

__all__ = ["HEAD_PARAMETERS", "tokenizer_for", "training_set", "frozen", "accuracy_fn",
           "teacher_outputs_options", "loss_module", "layer_loss_fn", "prediction_stage"]

# Parts of BertForSequenceClassification that only the prediction layer uses: frozen while the
# intermediate layers are distilled (nothing would train them, and data-parallel training
# refuses parameters that get no gradient).
HEAD_PARAMETERS = ("bert.pooler.", "classifier.")


def tokenizer_for(model, tokenizer):
    """The given tokenizer, else the one saved next to ``model`` (students share the teacher's)."""
    if tokenizer is not None:
        return tokenizer

    source = getattr(model, "name_or_path", "") or ""
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError, TypeError):
        raise ValueError(f"no tokenizer given and none found next to the teacher "
                         f"(name_or_path={source!r}); pass tokenizer=...") from None


def training_set(ds, tokenizer, max_length: int, *, labels: bool):
    """Tokenised copy of ``ds`` with only the model inputs, ``label`` if ``labels`` (gold
    targets) and ``example_idx`` (row number, to find cached teacher outputs).

    ``ds``: a ``datasets.Dataset`` with a ``text`` column (tokenised here, truncated to
    ``max_length``) or already tokenised (``input_ids``, ...). Rows stay unpadded: the loader
    pads each batch to its longest row. ``labels=True`` requires a ``label`` column.
    """
    if "input_ids" not in ds.column_names:
        ds = tokenize(ds, tokenizer, max_length)
    if labels and "label" not in ds.column_names:
        raise ValueError(f"training on gold labels needs a 'label' column (columns: "
                         f"{ds.column_names})")
    keep = [c for c in MODEL_INPUTS if c in ds.column_names] + (["label"] if labels else [])
    ds = ds.select_columns(keep)
    return ds.add_column(EXAMPLE_INDEX, list(range(len(ds))))


@contextlib.contextmanager
def frozen(model: torch.nn.Module, prefixes: Sequence[str]) -> Iterator[None]:
    """Temporarily set ``requires_grad=False`` on parameters whose name starts with a prefix
    (e.g. :data:`HEAD_PARAMETERS`); the ones it froze are trainable again on exit."""
    changed = [p for n, p in model.named_parameters() if n.startswith(tuple(prefixes))
               and p.requires_grad]
    for p in changed:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in changed:
            p.requires_grad_(True)


def accuracy_fn(model, validation, tokenizer, cfg: Config, accelerator
                ) -> Callable[[], dict[str, float]] | None:
    """Validation accuracy and macro-F1 of ``model`` (gold labels), for the loop's evaluations:
    every process predicts its share and the predictions are gathered. ``None`` (no
    evaluations) when there is no ``validation`` set."""
    if validation is None:
        return None

    def evaluate() -> dict[str, float]:
        m = evaluate_model(model, validation, tokenizer, batch_size=cfg.eval_batch_size,
                           max_length=cfg.data.max_length, accelerator=accelerator)
        return {"accuracy": m["accuracy"], "macro_f1": m["macro_f1"]}
    return evaluate


def teacher_outputs_options(cfg: Config, run: RunOptions) -> dict[str, Any]:
    """The :class:`~tinylab.distill.teacher_outputs.TeacherOutputs` arguments that come from
    the run, not the method (memory budget, batch size, accelerator, progress, shared folder)."""
    return dict(memory_budget=run.memory_budget, batch_size=cfg.eval_batch_size,
                accelerator=run.accelerator, progress=run.progress,
                shared_dir=run.shared_teacher_outputs)


def loss_module(cfg: Config, teacher, student, stage: str):
    """``TinyBertLoss`` for the config; projections a stage does not use are frozen."""
    # The projections W_e, W_h start random: draw them from the seed, not from whatever the
    # global random stream holds at this point (cached and fresh runs must agree).
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        criterion = TinyBertLoss.from_config(cfg.loss, student.config, teacher.config)
    criterion.projections.train_only(criterion.active_terms(stage))
    return criterion


def layer_loss_fn(targets: Callable, stage: str, terms: Sequence[str]):
    """Transformer-layer distillation step (GD and TD stage a), L_embd + L_attn + L_hidn.

    Returns ``loss_fn(modules, batch)`` for :func:`~tinylab.distill.loop.train_stage`: the
    student (``modules["student"]``) runs with its hidden states and attentions, ``targets``
    gives the teacher's for the same batch (cached, or one inference-mode pass), and the loss
    module (``modules["projections"]``, :func:`loss_module`) compares them under the batch's
    padding mask. The returned dict holds ``terms`` and ``"total"``.
    """
    def loss_fn(m, batch):
        student_out = m["student"](**model_inputs(batch), output_hidden_states=True,
                                   output_attentions=True)
        teacher_out = targets(batch)                      # cached, or one inference-mode pass
        losses = m["projections"](student_out, teacher_out, batch["attention_mask"], stage=stage)
        return {k: losses[k] for k in [*terms, "total"]}
    return loss_fn


def prediction_stage(student, criterion, targets, need, stage: StageConfig, *, train, tokenizer,
                     seed: int, group_by_length: bool, run: RunOptions,
                     evaluate: Callable[[], dict[str, float]] | None = None) -> History:
    """TinyBERT's prediction-layer distillation (task distillation stage b); trains ``student``
    in place and returns the :class:`History` of stage ``"prediction"``.

    Shapes: student logits z_S and teacher logits z_T (B, C). With t =
    ``cfg.loss.temperature``, the loss is the soft cross-entropy (the paper's L_pred,
    :func:`tinylab.losses.soft_cross_entropy`)::

        L_pred = -(1/B) sum_b sum_c softmax(z_T / t)[b, c] * log softmax(z_S / t)[b, c]

    ``criterion``: the ``TinyBertLoss`` (:func:`loss_module`), called with
    ``stage="prediction"``; it has nothing to train here, so only the student is optimised.
    ``targets``: the :class:`~tinylab.distill.teacher_outputs.TeacherOutputs` over ``train``;
    ``need`` (what it reads: the logits) selects from it. ``stage``: the budget
    (``cfg.task_prediction``). ``evaluate``: the accuracy curve (:func:`accuracy_fn`).
    Checkpoints go to ``run.sub("prediction")``. Used by
    :func:`~tinylab.distill.stages.task_distillation` and, as MiniLM's second stage, by
    :func:`~tinylab.distill.objectives.train_minilm`.
    """
    criterion.to(run.accelerator.device)
    logits = targets.subset(need)

    def prediction_loss(m, batch):
        student_out = m["student"](**model_inputs(batch))
        losses = criterion(student_out, logits(batch), batch["attention_mask"],
                           stage="prediction")
        return {"prediction": losses["prediction"], "total": losses["total"]}

    student.train()
    history = train_stage(
        "prediction", modules={"student": student}, loss_fn=prediction_loss, stage=stage,
        evaluate=evaluate, run=run.sub("prediction"), train=train, tokenizer=tokenizer,
        seed=seed, group_by_length=group_by_length)
    history["prediction"].info["teacher"] = targets.summary()
    return history
