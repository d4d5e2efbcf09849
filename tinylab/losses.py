"""The TinyBERT objective: loss terms as pure functions, the layer mapping, and ``TinyBertLoss``.

Pure terms: :func:`attention_mse`, :func:`hidden_mse`, :func:`soft_cross_entropy`, and their
sums over the layer mapping :func:`mapped_attention_loss` / :func:`mapped_hidden_loss`.
:class:`TinyBertLoss` only holds the settings and the projections W_e, W_h
(:mod:`tinylab.projections`) and calls the terms a stage uses.

Reference: Jiao et al., "TinyBERT: Distilling BERT for Natural Language Understanding",
Findings of EMNLP 2020 (arXiv 1909.10351), "Transformer distillation": L_embd, L_attn, L_hidn, L_pred. The paper's choices are the
defaults; the authors' code (``task_distill.py`` / ``general_distill.py``) differs in a few
places, each reachable through an ``official=...`` switch so a notebook can measure the gap
(see ``docs/paper-vs-code.md``).

Notation: teacher with N transformer layers and width d, student with M layers and width d'.
``hidden_states`` from Hugging Face has N+1 (M+1) entries, index 0 being the embedding output.
Every function treats the teacher side as a fixed target: it is detached, so gradients reach
the student (and the projections in :class:`TinyBertLoss`) but never the teacher.
"""
from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tinylab.projections import TinyBertProjections
from tinylab.projections import width_projection  # W_e / W_h; re-exported for notebook 08

__all__ = ["soft_cross_entropy", "kd_kl_div", "hinton_kd_loss", "attention_mse", "hidden_mse", "layer_map",
           "mapped_attention_loss", "mapped_hidden_loss", "teacher_layers_for",
           "TinyBertLoss", "STAGES", "LOSS_TERMS", "width_projection",
           "cosine_hidden_loss", "minilm_attention_kl", "minilm_value_relation_kl"]

STAGES = ("general", "intermediate", "prediction")
LOSS_TERMS = ("embedding", "attention", "hidden", "prediction")

# The official code's clamp threshold: scores at or below it are treated as masked.
OFFICIAL_MASK_THRESHOLD = -1e2


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")


def _fp32(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
    """Upcast to float32. Under mixed precision (bf16/fp16 autocast) the models hand over
    16-bit scores, hidden states and logits; squaring and summing them in 16 bits loses the
    small differences the losses are made of (bf16 keeps 8 significant bits), so every loss
    here computes in float32. A no-op for float32 inputs."""
    return tuple(t.float() for t in tensors)


def _check_same_shape(student: torch.Tensor, teacher: torch.Tensor, what: str) -> None:
    if student.shape != teacher.shape:
        raise ValueError(f"{what}: student shape {tuple(student.shape)} != teacher shape "
                         f"{tuple(teacher.shape)}")


# --------------------------------------------------------------------------------------------
# Prediction-layer losses
# --------------------------------------------------------------------------------------------

def soft_cross_entropy(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                       temperature: float = 1.0, *, scale_t2: bool = False,
                       official: bool = False) -> torch.Tensor:
    """Cross-entropy between the teacher's and the student's softened predictions (L_pred).

    Shapes: logits (B, C). With p_T = softmax(z_T / t) and log p_S = log_softmax(z_S / t)::

        L_pred = -(1/B) sum_b sum_c p_T[b, c] * log p_S[b, c]

    The target is the teacher's *probability distribution*, not its log-probabilities nor its
    argmax. ``scale_t2=True`` multiplies by t^2 (Hinton et al. 2015) so the gradient size does
    not shrink as t grows; the paper and the official code use t = 1 and no factor.

    ``official=True`` is the authors' ``(-softmax(z_T/t) * log_softmax(z_S/t)).mean()``: the
    mean runs over batch AND classes, i.e. the loss is 1/C of the standard one (``scale_t2``
    still applies on top if asked). Differs from KL(p_T || p_S) only by the teacher's entropy,
    a constant, so the gradients w.r.t. the student are the same as :func:`kd_kl_div`'s.
    """
    _check_temperature(temperature)
    _check_same_shape(student_logits, teacher_logits, "soft_cross_entropy logits")
    student_logits, teacher_logits = _fp32(student_logits, teacher_logits)
    p_teacher = F.softmax(teacher_logits.detach() / temperature, dim=-1)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    per_class = -p_teacher * log_p_student
    loss = per_class.mean() if official else per_class.sum(-1).mean()
    return loss * temperature ** 2 if scale_t2 else loss


def kd_kl_div(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
              temperature: float = 1.0, *, scale_t2: bool = True) -> torch.Tensor:
    """KL(p_T || p_S) between softened predictions, averaged over the batch (Hinton et al. 2015).

    Shapes: logits (B, C). ``(1/B) sum_b sum_c p_T (log p_T - log p_S)`` with
    p = softmax(z / t), times t^2 when ``scale_t2`` (the default here, as in DistilBERT and
    Hinton et al.). Not a term of the TinyBERT paper; it is the classic KD loss the course
    compares against. Equal to :func:`soft_cross_entropy` minus the teacher's entropy.
    """
    _check_temperature(temperature)
    _check_same_shape(student_logits, teacher_logits, "kd_kl_div logits")
    student_logits, teacher_logits = _fp32(student_logits, teacher_logits)
    log_p_teacher = F.log_softmax(teacher_logits.detach() / temperature, dim=-1)
    log_p_student = F.log_softmax(student_logits / temperature, dim=-1)
    kl = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(-1).mean()
    return kl * temperature ** 2 if scale_t2 else kl


def hinton_kd_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   labels: torch.Tensor, temperature: float = 2.0, alpha: float = 0.1
                   ) -> dict[str, torch.Tensor]:
    """The classic distillation objective of Hinton et al. 2015 (Sec. 2), gold labels included.

    Shapes: logits (B, C), labels (B,) class indices. With p = softmax(z / t)::

        hard  = CE(y, softmax(z_S))                        (t = 1: the ordinary loss)
        soft  = t^2 * KL(p_T || p_S)                       (batch mean; t^2 keeps the gradient
                                                            size independent of t)
        total = alpha * hard + (1 - alpha) * soft

    Returns ``{"hard": .., "soft": .., "total": ..}`` (scalars; ``total`` is the one to
    back-propagate). Unlike TinyBERT's prediction stage (:func:`soft_cross_entropy` at t = 1,
    no gold labels, so it can train on augmented sentences), this needs a gold label for every
    example. ``alpha=0`` is pure soft-target KD, ``alpha=1`` ordinary training.
    """
    if not 0 <= alpha <= 1:
        raise ValueError(f"alpha is the weight of the gold-label term and must lie in [0, 1], "
                         f"got {alpha!r}")
    if labels.shape != student_logits.shape[:1]:
        raise ValueError(f"labels must have shape (batch,) = ({student_logits.shape[0]},), got "
                         f"{tuple(labels.shape)}")
    soft = kd_kl_div(student_logits, teacher_logits, temperature, scale_t2=True)
    hard = F.cross_entropy(student_logits.float(), labels)
    return {"hard": hard, "soft": soft, "total": alpha * hard + (1 - alpha) * soft}


# --------------------------------------------------------------------------------------------
# Transformer-layer losses
# --------------------------------------------------------------------------------------------

def _real_token_mask(attention_mask: torch.Tensor, batch: int, length: int) -> torch.Tensor:
    if attention_mask.shape != (batch, length):
        raise ValueError(f"attention_mask must have shape (batch, seq_len) = ({batch}, {length}),"
                         f" got {tuple(attention_mask.shape)}")
    return attention_mask.to(torch.bool)


def attention_mse(student_attn: torch.Tensor, teacher_attn: torch.Tensor,
                  attention_mask: torch.Tensor | None = None, *,
                  official: bool = False) -> torch.Tensor:
    """MSE between pre-softmax attention scores of one student and one teacher layer (L_attn).

    Shapes: scores (B, H, L, L) (query, key), ``attention_mask`` (B, L) with 1 for real tokens.
    The paper's ``(1/h) sum_i MSE(A_i^S, A_i^T)`` is the mean squared error over all
    (head, query, key) entries, so heads must match (head i is compared with head i).

    * With a mask (tinylab default): the mean over the (batch, head, query, key) entries whose
      query AND key are real tokens::

          sum_{b,h,q,k} r_bq r_bk (A^S - A^T)^2  /  (H * sum_b n_b^2)

      Whatever sits in padded positions (Hugging Face puts ``finfo.min`` there) is ignored.
    * Without a mask: plain MSE over all entries. Fine for unpadded batches; with padding,
      two float32 Hugging Face models both hold exactly ``finfo.min`` in padded key columns,
      so the result is finite and equals the official one below, but a single mismatch in
      padding or mask convention makes it ``inf`` (see :mod:`tinylab.attention`).
    * ``official=True`` (the authors' code): both tensors go through
      ``where(x <= -1e2, 0, x)``, then a plain MSE. Padded key columns become 0 on both sides
      but still count in the denominator, padded query rows are compared as they are, and a
      genuine score below -100 would be zeroed too. ``attention_mask`` is ignored.
    """
    _check_same_shape(student_attn, teacher_attn, "attention_mse scores")
    if student_attn.dim() != 4:
        raise ValueError(f"attention scores must be (batch, heads, L, L), got "
                         f"{tuple(student_attn.shape)}")
    student_attn, teacher_attn = _fp32(student_attn, teacher_attn.detach())
    if official:
        def clamp(x: torch.Tensor) -> torch.Tensor:
            return torch.where(x <= OFFICIAL_MASK_THRESHOLD, torch.zeros_like(x), x)
        return F.mse_loss(clamp(student_attn), clamp(teacher_attn))
    if attention_mask is None:
        return F.mse_loss(student_attn, teacher_attn)
    batch, heads, length, _ = student_attn.shape
    real = _real_token_mask(attention_mask, batch, length)
    pairs = (real[:, :, None] & real[:, None, :])[:, None]          # (B, 1, L, L)
    # Select before squaring: masked entries may hold +-inf/nan-prone huge values, and
    # where() sends a zero gradient to them.
    diff = torch.where(pairs, student_attn - teacher_attn, torch.zeros_like(student_attn))
    count = pairs.sum() * heads
    return diff.pow(2).sum() / count.clamp(min=1)


def hidden_mse(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
               attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """MSE between (projected) student and teacher hidden states (L_hidn, and L_embd for embeddings).

    Shapes: (B, L, D) each; the caller has already applied the projection W_h (or W_e), so the
    student tensor is ``H^S W_h`` with the teacher's width D. With ``attention_mask`` (B, L):
    the mean over real tokens and D, ``sum_{b,l real} sum_d (H^S W - H^T)^2 / (n_real * D)``;
    without: plain MSE. The official code never masks hidden states (padded tokens count).
    """
    _check_same_shape(student_hidden, teacher_hidden, "hidden_mse hidden states")
    student_hidden, teacher_hidden = _fp32(student_hidden, teacher_hidden.detach())
    if attention_mask is None:
        return F.mse_loss(student_hidden, teacher_hidden)
    batch, length, width = student_hidden.shape
    real = _real_token_mask(attention_mask, batch, length)[..., None]    # (B, L, 1)
    diff = torch.where(real, student_hidden - teacher_hidden, torch.zeros_like(student_hidden))
    return diff.pow(2).sum() / (real.sum() * width).clamp(min=1)


# --------------------------------------------------------------------------------------------
# Layer mapping
# --------------------------------------------------------------------------------------------

def layer_map(num_student_layers: int, num_teacher_layers: int,
              strategy: str = "uniform") -> list[int]:
    """The teacher transformer layer n = g(m) (1-based) that student layer m = 1..M learns from.

    * ``"uniform"`` (paper default): g(m) = m * N / M, e.g. M=4, N=12 -> [3, 6, 9, 12].
      Needs N to be a multiple of M. The official code's indexing gives the same layers.
    * ``"spread"``: g(m) = ceil(m * N / M), the uniform rule for any depths: equal to
      ``"uniform"`` when M divides N, and otherwise still spread over the whole teacher with
      the last student layer on the last teacher layer (M=4, N=6 -> [2, 3, 5, 6]). The
      official code computes ``N // M`` layers per block, which for M=4, N=6 is 1: it
      silently maps onto the *first* four layers, the ``"bottom"`` strategy.
    * ``"top"``: g(m) = N - M + m (the last M layers).
    * ``"bottom"``: g(m) = m (the first M layers).

    The embedding layer always maps to the embeddings (g(0) = 0) and the prediction layer to
    the prediction layer; they are not listed. The paper compares the three strategies.
    """
    m, n = num_student_layers, num_teacher_layers
    for name, value in (("num_student_layers", m), ("num_teacher_layers", n)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{name} must be a positive int, got {value!r}")
    if m > n:
        raise ValueError(f"the student has more layers ({m}) than the teacher ({n}); "
                         f"a layer mapping needs num_student_layers <= num_teacher_layers")
    if strategy == "uniform":
        if n % m:
            divisors = [d for d in range(1, n + 1) if n % d == 0]
            raise ValueError(f"uniform layer mapping needs the teacher's {n} layers to be a "
                             f"multiple of the student's {m}; use a student with one of "
                             f"{divisors} layers, or strategy 'spread' (or 'top' / "
                             f"'bottom')")
        step = n // m
        return [i * step for i in range(1, m + 1)]
    if strategy == "spread":
        return [-(-i * n // m) for i in range(1, m + 1)]  # ceil(i * n / m) in integers
    if strategy == "top":
        return [n - m + i for i in range(1, m + 1)]
    if strategy == "bottom":
        return list(range(1, m + 1))
    raise ValueError(f"unknown layer mapping strategy {strategy!r}; "
                     f"choose 'uniform', 'spread', 'top' or 'bottom'")


# --------------------------------------------------------------------------------------------
# The full objective
# --------------------------------------------------------------------------------------------

def _field(outputs: Any, name: str) -> Any:
    """``outputs.name`` for Hugging Face ModelOutputs and plain dicts alike (None if absent)."""
    if isinstance(outputs, Mapping):
        return outputs.get(name)
    return getattr(outputs, name, None)


def _layer(items: Any, index: int, what: str, *, offset: int) -> torch.Tensor:
    """Layer ``index`` of a full tuple (at ``index - offset``) or of a cached {index: t} dict."""
    if isinstance(items, Mapping):
        if index not in items:
            raise KeyError(f"teacher {what} for layer {index} missing from the cached subset "
                           f"(has {sorted(items)}); cache the layers TinyBertLoss.teacher_layers() "
                           f"lists")
        return items[index]
    return items[index - offset]


def _check_scores(attn: torch.Tensor, who: str) -> None:
    # Softmax probabilities are non-negative and their rows sum to 1; scores are not (and
    # padded keys hold finfo.min). Catch the common mistake of distilling eager probabilities.
    if attn.device.type == "meta":  # no values to look at (device-placement tests)
        return
    if attn.min() >= 0 and torch.allclose(attn.sum(-1), torch.ones((), dtype=attn.dtype),
                                          atol=1e-4):
        raise ValueError(f"the {who}'s attentions look like softmax probabilities; TinyBERT "
                         f"distils pre-softmax scores: call tinylab.models.use_attention_scores"
                         f"(model) before the forward pass")


def mapped_attention_loss(student_scores: Sequence[torch.Tensor], teacher_scores: Any,
                          mapping: Sequence[int], attention_mask: torch.Tensor | None = None, *,
                          official: bool = False) -> torch.Tensor:
    """L_attn over the layer mapping: ``sum_m attention_mse(A_m^S, A_g(m)^T)``.

    ``student_scores``: the student's M pre-softmax score tensors (B, H, L, L), layer m at
    index m - 1 (Hugging Face ``attentions``). ``teacher_scores``: the teacher's full tuple, or
    a cached ``{n: (B, H, L, L)}`` keyed by the 1-based layer. ``mapping[m - 1] = g(m)``
    (:func:`layer_map`). The first pair is checked to be scores, not probabilities.
    """
    total = []
    for m, n in enumerate(mapping, start=1):
        student, teacher = student_scores[m - 1], _layer(teacher_scores, n, "attentions", offset=1)
        if m == 1:
            _check_scores(student, "student")
            _check_scores(teacher, "teacher")
        total.append(attention_mse(student, teacher, attention_mask, official=official))
    return sum(total)


def mapped_hidden_loss(student_hidden: Sequence[torch.Tensor], teacher_hidden: Any,
                       mapping: Sequence[int], project: Callable[[torch.Tensor], torch.Tensor],
                       attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """L_hidn over the layer mapping: ``sum_m MSE(H_m^S W_h, H_g(m)^T)``.

    ``student_hidden``: the student's M + 1 hidden states (B, L, d'), index 0 the embeddings
    (Hugging Face ``hidden_states``). ``teacher_hidden``: the teacher's full tuple or a cached
    ``{i: (B, L, d)}`` with the same indexing. ``project``: W_h, (B, L, d') -> (B, L, d).
    ``attention_mask`` (B, L) restricts the MSE to real tokens (None: every position).
    """
    return sum(hidden_mse(project(student_hidden[m]),
                          _layer(teacher_hidden, n, "hidden_states", offset=0), attention_mask)
               for m, n in enumerate(mapping, start=1))


def teacher_layers_for(mapping: Sequence[int], terms: Collection[str]) -> dict[str, Any]:
    """What the loss terms ``terms`` read from the teacher, so a loop can cache only that.

    ``{"hidden_states": [i, ...], "attentions": [n, ...], "logits": bool}``: indices into
    Hugging Face ``hidden_states`` (0 = embeddings) and 1-based transformer layers.
    """
    hidden = ([0] if "embedding" in terms else []) + (
        list(mapping) if "hidden" in terms else [])
    return {"hidden_states": hidden,
            "attentions": list(mapping) if "attention" in terms else [],
            "logits": "prediction" in terms}


class TinyBertLoss(nn.Module):
    """TinyBERT's distillation objective (L_embd, L_attn, L_hidn, L_pred): the settings, the
    projections, and one call that computes the terms a stage uses.

    For student layer m mapped to teacher layer n = g(m) (:func:`layer_map`)::

        embedding  = MSE(E^S W_e, E^T)                              (L_embd, hidden_mse)
        attention  = sum_m attention_mse(A_m^S, A_g(m)^T)           (L_attn, mapped_attention_loss)
        hidden     = sum_m MSE(H_m^S W_h, H_g(m)^T)                 (L_hidn, mapped_hidden_loss)
        prediction = soft_cross_entropy(z^S, z^T, t)                (L_pred)
        total      = sum of weight * term over the terms the stage uses   (L_model, all lambda = 1)

    The terms are the pure functions named on the right; this class only holds the settings
    and W_e, W_h (``self.projections``, a :class:`~tinylab.projections.TinyBertProjections`).

    Stages: ``"general"`` and ``"intermediate"`` use embedding + attention + hidden (general
    distillation and task-distillation stage a), ``"prediction"`` uses the prediction term only
    (task-distillation stage b). A term outside the stage, or with weight 0, is not computed
    and reported as 0. Returned components are unweighted; ``total`` is weighted.

    Projections: W_e and W_h are ``nn.Linear(d', d)`` (paper: separate matrices; one W_h shared
    by all layers). ``shared_projection=True`` uses one ``fit_dense`` for embeddings and all
    hidden states, as the official code does. When d' == d they start as the identity, so a
    student copied from the teacher starts at zero loss. They are learnable: give
    ``loss_fn.parameters()`` to the optimiser together with the student's, and move the module
    to the student's device.

    Inputs: ``student_out`` is the student's Hugging Face output, computed with
    ``output_hidden_states=True`` and ``output_attentions=True`` after
    :func:`tinylab.models.use_attention_scores` (so attentions are pre-softmax scores).
    ``teacher_out`` is either the teacher's full output, or the cached subset from
    :meth:`select_teacher_outputs`: ``{"hidden_states": {i: (B, L, d)}, "attentions":
    {n: (B, H, L, L)}, "logits": (B, C)}`` where ``i`` indexes Hugging Face ``hidden_states``
    (0 = embeddings) and ``n`` is the 1-based transformer layer (``attentions[n - 1]``).
    ``attention_mask`` (B, L), 1 for real tokens, masks the attention and hidden MSEs.

    Differences from the official code, as switches: ``official_attention`` (clamp at -100
    and plain MSE instead of the padding mask), ``shared_projection``, ``official_prediction``
    (mean over classes too), ``official_hidden`` (embedding and hidden MSEs over every
    position, padding included, as the official code does; the attention term keeps its own
    switch).
    """

    def __init__(self, student_config: Any, teacher_config: Any, *,
                 layer_mapping: str = "uniform", shared_projection: bool = False,
                 weights: Mapping[str, float] | None = None, temperature: float = 1.0,
                 scale_t2: bool = False, official_attention: bool = False,
                 official_prediction: bool = False, official_hidden: bool = False) -> None:
        super().__init__()
        _check_temperature(temperature)
        unknown = set(weights or {}) - set(LOSS_TERMS)
        if unknown:
            raise ValueError(f"unknown loss weight(s) {sorted(unknown)}; valid: {list(LOSS_TERMS)}")
        self.weights = {term: 1.0 for term in LOSS_TERMS} | {k: float(v) for k, v in
                                                             (weights or {}).items()}
        self.layer_mapping = layer_mapping
        self.mapping = layer_map(student_config.num_hidden_layers,
                                 teacher_config.num_hidden_layers, layer_mapping)
        s_heads, t_heads = student_config.num_attention_heads, teacher_config.num_attention_heads
        if self.weights["attention"] and s_heads != t_heads:
            raise ValueError(f"the attention loss compares head i of the student with head i of "
                             f"the teacher, but the student has {s_heads} heads and the teacher "
                             f"{t_heads}; build the student with num_heads={t_heads}, or set the "
                             f"attention weight to 0")
        self.temperature = temperature
        self.scale_t2 = scale_t2
        self.official_attention = official_attention
        self.official_prediction = official_prediction
        self.official_hidden = official_hidden
        self.shared_projection = shared_projection
        self.projections = TinyBertProjections(student_config.hidden_size,
                                               teacher_config.hidden_size,
                                               shared=shared_projection)

    @property
    def embedding_projection(self) -> nn.Linear:
        """W_e (the shared ``fit_dense`` with ``shared_projection``)."""
        return self.projections.w_e

    @property
    def hidden_projection(self) -> nn.Linear:
        """W_h (the shared ``fit_dense`` with ``shared_projection``)."""
        return self.projections.w_h

    @classmethod
    def from_config(cls, cfg: Any, student_config: Any, teacher_config: Any) -> "TinyBertLoss":
        """Build from a :class:`tinylab.config.LossConfig` and the two models' configs."""
        return cls(student_config, teacher_config, layer_mapping=cfg.layer_mapping,
                   shared_projection=cfg.shared_projection,
                   weights={"embedding": cfg.embedding_weight, "attention": cfg.attention_weight,
                            "hidden": cfg.hidden_weight, "prediction": cfg.prediction_weight},
                   temperature=cfg.temperature, scale_t2=cfg.scale_t2,
                   official_attention=cfg.official_attention,
                   official_prediction=cfg.official_prediction,
                   official_hidden=getattr(cfg, "official_hidden", False))

    # -- which terms and teacher tensors a stage needs ----------------------------------------

    def active_terms(self, stage: str) -> list[str]:
        """The terms computed in ``stage`` (stage terms with a non-zero weight)."""
        if stage not in STAGES:
            raise ValueError(f"unknown stage {stage!r}; valid stages: {', '.join(STAGES)}")
        terms = ["prediction"] if stage == "prediction" else ["embedding", "attention", "hidden"]
        return [t for t in terms if self.weights[t] != 0]

    def teacher_layers(self, stage: str = "intermediate") -> dict[str, Any]:
        """What the loss reads from the teacher in ``stage`` (:func:`teacher_layers_for`)."""
        return teacher_layers_for(self.mapping, self.active_terms(stage))

    def select_teacher_outputs(self, teacher_out: Any, stage: str = "intermediate"
                               ) -> dict[str, Any]:
        """The detached subset of a full teacher output that ``stage`` needs (cacheable)."""
        need = self.teacher_layers(stage)
        subset: dict[str, Any] = {}
        if need["hidden_states"]:
            hidden = _field(teacher_out, "hidden_states")
            subset["hidden_states"] = {i: _layer(hidden, i, "hidden_states", offset=0).detach()
                                       for i in need["hidden_states"]}
        if need["attentions"]:
            attentions = _field(teacher_out, "attentions")
            subset["attentions"] = {n: _layer(attentions, n, "attentions", offset=1).detach()
                                    for n in need["attentions"]}
        if need["logits"]:
            subset["logits"] = _field(teacher_out, "logits").detach()
        return subset

    # -- the loss -----------------------------------------------------------------------------

    def project_embedding(self, student_embedding: torch.Tensor) -> torch.Tensor:
        """E^S W_e: (B, L, d') -> (B, L, d)."""
        return self.projections.embedding(student_embedding)

    def project_hidden(self, student_hidden: torch.Tensor) -> torch.Tensor:
        """H^S W_h: (B, L, d') -> (B, L, d)."""
        return self.projections.hidden(student_hidden)

    def _check_inputs(self, terms: Sequence[str], s_hidden, s_attn, t_hidden, t_attn) -> None:
        if ({"embedding", "hidden"} & set(terms)) and (s_hidden is None or t_hidden is None):
            raise ValueError("hidden states missing: run both models with "
                             "output_hidden_states=True (or cache them with "
                             "select_teacher_outputs)")
        if "attention" in terms and (s_attn is None or t_attn is None):
            raise ValueError("attentions missing: call use_attention_scores(model) and run both "
                             "models with output_attentions=True")
        if s_hidden is not None and len(s_hidden) != len(self.mapping) + 1:
            raise ValueError(f"the student returned {len(s_hidden)} hidden states, expected "
                             f"{len(self.mapping) + 1} (embeddings + {len(self.mapping)} layers)")

    def forward(self, student_out: Any, teacher_out: Any,
                attention_mask: torch.Tensor | None = None,
                stage: str = "intermediate") -> dict[str, torch.Tensor]:
        """Loss components and weighted total; see the class docstring for the inputs."""
        terms = self.active_terms(stage)
        s_hidden = _field(student_out, "hidden_states")
        s_attn = _field(student_out, "attentions")
        t_hidden = _field(teacher_out, "hidden_states")
        t_attn = _field(teacher_out, "attentions")
        self._check_inputs(terms, s_hidden, s_attn, t_hidden, t_attn)

        candidates = (_field(student_out, "logits"), s_hidden and s_hidden[0],
                      s_attn and s_attn[0])
        anchor = next((x for x in candidates if isinstance(x, torch.Tensor)), None)
        if anchor is None:
            raise ValueError("student_out has no logits, hidden_states or attentions")
        zero = torch.zeros((), device=anchor.device)
        losses = {term: zero for term in LOSS_TERMS}
        hidden_mask = None if self.official_hidden else attention_mask

        if "embedding" in terms:
            losses["embedding"] = hidden_mse(self.project_embedding(s_hidden[0]),
                                             _layer(t_hidden, 0, "hidden_states", offset=0),
                                             hidden_mask)
        if "hidden" in terms:
            losses["hidden"] = mapped_hidden_loss(s_hidden, t_hidden, self.mapping,
                                                  self.project_hidden, hidden_mask)
        if "attention" in terms:
            losses["attention"] = mapped_attention_loss(s_attn, t_attn, self.mapping,
                                                        attention_mask,
                                                        official=self.official_attention)
        if "prediction" in terms:
            s_logits, t_logits = _field(student_out, "logits"), _field(teacher_out, "logits")
            if s_logits is None or t_logits is None:
                raise ValueError("logits missing from the student or teacher outputs")
            losses["prediction"] = soft_cross_entropy(
                s_logits, t_logits, self.temperature, scale_t2=self.scale_t2,
                official=self.official_prediction)

        losses["total"] = sum((self.weights[t] * losses[t] for t in terms), zero)
        return losses

    def extra_repr(self) -> str:
        return (f"mapping={self.mapping} ({self.layer_mapping}), weights={self.weights}, "
                f"temperature={self.temperature}, scale_t2={self.scale_t2}, "
                f"official_attention={self.official_attention}, "
                f"official_prediction={self.official_prediction}, "
                f"official_hidden={self.official_hidden}")


# --------------------------------------------------------------------------------------------
# Other objectives (notebook 08): DistilBERT's cosine loss, MiniLM's self-attention transfer
# --------------------------------------------------------------------------------------------

def cosine_hidden_loss(student_hidden: torch.Tensor, teacher_hidden: torch.Tensor,
                       attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """DistilBERT's cosine loss between student and teacher hidden states, per token.

    Sanh et al., "DistilBERT, a distilled version of BERT" (2019), Sec. 2: a cosine embedding
    loss "which will tend to align the directions of the student and teacher hidden states
    vectors". Shapes: (B, L, D) each; the student tensor must already have the teacher's
    width D (DistilBERT's student has it; a narrower one goes through a learned projection
    first, see :func:`tinylab.distill.objectives.train_distilbert`)::

        L_cos = (1 / n_real) sum_{b, l real} (1 - <h_S[b,l], h_T[b,l]> / (|h_S[b,l]| |h_T[b,l]|))

    With ``attention_mask`` (B, L), 1 for real tokens, only real tokens count (as in Hugging
    Face's ``research_projects/distillation``, which selects them and applies
    ``CosineEmbeddingLoss`` with target +1 and a mean over tokens); without it every position
    counts. Only the direction is matched: scaling ``h_S`` changes nothing, unlike
    :func:`hidden_mse`. The teacher side is detached.
    """
    _check_same_shape(student_hidden, teacher_hidden, "cosine_hidden_loss hidden states")
    if student_hidden.dim() != 3:
        raise ValueError(f"hidden states must be (batch, seq_len, width), got "
                         f"{tuple(student_hidden.shape)}")
    student_hidden, teacher_hidden = _fp32(student_hidden, teacher_hidden.detach())
    distance = 1 - F.cosine_similarity(student_hidden, teacher_hidden, dim=-1)   # (B, L)
    if attention_mask is None:
        return distance.mean()
    real = _real_token_mask(attention_mask, *distance.shape)
    return torch.where(real, distance, torch.zeros_like(distance)).sum() / real.sum().clamp(min=1)


def _masked_row_kl(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                   attention_mask: torch.Tensor | None) -> torch.Tensor:
    """Mean over real (batch, head, query) rows of KL(softmax(teacher row) || softmax(student
    row)); logits (B, H, L, L), the softmax over the last (key) axis, padded keys excluded."""
    student_logits, teacher_logits = _fp32(student_logits, teacher_logits.detach())
    batch, heads, length, _ = student_logits.shape
    if attention_mask is None:
        real = torch.ones(batch, length, dtype=torch.bool, device=student_logits.device)
    else:
        real = _real_token_mask(attention_mask, batch, length)
    keys = real[:, None, None, :]                                      # (B, 1, 1, L)
    lowest = torch.finfo(torch.float32).min  # what Hugging Face's additive mask puts there
    log_p_teacher = F.log_softmax(teacher_logits.masked_fill(~keys, lowest), dim=-1)
    log_p_student = F.log_softmax(student_logits.masked_fill(~keys, lowest), dim=-1)
    # Select, do not multiply: at padded keys both log-probabilities are huge negatives.
    per_key = torch.where(keys, log_p_teacher.exp() * (log_p_teacher - log_p_student),
                          torch.zeros_like(log_p_student))
    rows = real[:, None, :].expand(batch, heads, length)               # real queries
    per_row = torch.where(rows, per_key.sum(-1), per_key.new_zeros(()))
    return per_row.sum() / rows.sum().clamp(min=1)


def minilm_attention_kl(student_scores: torch.Tensor, teacher_scores: torch.Tensor,
                        attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """MiniLM's self-attention distribution transfer (Wang et al. 2020, NeurIPS, Sec. 3).

    Shapes: pre-softmax scores (B, H, L, L) (query, key) of the *last* Transformer layer of
    each model, e.g. ``out.attentions[-1]`` after :func:`tinylab.models.use_attention_scores`;
    the head counts must match (head a is compared with head a), the widths need not. With
    A = softmax(Q K^T / sqrt(d_k)) over the keys::

        L_AT = 1 / (A_h |x|) sum_{a=1..A_h} sum_{t=1..|x|} KL(A^T[a, t, :] || A^S[a, t, :])

    i.e. the mean over heads and query tokens of a KL divergence between the teacher's and the
    student's attention distributions (probabilities, unlike TinyBERT's MSE on raw scores).
    Over a batch: the mean over all real (example, head, query) rows. With ``attention_mask``
    (B, L) padded keys are left out of both softmaxes and padded query rows out of the mean;
    without it every row counts (right for unpadded batches; padded keys that already hold
    Hugging Face's ``finfo.min`` still get probability 0). The teacher side is detached.
    """
    _check_same_shape(student_scores, teacher_scores, "minilm_attention_kl scores")
    if student_scores.dim() != 4:
        raise ValueError(f"attention scores must be (batch, heads, L, L), got "
                         f"{tuple(student_scores.shape)}")
    _check_scores(student_scores, "student")
    _check_scores(teacher_scores, "teacher")
    return _masked_row_kl(student_scores, teacher_scores, attention_mask)


def minilm_value_relation_kl(student_values: torch.Tensor, teacher_values: torch.Tensor,
                             attention_mask: torch.Tensor | None = None) -> torch.Tensor:
    """MiniLM's self-attention value-relation transfer (Wang et al. 2020, NeurIPS, Sec. 3).

    Shapes: the values of the last Transformer layer split into heads, (B, H, L, d_k) for the
    student and (B, H, L, d_k') for the teacher: same batch, heads and length; the head widths
    d_k and d_k' may differ, because the relation is L x L::

        VR   = softmax(V V^T / sqrt(d_k))                      per head, over the last axis
        L_VR = 1 / (A_h |x|) sum_{a=1..A_h} sum_{t=1..|x|} KL(VR^T[a, t, :] || VR^S[a, t, :])

    Masking and the batch mean as in :func:`minilm_attention_kl` (padded tokens are left out
    as keys and as rows). MiniLM's objective is ``L_AT + L_VR``. The teacher side is detached.
    """
    for name, values in (("student", student_values), ("teacher", teacher_values)):
        if values.dim() != 4:
            raise ValueError(f"{name} values must be (batch, heads, L, head_dim), got "
                             f"{tuple(values.shape)}")
    if student_values.shape[:3] != teacher_values.shape[:3]:
        raise ValueError(f"minilm_value_relation_kl: student values {tuple(student_values.shape)}"
                         f" and teacher values {tuple(teacher_values.shape)} must agree in "
                         f"(batch, heads, L); the relation compares head a with head a")

    def relation(values: torch.Tensor) -> torch.Tensor:
        values = values.float()
        return values @ values.transpose(-1, -2) / values.shape[-1] ** 0.5

    return _masked_row_kl(relation(student_values), relation(teacher_values.detach()),
                          attention_mask)
