"""Teacher loading, student construction and compatibility checks.

A TinyBERT is not a special class: it is an ordinary ``BertForSequenceClassification`` with a
smaller ``BertConfig`` (fewer layers, narrower hidden size and FFN) that shares the teacher's
tokenizer and vocabulary. Both models are switched to :data:`SCORES_ATTN` so that
``output_attentions=True`` returns the pre-softmax attention scores TinyBERT distils (see
:mod:`tinylab.attention`); their logits and hidden states are those of the default
implementation, and anything saved with ``save_pretrained`` loads anywhere without tinylab.

Student initialisation (``StudentConfig.init``):

* ``"random"``: BERT's usual random initialisation (what the paper's general distillation
  starts from).
* ``"teacher"``: copy the embeddings, the pooler and the uniformly mapped teacher layers
  (student layer m <- teacher layer m*N/M). Needs the teacher's widths (hidden size, FFN,
  heads); it shortens the teacher, it cannot narrow it.
* ``"pca"``: a tinylab option, **not part of the paper**. The student's word, position and
  token-type embeddings are the teacher's tables projected onto their top d' principal
  directions (a truncated SVD of the centred word-embedding table); everything else is random.
  A cheap way to hand a narrow student the teacher's lexical knowledge when no general
  distillation on a large corpus is affordable. Measure it against ``"random"`` before
  believing it helps.
* a folder or hub name of a pre-trained student, e.g. the general TinyBERT
  ``huawei-noah/TinyBERT_General_4L_312D`` (the paper's task-distillation starting point).
  Its weights are loaded, a new classifier head is created, and the official checkpoints'
  extra ``fit_dense`` / ``fit_denses.*`` projections (the authors' W matrices, which tinylab's
  :class:`~tinylab.losses.TinyBertLoss` holds itself) are left out with a note.
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn
from transformers import (AutoConfig, AutoTokenizer, BertConfig, BertForSequenceClassification,
                          PreTrainedModel)

from tinylab import assets
from tinylab.attention import SCORES_ATTN, use_attention_scores, uses_attention_scores
from tinylab.config import INIT_KEYWORDS, StudentConfig
from tinylab.losses import layer_map

__all__ = ["SCORES_ATTN", "use_attention_scores", "uses_attention_scores", "load_teacher",
           "load_pretrained",
           "student_config", "build_student", "pca_projection", "check_compatible",
           "check_student_shape",
           "INIT_KEYWORDS"]

logger = logging.getLogger(__name__)

# Keys the official TinyBERT checkpoints carry next to the BERT weights (the W projections).
OFFICIAL_EXTRA_PREFIXES = ("fit_dense", "fit_denses")


def _resolve(name_or_path: str | os.PathLike) -> str:
    return assets.resolve_model_path(name_or_path)


def _apply_labels(config: Any, num_labels: int | None,
                  id2label: Mapping[int, str] | Sequence[str] | None) -> None:
    """Set ``id2label`` / ``label2id`` (or just ``num_labels``) on a config, checking they agree."""
    if id2label is not None:
        if not isinstance(id2label, Mapping):
            id2label = dict(enumerate(id2label))
        mapping = {int(k): str(v) for k, v in id2label.items()}
        if sorted(mapping) != list(range(len(mapping))):
            raise ValueError(f"id2label keys must be 0..{len(mapping) - 1}, got {sorted(mapping)}")
        if num_labels is not None and num_labels != len(mapping):
            raise ValueError(f"num_labels={num_labels} disagrees with id2label of "
                             f"{len(mapping)} labels {mapping}")
        config.id2label = mapping
        config.label2id = {v: k for k, v in mapping.items()}
    elif num_labels is not None:
        if num_labels < 1:
            raise ValueError(f"num_labels must be >= 1, got {num_labels}")
        config.num_labels = num_labels


def load_teacher(name_or_path: str | os.PathLike, *, num_labels: int | None = None,
                 id2label: Mapping[int, str] | Sequence[str] | None = None
                 ) -> tuple[BertForSequenceClassification, Any]:
    """Load a BERT backbone (or a fine-tuned BERT classifier) and its tokenizer.

    ``name_or_path``: ``"offline:all-MiniLM-L6-v2"`` (the offline asset, via
    :func:`tinylab.assets.resolve_model_path`), a local folder, or a hub name.
    ``num_labels`` / ``id2label`` (a dict or a list of label names) set the classification
    head; when they differ from the checkpoint's (or it has no head, like the sentence-embedding
    MiniLM) a new head is initialised and must be fine-tuned. Leave both ``None`` to keep a
    fine-tuned checkpoint's head and labels.

    Returns ``(model, tokenizer)``; the model uses :data:`SCORES_ATTN`, is in eval mode
    (``from_pretrained``'s default) and on the CPU.
    """
    path = _resolve(name_or_path)
    config = AutoConfig.from_pretrained(path)
    if config.model_type != "bert":
        raise ValueError(f"{name_or_path!r} is a {config.model_type!r} model; tinylab builds "
                         f"BERT students and needs a BERT-family teacher (model_type 'bert')")
    new_head = num_labels is not None or id2label is not None
    _apply_labels(config, num_labels, id2label)
    model = load_pretrained(BertForSequenceClassification, path, config=config,
                            attn_implementation=SCORES_ATTN, ignore_mismatched_sizes=new_head)
    tokenizer = AutoTokenizer.from_pretrained(path)
    return model, tokenizer


def load_pretrained(model_class: Any, name_or_path: str | os.PathLike, **kwargs: Any):
    """``model_class.from_pretrained(name_or_path, **kwargs)`` with the hub's kernels left out.

    Since transformers 5.25, when the ``kernels`` package is installed (transformers now
    requires it), ``from_pretrained`` turns ``use_kernels`` on by default, and every
    ``.train()`` / ``.eval()`` afterwards may re-``kernelize`` the model: swap layers for
    compiled kernels fetched from the model hub for the device at hand. tinylab's models must
    stay the plain PyTorch modules the course reads (and that the pre-softmax score capture of
    :mod:`tinylab.attention` hooks into), must never wait on a network, and ``kernelize``
    rejects the ``meta`` device the device tests use. So every model tinylab loads gets
    ``use_kernels=False``: a mode switch is then PyTorch's own ``nn.Module.train``.
    """
    return model_class.from_pretrained(name_or_path, use_kernels=False, **kwargs)


# --------------------------------------------------------------------------------------------
# Student
# --------------------------------------------------------------------------------------------

def _check_spec(spec: StudentConfig) -> None:
    for name in ("num_layers", "hidden_size", "num_heads", "intermediate_size"):
        value = getattr(spec, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"student.{name} must be a positive int, got {value!r}")
    if spec.hidden_size % spec.num_heads:
        raise ValueError(f"student.hidden_size={spec.hidden_size} is not divisible by "
                         f"student.num_heads={spec.num_heads}; pick a multiple, e.g. "
                         f"{spec.num_heads * max(1, round(spec.hidden_size / spec.num_heads))}")


def student_config(teacher_config: BertConfig, spec: StudentConfig, *,
                   num_labels: int | None = None,
                   id2label: Mapping[int, str] | Sequence[str] | None = None) -> BertConfig:
    """A ``BertConfig`` with the spec's shape and everything else from the teacher.

    Shared with the teacher: vocabulary size, maximum positions, token types, padding id,
    activation, dropout rates, layer-norm epsilon, initialiser range. Labels default to the
    teacher's.
    """
    _check_spec(spec)
    t = teacher_config
    config = BertConfig(
        vocab_size=t.vocab_size, hidden_size=spec.hidden_size,
        num_hidden_layers=spec.num_layers, num_attention_heads=spec.num_heads,
        intermediate_size=spec.intermediate_size, hidden_act=t.hidden_act,
        hidden_dropout_prob=t.hidden_dropout_prob,
        attention_probs_dropout_prob=t.attention_probs_dropout_prob,
        max_position_embeddings=t.max_position_embeddings, type_vocab_size=t.type_vocab_size,
        initializer_range=t.initializer_range, layer_norm_eps=t.layer_norm_eps,
        pad_token_id=t.pad_token_id, classifier_dropout=getattr(t, "classifier_dropout", None),
        id2label=dict(t.id2label) if t.id2label is not None else None)
    _apply_labels(config, num_labels, id2label)
    return config


def build_student(teacher: BertForSequenceClassification, spec: StudentConfig, *,
                  num_labels: int | None = None,
                  id2label: Mapping[int, str] | Sequence[str] | None = None
                  ) -> BertForSequenceClassification:
    """A student ``BertForSequenceClassification`` of shape ``spec``, initialised per ``spec.init``.

    ``num_labels`` / ``id2label`` default to the teacher's (the prediction loss compares the
    two label distributions class by class, so they must line up). The student uses
    :data:`SCORES_ATTN` and is returned in training mode on the teacher's device.
    """
    config = student_config(teacher.config, spec, num_labels=num_labels, id2label=id2label)
    if spec.init in INIT_KEYWORDS:
        student = BertForSequenceClassification(config)
        if spec.init == "teacher":
            _init_from_teacher(student, teacher)
        elif spec.init == "pca":
            _init_pca(student, teacher)
        elif spec.init == "pca-layers":
            _init_pca_layers(student, teacher)
    else:
        student = _load_pretrained_student(spec, config)
    use_attention_scores(student)
    return student.to(teacher.device).train()


def _init_from_teacher(student: BertForSequenceClassification,
                       teacher: BertForSequenceClassification) -> None:
    s, t = student.config, teacher.config
    mismatched = [f"{name}: student {getattr(s, name)} vs teacher {getattr(t, name)}"
                  for name in ("hidden_size", "intermediate_size", "num_attention_heads")
                  if getattr(s, name) != getattr(t, name)]
    if mismatched:
        raise ValueError("init='teacher' copies teacher layers, so the widths must match ("
                         + "; ".join(mismatched) + "); use init='pca' or 'random' for a "
                         "narrower student")
    mapping = layer_map(s.num_hidden_layers, t.num_hidden_layers, "uniform")
    with torch.no_grad():
        student.bert.embeddings.load_state_dict(teacher.bert.embeddings.state_dict())
        for m, n in enumerate(mapping, start=1):
            student.bert.encoder.layer[m - 1].load_state_dict(
                teacher.bert.encoder.layer[n - 1].state_dict())
        if student.bert.pooler is not None and teacher.bert.pooler is not None:
            student.bert.pooler.load_state_dict(teacher.bert.pooler.state_dict())
    logger.info("student initialised from teacher layers %s (uniform mapping)", mapping)


def pca_projection(table: torch.Tensor, width: int
                   ) -> tuple[torch.Tensor, torch.Tensor, float]:
    """Top-``width`` principal directions of an embedding table (a truncated SVD).

    ``table`` (V, d). Returns ``(projection (d, width), mean (d,), explained)`` where
    ``(table - mean) @ projection`` is the best rank-``width`` linear summary of the rows in
    the least-squares sense and ``explained`` the fraction of the centred table's variance it
    keeps. Signs of the directions are arbitrary (as for any SVD).
    """
    if table.dim() != 2:
        raise ValueError(f"table must be 2-D (rows, dim), got shape {tuple(table.shape)}")
    rows, dim = table.shape
    if not 1 <= width <= min(rows, dim):
        raise ValueError(f"PCA can give at most min(rows, dim) = {min(rows, dim)} directions, "
                         f"asked for {width}; a wider student needs init='random' or 'teacher'")
    x = table.detach().to(torch.float64)
    mean = x.mean(0)
    _, singular, vh = torch.linalg.svd(x - mean, full_matrices=False)
    variance = singular.pow(2)
    explained = float(variance[:width].sum() / variance.sum())
    return vh[:width].T.to(table.dtype), mean.to(table.dtype), explained


def _init_pca(student: BertForSequenceClassification,
              teacher: BertForSequenceClassification) -> None:
    emb_s, emb_t = student.bert.embeddings, teacher.bert.embeddings
    projection, mean, explained = pca_projection(emb_t.word_embeddings.weight,
                                                 student.config.hidden_size)
    # One projection for all three tables keeps BERT's sum word + position + type consistent:
    # (w - mean + p + t) P = (w - mean) P + p P + t P.
    with torch.no_grad():
        emb_s.word_embeddings.weight.copy_((emb_t.word_embeddings.weight - mean) @ projection)
        emb_s.position_embeddings.weight.copy_(emb_t.position_embeddings.weight @ projection)
        emb_s.token_type_embeddings.weight.copy_(emb_t.token_type_embeddings.weight @ projection)
    logger.info("student embeddings: PCA of the teacher's tables to width %d keeps %.1f%% of "
                "the word-embedding variance", student.config.hidden_size, 100 * explained)


def _project_norm(norm_s: nn.LayerNorm, norm_t: nn.LayerNorm, projection: torch.Tensor) -> None:
    """A LayerNorm's scale and shift seen along the principal directions: the shift projected,
    ``beta @ P``, and each direction's scale the average of the teacher's along it,
    ``gamma @ P**2`` (a LayerNorm does not commute with a rotation, so this is an estimate)."""
    norm_s.weight.copy_(norm_t.weight @ projection.pow(2))
    norm_s.bias.copy_(norm_t.bias @ projection)


def _project_layer(layer_s, layer_t, projection: torch.Tensor, heads: int) -> None:
    """One teacher Transformer layer written into a narrower student layer.

    ``projection`` P (d_t, d_s) maps the teacher's hidden space onto the student's (hidden
    states x_s = x_t P). Per head h (head widths w_t = d_t / heads and w_s = d_s / heads):

    * query and key: the w_s directions R_h (w_t, w_s) of head h's space that carry most of
      its query and key maps (top left singular vectors of [W_q,h P, W_k,h P]); the student's
      maps are R_h^T W_q,h P and R_h^T W_k,h P, the query scaled by sqrt(w_s / w_t) so that
      q.k / sqrt(w_s) keeps the teacher's scale q.k / sqrt(w_t);
    * value and output: the head's whole effect on the hidden state, P^T W_o,h W_v,h P, cut
      to its best rank-w_s part (truncated SVD U S V^T: W_v = S^1/2 V^T, W_o = U S^1/2); the
      value bias adds the constant P^T W_o,h b_v,h (attention weights sum to 1), folded into
      the output bias;
    * feed-forward: the ``intermediate_size`` hidden units with the largest
      ||W_1,j P|| * ||P^T W_2,:j||, their rows and columns projected.

    With d_s = d_t (P a rotation) the attention scores, the attention block's output before
    its LayerNorm and the feed-forward output are exactly the teacher's, rotated.
    """
    P = projection
    attn_t, attn_s = layer_t.attention, layer_s.attention
    w_t = attn_t.self.query.out_features // heads
    w_s = attn_s.self.query.out_features // heads
    scale = (w_s / w_t) ** 0.5
    wo_t = attn_t.output.dense.weight                       # (d_t, d_t): heads' outputs -> hidden
    out_bias = attn_t.output.dense.bias @ P
    for h in range(heads):
        rows_t, rows_s = slice(h * w_t, (h + 1) * w_t), slice(h * w_s, (h + 1) * w_s)
        a_q = attn_t.self.query.weight[rows_t] @ P           # (w_t, d_s)
        a_k = attn_t.self.key.weight[rows_t] @ P
        basis = torch.linalg.svd(torch.cat([a_q, a_k], dim=1), full_matrices=False)[0][:, :w_s]
        attn_s.self.query.weight[rows_s] = scale * basis.T @ a_q
        attn_s.self.query.bias[rows_s] = scale * basis.T @ attn_t.self.query.bias[rows_t]
        attn_s.self.key.weight[rows_s] = basis.T @ a_k
        attn_s.self.key.bias[rows_s] = basis.T @ attn_t.self.key.bias[rows_t]
        wo_h = wo_t[:, rows_t]                               # (d_t, w_t)
        circuit = P.T @ wo_h @ attn_t.self.value.weight[rows_t] @ P   # (d_s, d_s), rank <= w_t
        u, sv, vh = torch.linalg.svd(circuit)
        root = sv[:w_s].sqrt()
        attn_s.self.value.weight[rows_s] = root[:, None] * vh[:w_s]
        attn_s.self.value.bias[rows_s] = 0.0
        attn_s.output.dense.weight[:, rows_s] = u[:, :w_s] * root
        out_bias = out_bias + (wo_h @ attn_t.self.value.bias[rows_t]) @ P
    attn_s.output.dense.bias.copy_(out_bias)
    _project_norm(attn_s.output.LayerNorm, attn_t.output.LayerNorm, P)

    w1 = layer_t.intermediate.dense.weight @ P               # (ffn_t, d_s)
    w2 = P.T @ layer_t.output.dense.weight                   # (d_s, ffn_t)
    keep = layer_s.intermediate.dense.out_features
    units = (w1.norm(dim=1) * w2.norm(dim=0)).topk(keep).indices.sort().values
    layer_s.intermediate.dense.weight.copy_(w1[units])
    layer_s.intermediate.dense.bias.copy_(layer_t.intermediate.dense.bias[units])
    layer_s.output.dense.weight.copy_(w2[:, units])
    layer_s.output.dense.bias.copy_(layer_t.output.dense.bias @ P)
    _project_norm(layer_s.output.LayerNorm, layer_t.output.LayerNorm, P)


def _init_pca_layers(student: BertForSequenceClassification,
                     teacher: BertForSequenceClassification) -> None:
    """``init="pca-layers"``: the ``pca`` embeddings, and every layer (and the pooler) from the
    teacher layer the uniform mapping pairs it with, projected onto the same principal
    directions (:func:`_project_layer`). A tinylab option, not the paper's: TinyBERT starts
    its student at random. The classifier stays random (general distillation has no head)."""
    s, t = student.config, teacher.config
    problems = [f"{what}: student {a} vs teacher {b}" for what, a, b, ok in (
        ("attention heads", s.num_attention_heads, t.num_attention_heads,
         s.num_attention_heads == t.num_attention_heads),
        ("hidden size", s.hidden_size, t.hidden_size, s.hidden_size <= t.hidden_size),
        ("intermediate size", s.intermediate_size, t.intermediate_size,
         s.intermediate_size <= t.intermediate_size),
        ("layers", s.num_hidden_layers, t.num_hidden_layers,
         s.num_hidden_layers <= t.num_hidden_layers)) if not ok]
    if problems:
        raise ValueError("init='pca-layers' projects teacher layers onto a student with the "
                         "same heads and no more width, FFN or layers (" + "; ".join(problems)
                         + "); use init='pca' or 'random'")
    _init_pca(student, teacher)
    projection, _, _ = pca_projection(teacher.bert.embeddings.word_embeddings.weight,
                                      s.hidden_size)
    projection = projection.detach().to(torch.float32)
    mapping = layer_map(s.num_hidden_layers, t.num_hidden_layers, "uniform")
    with torch.no_grad():
        _project_norm(student.bert.embeddings.LayerNorm, teacher.bert.embeddings.LayerNorm,
                      projection)
        for m, n in enumerate(mapping, start=1):
            _project_layer(student.bert.encoder.layer[m - 1], teacher.bert.encoder.layer[n - 1],
                           projection, s.num_attention_heads)
        if student.bert.pooler is not None and teacher.bert.pooler is not None:
            dense_s, dense_t = student.bert.pooler.dense, teacher.bert.pooler.dense
            dense_s.weight.copy_(projection.T @ dense_t.weight @ projection)
            dense_s.bias.copy_(dense_t.bias @ projection)
    logger.info("student layers projected from teacher layers %s (uniform mapping)", mapping)


def _load_pretrained_student(spec: StudentConfig, config: BertConfig
                             ) -> BertForSequenceClassification:
    path = _resolve(spec.init)
    try:
        # BertConfig, not AutoConfig: the official TinyBERT config.json has no model_type.
        saved = BertConfig.from_pretrained(path)
    except OSError as err:
        raise ValueError(f"student init {spec.init!r} is neither one of {INIT_KEYWORDS} nor a "
                         f"folder / hub name of a pre-trained student ({err})") from None
    shape = {"num_layers": "num_hidden_layers", "hidden_size": "hidden_size",
             "num_heads": "num_attention_heads", "intermediate_size": "intermediate_size"}
    mismatched = [f"student.{ours}={getattr(spec, ours)} but the checkpoint has "
                  f"{getattr(saved, theirs)}" for ours, theirs in shape.items()
                  if getattr(spec, ours) != getattr(saved, theirs)]
    if mismatched:
        raise ValueError(f"the pre-trained student {spec.init!r} does not have the requested "
                         f"shape: " + "; ".join(mismatched) + ". Set the student.* fields to "
                         "the checkpoint's shape")
    if saved.vocab_size != config.vocab_size:
        raise ValueError(f"the pre-trained student {spec.init!r} has a vocabulary of "
                         f"{saved.vocab_size} tokens, the teacher {config.vocab_size}; both must "
                         f"use the same tokenizer")
    for name in ("hidden_act", "max_position_embeddings", "type_vocab_size", "layer_norm_eps",
                 "hidden_dropout_prob", "attention_probs_dropout_prob"):
        setattr(config, name, getattr(saved, name))
    student, info = load_pretrained(
        BertForSequenceClassification, path, config=config, attn_implementation=SCORES_ATTN, ignore_mismatched_sizes=True,
        output_loading_info=True)
    official = sorted(k for k in info["unexpected_keys"] if k.startswith(OFFICIAL_EXTRA_PREFIXES))
    if official:
        logger.warning("%s: left out %d official-code projection weight(s) (%s): they are the "
                       "authors' W matrices of the distillation loss, not part of the student; "
                       "tinylab's TinyBertLoss learns its own", spec.init, len(official),
                       ", ".join(official))
    other = sorted(set(info["unexpected_keys"]) - set(official))
    if other:
        logger.warning("%s: ignored unexpected weights %s", spec.init, other)
    # The head is new by design; anything else missing or reshaped would silently start random.
    head = ("classifier.", "bert.pooler.")
    missing = sorted(k for k in info["missing_keys"] if not k.startswith(head))
    mismatched = sorted(str(k[0] if isinstance(k, (tuple, list)) else k)
                        for k in info.get("mismatched_keys", []))
    mismatched = [k for k in mismatched if not k.startswith(head)]
    if missing or mismatched:
        shown = (missing + mismatched)[:4]
        raise ValueError(f"the pre-trained student {spec.init!r} lacks {len(missing)} and has "
                         f"{len(mismatched)} wrongly shaped backbone weight(s) (e.g. {shown}); "
                         f"they would start random. Is it a BERT checkpoint of this shape?")
    if any(k.startswith("bert.pooler.") for k in info["missing_keys"]):
        logger.warning("%s: no pooler weights in the checkpoint; the pooler starts random "
                       "(it is trained in the prediction stage)", spec.init)
    with torch.no_grad():  # a new head: the task and its labels are the teacher's
        nn.init.normal_(student.classifier.weight, std=config.initializer_range)
        nn.init.zeros_(student.classifier.bias)
    return student


# --------------------------------------------------------------------------------------------
# Compatibility
# --------------------------------------------------------------------------------------------

def _saved_vocab(model: PreTrainedModel) -> dict[str, int] | None:
    """The vocabulary saved next to a model loaded from a folder (None if there is none)."""
    folder = Path(str(getattr(model, "name_or_path", "") or ""))
    if not str(folder) or not folder.is_dir():
        return None
    if not any((folder / f).exists() for f in ("tokenizer.json", "vocab.txt")):
        return None
    return AutoTokenizer.from_pretrained(folder).get_vocab()


def _first_difference(a: dict[str, int], b: dict[str, int]) -> str:
    by_id_a = {i: t for t, i in a.items()}
    by_id_b = {i: t for t, i in b.items()}
    for i in sorted(set(by_id_a) | set(by_id_b)):
        if by_id_a.get(i) != by_id_b.get(i):
            return (f"id {i} is {by_id_a.get(i)!r} for the teacher, "
                    f"{by_id_b.get(i)!r} for the student")
    return "same tokens"


def check_student_shape(cfg: Any) -> None:
    """Check ``cfg.student`` against the teacher's ``config.json`` before anything loads.

    Reads only the configurations (no weights, no data): the student's own shape (positive
    sizes, width divisible by heads), the layer mapping (``cfg.loss.layer_mapping``, e.g.
    uniform needs the teacher's layer count to be a multiple of the student's), the head count
    when attention is distilled, and ``init="teacher"``'s equal widths. Raises one
    ``ValueError`` listing every problem with the ``student.*`` key to change. A pre-trained
    student folder (``init`` = a path or hub name) is checked when it loads instead.
    """
    _check_spec(cfg.student)
    teacher = AutoConfig.from_pretrained(_resolve(cfg.teacher.general_model or cfg.teacher.model))
    spec, problems = cfg.student, []
    try:
        layer_map(spec.num_layers, teacher.num_hidden_layers, cfg.loss.layer_mapping)
    except ValueError as err:
        problems.append(f"student.num_layers={spec.num_layers}: {err}")
    if cfg.loss.attention_weight and spec.num_heads != teacher.num_attention_heads:
        problems.append(f"student.num_heads={spec.num_heads}, but the attention loss compares "
                        f"head by head with the teacher's {teacher.num_attention_heads}; set "
                        f"student.num_heads={teacher.num_attention_heads} or "
                        f"loss.attention_weight=0")
    if spec.init == "teacher":
        for key, t_key in (("hidden_size", "hidden_size"), ("num_heads", "num_attention_heads"),
                           ("intermediate_size", "intermediate_size")):
            if getattr(spec, key) != getattr(teacher, t_key):
                problems.append(f"student.init='teacher' copies teacher layers, so student."
                                f"{key} must be {getattr(teacher, t_key)}, not "
                                f"{getattr(spec, key)}")
    if problems:
        raise ValueError("the student does not fit the teacher "
                         f"({teacher.num_hidden_layers} layers, {teacher.num_attention_heads} "
                         "heads): " + "; ".join(problems))


def check_compatible(teacher: PreTrainedModel, student: PreTrainedModel, *, tokenizer: Any = None,
                     need_attention: bool = True, need_prediction: bool = True,
                     layer_mapping: str | None = "uniform") -> None:
    """Raise ``ValueError`` listing every reason the pair cannot be distilled as configured.

    Checks: same vocabulary size; same vocabulary *contents* when both models were loaded from
    folders holding tokenizer files (or ``tokenizer`` against the student's saved vocabulary);
    the ``tokenizer``'s ids fit both embedding tables and its padding id matches; enough token
    types in the student; same labels in the same order when ``need_prediction`` (the
    prediction loss compares class c with class c; general distillation has no prediction
    term and can pass ``False``); the same number of heads when attention is distilled; layer counts that ``layer_mapping``
    accepts (uniform: teacher layers a multiple of student layers); attention scores switched
    on (:func:`use_attention_scores`) when attention is distilled.
    """
    t, s = teacher.config, student.config
    problems: list[str] = []
    if t.vocab_size != s.vocab_size:
        problems.append(f"vocabulary size: teacher {t.vocab_size}, student {s.vocab_size} "
                        f"(build the student from the teacher's config)")
    teacher_vocab = tokenizer.get_vocab() if tokenizer is not None else _saved_vocab(teacher)
    student_vocab = _saved_vocab(student)
    if teacher_vocab is not None and student_vocab is not None and teacher_vocab != student_vocab:
        problems.append("vocabulary contents differ: " + _first_difference(teacher_vocab,
                                                                          student_vocab))
    if tokenizer is not None:
        size = len(tokenizer)
        if size > min(t.vocab_size, s.vocab_size):
            problems.append(f"the tokenizer has {size} tokens but the embedding tables hold "
                            f"{t.vocab_size} (teacher) and {s.vocab_size} (student)")
        pad = tokenizer.pad_token_id
        for who, cfg in (("teacher", t), ("student", s)):
            if pad is not None and cfg.pad_token_id is not None and pad != cfg.pad_token_id:
                problems.append(f"padding id: tokenizer {pad}, {who} config {cfg.pad_token_id}")
    if s.type_vocab_size < t.type_vocab_size:
        problems.append(f"token types: student has {s.type_vocab_size}, teacher "
                        f"{t.type_vocab_size} (sentence pairs would index out of range)")
    if need_prediction and t.num_labels != s.num_labels:
        problems.append(f"labels: teacher has {t.num_labels} classes, student {s.num_labels}")
    elif need_prediction and dict(t.id2label) != dict(s.id2label):
        problems.append(f"label order: teacher id2label {dict(t.id2label)}, student "
                        f"{dict(s.id2label)}")
    if need_attention:
        if t.num_attention_heads != s.num_attention_heads:
            problems.append(f"heads: teacher {t.num_attention_heads}, student "
                            f"{s.num_attention_heads}; the attention loss compares head by head "
                            f"(set student.num_heads={t.num_attention_heads} or drop the "
                            f"attention term)")
        for who, model in (("teacher", teacher), ("student", student)):
            if not uses_attention_scores(model):
                problems.append(f"the {who} does not return pre-softmax scores "
                                f"(attn_implementation={model.config._attn_implementation!r}); "
                                f"call use_attention_scores({who})")
    try:
        if layer_mapping is not None:  # None: no layer is distilled (prediction-layer only)
            layer_map(s.num_hidden_layers, t.num_hidden_layers, layer_mapping)
    except ValueError as err:
        problems.append(f"layers: {err}")
    if problems:
        raise ValueError("teacher and student are not compatible:\n- " + "\n- ".join(problems))
