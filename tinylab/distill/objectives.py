"""Other ways to distil, on the same loop: DistilBERT's and MiniLM's objectives (notebook 08).

TinyBERT (:func:`~tinylab.distill.stages.task_distillation`) and Hinton et al.'s KD
(:func:`~tinylab.distill.stages.train_baseline` with ``kind="hinton"``) live in
:mod:`~tinylab.distill.stages`. This module adds two published alternatives, each one or two
calls of :func:`~tinylab.distill.loop.train_stage` with its own ``loss_fn``:

=====================  ==============================================  ========================
function               loss (one optimiser run each)                   reads from the teacher
=====================  ==============================================  ========================
:func:`train_distilbert`  5 KL_t(p_T || p_S) t^2 + 2 CE(y, z_S)        logits, last hidden
                          + 1 (1 - cos(H_S W + b, H_T))                states
:func:`train_minilm`      a: KL of the last layer's attention          last layer: attention
                          distributions + KL of its value relations;   scores, values; then
                          b: TinyBERT's prediction stage               logits
=====================  ==============================================  ========================

* DistilBERT: Sanh et al. 2019, "DistilBERT, a distilled version of BERT: smaller, faster,
  cheaper and lighter", Sec. 2 (the triple loss) and Hugging Face's
  ``examples/research_projects/distillation`` (its README's training command: ``alpha_ce=5``,
  ``alpha_mlm=2``, ``alpha_cos=1``; temperature 2). Their loss distils masked-LM predictions during pre-training;
  here it distils the task classifier, and the masked-LM term becomes the gold-label
  cross-entropy. Their student has the teacher's width, so the cosine compares raw hidden
  states; a narrower student needs a learned projection W (TinyBERT's W_h, here in cosine
  form), which is dropped after training.
* MiniLM: Wang et al. 2020, "MiniLM: Deep Self-Attention Distillation for Task-Agnostic
  Compression of Pre-Trained Transformers" (NeurIPS), Sec. 3: only the *last* Transformer
  layer is distilled, through the KL divergence of its self-attention distributions and of
  its value relations softmax(V V^T / sqrt(d_k)) (:func:`tinylab.losses.minilm_attention_kl`,
  :func:`tinylab.losses.minilm_value_relation_kl`). No layer mapping and no projection (the
  relations are L x L whatever the widths), but the same number of heads. MiniLM is
  task-agnostic: the paper distils a pre-trained model, then fine-tunes. Here the
  self-attention transfer is stage a of task distillation from the fine-tuned teacher and
  TinyBERT's prediction stage is stage b, so MiniLM and TinyBERT differ only in stage a.

Values are not among Hugging Face's outputs; :func:`attention_values` recomputes them from the
input of the layer (``hidden_states[n - 1]`` for layer n) and the layer's own value projection,
which is exactly what BERT's self-attention does (checked against a forward hook in the tests).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tinylab.config import Config, StageConfig
from tinylab.distill.history import History
from tinylab.distill.loop import model_inputs, train_stage
from tinylab.distill.options import RunOptions, as_run_options
from tinylab.distill.cache import teacher_cache_setting
from tinylab.distill.stage_parts import (HEAD_PARAMETERS, accuracy_fn, frozen, loss_module,
                                         prediction_stage, teacher_outputs_options,
                                         tokenizer_for, training_set)
from tinylab.distill.teacher_outputs import TeacherOutputs, expected_passes, merge_needs
from tinylab.losses import (TinyBertLoss, cosine_hidden_loss, kd_kl_div, minilm_attention_kl,
                            minilm_value_relation_kl)
from tinylab.models import check_compatible, student_config
from tinylab.projections import width_projection

__all__ = ["DISTILBERT_WEIGHTS", "METHODS", "attention_values", "hidden_projection",
           "teacher_needs", "describe_needs", "train_distilbert", "train_minilm"]

#: The DistilBERT triple loss's weights, from the training command of Hugging Face's
#: ``research_projects/distillation`` README (``--alpha_ce 5.0 --alpha_mlm 2.0 --alpha_cos
#: 1.0``): the soft-target KL, the supervised term (masked LM there, gold-label
#: cross-entropy here), the cosine term.
DISTILBERT_WEIGHTS = {"soft": 5.0, "gold": 2.0, "cosine": 1.0}

#: The objectives notebook 08 compares, in the order of its table.
METHODS = ("hinton", "distilbert", "minilm", "tinybert")


def _unwrap(model: nn.Module) -> nn.Module:
    """The model inside a ``DistributedDataParallel`` wrapper (or the model itself)."""
    return getattr(model, "module", model)


def attention_values(model: nn.Module, layer_input: torch.Tensor, layer: int) -> torch.Tensor:
    """The values V of transformer layer ``layer`` (1-based), split into heads.

    ``model``: a ``BertForSequenceClassification`` (or a DDP wrapper of one).
    ``layer_input``: that layer's input, ``hidden_states[layer - 1]`` of a forward pass with
    ``output_hidden_states=True`` (index 0 = embeddings), shape (B, L, d).
    Returns (B, H, L, d_k) = ``value(layer_input)`` reshaped per head, what BERT's
    self-attention multiplies the attention probabilities with. Gradients flow to the value
    projection and to ``layer_input``.
    """
    bert = _unwrap(model).bert
    layers = bert.encoder.layer
    if not 1 <= layer <= len(layers):
        raise ValueError(f"layer must be in 1..{len(layers)}, got {layer}")
    attention = layers[layer - 1].attention.self
    value = attention.value
    v = value(layer_input.to(value.weight.dtype))                        # (B, L, H * d_k)
    batch, length, _ = v.shape
    return v.view(batch, length, attention.num_attention_heads,
                  attention.attention_head_size).transpose(1, 2)


def hidden_projection(d_student: int, d_teacher: int, seed: int) -> nn.Linear:
    """A learnable ``nn.Linear(d_student, d_teacher)``: the identity when the widths match,
    else drawn from ``seed`` (so the result does not depend on the global random stream)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return width_projection(d_student, d_teacher)


# --------------------------------------------------------------------------------------------
# What each objective reads from the teacher
# --------------------------------------------------------------------------------------------

def _distilbert_need(teacher_config: Any) -> dict[str, Any]:
    return {"hidden_states": [teacher_config.num_hidden_layers], "attentions": [],
            "logits": True}


def _minilm_need(teacher_config: Any) -> dict[str, Any]:
    # Layer N's values come from its input hidden_states[N - 1] and its own W_V.
    n = teacher_config.num_hidden_layers
    return {"hidden_states": [n - 1], "attentions": [n], "logits": False}


def teacher_needs(method: str, cfg: Config, teacher_config: Any) -> dict[str, Any]:
    """What ``method`` (one of :data:`METHODS`) reads from the teacher, and whether it needs
    gold labels: ``{"logits": bool, "hidden_states": [i, ...], "attention_scores": [n, ...],
    "values": [n, ...], "gold_labels": bool}`` with ``i`` a Hugging Face ``hidden_states``
    index (0 = embeddings) and ``n`` a 1-based transformer layer. These are the lists the
    training functions hand to :class:`~tinylab.distill.teacher_outputs.TeacherOutputs`
    (MiniLM's values of layer n are computed from ``hidden_states[n - 1]``)."""
    if method == "hinton":
        return {"logits": True, "hidden_states": [], "attention_scores": [], "values": [],
                "gold_labels": True}
    if method == "distilbert":
        need = _distilbert_need(teacher_config)
        return {"logits": True, "hidden_states": need["hidden_states"], "attention_scores": [],
                "values": [], "gold_labels": DISTILBERT_WEIGHTS["gold"] != 0}
    if method == "minilm":
        need = _minilm_need(teacher_config)
        return {"logits": cfg.task_prediction.enabled, "hidden_states": [],
                "attention_scores": need["attentions"], "values": need["attentions"],
                "gold_labels": False}
    if method == "tinybert":
        criterion = TinyBertLoss.from_config(cfg.loss, student_config(teacher_config,
                                                                      cfg.student),
                                             teacher_config)
        a = criterion.teacher_layers("intermediate") if cfg.task_intermediate.enabled else {}
        return {"logits": cfg.task_prediction.enabled, "hidden_states": a.get("hidden_states", []),
                "attention_scores": a.get("attentions", []), "values": [],
                "gold_labels": False}
    raise ValueError(f"unknown method {method!r}; choose one of {METHODS}")


def describe_needs(needs: Mapping[str, Any]) -> str:
    """:func:`teacher_needs` as a short phrase for a table, e.g. ``"logits; hidden states 6"``."""
    def layers(items: Sequence[int]) -> str:
        return ", ".join(str(i) for i in items)

    parts = []
    if needs["hidden_states"]:
        embeddings = " (0 = embeddings)" if 0 in needs["hidden_states"] else ""
        parts.append(f"hidden states {layers(needs['hidden_states'])}{embeddings}")
    if needs["attention_scores"]:
        parts.append(f"attention scores of layer {layers(needs['attention_scores'])}")
    if needs["values"]:
        parts.append(f"values of layer {layers(needs['values'])}")
    if needs["logits"]:
        parts.append("logits")
    return "; ".join(parts) or "nothing"


# --------------------------------------------------------------------------------------------
# DistilBERT
# --------------------------------------------------------------------------------------------

def train_distilbert(cfg: Config, teacher, student, data, *, stage: StageConfig | None = None,
                     weights: Mapping[str, float] | None = None,
                     temperature: float | None = None, tokenizer=None,
                     run: RunOptions | None = None) -> History:
    """DistilBERT's triple loss on the task (Sanh et al. 2019, Sec. 2); trains ``student`` in place.

    Shapes: student logits z_S and teacher logits z_T (B, C), gold labels y (B,), last hidden
    states H_S (B, L, d') and H_T (B, L, d). With p = softmax(z / t)::

        soft   = t^2 KL(p_T || p_S)                             :func:`~tinylab.losses.kd_kl_div`
        gold   = CE(y, softmax(z_S))                           (their masked-LM term)
        cosine = mean over real tokens of 1 - cos(H_S W + b, H_T)
                                                 :func:`~tinylab.losses.cosine_hidden_loss`
        total  = 5 soft + 2 gold + 1 cosine                     (:data:`DISTILBERT_WEIGHTS`)

    ``t`` is ``temperature`` (default ``cfg.kd.temperature``, 2 as in DistilBERT). W, b: a
    learned ``nn.Linear(d', d)`` (:func:`hidden_projection`), trained with the student and
    thrown away afterwards; DistilBERT needs none because its student keeps the teacher's
    width. ``weights`` overrides entries of :data:`DISTILBERT_WEIGHTS` (``{"gold": 0}``: no
    gold labels, then ``data["train"]`` may be unlabelled, e.g. augmented). Budget and
    optimiser settings: ``stage`` (default ``cfg.task_prediction``). ``data``: a mapping with
    ``"train"`` and optionally ``"validation"`` (accuracy evaluations). Teacher logits and last
    hidden states come from :class:`TeacherOutputs` (cached when the stage sees each example
    more than once and they fit). Returns the :class:`History` of stage ``"distilbert"``.
    """
    weights = {**DISTILBERT_WEIGHTS, **(weights or {})}
    unknown = set(weights) - set(DISTILBERT_WEIGHTS)
    if unknown:
        raise ValueError(f"unknown DistilBERT weight(s) {sorted(unknown)}; valid: "
                         f"{list(DISTILBERT_WEIGHTS)}")
    t = cfg.kd.temperature if temperature is None else float(temperature)
    stage = stage or dataclasses.replace(cfg.task_prediction, enabled=True)
    tokenizer = tokenizer_for(teacher, tokenizer)
    run = as_run_options(run).with_accelerator(cfg)
    accelerator = run.accelerator
    check_compatible(teacher, student, tokenizer=tokenizer, need_attention=False,
                     layer_mapping=None)
    use_gold = weights["gold"] != 0
    ds = training_set(data["train"], tokenizer, cfg.data.max_length, labels=use_gold)
    need = _distilbert_need(teacher.config)
    last = need["hidden_states"][0]
    targets = TeacherOutputs(teacher, ds, tokenizer, need,
                             passes=expected_passes(stage, len(ds), accelerator.num_processes),
                             **teacher_cache_setting(cfg), **teacher_outputs_options(cfg, run))
    projection = hidden_projection(student.config.hidden_size, teacher.config.hidden_size,
                                   cfg.seed)

    def loss_fn(m, batch):
        out = m["student"](**model_inputs(batch), output_hidden_states=True)
        target = targets(batch)
        losses = {"soft": kd_kl_div(out.logits, target["logits"], t),
                  "cosine": cosine_hidden_loss(m["projection"](out.hidden_states[-1]),
                                               target["hidden_states"][last],
                                               batch["attention_mask"])}
        if use_gold:
            losses["gold"] = F.cross_entropy(out.logits.float(), batch["labels"])
        losses["total"] = sum(weights[k] * v for k, v in losses.items())
        return losses

    student.train()
    history = train_stage(
        "distilbert", modules={"student": student, "projection": projection}, loss_fn=loss_fn,
        train=ds, tokenizer=tokenizer, stage=stage, seed=cfg.seed,
        evaluate=accuracy_fn(student, data.get("validation"), tokenizer, cfg, accelerator),
        run=run, group_by_length=cfg.group_by_length,
        info={"weights": weights, "temperature": t,
              "projection": [student.config.hidden_size, teacher.config.hidden_size]})
    history["distilbert"].info["teacher"] = targets.summary()
    return history


# --------------------------------------------------------------------------------------------
# MiniLM
# --------------------------------------------------------------------------------------------

def train_minilm(cfg: Config, teacher, student, train, validation=None, *, tokenizer=None,
                 run: RunOptions | None = None) -> dict[str, History]:
    """MiniLM's deep self-attention distillation (Wang et al. 2020, Sec. 3), then TinyBERT's
    prediction stage; trains ``student`` in place.

    Stage a, ``"minilm"`` (budget ``cfg.task_intermediate``, head frozen): for the last layer
    of each model (teacher layer N, student layer M), with the attention scores
    A = Q K^T / sqrt(d_k) (B, H, L, L) and the values V (B, H, L, d_k) per head::

        attention      = mean over real (example, head, query) of KL(softmax(A_T) || softmax(A_S))
        value_relation = the same KL between softmax(V_T V_T^T / sqrt(d_k)) and
                         softmax(V_S V_S^T / sqrt(d_k'))
        total          = attention + value_relation          (the paper's L_AT + L_VR)

    No projection and no layer mapping; the head counts must match (the relations are L x L,
    so the widths need not). Stage b, ``"prediction"`` (budget ``cfg.task_prediction``):
    TinyBERT's prediction stage, the same loss (``TinyBertLoss(stage="prediction")``, the soft
    cross-entropy against the teacher's predictions at ``cfg.loss.temperature``) and the same
    function (:func:`~tinylab.distill.stage_parts.prediction_stage`) as
    :func:`~tinylab.distill.stages.task_distillation`'s stage b.
    ``train``: task texts (labels, if any, are never read); ``validation``: labelled data for
    stage b's accuracy curve.

    As in ``task_distillation``, one :class:`TeacherOutputs` serves both stages (cached once
    when the stages together see each example more than once and it fits): the teacher's
    scores of layer N, its hidden states N - 1 (the input of layer N, from which its values
    are recomputed with its own value projection, :func:`attention_values`) and its logits.
    Returns ``{"minilm": History, "prediction": History}`` (a disabled stage is left out).
    """
    tokenizer = tokenizer_for(teacher, tokenizer)
    run = as_run_options(run).with_accelerator(cfg)
    accelerator = run.accelerator
    a, b = cfg.task_intermediate, cfg.task_prediction
    check_compatible(teacher, student, tokenizer=tokenizer, need_attention=a.enabled,
                     layer_mapping=None)
    ds = training_set(train, tokenizer, cfg.data.max_length, labels=False)
    world = accelerator.num_processes
    need_a = {**_minilm_need(teacher.config), "logits": False}
    need_b = {"hidden_states": [], "attentions": [], "logits": True}
    targets = TeacherOutputs(
        teacher, ds, tokenizer,
        merge_needs(*([need_a] if a.enabled else []), *([need_b] if b.enabled else [])),
        passes=expected_passes(a, len(ds), world) + expected_passes(b, len(ds), world),
        **teacher_cache_setting(cfg), **teacher_outputs_options(cfg, run))
    common = dict(train=ds, tokenizer=tokenizer, seed=cfg.seed,
                  group_by_length=cfg.group_by_length)
    out: dict[str, History] = {}

    if a.enabled:
        n, m_last = need_a["attentions"][0], student.config.num_hidden_layers
        layer_targets = targets.subset(need_a)

        def loss_fn(m, batch):
            s_out = m["student"](**model_inputs(batch), output_hidden_states=True,
                                 output_attentions=True)
            target = layer_targets(batch)
            mask = batch["attention_mask"]
            with torch.no_grad():
                t_values = attention_values(teacher, target["hidden_states"][n - 1], n)
            s_values = attention_values(m["student"], s_out.hidden_states[m_last - 1], m_last)
            losses = {"attention": minilm_attention_kl(s_out.attentions[-1],
                                                       target["attentions"][n], mask),
                      "value_relation": minilm_value_relation_kl(s_values, t_values, mask)}
            losses["total"] = losses["attention"] + losses["value_relation"]
            return losses

        student.train()
        with frozen(student, HEAD_PARAMETERS):
            out["minilm"] = train_stage(
                "minilm", modules={"student": student}, loss_fn=loss_fn, stage=a,
                run=run.sub("minilm"),
                info={"teacher_layer": n, "student_layer": m_last}, **common)
        out["minilm"]["minilm"].info["teacher"] = targets.summary()

    if b.enabled:
        out["prediction"] = prediction_stage(
            student, loss_module(cfg, teacher, student, "prediction"), targets, need_b, b,
            evaluate=accuracy_fn(student, validation, tokenizer, cfg, accelerator), run=run,
            **common)
    return out
