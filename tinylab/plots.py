"""The figures of the course and the command line; each function returns a matplotlib ``Figure``.

Figures are built with ``matplotlib.figure.Figure`` directly, not through ``pyplot``: nothing
is registered globally, so a loop that draws a hundred figures does not leak memory, and a
notebook shows a returned figure exactly once. Save one with :func:`save_figure` (atomic).

* :func:`plot_history` - loss components per step for each stage; validation accuracy
* :func:`plot_accuracy_latency` - accuracy vs latency, bubble area = parameters (as in
  *NLP with Transformers*, ch. 8)
* :func:`plot_layer_mapping` - which teacher layer each student layer learns from (the paper compares the three)
* :func:`plot_attention` - attention scores or probabilities as heatmaps, side by side
* :func:`plot_softmax_temperatures` - how the temperature t flattens softmax(z / t)
* :func:`plot_length_histogram` - token lengths, and how many a ``max_length`` truncates
* :func:`plot_confusion` - the confusion matrix with counts
"""
from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import FancyBboxPatch, Rectangle

from tinylab.atomic import atomic_path
from tinylab.losses import layer_map

__all__ = [
    "plot_history", "plot_accuracy_latency", "plot_layer_mapping", "plot_attention",
    "plot_softmax_temperatures", "plot_length_histogram", "plot_confusion", "save_figure",
]

_NOT_LOSSES = {"step", "lr", "epoch", "seconds", "examples", "grad_norm"}


def _grid(n: int, *, max_cols: int = 3, width: float = 4.2, height: float = 3.3,
          extra_width: float = 0.0) -> tuple[Figure, list[Any]]:
    """A figure with ``n`` axes on a grid of at most ``max_cols`` columns (extra cells removed)."""
    cols = max(1, min(n, max_cols))
    rows = max(1, math.ceil(n / cols))
    fig = Figure(figsize=(width * cols + extra_width, height * rows), layout="constrained")
    axes = list(fig.subplots(rows, cols, squeeze=False).flat)
    for ax in axes[n:]:
        fig.delaxes(ax)
    return fig, axes[:n]


def _as_numpy(x: Any) -> np.ndarray:
    if hasattr(x, "detach"):  # a torch tensor
        x = x.detach().float().cpu().numpy()
    return np.asarray(x, dtype=float)


# --------------------------------------------------------------------------------------------
# Training history
# --------------------------------------------------------------------------------------------

def _history_stages(history: Any) -> dict[str, dict[str, list]]:
    """``{stage: {"steps": [...], "evals": [...]}}`` from a History, its dict, or a dict of them."""
    if hasattr(history, "to_dict"):
        history = history.to_dict()
    if not isinstance(history, Mapping):
        raise TypeError(f"plot_history expects a History, its to_dict() or a dict of Histories, "
                        f"got {type(history).__name__}")
    if "stages" in history:
        return dict(history["stages"])
    stages: dict[str, dict[str, list]] = {}  # e.g. task_distillation's {"intermediate": History}
    for name, item in history.items():
        if hasattr(item, "to_dict") or (isinstance(item, Mapping) and "stages" in item):
            sub = _history_stages(item)
            for stage, log in sub.items():
                stages[stage if stage not in stages else f"{name}/{stage}"] = log
        elif isinstance(item, Mapping) and ("steps" in item or "evals" in item):
            stages[name] = dict(item)
        else:
            raise ValueError(f"entry {name!r} is not a History or a stage log")
    return stages


def plot_history(history_or_dict: Any, *, log_scale: bool = True) -> Figure:
    """Loss components per optimiser step, one panel per stage, plus validation accuracy.

    Accepts a ``tinylab.distill.History`` (or anything with ``to_dict()``), its dict form
    ``{"stages": {"general": {"steps": [{"step", "embedding", "attention", "hidden", "total",
    "lr"}, ...], "evals": [{"step", "accuracy"}, ...]}, ...}}``, or a dict of Histories (as
    returned by ``task_distillation``). Every numeric step key except ``step`` and ``lr`` is a
    loss component; ``total`` is drawn in black. The losses differ by orders of magnitude
    (attention-score MSE is large, the prediction loss small), hence the log scale.
    One extra panel shows every stage's evaluations (x = step within the stage).
    """
    stages = {k: v for k, v in _history_stages(history_or_dict).items()
              if v.get("steps") or v.get("evals")}
    if not stages:
        raise ValueError("the history holds no steps and no evaluations: nothing to plot")
    loss_stages = [s for s in stages if stages[s].get("steps")]
    eval_stages = [s for s in stages if any("accuracy" in e for e in stages[s].get("evals", []))]
    fig, axes = _grid(len(loss_stages) + (1 if eval_stages else 0))
    for ax, name in zip(axes, loss_stages):
        steps = stages[name]["steps"]
        keys = [k for k in dict.fromkeys(k for row in steps for k in row)
                if k not in _NOT_LOSSES]
        x = [row.get("step", i + 1) for i, row in enumerate(steps)]
        positive = True
        for key in keys:
            y = np.array([float(row.get(key, np.nan)) for row in steps])
            positive &= bool(np.all(y[np.isfinite(y)] > 0))
            style = dict(color="black", lw=2.0, zorder=3) if key == "total" else dict(lw=1.2)
            ax.plot(x, y, label=key, **style)
        if log_scale and positive:
            ax.set_yscale("log")
        ax.set(title=f"{name}: loss per step", xlabel="optimiser step", ylabel="loss")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    if eval_stages:
        ax = axes[-1]
        for name in eval_stages:
            evals = [e for e in stages[name]["evals"] if "accuracy" in e]
            ax.plot([e["step"] for e in evals], [e["accuracy"] for e in evals], marker="o",
                    label=name)
        ax.set(title="validation accuracy", xlabel="optimiser step (within stage)",
               ylabel="accuracy")
        ax.legend(fontsize="small")
        ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------
# Accuracy vs latency
# --------------------------------------------------------------------------------------------

def plot_accuracy_latency(df: Any, *, x: str | None = None, y: str = "accuracy",
                          size: str = "params") -> Figure:
    """Accuracy against latency, one bubble per model, bubble *area* proportional to ``size``.

    ``df``: the table of :func:`tinylab.evaluate.compare_models` (index = model names).
    ``x`` defaults to ``latency_b32_ms`` (or the first ``latency_*`` column). Up and to the
    left is better; a good student sits close to the teacher's height, far to its left.
    """
    if x is None:
        lat = [c for c in df.columns if str(c).startswith("latency_")]
        if not lat:
            raise ValueError(f"no latency column in {list(df.columns)}; pass x=...")
        x = "latency_b32_ms" if "latency_b32_ms" in lat else lat[0]
    for col in (x, y, size):
        if col not in df.columns:
            raise ValueError(f"column {col!r} not in the table; columns: {list(df.columns)}")
    fig = Figure(figsize=(6.4, 4.4), layout="constrained")
    ax = fig.add_subplot()
    sizes = df[size].to_numpy(dtype=float)
    area = 1500.0 * sizes / sizes.max()
    # One scatter call per model so the legend names it: labels written next to the bubbles
    # overlap as soon as several students land at the same latency.
    for i, (name, xv, yv, sv, av) in enumerate(zip(df.index, df[x], df[y], sizes, area)):
        label = f"{name} ({sv / 1e6:.1f}M)" if size == "params" else str(name)
        ax.scatter([xv], [yv], s=av, color=f"C{i % 10}", alpha=0.55, edgecolors="black",
                   label=label)
    legend = ax.legend(fontsize="small", loc="best")
    for handle in legend.legend_handles:     # equal, small markers in the legend
        handle.set_sizes([60.0])
    ax.set(xlabel=f"{x} (median, lower is better)", ylabel=y,
           title=f"{y} vs latency (bubble area = {size})")
    ax.margins(0.25)
    ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------
# Layer mapping
# --------------------------------------------------------------------------------------------

def _draw_stack(ax: Any, x: float, n_layers: int, label: str, color: str) -> list[float]:
    """Boxes Emb, 1..n, Pred at height 0..1 in a column at ``x``; returns their y centres."""
    names = ["Emb"] + [str(i) for i in range(1, n_layers + 1)] + ["Pred"]
    ys = list(np.linspace(0.0, 1.0, len(names)))
    h = min(0.8 / len(names), 0.08)
    for name, yc in zip(names, ys):
        ax.add_patch(FancyBboxPatch((x - 0.12, yc - h / 2), 0.24, h, boxstyle="round,pad=0.005",
                                    facecolor=color, edgecolor="black", lw=0.8))
        ax.text(x, yc, name, ha="center", va="center", fontsize="small")
    ax.text(x, 1.0 + 0.09, label, ha="center", va="bottom", fontweight="bold")
    return ys


def plot_layer_mapping(num_student_layers: int, num_teacher_layers: int,
                       strategies: Sequence[str] = ("uniform", "top", "bottom")) -> Figure:
    """Which teacher layer n = g(m) each student layer m learns from, one panel per strategy.

    Uses :func:`tinylab.losses.layer_map`; the embedding layer always maps to the embeddings
    (g(0) = 0) and the prediction layer to the prediction layer. A strategy that is undefined
    for these sizes (uniform needs N to be a multiple of M) gets a panel saying why.
    """
    fig, axes = _grid(len(strategies), max_cols=len(strategies), width=3.2, height=4.6)
    for ax, strategy in zip(axes, strategies):
        ax.set_xlim(-0.4, 1.4)
        ax.set_ylim(-0.08, 1.2)
        ax.axis("off")
        ax.set_title(f"{strategy}")
        try:
            mapping = layer_map(num_student_layers, num_teacher_layers, strategy)
        except ValueError as err:
            ax.text(0.5, 0.5, f"not defined:\n{err}", ha="center", va="center", wrap=True,
                    fontsize="small", transform=ax.transAxes)
            continue
        ys_s = _draw_stack(ax, 0.0, num_student_layers, f"student (M={num_student_layers})",
                           "#cfe3f7")
        ys_t = _draw_stack(ax, 1.0, num_teacher_layers, f"teacher (N={num_teacher_layers})",
                           "#f7dccf")
        pairs = [(0, 0)] + [(m, n) for m, n in enumerate(mapping, start=1)] + [
            (num_student_layers + 1, num_teacher_layers + 1)]
        for m, n in pairs:
            ax.plot([0.12, 0.88], [ys_s[m], ys_t[n]], color="C0", lw=1.2)
    fig.suptitle("TinyBERT layer mapping: student layer m learns from teacher layer g(m)")
    return fig


# --------------------------------------------------------------------------------------------
# Attention heatmaps
# --------------------------------------------------------------------------------------------

def _attention_panels(maps: Any, titles: Sequence[str] | None, head: int | str | None
                      ) -> list[tuple[str, np.ndarray]]:
    if isinstance(maps, Mapping):
        items = [(str(k), v) for k, v in maps.items()]
    elif isinstance(maps, (list, tuple)):
        items = [(f"map {i}", v) for i, v in enumerate(maps)]
    else:
        items = [("attention", maps)]
    if titles is not None:
        if len(titles) != len(items):
            raise ValueError(f"{len(titles)} titles for {len(items)} maps")
        items = [(str(t), v) for t, (_, v) in zip(titles, items)]
    panels = []
    for title, value in items:
        a = _as_numpy(value)
        if a.ndim == 4:
            if a.shape[0] != 1:
                raise ValueError(f"{title}: got a batch of {a.shape[0]} (shape {a.shape}); "
                                 "pass one example, e.g. attentions[layer][0]")
            a = a[0]
        if a.ndim == 2:
            panels.append((title, a))
        elif a.ndim == 3:
            if head == "mean":
                panels.append((f"{title} (mean of {a.shape[0]} heads)", a.mean(0)))
            elif head is None:
                panels += [(f"{title}, head {h}", a[h]) for h in range(a.shape[0])]
            elif isinstance(head, int) and -a.shape[0] <= head < a.shape[0]:
                panels.append((f"{title}, head {head % a.shape[0]}", a[head]))
            else:
                raise ValueError(f"head must be None, 'mean' or an int in [0, {a.shape[0]}), "
                                 f"got {head!r}")
        else:
            raise ValueError(f"{title}: expected shape (L, L), (H, L, L) or (1, H, L, L), got "
                             f"{a.shape}")
    return panels


def _real_positions(attention_mask: Any, length: int) -> np.ndarray:
    """Indices of the real tokens of one example from its ``(L,)`` or ``(1, L)`` mask."""
    m = _as_numpy(attention_mask)
    if m.ndim == 2 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 1 or m.shape[0] != length:
        raise ValueError(f"attention_mask must be one example's mask of shape ({length},), got "
                         f"shape {m.shape}; pass e.g. batch['attention_mask'][0]")
    real = np.flatnonzero(m > 0)
    if real.size == 0:
        raise ValueError("attention_mask marks no real token")
    return real


def _token_ticks(ax: Any, tokens: Sequence[str]) -> None:
    """Label every token while that stays legible; beyond 40, every k-th one."""
    n = len(tokens)
    size = "small" if n <= 16 else "x-small" if n <= 40 else "xx-small"
    step = max(1, math.ceil(n / 40))
    ticks = list(range(0, n, step))
    ax.set_xticks(ticks, [tokens[i] for i in ticks], rotation=90, fontsize=size)
    ax.set_yticks(ticks, [tokens[i] for i in ticks], fontsize=size)


def plot_attention(scores_or_probs: Any, tokens: Sequence[str], *,
                   titles: Sequence[str] | None = None, head: int | str | None = None,
                   attention_mask: Any = None, trim: bool = True,
                   mask_threshold: float = -1e2, cmap: str = "viridis",
                   max_cols: int = 4, share_scale: bool = False) -> Figure:
    """Attention matrices as heatmaps side by side (rows: queries, columns: keys).

    ``scores_or_probs``: one map or a list / dict of maps (dict keys become titles, e.g.
    ``{"teacher": t_scores, "student": s_scores}``), each of shape ``(L, L)``, ``(H, L, L)``
    or ``(1, H, L, L)``. For maps with heads: ``head=None`` draws every head, an int one head,
    ``"mean"`` their average. ``tokens``: the L token strings (axis labels).

    ``attention_mask``: the example's ``(L,)`` mask (1 = real token, 0 = padding), e.g.
    ``batch["attention_mask"][i]``. With ``trim=True`` (the default) the maps are cut down to
    the real tokens, so a short sentence padded to a long batch shows as its own small, fully
    labelled grid instead of a corner of a square of ``[PAD]``. With ``trim=False`` the padded
    map is drawn whole, with a box around the (real query, real key) pairs: what a loss on
    padded batches has to leave out.

    TinyBERT distils *pre-softmax* scores ``QK^T / sqrt(d_k) + mask``. The additive mask puts
    a huge negative number on padded keys (``torch.finfo.min`` in transformers, -10000 in the
    official code), which would swamp the colour scale: values ``<= mask_threshold`` (-1e2,
    the official code's cut-off) are left blank. Probabilities (>= 0) are unaffected.
    The panels grow with the number of tokens so that their labels stay readable.

    ``share_scale=True`` draws every panel on one colour scale (the smallest and largest value
    shown in any of them), so that the same colour means the same number in each: use it to
    compare a teacher's map with a student's. Leave it off for maps of different quantities
    (scores next to probabilities), which each need their own scale.
    """
    panels = _attention_panels(scores_or_probs, titles, head)
    tokens = [str(t) for t in tokens]
    for title, a in panels:
        if a.shape[0] != a.shape[1] or a.shape[0] != len(tokens):
            raise ValueError(f"{title}: map of shape {a.shape} does not match {len(tokens)} "
                             "tokens")
    real = None if attention_mask is None else _real_positions(attention_mask, len(tokens))
    box = None
    if real is not None and trim:
        panels = [(title, a[np.ix_(real, real)]) for title, a in panels]
        tokens = [tokens[i] for i in real]
    elif real is not None:
        contiguous = real[-1] - real[0] + 1 == real.size
        box = (real[0] - 0.5, real.size) if contiguous else None
        panels = [(f"{title} ({real.size} real of {len(tokens)} tokens)", a)
                  for title, a in panels]
    side = min(9.0, max(3.6, 0.22 * len(tokens) + 1.6))
    fig, axes = _grid(len(panels), max_cols=max_cols, width=side, height=side - 0.2)
    shown_maps = [np.where(a <= mask_threshold, np.nan, a) for _, a in panels]
    limits: dict[str, float] = {}
    if share_scale and any(np.isfinite(m).any() for m in shown_maps):
        limits = {"vmin": float(min(np.nanmin(m) for m in shown_maps if np.isfinite(m).any())),
                  "vmax": float(max(np.nanmax(m) for m in shown_maps if np.isfinite(m).any()))}
    for ax, (title, a), shown in zip(axes, panels, shown_maps):
        im = ax.imshow(shown, cmap=cmap, aspect="equal", **limits)
        _token_ticks(ax, tokens)
        if box is not None:
            ax.add_patch(Rectangle((box[0], box[0]), box[1], box[1], fill=False,
                                   edgecolor="red", lw=1.5, label="real (query, key) pairs"))
        ax.set(title=title, xlabel="key", ylabel="query")
        fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


# --------------------------------------------------------------------------------------------
# Temperature
# --------------------------------------------------------------------------------------------

def plot_softmax_temperatures(logits: Any, temperatures: Sequence[float] = (0.5, 1.0, 2.0, 5.0),
                              *, class_names: Sequence[str] | None = None) -> Figure:
    """``softmax(z / t)`` of one logit vector for several temperatures, as grouped bars.

    t = 1 is the ordinary softmax; t > 1 flattens it and exposes the teacher's "dark
    knowledge" (how it ranks the wrong classes), t -> 0 approaches the one-hot argmax.
    ``logits``: shape ``(C,)``.
    """
    z = _as_numpy(logits)
    if z.ndim != 1:
        raise ValueError(f"logits must be one vector of shape (C,), got shape {z.shape}; "
                         "pick one example, e.g. logits[0]")
    temps = [float(t) for t in temperatures]
    if not temps or any(t <= 0 for t in temps):
        raise ValueError(f"temperatures must be positive, got {list(temperatures)}")
    names = list(class_names) if class_names is not None else [str(i) for i in range(len(z))]
    if len(names) != len(z):
        raise ValueError(f"{len(names)} class names for {len(z)} logits")
    fig = Figure(figsize=(max(5.0, 0.9 * len(z) * len(temps) ** 0.5 + 3), 3.8),
                 layout="constrained")
    ax = fig.add_subplot()
    width = 0.8 / len(temps)
    pos = np.arange(len(z))
    for i, t in enumerate(temps):
        p = np.exp((z - z.max()) / t)
        p /= p.sum()
        ax.bar(pos + (i - (len(temps) - 1) / 2) * width, p, width, label=f"t = {t:g}")
    ax.set_xticks(pos, names)
    ax.set(xlabel="class", ylabel="probability", ylim=(0, 1),
           title="softmax(z / t): higher temperature, softer targets")
    ax.legend()
    return fig


# --------------------------------------------------------------------------------------------
# Lengths and confusion
# --------------------------------------------------------------------------------------------

def plot_length_histogram(lengths: Sequence[int] | Mapping[str, Sequence[int]], *,
                          max_length: int | None = None, bins: int = 30,
                          title: str = "tokens per example") -> Figure:
    """Histogram of token counts (one series, or a dict ``{name: lengths}`` overlaid).

    With ``max_length`` a dashed line marks the cut-off and the legend says which share of
    each series would be truncated - the evidence for choosing ``max_length``.
    """
    series = dict(lengths) if isinstance(lengths, Mapping) else {"examples": lengths}
    if not series or any(len(v) == 0 for v in series.values()):
        raise ValueError("plot_length_histogram needs at least one non-empty list of lengths")
    fig = Figure(figsize=(6.4, 3.8), layout="constrained")
    ax = fig.add_subplot()
    arrays = {k: np.asarray(v, dtype=float) for k, v in series.items()}
    edges = np.histogram_bin_edges(np.concatenate(list(arrays.values())), bins=bins)
    for name, a in arrays.items():
        label = name
        if max_length is not None:
            label += f" ({100 * np.mean(a > max_length):.1f}% > {max_length})"
        ax.hist(a, bins=edges, alpha=0.6 if len(arrays) > 1 else 0.9, label=label)
    if max_length is not None:
        ax.axvline(max_length, color="black", ls="--", lw=1.2, label=f"max_length = {max_length}")
    ax.set(xlabel="tokens (with [CLS] and [SEP])", ylabel="examples", title=title)
    ax.legend(fontsize="small")
    return fig


def plot_confusion(confusion: Any, label_names: Sequence[str] | None = None, *,
                   normalize: bool = False, title: str = "confusion matrix") -> Figure:
    """The confusion matrix (rows: gold class, columns: predicted class) with each cell's value.

    ``confusion``: ``(C, C)`` counts, e.g. ``evaluate_model(...)["confusion"]``.
    ``normalize=True`` divides each row by its total (per-class recall on the diagonal).
    """
    cm = _as_numpy(confusion)
    if cm.ndim != 2 or cm.shape[0] != cm.shape[1]:
        raise ValueError(f"confusion must be a square (C, C) matrix, got shape {cm.shape}")
    names = ([str(n) for n in label_names] if label_names is not None
             else [str(i) for i in range(cm.shape[0])])
    if len(names) != cm.shape[0]:
        raise ValueError(f"{len(names)} label names for a {cm.shape[0]}-class matrix")
    values = cm / np.maximum(cm.sum(1, keepdims=True), 1) if normalize else cm
    size = 1.2 + 0.7 * cm.shape[0]
    fig = Figure(figsize=(size + 1.4, size), layout="constrained")
    ax = fig.add_subplot()
    im = ax.imshow(values, cmap="Blues")
    threshold = values.max() / 2 if values.size else 0
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            text = f"{values[i, j]:.2f}" if normalize else f"{int(cm[i, j])}"
            ax.text(j, i, text, ha="center", va="center",
                    color="white" if values[i, j] > threshold else "black")
    ax.set_xticks(range(len(names)), names, rotation=45 if len(names) > 4 else 0)
    ax.set_yticks(range(len(names)), names)
    ax.set(xlabel="predicted", ylabel="gold", title=title)
    fig.colorbar(im, ax=ax, shrink=0.8)
    return fig


# --------------------------------------------------------------------------------------------
# Saving
# --------------------------------------------------------------------------------------------

def save_figure(fig: Figure, path: str | os.PathLike, *, dpi: int = 150) -> Path:
    """Save ``fig`` to ``path`` atomically (format from the suffix: .png, .pdf, .svg, ...).

    Writes a temporary file in the same folder, then renames it, so a reader never sees a
    half-written image. Returns the path.
    """
    path = Path(path)
    if not path.suffix:
        raise ValueError(f"{path} has no suffix; add one such as .png or .pdf to choose a format")

    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format=path.suffix[1:].lower())
    return path
