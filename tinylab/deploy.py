"""The student as an ONNX model, run by ONNX Runtime.

A distilled ``BertForSequenceClassification`` is an ordinary graph of matrix multiplies, and
ONNX is the common file format for such graphs: one ``.onnx`` file holds the operators and the
weights, and ONNX Runtime (a C++ inference engine with Python, C#, Java, JavaScript bindings)
runs it without PyTorch or transformers. This module does the four steps of that route:

* :func:`export_onnx` - trace the model with ``torch.onnx.export`` into a file with dynamic
  batch and sequence axes (inputs ``input_ids``, ``attention_mask``, ``token_type_ids``;
  output ``logits``) and check that ONNX Runtime computes the model's logits;
* :func:`quantize_onnx` - ONNX Runtime's dynamic int8 quantization of the file (int8 weights,
  activations quantized per batch at run time: the same idea as PyTorch's
  ``quantize_dynamic``, applied to the graph instead of to ``nn.Linear`` modules);
* :func:`onnx_session` and :func:`predict_onnx` - load a file with a chosen number of threads
  and get logits ``(N, C)`` as a numpy array;
* :func:`latency_table` - milliseconds per batch of ONNX Runtime sessions and PyTorch models,
  at several sequence lengths and thread counts, timed like :func:`tinylab.evaluate.measure_latency`
  (same fixed inputs, ``torch.utils.benchmark.Timer``, median of repeats, rounds interleaved
  across models).

Install the optional dependencies with ``pip install "tinylab-course[deploy]"``::

    >>> path = export_onnx(student, tokenizer, "student.onnx")         # doctest: +SKIP
    >>> int8 = quantize_onnx(path, "student-int8.onnx")                  # doctest: +SKIP
    >>> session = onnx_session(int8, threads=1)                          # doctest: +SKIP
    >>> predict_onnx(session, ["A gem."], tokenizer).argmax(-1)          # doctest: +SKIP
    array([1])
"""
from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import json
import logging
import os
import statistics
import time
import warnings
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping, Sequence

import numpy as np
import pandas as pd
import torch
from torch.utils.benchmark import Timer

from tinylab.device import model_device
from tinylab.evaluate import default_max_length, latency_inputs

__all__ = ["DEFAULT_OPSET", "ONNX_INPUTS", "OnnxNotAvailableError", "onnx_available",
           "export_onnx", "quantize_onnx", "onnx_session", "predict_onnx", "latency_table",
           "ONNX_FILE", "write_folder_onnx", "onnx_card_section"]

logger = logging.getLogger(__name__)

#: ONNX operator-set version of the exported graphs (opset 18: ONNX 1.13+, ONNX Runtime 1.14+).
DEFAULT_OPSET = 18
#: The graph inputs, in this order; ``token_type_ids`` only when the model's forward takes it.
ONNX_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
_INSTALL = 'pip install "tinylab-course[deploy]"'
# Texts for the example batch the exporter traces and the check batch it verifies with.
_EXAMPLE_TEXTS = ("a short example", "a somewhat longer example sentence, for the exporter")
_CHECK_TEXTS = ("one", "a third batch size and a different length than the traced example",
                "and a padded row", "four")


class OnnxNotAvailableError(ImportError):
    """A package of the ``deploy`` extra (onnx, onnxruntime, onnxscript) is not installed."""


def _require(module: str) -> Any:
    """Import ``module`` or raise :class:`OnnxNotAvailableError` naming the install command."""
    try:
        return importlib.import_module(module)
    except ImportError as err:
        raise OnnxNotAvailableError(f"{module} is not installed ({err}); install the deploy "
                                    f"extra: {_INSTALL}") from None


def onnx_available() -> bool:
    """True when onnx, onnxruntime and onnxscript (the exporter's back end) all import."""
    try:
        for module in ("onnx", "onnxruntime", "onnxscript"):
            _require(module)
    except OnnxNotAvailableError:
        return False
    return True


def _check_folder(path: Path, what: str) -> None:
    if not path.parent.is_dir():
        raise FileNotFoundError(f"cannot write the {what} {path}: folder {path.parent} does not "
                                "exist; create it first (Path(...).mkdir(parents=True))")


# --------------------------------------------------------------------------------------------
# Export
# --------------------------------------------------------------------------------------------

def _input_names(model: torch.nn.Module) -> list[str]:
    """The graph inputs the model's ``forward`` accepts (BERT: all three of :data:`ONNX_INPUTS`)."""
    params = inspect.signature(model.forward).parameters
    names = [n for n in ONNX_INPUTS if n in params]
    if "input_ids" not in names:
        raise TypeError(f"{type(model).__name__}.forward takes no input_ids; export_onnx "
                        "exports sequence classifiers such as BertForSequenceClassification")
    return names


def _export_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A float32, CPU, eval-mode copy of ``model`` with a standard attention implementation.

    tinylab may have switched the model to :data:`tinylab.attention.SCORES_ATTN` (it returns
    pre-softmax scores for the loss); an exported graph must not depend on tinylab, so the copy
    runs ``sdpa`` (the transformers default, identical logits). The caller's model is untouched.
    """
    if any("_packed_params" in name for name in model.state_dict()):
        raise ValueError("export_onnx got a torch.ao dynamically quantized model; export the "
                         "float32 model and quantize the ONNX file with quantize_onnx instead")
    clone = copy.deepcopy(model).cpu().float().eval()
    config = getattr(clone, "config", None)
    if config is not None and getattr(config, "_attn_implementation", None) not in ("eager",
                                                                                      "sdpa"):
        try:
            clone.set_attn_implementation("sdpa")
        except (ValueError, ImportError):  # a model class without sdpa support
            clone.set_attn_implementation("eager")
    return clone


def _encode(tokenizer: Any, texts: Sequence[str], names: Sequence[str], max_length: int
            ) -> dict[str, torch.Tensor]:
    enc = tokenizer(list(texts), padding=True, truncation=True, max_length=max_length,
                    return_tensors="pt")
    out = {n: enc[n] for n in names if n in enc}
    if "token_type_ids" in names and "token_type_ids" not in out:
        out["token_type_ids"] = torch.zeros_like(out["input_ids"])
    if "attention_mask" in names and "attention_mask" not in out:
        out["attention_mask"] = torch.ones_like(out["input_ids"])
    return out


@contextlib.contextmanager
def _quiet_exporter() -> Iterator[None]:
    """Silence the exporter's chatter (missing torchvision ops, axis renames, deprecations)."""
    loggers = [logging.getLogger(n) for n in ("torch.onnx", "torch.export", "onnxscript")]
    levels = [lg.level for lg in loggers]
    try:
        for lg in loggers:
            lg.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for lg, level in zip(loggers, levels):
            lg.setLevel(level)


def _torch_export(model: torch.nn.Module, example: dict[str, torch.Tensor], path: Path,
                  opset: int, max_length: int) -> str:
    """Write the graph to ``path`` (one self-contained file); returns the exporter used."""
    names = list(example)
    batch = torch.export.Dim("batch")
    # max: the position-embedding table; inputs longer than that cannot run in PyTorch either
    sequence = torch.export.Dim("sequence", max=max_length)
    try:
        with _quiet_exporter():
            program = torch.onnx.export(
                model, (), kwargs=example, dynamo=True, opset_version=opset,
                input_names=names, output_names=["logits"], verbose=False,
                dynamic_shapes={n: {0: batch, 1: sequence} for n in names})
            program.save(str(path), external_data=False)  # weights inside the .onnx file
        return "dynamo"
    except Exception as err:  # noqa: BLE001 - any exporter failure: try the older exporter
        # The dynamo exporter (torch.export + onnxscript) is the supported one and handles
        # BERT; it is missing before torch 2.5 and can trip over unusual model code. The
        # TorchScript exporter traces one run instead: it cannot see data-dependent Python
        # branches, which is why the graph is checked against PyTorch on another shape below.
        logger.warning("dynamo ONNX export failed (%s: %s); using the TorchScript exporter",
                       type(err).__name__, str(err).splitlines()[0] if str(err) else "")
    axes = {n: {0: "batch", 1: "sequence"} for n in names}
    with _quiet_exporter():
        torch.onnx.export(model, tuple(example[n] for n in names), str(path), dynamo=False,
                          opset_version=min(opset, 17), input_names=names,
                          output_names=["logits"], dynamic_axes={**axes, "logits": {0: "batch"}})
    return "torchscript"


def _add_metadata(path: Path, props: Mapping[str, str]) -> None:
    onnx = _require("onnx")
    graph = onnx.load(str(path))
    existing = {p.key: p for p in graph.metadata_props}
    for key, value in props.items():
        entry = existing.get(key) or graph.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(graph, str(path))


def export_onnx(model: torch.nn.Module, tokenizer: Any, path: str | os.PathLike, *,
                opset: int = DEFAULT_OPSET, max_length: int | None = None,
                atol: float = 1e-4, id2label: Mapping[int, str] | None = None) -> Path:
    """Export a sequence classifier to one ONNX file and check that it computes the same logits.

    Graph inputs (int64, shape ``(batch, sequence)``, both axes dynamic): ``input_ids``,
    ``attention_mask`` and ``token_type_ids`` (when ``model.forward`` takes it, as BERT's does);
    output ``logits`` float32 ``(batch, num_labels)``. ``max_length``: the longest sequence the
    graph accepts (default: the smaller of the model's position table and the tokenizer's
    limit). ``opset``: the ONNX operator-set version.

    The model is exported from a float32 CPU copy in eval mode (dropout off) with a standard
    attention implementation (see :func:`_export_copy`); the caller's model is not changed.
    ``torch.onnx.export(dynamo=True)`` is used (``torch.export`` + onnxscript), the TorchScript
    exporter only if that fails. The weights are stored inside the file (no ``.data`` file),
    which ONNX's protobuf limits to 2 GB - far above a BERT-base (0.44 GB).

    Before returning, ONNX Runtime runs the file on a padded batch of another batch size and
    length than the traced example; if its logits differ from PyTorch's by more than ``atol``
    the file is deleted and ``RuntimeError`` raised. The file also carries metadata
    (``id2label`` as JSON - the given one, default the model config's -, ``max_length``, the
    exporter), readable with ``session.get_modelmeta().custom_metadata_map``. Returns ``path``
    as a ``Path``.
    """
    path = Path(path)
    _check_folder(path, "ONNX file")
    for module in ("onnx", "onnxruntime", "onnxscript"):
        _require(module)
    names = _input_names(model)
    max_length = int(max_length or default_max_length(model, tokenizer))
    if max_length < 8:
        raise ValueError(f"max_length={max_length} is too short to export with; pass at least 8")
    clone = _export_copy(model)
    example = _encode(tokenizer, _EXAMPLE_TEXTS, names, max_length)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.onnx")
    try:
        exporter = _torch_export(clone, example, tmp, opset, max_length)
        config = getattr(clone, "config", None)
        labels = id2label if id2label is not None else getattr(config, "id2label", None) or {}
        labels = {int(k): str(v) for k, v in labels.items()}
        _add_metadata(tmp, {"id2label": json.dumps(labels), "max_length": str(max_length),
                            "exporter": f"torch {torch.__version__} ({exporter})",
                            "producer": "tinylab.deploy.export_onnx"})
        check = _encode(tokenizer, _CHECK_TEXTS, names, max_length)
        with torch.inference_mode():
            expected = clone(**check).logits.numpy()
        got = predict_onnx(onnx_session(tmp, threads=1), check)
        diff = float(np.abs(got - expected).max())
        if not diff <= atol:
            raise RuntimeError(f"the exported graph's logits differ from PyTorch's by {diff:.3g} "
                               f"(> atol={atol}) on a batch of shape "
                               f"{tuple(check['input_ids'].shape)}; the export is not usable")
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    logger.info("exported %s to %s with the %s exporter (max |logit diff| %.2g)",
                type(model).__name__, path, exporter, diff)
    return path


# --------------------------------------------------------------------------------------------
# Quantization
# --------------------------------------------------------------------------------------------

class _QuietQuantizer(logging.Filter):
    """``quantize_dynamic`` logs on the root logger: a suggestion to pre-process the model
    (a warning) and one line per tensor (info). Both are dropped while it runs."""

    def filter(self, record: logging.LogRecord) -> bool:
        if "pre-processing before quantization" in record.getMessage():
            return False
        return not (record.levelno < logging.WARNING and "onnxruntime" in record.pathname)


def quantize_onnx(path_in: str | os.PathLike, path_out: str | os.PathLike, *,
                  per_channel: bool = False) -> Path:
    """Dynamic int8 quantization of an ONNX file with ONNX Runtime; returns ``path_out``.

    ``onnxruntime.quantization.quantize_dynamic`` with ``QuantType.QInt8`` weights: every
    ``MatMul`` weight (the linear layers) is stored as signed 8-bit integers with a float scale
    (one per tensor, or per output column with ``per_channel=True``), and the activations are
    quantized batch by batch at run time (``DynamicQuantizeLinear`` -> ``MatMulInteger``). The
    embedding tables (``Gather``) are stored as 8-bit integers too (unsigned, with a zero
    point) and dequantized row by row, so the file shrinks by nearly 4x - unlike
    ``torch.ao.quantization.quantize_dynamic``, which only replaces ``nn.Linear`` and leaves a
    narrow student's largest tensor, the word-embedding table, in float32. No calibration
    data, no retraining.
    """
    _require("onnx")
    ort_quant = _require("onnxruntime.quantization")
    path_in, path_out = Path(path_in), Path(path_out)
    if not path_in.is_file():
        raise FileNotFoundError(f"no ONNX file at {path_in}; write one with export_onnx first")
    if path_out.resolve() == path_in.resolve():
        raise ValueError(f"quantize_onnx would overwrite its input {path_in}; pass another "
                         "path_out, e.g. model-int8.onnx")
    _check_folder(path_out, "quantized ONNX file")
    tmp = path_out.with_name(f".{path_out.stem}.{os.getpid()}.tmp.onnx")
    hint = _QuietQuantizer()
    logging.getLogger().addFilter(hint)
    try:
        ort_quant.quantize_dynamic(str(path_in), str(tmp), weight_type=ort_quant.QuantType.QInt8,
                                   per_channel=per_channel)
        os.replace(tmp, path_out)
    finally:
        logging.getLogger().removeFilter(hint)
        tmp.unlink(missing_ok=True)
    return path_out


# --------------------------------------------------------------------------------------------
# Inference
# --------------------------------------------------------------------------------------------

def onnx_session(path: str | os.PathLike, threads: int | None = None) -> Any:
    """An ``onnxruntime.InferenceSession`` on the CPU for the file at ``path``.

    ``threads``: ONNX Runtime's intra-op threads (the threads one matrix multiply is split
    over, ``SessionOptions.intra_op_num_threads``); ``None`` lets ONNX Runtime use one per
    physical core. Operators run one after another (``inter_op_num_threads=1``), like PyTorch
    on a CPU. All graph optimisations are on (operator fusion, constant folding).
    """
    ort = _require("onnxruntime")
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no ONNX file at {path}; write one with export_onnx first")
    if threads is not None and (isinstance(threads, bool) or int(threads) < 1):
        raise ValueError(f"threads must be a positive int or None, got {threads!r}")
    options = ort.SessionOptions()
    options.intra_op_num_threads = int(threads or 0)  # 0: ONNX Runtime's default
    options.inter_op_num_threads = 1
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only
    return ort.InferenceSession(str(path), sess_options=options,
                                providers=["CPUExecutionProvider"])


def _as_int64(value: Any) -> np.ndarray:
    if isinstance(value, torch.Tensor):
        value = value.detach().cpu().numpy()
    return np.ascontiguousarray(np.asarray(value), dtype=np.int64)


def _feeds(session: Any, tokens: Mapping[str, Any]) -> dict[str, np.ndarray]:
    """The session's inputs from a tokenizer output; missing masks and token types filled in."""
    if "input_ids" not in tokens:
        raise KeyError(f"predict_onnx needs input_ids; got keys {sorted(tokens)} (pass the "
                       "tokenizer's output, e.g. tokenizer(texts, padding=True, "
                       "return_tensors='np'))")
    ids = _as_int64(tokens["input_ids"])
    if ids.ndim != 2:
        raise ValueError(f"input_ids must be (batch, sequence), got shape {ids.shape}")
    feeds = {}
    for inp in session.get_inputs():
        if inp.name in tokens:
            feeds[inp.name] = _as_int64(tokens[inp.name])
        elif inp.name == "attention_mask":
            feeds[inp.name] = np.ones_like(ids)
        elif inp.name == "token_type_ids":
            feeds[inp.name] = np.zeros_like(ids)
        else:
            raise KeyError(f"the ONNX graph needs input {inp.name!r}, which tokens lack")
    return feeds


def predict_onnx(session: Any, tokens: Mapping[str, Any] | Sequence[str], tokenizer: Any = None,
                 *, batch_size: int = 64, max_length: int | None = None) -> np.ndarray:
    """Logits ``(N, C)`` (float32 numpy) of an ONNX classifier.

    ``tokens``: one tokenised batch (a tokenizer output or dict of ``(N, L)`` tensors/arrays;
    ``attention_mask`` defaults to ones and ``token_type_ids`` to zeros, as in BERT), or a list
    of texts together with ``tokenizer``, tokenised in batches of ``batch_size`` shortest
    first (less padding; rows come back in the order of ``tokens``), truncated at
    ``max_length`` (default: the ``max_length`` stored by :func:`export_onnx`, else 512).
    """
    if isinstance(tokens, Mapping):
        return session.run(["logits"], _feeds(session, tokens))[0]
    if isinstance(tokens, str) or tokenizer is None:
        raise TypeError("predict_onnx takes one tokenised batch (a dict), or a list of texts "
                        "and the tokenizer: predict_onnx(session, texts, tokenizer)")
    texts = list(tokens)
    if max_length is None:
        stored = session.get_modelmeta().custom_metadata_map.get("max_length")
        max_length = int(stored) if stored else 512
    order = np.argsort([len(t) for t in texts], kind="stable")
    out: np.ndarray | None = None
    for start in range(0, len(texts), batch_size):
        idx = order[start:start + batch_size]
        enc = tokenizer([texts[i] for i in idx], padding=True, truncation=True,
                        max_length=max_length, return_tensors="np")
        logits = predict_onnx(session, dict(enc))
        if out is None:
            out = np.empty((len(texts), logits.shape[-1]), dtype=logits.dtype)
        out[idx] = logits
    if out is None:
        width = session.get_outputs()[0].shape[-1]
        return np.empty((0, width if isinstance(width, int) else 0), dtype=np.float32)
    return out


# --------------------------------------------------------------------------------------------
# Latency
# --------------------------------------------------------------------------------------------

def _is_onnx(model: Any) -> bool:
    return isinstance(model, (str, os.PathLike))


def latency_table(models: Mapping[str, Any], tokenizer: Any, texts: Sequence[str], *,
                  seq_lens: Iterable[int] = (32, 64, 128), threads: Iterable[int] = (1,),
                  batch_size: int = 1, warmup: int = 1, repeats: int = 5,
                  batches: int | None = None):
    """Milliseconds per batch of PyTorch models and ONNX files, per sequence length and threads.

    ``models``: ``{name: nn.Module or path of an .onnx file}``. For every ``(threads, seq_len)``
    pair, every model gets the same fixed inputs as in
    :func:`tinylab.evaluate.measure_latency`: ``batches`` batches of ``batch_size`` texts
    (default: as many as 32 texts fill, at most 8), each padded or truncated to exactly
    ``seq_len`` tokens. ONNX
    files run in an :func:`onnx_session` with ``threads`` intra-op threads, PyTorch models (on
    the CPU, inference mode) at ``threads`` torch threads. Each timing is one pass over those
    batches with ``torch.utils.benchmark.Timer`` (two untimed passes first, so caches are warm),
    divided by their number; ``warmup`` more untimed passes per model, then ``repeats`` rounds
    that go model by model (round 1: a, b, c; round 2: a, b, c ...), so a burst of background
    load hits every model alike. The median and the 90th percentile of the rounds are kept.

    Returns a ``pandas.DataFrame``, one row per (model, threads, seq_len): ``model``,
    ``runtime`` (``"onnxruntime"`` / ``"pytorch"``), ``threads``, ``seq_len``, ``batch_size``,
    ``median_ms``, ``p90_ms``, ``examples_per_s`` (= batch_size / median), ``repeats``.
    """
    if repeats < 1 or warmup < 0 or batch_size < 1 or (batches is not None and batches < 1):
        raise ValueError(f"need repeats >= 1, warmup >= 0, batch_size >= 1 and batches >= 1, "
                         f"got repeats={repeats}, warmup={warmup}, batch_size={batch_size}, "
                         f"batches={batches}")
    seq_lens = [int(s) for s in seq_lens]
    threads = [int(t) for t in threads]
    if not models or not seq_lens or not threads:
        raise ValueError("latency_table needs at least one model, sequence length and thread "
                         "count")
    if min(seq_lens) < 3 or min(threads) < 1:
        raise ValueError(f"sequence lengths must be >= 3 ([CLS] x [SEP]) and thread counts >= 1, "
                         f"got seq_lens={seq_lens}, threads={threads}")
    for name, m in models.items():
        if _is_onnx(m):
            if not Path(m).is_file():
                raise FileNotFoundError(f"model {name!r}: no ONNX file at {m}")
        elif model_device(m).type != "cpu":
            raise ValueError(f"model {name!r} is on {model_device(m)}; ONNX Runtime runs on the "
                             "CPU here, so time the PyTorch models there too: model.cpu()")
    count = batches or max(1, min(8, 32 // batch_size, len(texts) // batch_size))
    rows = []
    states = {name: m.training for name, m in models.items() if not _is_onnx(m)}
    previous_threads = torch.get_num_threads()
    try:
        for m in models.values():
            if not _is_onnx(m):
                m.eval()
        for n_threads in threads:
            sessions = {name: onnx_session(m, threads=n_threads)
                        for name, m in models.items() if _is_onnx(m)}
            for seq_len in seq_lens:
                encs = latency_inputs(tokenizer, list(texts), batch_size, seq_len, seq_len,
                                      count)
                timers = {}
                for name, m in models.items():
                    if _is_onnx(m):
                        session = sessions[name]
                        feeds = [_feeds(session, enc) for enc in encs]
                        timers[name] = Timer(
                            stmt="for x in feeds: session.run(['logits'], x)",
                            timer=time.perf_counter, num_threads=n_threads,
                            globals={"session": session, "feeds": feeds})
                    else:
                        names = _input_names(m)
                        feeds = [{k: v for k, v in enc.items() if k in names} for enc in encs]
                        timers[name] = Timer(stmt="for x in feeds: model(**x)",
                                             timer=time.perf_counter, num_threads=n_threads,
                                             globals={"model": m, "feeds": feeds})
                times: dict[str, list[float]] = {name: [] for name in models}
                with torch.inference_mode():
                    for timer in timers.values():
                        if warmup:
                            timer.timeit(number=warmup)
                    for _ in range(repeats):
                        for name, timer in timers.items():
                            times[name].append(timer.timeit(number=1).mean / len(encs))
                for name, seconds in times.items():
                    ms = np.asarray(seconds) * 1000.0
                    median = float(statistics.median(ms))
                    rows.append({"model": name,
                                 "runtime": "onnxruntime" if _is_onnx(models[name]) else "pytorch",
                                 "threads": n_threads, "seq_len": seq_len,
                                 "batch_size": batch_size, "median_ms": median,
                                 "p90_ms": float(np.percentile(ms, 90)),
                                 "examples_per_s": batch_size / (median / 1000.0),
                                 "repeats": len(ms)})
    finally:
        torch.set_num_threads(previous_threads)
        for name, training in states.items():
            models[name].train(training)
    return pd.DataFrame(rows)


# --------------------------------------------------------------------------------------------
# Inside an exported model folder (tinylab.export.export_student)
# --------------------------------------------------------------------------------------------

#: The ONNX file's name inside a folder written by :func:`tinylab.export.export_student`.
ONNX_FILE = "model.onnx"


def write_folder_onnx(model: torch.nn.Module, tokenizer: Any, folder: str | os.PathLike, *,
                      id2label: Mapping[int, str] | None = None) -> str | None:
    """Write ``folder/model.onnx`` with :func:`export_onnx`, or explain why not; never raises
    for a missing package or a failed export.

    An exported model folder is useful without its ONNX copy, so a run that trained a student
    for an hour must not fail at this last step: when a package of the deploy extra is missing
    or the export fails, the reason is logged and returned (``None`` when the file was written)
    for :func:`onnx_card_section` to put in the model card.
    """
    try:
        export_onnx(model, tokenizer, Path(folder) / ONNX_FILE, id2label=id2label)
    except OnnxNotAvailableError as err:
        reason = str(err)
    except Exception as err:  # noqa: BLE001 - the safetensors export stands on its own
        first_line = (str(err).splitlines() or [""])[0]
        reason = f"the ONNX export failed ({type(err).__name__}: {first_line})"
    else:
        return None
    logger.warning("no %s in %s: %s", ONNX_FILE, folder, reason)
    return reason


def onnx_card_section(skipped: str | None) -> str:
    """Model-card Markdown on running ``model.onnx`` with ONNX Runtime (``skipped=None``), or
    a note that it was not written and why (``skipped``: the reason from
    :func:`write_folder_onnx`)."""
    if skipped is not None:
        return ("\n## ONNX\n\nNo `model.onnx` was written: " + skipped.rstrip(".") + ". Write "
                "it later with `tinylab.deploy.export_onnx(model, tokenizer, "
                '"model.onnx")`.\n')
    return "\n".join([
        "", "## Run it with ONNX Runtime", "",
        "`model.onnx` is the same classifier as an ONNX graph (inputs `input_ids`, "
        "`attention_mask`, `token_type_ids`: int64, shape (batch, sequence), both axes dynamic; "
        "output `logits`: (batch, labels)). It runs without PyTorch "
        "(`pip install onnxruntime transformers`):", "",
        "```python", "import onnxruntime as ort", "from transformers import AutoTokenizer", "",
        'folder = "PATH/TO/THIS/FOLDER"', "tokenizer = AutoTokenizer.from_pretrained(folder)",
        'session = ort.InferenceSession(f"{folder}/model.onnx",',
        '                               providers=["CPUExecutionProvider"])',
        'enc = tokenizer(["A thoughtful, beautifully made film."], padding=True, truncation=True,',
        '                return_tensors="np")',
        'logits = session.run(["logits"], {i.name: enc[i.name] for i in session.get_inputs()})[0]',
        "print(logits.argmax(-1))  # class ids; names in config.json's id2label", "```", "",
        "Smaller and usually faster on a CPU: ONNX Runtime's dynamic int8 quantization "
        "(int8 weights, activations quantized per batch at run time; measure the accuracy it "
        "costs on your data):", "",
        "```python", "from onnxruntime.quantization import QuantType, quantize_dynamic", "",
        'quantize_dynamic("model.onnx", "model-int8.onnx", weight_type=QuantType.QInt8)', "```",
        ""])
