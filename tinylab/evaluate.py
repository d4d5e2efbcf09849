"""Judge a model on all three axes at once: quality, size and speed.

A distilled student is only interesting next to its teacher: how much accuracy did it keep,
how much smaller is it, how much faster does it answer? (The same three-way view as the
``PerformanceBenchmark`` of *NLP with Transformers*, ch. 8.) Notebooks 02, 06 and 07 use:

* :func:`evaluate_model` - accuracy, macro-F1 and the confusion matrix;
* :func:`count_parameters` and :func:`size_on_disk` - what the model costs to store;
* :func:`measure_latency` - milliseconds per batch on the model's device (batch 1 = one user waiting, batch 32 =
  throughput), warm-up first, then the median of repeats;
* :func:`compare_models` - all of it for several models in one table, every model timed in the
  same run on the same inputs, with speed-up and size ratios against a reference model.

Timing on a shared laptop is noisy. Two habits make the comparison fair anyway: the models are
timed *interleaved* (round 1: teacher, student; round 2: teacher, student; ...) so a burst of
background load hits both, and the median (not the mean) summarises the repeats.
"""
from __future__ import annotations

import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any, Iterable, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.benchmark import Timer
from transformers import DataCollatorWithPadding

from tinylab.data import make_dataloader, tokenize
from tinylab.device import model_device, synchronize

__all__ = [
    "predict_logits", "evaluate_model", "classification_metrics", "count_parameters",
    "size_on_disk", "measure_latency", "compare_models", "default_max_length", "latency_inputs",
]

_MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")


# --------------------------------------------------------------------------------------------
# Predictions
# --------------------------------------------------------------------------------------------

def default_max_length(model: Any, tokenizer: Any) -> int:
    """The longest input both the tokenizer and the position-embedding table allow."""
    limits = [getattr(getattr(model, "config", None), "max_position_embeddings", None),
              getattr(tokenizer, "model_max_length", None)]
    limits = [int(x) for x in limits if isinstance(x, (int, float)) and 0 < x < 1e6]
    return min(limits) if limits else 512


def _model_dtype(model: torch.nn.Module) -> str:
    """``"float32"``, ``"bfloat16"``, ... of the weights; ``"int8 dynamic"`` when quantized."""
    if _has_packed_params(model):
        return "int8 dynamic"
    dtypes = {p.dtype for p in model.parameters() if p.is_floating_point()}
    return "/".join(sorted(str(d).removeprefix("torch.") for d in dtypes)) or "none"


def _text_batches(texts: Sequence[str], tokenizer: Any, batch_size: int, max_length: int
                  ) -> Iterable[tuple[np.ndarray, dict[str, torch.Tensor]]]:
    """Tokenise raw texts batch by batch, shortest first (less padding), with their positions."""
    order = np.argsort([len(t) for t in texts], kind="stable")
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                        max_length=max_length, return_tensors="pt")
        yield idx, dict(enc)


def _label_column(ds: Any) -> str | None:
    names = getattr(ds, "column_names", []) or []
    return "label" if "label" in names else "labels" if "labels" in names else None


@torch.inference_mode()
def predict_logits(model: torch.nn.Module, data: Any, tokenizer: Any = None, *,
                   batch_size: int = 64, max_length: int | None = None
                   ) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Logits ``(N, C)`` of a sequence classifier, and the gold labels ``(N,)`` when known.

    ``data`` can be:

    * a list of strings (``tokenizer`` needed; labels ``None``);
    * a ``datasets.Dataset`` with a ``text`` column (tokenised here, ``tokenizer`` needed) or
      already tokenised (``input_ids``, ``attention_mask``; padded here with the tokenizer);
      a ``label``/``labels`` column, if present, is returned as the gold labels;
    * a ``DataLoader`` (or any iterable, a list too) of dicts of padded tensors, e.g. from
      :func:`tinylab.data.make_dataloader`; ``labels`` (or ``label``) is taken out of each batch.

    Rows come back in the order of ``data`` (texts are batched shortest-first internally, to
    pad less, and put back in order). The model runs in eval mode (dropout off) under
    ``torch.inference_mode()``; its previous train/eval mode is restored afterwards.
    """
    was_training = model.training
    model.eval()
    device = model_device(model)
    try:
        if isinstance(data, str):
            raise TypeError("predict_logits got a single string; pass a list of texts")
        if isinstance(data, (list, tuple)) and not any(isinstance(x, Mapping) for x in data):
            return _predict_texts(model, list(data), tokenizer, batch_size, max_length), None
        if hasattr(data, "column_names") and hasattr(data, "select"):  # a datasets.Dataset
            return _predict_dataset(model, data, tokenizer, batch_size, max_length)
        return _predict_loader(model, data, device)
    finally:
        model.train(was_training)


def _forward(model: torch.nn.Module, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
    device = model_device(model)
    inputs = {k: v.to(device) for k, v in batch.items() if k in _MODEL_INPUTS}
    return model(**inputs).logits.float().cpu()


def _predict_texts(model, texts, tokenizer, batch_size, max_length) -> torch.Tensor:
    if tokenizer is None:
        raise ValueError("raw texts need a tokenizer: predict_logits(model, texts, tokenizer)")
    if not all(isinstance(t, str) for t in texts):
        bad = next(t for t in texts if not isinstance(t, str))
        raise TypeError(f"expected a list of strings, found {type(bad).__name__}: {bad!r}")
    max_length = max_length or default_max_length(model, tokenizer)
    out: torch.Tensor | None = None
    for idx, enc in _text_batches(texts, tokenizer, batch_size, max_length):
        logits = _forward(model, enc)
        if out is None:
            out = torch.empty(len(texts), logits.shape[-1])
        out[torch.as_tensor(idx)] = logits
    if out is None:
        return torch.empty(0, model.config.num_labels)
    return out


def _predict_dataset(model, ds, tokenizer, batch_size, max_length):
    if "input_ids" not in ds.column_names and "text_pair" in ds.column_names:
        ds = tokenize(ds, tokenizer, max_length or default_max_length(model, tokenizer))
    label_col = _label_column(ds)
    labels = torch.as_tensor(np.asarray(ds[label_col]), dtype=torch.long) if label_col else None
    if "input_ids" in ds.column_names:
        if tokenizer is None:
            raise ValueError("a tokenised dataset needs the tokenizer (for its padding id): "
                             "evaluate_model(model, ds, tokenizer)")

        collate = DataCollatorWithPadding(tokenizer, return_tensors="pt")
        inputs = ds.select_columns([c for c in _MODEL_INPUTS if c in ds.column_names])
        chunks = []
        for start in range(0, len(ds), batch_size):
            rows = inputs[start:start + batch_size]
            feats = [dict(zip(rows, vals)) for vals in zip(*rows.values())]
            chunks.append(_forward(model, collate(feats)))
        logits = torch.cat(chunks) if chunks else torch.empty(0, model.config.num_labels)
        return logits, labels
    if "text" not in ds.column_names:
        raise ValueError(f"dataset has neither 'input_ids' nor 'text' (columns: "
                         f"{ds.column_names}); tokenise it with tinylab.data.tokenize or pass "
                         "a DataLoader")
    return _predict_texts(model, list(ds["text"]), tokenizer, batch_size, max_length), labels


def _predict_loader(model, loader, device):
    logits, labels = [], []
    for batch in loader:
        if not isinstance(batch, Mapping):
            raise TypeError(f"a DataLoader for predict_logits must yield dicts of tensors, got "
                            f"{type(batch).__name__}")
        gold = batch.get("labels", batch.get("label"))
        if gold is not None:
            labels.append(torch.as_tensor(gold).cpu())
        logits.append(_forward(model, batch))
    if labels and len(labels) != len(logits):
        raise ValueError("some batches had labels and some did not")
    out = torch.cat(logits) if logits else torch.empty(0, model.config.num_labels)
    return out, (torch.cat(labels) if labels else None)


@torch.inference_mode()
def gathered_predictions(model: torch.nn.Module, ds: Any, tokenizer: Any, accelerator: Any, *,
                         batch_size: int = 64, max_length: int | None = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits ``(N, C)`` and gold labels ``(N,)`` of a labelled ``Dataset``, computed by all
    processes together.

    The loader (dataset order, dynamic padding) is sharded with
    ``accelerator.prepare_data_loader``: with P processes, process ``r`` predicts batches
    ``r, r + P, ...``; the last round is padded with repeated rows so all processes run the
    same number of batches. ``accelerator.gather_for_metrics`` collects every process's
    predictions and drops those repeats, so each process returns all N rows (in the
    interleaved order of the shards, which metrics do not care about). With one process this
    is a plain pass over the data.
    """
    label_col = _label_column(ds)
    if label_col is None:
        raise ValueError(f"gathered_predictions needs gold labels; the dataset has columns "
                         f"{getattr(ds, 'column_names', None)}")
    if "input_ids" not in ds.column_names:
        ds = tokenize(ds, tokenizer, max_length or default_max_length(model, tokenizer))
    ds = ds.select_columns([c for c in (*_MODEL_INPUTS, label_col) if c in ds.column_names])
    loader = accelerator.prepare_data_loader(
        make_dataloader(ds, tokenizer, batch_size, shuffle=False), device_placement=False)
    was_training = model.training
    model.eval()
    logits, labels = [], []
    try:
        for batch in loader:
            gold = batch.get("labels", batch.get("label")).to(accelerator.device)
            out = _forward(model, batch).to(accelerator.device)
            out, gold = accelerator.gather_for_metrics((out, gold))
            logits.append(out.cpu())
            labels.append(gold.cpu())
    finally:
        model.train(was_training)
    return torch.cat(logits), torch.cat(labels)


# --------------------------------------------------------------------------------------------
# Metrics
# --------------------------------------------------------------------------------------------

def classification_metrics(predictions: Any, labels: Any, num_labels: int) -> dict[str, Any]:
    """Accuracy, macro-F1 and confusion matrix from predicted and gold class ids.

    ``confusion[i][j]`` counts examples of gold class ``i`` predicted as class ``j`` (rows:
    truth, columns: prediction). Per class c, with TP = confusion[c][c]:
    ``precision = TP / column sum``, ``recall = TP / row sum``, ``F1 = 2PR / (P + R)``
    (0 when undefined), and macro-F1 is the unweighted mean over all ``num_labels`` classes -
    so a class the model never predicts costs the full 1/C, which plain accuracy hides on
    imbalanced data.
    """
    pred = torch.as_tensor(np.asarray(predictions), dtype=torch.long).reshape(-1)
    gold = torch.as_tensor(np.asarray(labels), dtype=torch.long).reshape(-1)
    if pred.shape != gold.shape:
        raise ValueError(f"{pred.numel()} predictions but {gold.numel()} labels")
    for name, t in (("prediction", pred), ("label", gold)):
        if t.numel() and (t.min() < 0 or t.max() >= num_labels):
            raise ValueError(f"{name} ids must lie in [0, {num_labels}); found "
                             f"{t.min().item()}..{t.max().item()} (is num_labels right? are "
                             "unlabelled rows marked -1?)")
    confusion = torch.bincount(gold * num_labels + pred, minlength=num_labels ** 2)
    confusion = confusion.reshape(num_labels, num_labels)
    tp = confusion.diag().double()
    precision = tp / confusion.sum(0).double().clamp(min=1)
    recall = tp / confusion.sum(1).double().clamp(min=1)
    denom = precision + recall
    f1 = torch.where(denom > 0, 2 * precision * recall / denom.clamp(min=1e-12),
                     torch.zeros_like(denom))
    n = int(gold.numel())
    return {"accuracy": float(tp.sum() / n) if n else float("nan"),
            "macro_f1": float(f1.mean()) if n else float("nan"),
            "confusion": confusion.tolist(), "n": n}


def evaluate_model(model: torch.nn.Module, ds_or_loader: Any, tokenizer: Any = None, *,
                   batch_size: int = 64, max_length: int | None = None,
                   accelerator: Any = None) -> dict[str, Any]:
    """``dict(accuracy, macro_f1, confusion, n)`` of a classifier on labelled data.

    ``ds_or_loader``: anything :func:`predict_logits` accepts that carries gold labels. The
    prediction is ``argmax`` of the logits; see :func:`classification_metrics` for the metrics.

    With ``accelerator`` (a labelled ``Dataset`` only), every process of a data-parallel run
    predicts its share of the rows and the predictions are gathered, as in Accelerate's
    examples (:func:`gathered_predictions`); every process gets the same metrics.
    """
    if accelerator is not None:
        logits, labels = gathered_predictions(model, ds_or_loader, tokenizer, accelerator,
                                              batch_size=batch_size, max_length=max_length)
    else:
        logits, labels = predict_logits(model, ds_or_loader, tokenizer, batch_size=batch_size,
                                        max_length=max_length)
    if labels is None:
        raise ValueError("evaluate_model needs gold labels: give a dataset with a 'label' "
                         "column or a DataLoader whose batches hold 'labels'")
    num_labels = int(getattr(model.config, "num_labels", logits.shape[-1]))
    return classification_metrics(logits.argmax(-1), labels, num_labels)


# --------------------------------------------------------------------------------------------
# Size
# --------------------------------------------------------------------------------------------

def count_parameters(model: torch.nn.Module) -> dict[str, int]:
    """``dict(total, embedding, non_embedding)`` parameter counts.

    ``embedding`` = every ``nn.Embedding`` (word table, positions, token types) - the same
    convention as ``transformers``' ``model.num_parameters(exclude_embeddings=True)``. Shared
    (tied) tensors count once. For small students the 30,522-row word table dominates: at
    width 192 it alone holds 30,522 x 192 = 5.9M weights, while one transformer layer holds
    ~0.44M (4 x 192^2 attention + 2 x 192 x 768 feed-forward, plus biases), so "parameters"
    alone hides how much the transformer itself shrank.
    """
    total = embedding = 0
    embedding_ids = {id(p) for m in model.modules() if isinstance(m, torch.nn.Embedding)
                     for p in m.parameters(recurse=False)}
    for p in model.parameters():  # .parameters() yields a tied tensor only once
        total += p.numel()
        if id(p) in embedding_ids:
            embedding += p.numel()
    return {"total": total, "embedding": embedding, "non_embedding": total - embedding}


def _has_packed_params(model: torch.nn.Module) -> bool:
    """True for dynamically quantized models (their Linear weights are packed int8 blobs)."""
    return any("_packed_params" in name for name in model.state_dict())


def size_on_disk(model: torch.nn.Module) -> int:
    """Bytes of the model's weights saved with ``save_pretrained`` (safetensors), in a temp folder.

    Only the weight files count (``*.safetensors``), not ``config.json``. float32 weights take
    4 bytes per parameter, so this is ~4 x ``count_parameters(model)["total"]``.

    Dynamically quantized models (``torch.ao.quantization.quantize_dynamic``) keep their int8
    weights in packed parameters that safetensors cannot hold; for them (and any model without
    ``save_pretrained``) this is the size of ``torch.save(model.state_dict())`` instead, which is
    how such a model is shipped.
    """
    if not hasattr(model, "save_pretrained") or _has_packed_params(model):
        with tempfile.TemporaryDirectory(prefix="tinylab-size-") as tmp:
            path = Path(tmp) / "state_dict.pt"
            torch.save(model.state_dict(), path)
            return path.stat().st_size
    with tempfile.TemporaryDirectory(prefix="tinylab-size-") as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        files = list(Path(tmp).glob("*.safetensors"))
        if not files:
            raise RuntimeError(f"save_pretrained wrote no .safetensors file in {tmp}: "
                               f"{os.listdir(tmp)}")
        return sum(f.stat().st_size for f in files)


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------

def latency_inputs(tokenizer: Any, texts: Sequence[str], batch_size: int,
                    seq_len: int | None, max_length: int, batches: int = 1
                    ) -> list[dict[str, torch.Tensor]]:
    """The fixed inputs for one batch size: ``batches`` consecutive slices of ``batch_size``
    texts (``texts`` cycled when there are too few).

    ``seq_len=None`` pads each batch to its longest text (what a server with dynamic padding
    sees); an int pads/truncates every row to exactly that many tokens (a fixed shape, so
    every model and every batch does the same amount of work).
    """
    if not texts:
        raise ValueError("measure_latency needs at least one text")
    out = []
    for k in range(batches):
        batch = [texts[(k * batch_size + i) % len(texts)] for i in range(batch_size)]
        if seq_len is None:
            enc = tokenizer(batch, padding=True, truncation=True, max_length=max_length,
                            return_tensors="pt")
        else:
            enc = tokenizer(batch, padding="max_length", truncation=True, max_length=seq_len,
                            return_tensors="pt")
        out.append(dict(enc))
    return out


def _time_interleaved(models: Mapping[str, torch.nn.Module],
                      inputs: Mapping[str, Sequence[Mapping[str, torch.Tensor]]], *,
                      warmup: int, repeats: int, threads: int | None = None
                      ) -> dict[str, list[float]]:
    """Seconds per forward pass for each model; rounds alternate between the models.

    Each round times one pass over a model's batches with ``torch.utils.benchmark.Timer``
    (at ``threads`` torch threads, default the current number, restored afterwards) and
    divides by their number. ``Timer.timeit`` runs two untimed passes of its own before the
    timed one, so every figure is a warm-cache latency even right after another model ran. The timer reads the clock only after
    :func:`tinylab.device.synchronize`: GPUs run kernels asynchronously, and a time must
    cover the work, not just its launch.
    """
    threads = threads or torch.get_num_threads()
    states = {name: m.training for name, m in models.items()}
    timers = {}
    for name, m in models.items():
        device = model_device(m)

        def clock(device=device) -> float:
            synchronize(device)
            return time.perf_counter()

        timers[name] = Timer(stmt="for x in batches: model(**x)", timer=clock,
                             globals={"model": m, "batches": list(inputs[name])},
                             num_threads=threads, sub_label=name)
    times: dict[str, list[float]] = {name: [] for name in models}
    try:
        for m in models.values():
            m.eval()
        with torch.inference_mode():
            for name, timer in timers.items():
                if warmup:  # first calls allocate buffers and pick kernels
                    timer.timeit(number=warmup)
            for _ in range(repeats):
                for name, timer in timers.items():
                    per_pass = timer.timeit(number=1).mean
                    times[name].append(per_pass / len(inputs[name]))
    finally:
        for name, m in models.items():
            m.train(states[name])
    return times


def _summarise(seconds: list[float], batch_size: int, seq_len: int, model: torch.nn.Module
               ) -> dict[str, Any]:
    ms = np.asarray(seconds) * 1000.0
    median = float(statistics.median(ms))
    return {"median_ms": median, "p90_ms": float(np.percentile(ms, 90)),
            "examples_per_s": batch_size / (median / 1000.0), "seq_len": seq_len,
            "repeats": len(ms), "threads": torch.get_num_threads(),
            "device": str(model_device(model)), "dtype": _model_dtype(model)}


def _check_same_device(models: Mapping[str, torch.nn.Module]) -> None:
    """Latencies are only comparable on one device: refuse a mix, naming each model's."""
    devices = {name: str(model_device(m)) for name, m in models.items()}
    if len(set(devices.values())) > 1:
        where = ", ".join(f"{name} on {d}" for name, d in devices.items())
        raise ValueError(f"cannot compare latencies across devices ({where}); move every model "
                         f"to one device first, e.g. model.to(teacher.device)")


def _latency_many(models: Mapping[str, torch.nn.Module], tokenizers: Mapping[str, Any],
                  texts: Sequence[str], batch_sizes: Iterable[int], seq_len: int | None,
                  warmup: int, repeats: int, max_length: int | None = None,
                  batches: int | None = None, threads: int | None = None
                  ) -> dict[str, dict[int, dict[str, float]]]:
    if repeats < 1 or warmup < 0:
        raise ValueError(f"need repeats >= 1 and warmup >= 0, got repeats={repeats}, "
                         f"warmup={warmup}")
    _check_same_device(models)
    texts = list(texts)
    out: dict[str, dict[int, dict[str, float]]] = {name: {} for name in models}
    for bs in batch_sizes:
        if int(bs) < 1:
            raise ValueError(f"batch sizes must be >= 1, got {bs}")
        # several different batches per batch size (default: as many as 32 examples fill,
        # at most 8), so one short or long sentence does not decide the figure at batch 1
        count = batches or max(1, min(8, 32 // int(bs), len(texts) // int(bs)))
        inputs = {}
        for name, m in models.items():
            encs = latency_inputs(tokenizers[name], texts, int(bs), seq_len,
                                  max_length or default_max_length(m, tokenizers[name]), count)
            device = model_device(m)
            inputs[name] = [{k: v.to(device) for k, v in enc.items() if k in _MODEL_INPUTS}
                            for enc in encs]
        times = _time_interleaved(models, inputs, warmup=warmup, repeats=repeats,
                                  threads=threads)
        for name in models:
            length = max(int(x["input_ids"].shape[1]) for x in inputs[name])
            out[name][int(bs)] = _summarise(times[name], int(bs), length, models[name])
            out[name][int(bs)]["batches"] = count
            out[name][int(bs)]["threads"] = threads or torch.get_num_threads()
    return out


def measure_latency(model: torch.nn.Module, tokenizer: Any, texts: Sequence[str], *,
                    batch_sizes: Iterable[int] = (1, 32), seq_len: int | None = None,
                    warmup: int = 3, repeats: int = 10, max_length: int | None = None,
                    threads: int | None = None) -> dict[int, dict[str, float]]:
    """Latency of one forward pass on the model's own device, per batch size.

    For each batch size b the inputs are fixed: a few consecutive batches of b texts (up to 8,
    as many as 32 texts fill: 8 single sentences at b=1, one batch at b=32; ``texts`` cycled
    when there are fewer), each padded to its longest text (truncated at ``max_length``,
    default the model's limit) or to exactly ``seq_len`` - pass the training
    ``data.max_length`` there for a fixed shape. ``warmup`` untimed passes, then ``repeats``
    timed passes over those batches with ``torch.utils.benchmark.Timer`` at ``threads`` torch
    threads (default: the current setting); a GPU is synchronised before the clock is read.
    Returns ``{b: {"median_ms", "p90_ms", "examples_per_s", "seq_len", "repeats", "batches",
    "threads", "device", "dtype"}}``: milliseconds per batch, ``examples_per_s = b / median``,
    ``seq_len`` the longest padded length.

    To compare a teacher and a student use :func:`compare_models` (same inputs, interleaved
    timing); two separate calls to this function are exposed to different background load.
    """
    res = _latency_many({"model": model}, {"model": tokenizer}, texts, batch_sizes, seq_len,
                        warmup, repeats, max_length, threads=threads)
    return res["model"]


# --------------------------------------------------------------------------------------------
# Comparison table
# --------------------------------------------------------------------------------------------

def compare_models(models: Mapping[str, torch.nn.Module], tokenizer: Any, eval_ds: Any,
                   texts: Sequence[str], *, reference: str | None = None,
                   batch_sizes: Sequence[int] = (1, 32), seq_len: int | None = None,
                   warmup: int = 3, repeats: int = 10, batch_size: int = 64,
                   max_length: int | None = None,
                   metrics: Mapping[str, Mapping[str, Any]] | None = None):
    """One row per model: quality, size and speed, with ratios against ``reference``.

    ``tokenizer``: one tokenizer shared by all models (TinyBERT students share the teacher's
    vocabulary) or a dict ``{name: tokenizer}``. ``eval_ds``: labelled data for
    :func:`evaluate_model`. ``texts``: the latency inputs (the same for every model).
    ``reference``: the row the ratios are relative to (default: the first model, usually the
    teacher).

    Columns: ``accuracy``, ``macro_f1``, ``params``, ``non_embedding_params``, ``size_mb``
    (10^6 bytes), ``latency_b{b}_ms`` (median) for each batch size, ``speedup_b{b}``
    (reference latency / this latency), ``size_ratio`` (reference bytes / these bytes) and
    ``params_ratio``, plus ``device`` and ``dtype``. Latencies are measured in this one call,
    rounds interleaved across models; all models must be on one device (else ``ValueError``).
    ``metrics``: :func:`evaluate_model` results already computed on ``eval_ds``, per model name;
    those models are not scored again (``tinylab distill`` needs the confusion matrices too).
    """
    if not models:
        raise ValueError("compare_models needs at least one model")
    names = list(models)
    reference = names[0] if reference is None else reference
    if reference not in models:
        raise ValueError(f"reference {reference!r} is not one of the models: {names}")
    tokenizers = (dict(tokenizer) if isinstance(tokenizer, Mapping)
                  else {name: tokenizer for name in names})
    missing = [n for n in names if n not in tokenizers]
    if missing:
        raise ValueError(f"no tokenizer for {missing}")
    _check_same_device(models)
    rows: dict[str, dict[str, Any]] = {}
    for name in names:
        scores = (metrics[name] if metrics is not None and name in metrics else
                  evaluate_model(models[name], eval_ds, tokenizers[name], batch_size=batch_size))
        params = count_parameters(models[name])
        rows[name] = {"accuracy": scores["accuracy"], "macro_f1": scores["macro_f1"],
                      "params": params["total"], "non_embedding_params": params["non_embedding"],
                      "size_mb": size_on_disk(models[name]) / 1e6}
    latency = _latency_many(models, tokenizers, texts, batch_sizes, seq_len, warmup, repeats,
                            max_length)
    for name in names:
        for bs in batch_sizes:
            rows[name][f"latency_b{bs}_ms"] = latency[name][int(bs)]["median_ms"]
        rows[name]["device"] = latency[name][int(batch_sizes[0])]["device"]
        rows[name]["dtype"] = latency[name][int(batch_sizes[0])]["dtype"]
    ref = rows[reference]
    for name in names:
        row = rows[name]
        for bs in batch_sizes:
            row[f"speedup_b{bs}"] = ref[f"latency_b{bs}_ms"] / row[f"latency_b{bs}_ms"]
        row["size_ratio"] = ref["size_mb"] / row["size_mb"]
        row["params_ratio"] = ref["params"] / row["params"]
    df = pd.DataFrame.from_dict(rows, orient="index")
    df.index.name = "model"
    df.attrs["reference"] = reference
    return df
