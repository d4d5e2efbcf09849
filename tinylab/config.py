"""Configuration: frozen dataclasses and the named profiles ``ci``, ``quick`` and ``full``.

Every knob of the course lives here, so a notebook, the command line and a benchmark that use
the same profile train the same thing. A configuration is immutable; change it with overrides::

    >>> from tinylab.config import get_config
    >>> cfg = get_config("ci", ["student.num_layers=2", "loss.temperature=2.0"])
    >>> cfg.student.num_layers, cfg.loss.temperature
    (2, 2.0)

Profiles (see ``PROFILES``):

* ``ci``    - a few hundred examples and a few dozen steps: every stage runs in seconds. CI uses it.
* ``quick`` - the default. The offline course on a 2-core laptop CPU with meaningful results
  (teacher: all-MiniLM-L6-v2 from the offline assets; data: Rotten Tomatoes snippets);
  ``precision="auto"``: bf16 autocast on hardware with native bf16, fp32 elsewhere.
* ``full``  - the paper's setting (Jiao et al. 2020, its experimental setup): ``bert-base-uncased`` fine-tuned on
  GLUE SST-2 as the teacher, the student initialised from ``huawei-noah/TinyBERT_General_4L_312D``.
  Needs the model hub and, realistically, a GPU.

Resolution order of the profile name: explicit argument, else ``$TINYLAB_PROFILE``, else ``quick``.
``$TINYLAB_DEVICE`` and ``$TINYLAB_PRECISION``, when set, override ``device`` and ``precision``
of every profile (explicit overrides still win): that is how a notebook on Colab, or
``make gpu-check``, moves the whole course to another device without editing a cell.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import os
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping

__all__ = [
    "DataConfig", "TeacherConfig", "StudentConfig", "StageConfig", "LossConfig",
    "AugmentConfig", "KDConfig", "Config", "PROFILES", "DEFAULT_PROFILE", "get_config",
    "apply_overrides", "config_hash", "resolve_profile_name", "PRESETS",
    "preset_overrides", "INIT_KEYWORDS",
]

DEFAULT_PROFILE = "quick"


@dataclass(frozen=True)
class DataConfig:
    """Where the labelled task and the unlabelled general corpus come from.

    ``task``: ``"rotten_tomatoes_offline"`` (the offline asset, see docs/offline-assets.md), a hub dataset
    name such as ``"glue/sst2"`` or ``"rotten_tomatoes"``, or a local csv/json/jsonl/parquet file
    (``text_column`` / ``label_column`` map its columns).
    ``*_size``: subsample a split (stratified, deterministic) to at most this many examples;
    ``None`` keeps everything. ``split_seed`` fixes the train/validation/test split and never
    changes with the training seed, so every run is scored on the same test set.
    ``text_pair_column``: for a task on text pairs (entailment, paraphrase: MNLI, QQP, MRPC),
    the column of the second text; the model reads ``[CLS] text [SEP] text_pair [SEP]``.
    ``general_exclude``: offline general-corpus sources to leave out, comma-separated (e.g.
    ``"debates"`` when the task itself is made of the 2016 debates, so general distillation
    never reads a test text); see :func:`tinylab.data.load_general_corpus`.
    ``ood_size``: score each out-of-domain set (:func:`tinylab.data.load_ood`) on a stratified,
    deterministic sample of at most this many texts (``None``: all of them, 2,447 and 2,667).
    """

    task: str = "rotten_tomatoes_offline"
    text_column: str = "text"
    label_column: str = "label"
    text_pair_column: str | None = None
    max_length: int = 64
    train_size: int | None = None
    validation_size: int | None = None
    test_size: int | None = None
    split_seed: int = 2020
    general_corpus: str = "offline"
    general_exclude: str = ""
    general_size: int | None = None
    general_max_length: int = 64
    ood_size: int | None = None


@dataclass(frozen=True)
class TeacherConfig:
    """The teacher: a backbone fine-tuned on the task (TinyBERT's task-specific teacher).

    ``model``: ``"offline:all-MiniLM-L6-v2"`` (the offline asset), a local folder, or a hub
    name. The fine-tuned result is cached under ``$TINYLAB_CACHE/teachers/<config hash>``.
    ``general_model``: the *pre-trained, not fine-tuned* teacher used for general
    distillation (the paper's "TinyBERT learning"); ``None`` means the same backbone as ``model``.
    ``eval_every`` and ``patience``: validation schedule and early stopping, as in
    :class:`StageConfig`. With ``patience`` set, ``epochs`` is an upper bound and the teacher
    is the best one validated (a teacher below its ceiling caps every student).
    """

    model: str = "offline:all-MiniLM-L6-v2"
    general_model: str | None = None
    epochs: float = 1.0
    learning_rate: float = 5e-5
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_steps: int | None = None
    eval_every: int | None = None
    patience: int | None = None


#: ``StudentConfig.init`` values that name an initialisation rather than a pre-trained student.
INIT_KEYWORDS = ("random", "teacher", "pca", "pca-layers")


@dataclass(frozen=True)
class StudentConfig:
    """The student's shape. It shares the teacher's tokenizer and vocabulary.

    ``num_heads`` must equal the teacher's head count when attention is distilled (the
    attention loss compares head i with head i). ``init``: ``"random"``; ``"teacher"``
    (copy the mapped teacher layers, widths must match); ``"pca"`` (word embeddings from a
    PCA of the teacher's embedding table, the rest random); ``"pca-layers"`` (``"pca"``, and
    each layer projected from its mapped teacher layer onto the same principal directions,
    per head); or a folder / hub name of a pre-trained student (e.g. a general TinyBERT).
    """

    num_layers: int = 3
    hidden_size: int = 192
    num_heads: int = 12
    intermediate_size: int = 768
    init: str = "random"


@dataclass(frozen=True)
class StageConfig:
    """One training stage (an optimiser run). ``enabled=False`` skips the stage (ablations).

    ``max_steps`` caps the number of optimiser steps (``None``: ``epochs`` decides).
    ``eval_every``: evaluate on the validation split every this many steps (``None``: once per
    epoch; ``0``: never). ``schedule``: ``"linear"`` (warm-up then linear decay to 0, the
    official code's prediction stage) or ``"constant"`` (warm-up, then constant). Both warm up
    for ``warmup_ratio`` of the steps; the official code's intermediate stage is constant with
    no warm-up at all: ``schedule="constant"`` with ``warmup_ratio=0``.
    ``patience``: early stopping - end the stage after this many evaluations without a better
    validation score and keep the best evaluated weights (``None``: train every step).
    """

    enabled: bool = True
    epochs: float = 1.0
    learning_rate: float = 5e-5
    batch_size: int = 32
    warmup_ratio: float = 0.1
    weight_decay: float = 0.01
    max_grad_norm: float = 1.0
    max_steps: int | None = None
    eval_every: int | None = None
    schedule: str = "linear"
    patience: int | None = None


@dataclass(frozen=True)
class LossConfig:
    """The TinyBERT objective (L_embd, L_attn, L_hidn, L_pred and their sum L_model) and the official-code switches (docs/paper-vs-code.md).

    Weights of 0 remove a term (the paper's "w/o Embd/Attn/Hidn/Pred" ablations).
    ``layer_mapping``: ``"uniform"`` (paper default), ``"spread"`` (uniform for a teacher depth
    the student's does not divide), ``"top"`` or ``"bottom"``
    (:func:`tinylab.losses.layer_map`).
    ``official_attention``: the authors' ``where(x <= -1e2, 0, x)`` + plain MSE instead of a
    padding-masked MSE. ``shared_projection``: one ``fit_dense`` for embeddings and hidden
    states (official code) instead of separate W_e and W_h (paper).
    ``official_prediction``: average the soft cross-entropy over classes too (official code).
    ``official_hidden``: embedding/hidden MSEs over every position, padding included (official
    code) instead of over real tokens only.
    """

    layer_mapping: str = "uniform"
    embedding_weight: float = 1.0
    attention_weight: float = 1.0
    hidden_weight: float = 1.0
    prediction_weight: float = 1.0
    temperature: float = 1.0
    scale_t2: bool = False
    official_attention: bool = False
    shared_projection: bool = False
    official_prediction: bool = False
    official_hidden: bool = False


@dataclass(frozen=True)
class AugmentConfig:
    """TinyBERT data augmentation (paper Alg. 1): p_t, N_a and K.

    Paper values: ``p_t=0.4``, ``n_aug=20``, ``k=15``. ``mlm_model``: a masked-LM model (folder
    or hub name, e.g. ``"bert-base-uncased"``) for single-piece words as in the paper; ``None``
    uses nearest neighbours in the teacher's word-embedding table (the offline default).
    ``max_examples``: augment at most this many training examples (``None``: all).
    ``filter_neighbours``: leave stop-words and other forms of the word itself (movie/movies)
    out of the embedding neighbours (a tinylab option; off keeps the paper's plain top-K).
    """

    enabled: bool = True
    p_t: float = 0.4
    n_aug: int = 20
    k: int = 15
    mlm_model: str | None = None
    max_examples: int | None = None
    filter_neighbours: bool = False


@dataclass(frozen=True)
class KDConfig:
    """The classic knowledge-distillation baseline (Hinton et al. 2015, Sec. 2), kept apart
    from TinyBERT's prediction stage (``loss.temperature``, no gold labels)::

        L = alpha * CE(y, softmax(z_S)) + (1 - alpha) * t^2 * KL(softmax(z_T / t) || softmax(z_S / t))

    ``temperature`` (t): on MNIST, Hinton et al. found every t above 8 about as good for a
    large student, and 2.5 to 4 clearly best for a very small one; ours is small, so 2, at
    the low end (notebook 03 sweeps it). ``alpha``: the weight of
    the gold-label term. Hinton et al. found "a considerably lower weight on the second
    objective function" (the hard targets) works best; the t^2 factor keeps the soft term's
    gradients at the scale of the hard term's, so 0.1 gives the gold labels a tenth of the
    pull and the teacher the rest. Trained on the labelled set only (augmented sentences have
    no gold label).
    """

    temperature: float = 2.0
    alpha: float = 0.1


@dataclass(frozen=True)
class Config:
    """Everything one run of the pipeline needs. Build it with :func:`get_config`."""

    profile: str = DEFAULT_PROFILE
    seed: int = 42
    data: DataConfig = field(default_factory=DataConfig)
    teacher: TeacherConfig = field(default_factory=TeacherConfig)
    student: StudentConfig = field(default_factory=StudentConfig)
    general: StageConfig = field(default_factory=StageConfig)
    task_intermediate: StageConfig = field(default_factory=StageConfig)
    task_prediction: StageConfig = field(default_factory=StageConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    augment: AugmentConfig = field(default_factory=AugmentConfig)
    kd: KDConfig = field(default_factory=KDConfig)
    cache_teacher_outputs: bool = True
    group_by_length: bool = True
    eval_batch_size: int = 64
    # Timed passes per batch size when the finished run's teacher and student are timed
    # (torch.utils.benchmark.Timer; each timed pass follows untimed warm-up passes).
    latency_repeats: int = 10
    # Where and in which precision to train (tinylab.device): "auto" = CUDA, else MPS, else CPU.
    device: str = "auto"
    # "fp32", "bf16" / "fp16" (autocast through Accelerate; weights stay fp32), or "auto".
    precision: str = "fp32"

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready nested dict (used in reports and cache keys)."""
        return dataclasses.asdict(self)

    def replace(self, *overrides: str, **changes: Any) -> "Config":
        """A copy with ``key=value`` overrides (dotted keys) and/or top-level keyword changes."""
        cfg = dataclasses.replace(self, **changes) if changes else self
        return apply_overrides(cfg, overrides)


# --------------------------------------------------------------------------------------------
# Profiles
# --------------------------------------------------------------------------------------------

def _ci() -> Config:
    return Config(
        profile="ci",
        data=DataConfig(max_length=32, train_size=256, validation_size=96, test_size=96,
                        general_size=256, general_max_length=32, ood_size=256),
        teacher=TeacherConfig(epochs=1.0, learning_rate=1e-4, batch_size=32),
        student=StudentConfig(num_layers=2, hidden_size=96, num_heads=12, intermediate_size=384),
        general=StageConfig(epochs=1.0, learning_rate=5e-4, batch_size=32, schedule="constant"),
        task_intermediate=StageConfig(epochs=1.0, learning_rate=5e-4, batch_size=32,
                                      schedule="constant"),
        task_prediction=StageConfig(epochs=1.0, learning_rate=3e-4, batch_size=32),
        augment=AugmentConfig(n_aug=1, k=8, max_examples=128),
        eval_batch_size=64,
        latency_repeats=3,
    )


def _quick() -> Config:
    # Shape: L2/H192/12 heads with FFN 384, the shape of the measured accuracy/speed frontier
    # (bench/shapes.py; docs/results.md, "Student shapes") that is at least 10x faster than
    # the teacher at the same precision for the smallest loss in accuracy.
    return Config(
        profile="quick",
        data=DataConfig(max_length=64, general_max_length=64, general_size=8000),
        teacher=TeacherConfig(epochs=1.0, learning_rate=1e-4, batch_size=32),
        student=StudentConfig(num_layers=2, hidden_size=192, num_heads=12,
                              intermediate_size=384, init="pca"),
        general=StageConfig(epochs=1.0, learning_rate=5e-4, batch_size=32, schedule="constant",
                            max_steps=250),
        # Task stages: 1,000 and up to 1,600 steps (one epoch of the ~50,000 augmented sentences
        # ends stage b at 1,550). Twice the steps of the earlier caps (500 and 800) raised what
        # the student keeps in and out of domain with two seeds each, for about 2.5 more
        # minutes (docs/results.md, "What the student keeps, per lever").
        task_intermediate=StageConfig(epochs=1.0, learning_rate=5e-4, batch_size=32,
                                      schedule="constant", max_steps=1000),
        task_prediction=StageConfig(epochs=1.0, learning_rate=2e-4, batch_size=32,
                                    max_steps=1600, eval_every=200),
        # Four augmentations per sentence: the paper's twenty, at the same step caps, kept no
        # more of the teacher in or out of domain with two seeds (docs/results.md, "Twenty
        # augmentations per sentence").
        augment=AugmentConfig(n_aug=4, k=15),
        # bf16 autocast where the hardware has it (faster on CPUs with bf16 units), fp32
        # elsewhere; bench/precision.py compares its accuracy with fp32's (docs/results.md).
        precision="auto",
    )


def _full() -> Config:
    # Jiao et al. 2020, experimental setup and appendix: SST-2, max_seq_len 64, intermediate stage 20
    # epochs at lr 5e-5 batch 32, prediction stage 3 epochs lr 3e-5, augmentation N_a=20.
    return Config(
        profile="full",
        data=DataConfig(task="glue/sst2", general_corpus="wikitext/wikitext-103-raw-v1",
                        max_length=64, general_max_length=128),
        teacher=TeacherConfig(model="bert-base-uncased", epochs=3.0, learning_rate=2e-5,
                              batch_size=32),
        student=StudentConfig(num_layers=4, hidden_size=312, num_heads=12,
                              intermediate_size=1200,
                              init="huawei-noah/TinyBERT_General_4L_312D"),
        general=StageConfig(enabled=False),  # the released general TinyBERT replaces stage 1
        task_intermediate=StageConfig(epochs=20.0, learning_rate=5e-5, batch_size=32,
                                      schedule="constant"),
        task_prediction=StageConfig(epochs=3.0, learning_rate=3e-5, batch_size=32),
        augment=AugmentConfig(n_aug=20, k=15, mlm_model="bert-base-uncased"),
    )


PROFILES: Mapping[str, typing.Callable[[], Config]] = types.MappingProxyType(
    {"ci": _ci, "quick": _quick, "full": _full})


def resolve_profile_name(profile: str | None = None) -> str:
    """Explicit name, else ``$TINYLAB_PROFILE``, else ``"quick"``. Unknown names are an error."""
    name = profile or os.environ.get("TINYLAB_PROFILE") or DEFAULT_PROFILE
    if name not in PROFILES:
        source = "argument" if profile else "$TINYLAB_PROFILE"
        raise ValueError(f"unknown profile {name!r} (from {source}); valid profiles: "
                         f"{', '.join(PROFILES)}")
    return name


#: Named changes on top of a profile, by preset and profile: what a notebook or a benchmark
#: sets beyond its profile, kept in one place so that ``tinylab course prepare`` fills the
#: cache under the keys the notebooks look up, and so that a notebook shows the line that sets
#: them (``get_config(PROFILE, preset="two-stage")``). A profile a preset does not list runs
#: unchanged.
PRESETS: Mapping[str, Mapping[str, tuple[str, ...]]] = types.MappingProxyType({
    # Notebooks 05 and 06 (general distillation, then five students trained on the task).
    # Under quick every stage is capped so that notebook 06 fits its 20-minute budget on 2
    # cores (caps of 400/600/400 steps took 22.5 min), and students are scored every 200 steps.
    "two-stage": {"quick": ("general.max_steps=300", "task_intermediate.max_steps=500",
                            "task_prediction.max_steps=300", "task_prediction.eval_every=200")},
    # Notebook 08 (four objectives from one starting student, one step budget): under quick
    # 150 steps per task stage, so every method trains 300 steps instead of one epoch per
    # stage; training the four students is most of the notebook's time (docs/results.md,
    # "Notebook run times").
    "methods": {"quick": ("task_intermediate.max_steps=150", "task_prediction.max_steps=150")},
    # The benchmarks' budget: quick (same teacher, general distillation, splits, learning
    # rates) with the 3-layer student the published tables were measured with, 1,200 task
    # sources with up to 2 augmentations each, and 300 steps per task stage (the epochs only
    # bound the runs on fewer examples, so w/o DA trains as many steps on the sources alone).
    "bench": {"quick": ("student.num_layers=3", "augment.max_examples=1200", "augment.n_aug=2",
                        "task_intermediate.epochs=10", "task_intermediate.max_steps=300",
                        "task_prediction.epochs=10", "task_prediction.max_steps=300")},
})


def preset_overrides(preset: str | None, profile: str) -> tuple[str, ...]:
    """The ``key=value`` changes ``preset`` makes to ``profile`` (none for ``preset=None``)."""
    if preset is None:
        return ()
    if preset not in PRESETS:
        raise ValueError(f"unknown preset {preset!r}; valid presets: {', '.join(PRESETS)}")
    return tuple(PRESETS[preset].get(profile, ()))


def get_config(profile: str | None = None, overrides: Iterable[str] | Mapping[str, Any] = (),
               *, preset: str | None = None) -> Config:
    """The configuration of a named profile, then a :data:`PRESETS` entry, then ``key=value``
    overrides, applied in that order.

    ``overrides`` is a list of strings like ``"teacher.epochs=2"`` (dotted keys, values parsed
    and type-checked against the field) or a mapping ``{"teacher.epochs": 2}``.

    >>> get_config("quick", preset="two-stage").general.max_steps
    300
    """
    name = resolve_profile_name(profile)
    cfg = PROFILES[name]()
    from_env = {key: os.environ[var] for key, var in ENV_OVERRIDES.items()
                if os.environ.get(var, "").strip()}
    cfg = apply_overrides(cfg, from_env)
    cfg = apply_overrides(cfg, preset_overrides(preset, name))
    cfg = apply_overrides(cfg, overrides)
    _check_choices(cfg)
    _check_ranges(cfg)
    return cfg


#: Settings that an environment variable overrides in every profile.
ENV_OVERRIDES = {"device": "TINYLAB_DEVICE", "precision": "TINYLAB_PRECISION"}


def _check_ranges(cfg: Config) -> None:
    """Every numeric setting in its valid range, checked before any work; one line per call
    that names the key, the value and what would be valid."""
    problems: list[str] = []

    def need(key: str, ok: bool, what: str) -> None:
        if not ok:
            value = cfg
            for part in key.split("."):
                value = getattr(value, part)
            problems.append(f"{key}={value!r} ({what})")

    for name in ("general", "task_intermediate", "task_prediction", "teacher"):
        stage = getattr(cfg, name)
        need(f"{name}.learning_rate", stage.learning_rate > 0, "must be > 0")
        need(f"{name}.batch_size", stage.batch_size >= 1, "must be >= 1")
        need(f"{name}.epochs", stage.epochs > 0, "must be > 0")
        need(f"{name}.warmup_ratio", 0 <= stage.warmup_ratio <= 1, "must lie in [0, 1]")
        need(f"{name}.weight_decay", stage.weight_decay >= 0, "must be >= 0")
        need(f"{name}.max_steps", stage.max_steps is None or stage.max_steps >= 1,
             "must be None or >= 1")
        if isinstance(stage, StageConfig):
            need(f"{name}.max_grad_norm", stage.max_grad_norm >= 0, "must be >= 0 (0: no clip)")
            need(f"{name}.schedule", stage.schedule in ("linear", "constant"),
                 "use 'linear' or 'constant'")
        need(f"{name}.eval_every", stage.eval_every is None or stage.eval_every >= 0,
             "must be None (once per epoch), 0 (never) or >= 1")
        need(f"{name}.patience", stage.patience is None or stage.patience >= 1,
             "must be None (no early stopping) or >= 1 evaluations")
    s = cfg.student
    for key in ("num_layers", "hidden_size", "num_heads", "intermediate_size"):
        need(f"student.{key}", getattr(s, key) >= 1, "must be >= 1")
    if s.num_heads >= 1 and s.hidden_size % s.num_heads:
        problems.append(f"student.hidden_size={s.hidden_size} is not divisible by "
                        f"student.num_heads={s.num_heads}")
    loss = cfg.loss
    need("loss.temperature", loss.temperature > 0, "must be > 0")
    for term in ("embedding", "attention", "hidden", "prediction"):
        need(f"loss.{term}_weight", getattr(loss, f"{term}_weight") >= 0, "must be >= 0")
    need("loss.layer_mapping", loss.layer_mapping in ("uniform", "spread", "top", "bottom"),
         "use 'uniform', 'spread', 'top' or 'bottom'")
    need("kd.temperature", cfg.kd.temperature > 0, "must be > 0")
    need("kd.alpha", 0 <= cfg.kd.alpha <= 1, "the gold-label weight, in [0, 1]")
    a = cfg.augment
    need("augment.p_t", 0 <= a.p_t <= 1, "a probability, in [0, 1]")
    need("augment.n_aug", a.n_aug >= 0, "must be >= 0")
    need("augment.k", a.k >= 1, "must be >= 1")
    need("augment.max_examples", a.max_examples is None or a.max_examples >= 1,
         "must be None or >= 1")
    d = cfg.data
    need("data.max_length", d.max_length >= 3, "must be >= 3: [CLS], a token, [SEP]")
    need("data.general_max_length", d.general_max_length >= 3, "must be >= 3")
    for key in ("train_size", "validation_size", "test_size", "general_size", "ood_size"):
        need(f"data.{key}", getattr(d, key) is None or getattr(d, key) >= 1,
             "must be None (everything) or >= 1")
    need("eval_batch_size", cfg.eval_batch_size >= 1, "must be >= 1")
    need("latency_repeats", cfg.latency_repeats >= 1, "must be >= 1")
    # NumPy's and PyTorch's generators take seeds in [0, 2**32).
    need("seed", 0 <= cfg.seed < 2 ** 32, "must lie in [0, 2**32)")
    need("data.split_seed", 0 <= d.split_seed < 2 ** 32, "must lie in [0, 2**32)")
    for key in _all_keys(cfg):        # a configuration built in Python skips _parse
        value = cfg
        for part in key.split("."):
            value = getattr(value, part)
        if isinstance(value, float) and not math.isfinite(value):
            problems.insert(0, f"{key}={value!r} (must be a finite number)")
    if problems:
        raise ValueError("bad configuration: " + "; ".join(problems))


def _check_choices(cfg: Config) -> None:
    """Settings with a fixed set of values: refuse a typo before any work, naming the key."""
    # Here, not at the top: tinylab.device loads torch, and importing config must not (the
    # course tooling imports it without building a configuration: `tinylab course ...`).
    from tinylab.device import DEVICES, PRECISIONS

    choices = {"device": (cfg.device, DEVICES), "precision": (cfg.precision, PRECISIONS)}
    for key, (value, allowed) in choices.items():
        if str(value).strip().lower() not in allowed:
            var = ENV_OVERRIDES.get(key)
            source = f" (from ${var})" if var and os.environ.get(var) == value else ""
            raise ValueError(f"bad value {value!r} for {key}{source}: use one of "
                             f"{', '.join(allowed)}")


# --------------------------------------------------------------------------------------------
# Overrides
# --------------------------------------------------------------------------------------------

def _all_keys(obj: Any, prefix: str = "") -> list[str]:
    keys = []
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if dataclasses.is_dataclass(value):
            keys.extend(_all_keys(value, f"{prefix}{f.name}."))
        else:
            keys.append(f"{prefix}{f.name}")
    return keys


_TRUE = {"true", "1", "yes", "on"}
_FALSE = {"false", "0", "no", "off"}


def _parse(key: str, raw: Any, annotation: Any) -> Any:
    """Convert ``raw`` (a string from the command line, or a Python value) to the field type."""
    hint = annotation
    if isinstance(hint, str):  # postponed annotations: evaluate in this module's namespace
        hint = eval(hint, globals())  # noqa: S307 - our own literal annotations only
    args = typing.get_args(hint)
    optional = type(None) in args
    base = next((a for a in args if a is not type(None)), hint) if args else hint
    if raw is None or (isinstance(raw, str) and raw.strip().lower() in {"none", "null"}):
        if optional:
            return None
        raise ValueError(f"{key} cannot be None (expected {base.__name__})")
    try:
        if base is bool:
            if isinstance(raw, bool):
                return raw
            text = str(raw).strip().lower()
            if text in _TRUE:
                return True
            if text in _FALSE:
                return False
            raise ValueError
        if base is int:
            if isinstance(raw, bool) or (isinstance(raw, float) and not raw.is_integer()):
                raise ValueError
            return int(str(raw).strip()) if isinstance(raw, str) else int(raw)
        if base is float:
            if isinstance(raw, bool):
                raise ValueError
            number = float(raw)
            if not math.isfinite(number):   # inf epochs never end; nan compares false
                raise ValueError(f"bad value {raw!r} for {key}: expected a finite number")
            return number
        if base is str:
            return str(raw)
    except ValueError as err:
        if "finite" in str(err):
            raise ValueError(str(err)) from None
        raise ValueError(f"bad value {raw!r} for {key}: expected "
                         f"{base.__name__}{' or None' if optional else ''}") from None
    raise TypeError(f"{key}: unsupported field type {hint!r}")


def _set(obj: Any, parts: list[str], raw: Any, full_key: str) -> Any:
    fields = {f.name: f for f in dataclasses.fields(obj)}
    head = parts[0]
    if head not in fields:
        raise KeyError(head)
    current = getattr(obj, head)
    if len(parts) == 1:
        if dataclasses.is_dataclass(current):
            raise KeyError(head)
        return dataclasses.replace(obj, **{head: _parse(full_key, raw, fields[head].type)})
    if not dataclasses.is_dataclass(current):
        raise KeyError(head)
    return dataclasses.replace(obj, **{head: _set(current, parts[1:], raw, full_key)})


def apply_overrides(cfg: Config, overrides: Iterable[str] | Mapping[str, Any]) -> Config:
    """Apply ``key=value`` overrides; unknown keys and ill-typed values raise ``ValueError``."""
    items = overrides.items() if isinstance(overrides, Mapping) else [
        _split_override(o) for o in overrides]
    for key, raw in items:
        if key == "profile":
            raise ValueError(f"profile is not a setting to override (profile={raw!r} would only "
                             f"rename the run): choose the profile with --profile {raw} (or "
                             f"get_config({raw!r}))")
        try:
            cfg = _set(cfg, key.split("."), raw, key)
        except KeyError:
            raise ValueError(f"unknown config key {key!r}; valid keys: "
                             f"{', '.join(k for k in _all_keys(cfg) if k != 'profile')}"
                             ) from None
    return cfg


def _split_override(text: str) -> tuple[str, str]:
    if "=" not in text:
        raise ValueError(f"override {text!r} must look like key=value, e.g. teacher.epochs=2")
    key, value = text.split("=", 1)
    return key.strip(), value.strip()


def config_hash(*parts: Any, length: int = 12) -> str:
    """A short stable hash of dataclasses / JSON-able values, for cache keys."""
    def norm(p: Any) -> Any:
        return dataclasses.asdict(p) if dataclasses.is_dataclass(p) else p
    blob = json.dumps([norm(p) for p in parts], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:length]
