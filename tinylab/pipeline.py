"""``tinylab distill``: the whole TinyBERT pipeline in one call, with a report at the end::

    teacher fine-tuning (or the cached teacher)        -> DIR/teacher/
    general distillation (or the cached general student)
    data augmentation (cached)
    task distillation: stage a (intermediate layers), stage b (prediction layer)
    evaluation on the test split: accuracy, size, CPU latency   -> DIR/student/ (plain HF folder)
    and out of domain (product reviews, tweets: accuracy)
                                                                -> DIR/report.json, DIR/history.json
                                                                -> DIR/history.png, DIR/accuracy_latency.png

Every step is a public function a notebook can call on its own (:mod:`tinylab.distill`,
:mod:`tinylab.augment`, :mod:`tinylab.evaluate`, :mod:`tinylab.export`, :mod:`tinylab.plots`);
this module only chains them and writes the results.

Several processes: ``torchrun --nproc_per_node 2 -m tinylab distill --profile ci`` (CPU, gloo)
or ``accelerate launch --multi_gpu -m tinylab distill ...`` trains data-parallel; the main
process alone writes files, evaluates and prints. Interrupted runs continue with ``--resume``
(checkpoints in ``DIR/checkpoints/``, removed after a successful run). ``DIR`` must be new,
empty or an earlier run's (``--overwrite`` to write into a folder with other files).
"""
from __future__ import annotations

import importlib.metadata as md
import json
import platform
import time
from pathlib import Path
from typing import Any, Callable, Sequence

import torch
from transformers import AutoModelForSequenceClassification

from tinylab.atomic import atomic_write_text
from tinylab.augment import augment_dataset
from tinylab.config import Config
from tinylab.data import OOD_SETS, load_ood, load_task, tokenize
from tinylab.device import describe, make_accelerator, resolve_device_and_precision
from tinylab.distill import (History, RunOptions, finetune_teacher, general_student,
                             task_distillation)
from tinylab.distill.cache import general_folder, is_cached, teacher_folder
from tinylab.distill.checkpoint import remove_checkpoint_tree
from tinylab.evaluate import compare_models, evaluate_model
from tinylab.export import export_student
from tinylab.models import check_student_shape, load_pretrained
from tinylab.plots import plot_accuracy_latency, plot_history, save_figure
from tinylab.preflight import check_sources
from tinylab.run_folder import claim_output_dir

__all__ = ["run_pipeline", "default_output_dir", "library_versions", "results_table"]

CHECKPOINT_EVERY = 200  # optimiser steps between checkpoints (and one at the end of each stage)
LATENCY_BATCH_SIZES = (1, 32)


def default_output_dir(cfg: Config) -> Path:
    """``runs/<profile>`` (relative to the current directory)."""
    return Path("runs") / cfg.profile


def library_versions() -> dict[str, str]:
    """Versions of Python and of the libraries that decide the numbers."""
    out = {"python": platform.python_version(), "platform": platform.platform()}
    for name in ("tinylab", "torch", "transformers", "datasets", "accelerate", "tokenizers",
                 "safetensors", "numpy", "pandas"):
        try:
            out[name] = md.version(name)
        except md.PackageNotFoundError:
            out[name] = "not installed"

    out["torch_threads"] = str(torch.get_num_threads())
    return out


def results_table(report: dict[str, Any]) -> str:
    """The teacher-vs-student table printed at the end of ``tinylab distill``."""
    rows = report["models"]
    cols = [("accuracy", "accuracy", "{:.4f}"), ("macro_f1", "macro-F1", "{:.4f}"),
            ("params", "params (M)", None), ("size_mb", "size (MB)", "{:.1f}")]
    cols += [(f"latency_b{b}_ms", f"ms @ batch {b}", "{:.1f}") for b in LATENCY_BATCH_SIZES]
    cols += [(f"speedup_b{b}", f"speed-up @ {b}", "{:.1f}x") for b in LATENCY_BATCH_SIZES]
    header = ["model"] + [title for _, title, _ in cols]
    lines = [header]
    for name, row in rows.items():
        cells = [name]
        for key, _, fmt in cols:
            value = row.get(key)
            if value is None:
                cells.append("-")
            elif key == "params":
                cells.append(f"{value / 1e6:.1f}")
            else:
                cells.append(fmt.format(value))
        lines.append(cells)
    widths = [max(len(r[i]) for r in lines) for i in range(len(header))]
    text = ["  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in
                      enumerate(zip(r, widths))) for r in lines]
    text.insert(1, "-" * len(text[0]))
    ratio = report["summary"]["accuracy_retained"]
    text.append(f"student keeps {100 * ratio:.1f}% of the teacher's test accuracy, is "
                f"{report['summary']['speedup_b32']:.1f}x faster at batch 32 and "
                f"{report['summary']['size_ratio']:.1f}x smaller on disk")
    for name, ood in report.get("out_of_domain", {}).items():
        if isinstance(ood, dict):
            text.append(f"out of domain, {name} ({ood['examples']} texts): teacher "
                        f"{ood['teacher']:.4f}, student {ood['student']:.4f}, student keeps "
                        f"{100 * ood['retained']:.1f}%")
    majority = report["summary"].get("majority_baseline")
    if majority is not None and not report["summary"].get("teacher_beats_majority", True):
        text.append(f"warning: the teacher is no better than always predicting the most "
                    f"frequent class ({100 * majority:.1f}% of the test set), so the share of "
                    f"its accuracy the student keeps means nothing here; train the teacher "
                    f"longer (e.g. --profile quick)")
    return "\n".join(text)


def out_of_domain(models: dict[str, Any], tokenizer, labels, max_length: int,
                  batch_size: int, size: int | None = None, seed: int = 2020) -> dict[str, Any]:
    """Accuracy of each model on the out-of-domain sentiment sets (product reviews, tweets:
    :func:`tinylab.data.load_ood`) and the share of the teacher's the student keeps.

    Only for a binary sentiment task labelled ``["negative", "positive"]`` (empty dict
    otherwise). A student can match its teacher on the teacher's own domain and still fall
    behind elsewhere; this is where that shows. ``size``: score a stratified sample of at most
    this many texts per set (``data.ood_size``), drawn with ``seed`` (``data.split_seed``).
    """
    if list(labels) != ["negative", "positive"]:
        return {}
    out: dict[str, Any] = {}
    for set_name in OOD_SETS:
        ds = load_ood(set_name, size=size, seed=seed)
        tokens = tokenize(ds, tokenizer, max_length)
        row: dict[str, Any] = {"examples": len(ds)}
        for name, model in models.items():
            row[name] = evaluate_model(model, tokens, tokenizer,
                                       batch_size=batch_size)["accuracy"]
        if "teacher" in row and "student" in row:
            row["retained"] = row["student"] / row["teacher"] if row["teacher"] else None
        out[set_name] = row
    return out


def _stage_seconds(history) -> dict[str, float]:
    return {name: round(log.seconds, 2) for name, log in history.stages.items()}


def run_pipeline(cfg: Config, output_dir: str | Path | None = None, resume: bool = False, *,
                 progress: bool = True, checkpoint_every: int | None = CHECKPOINT_EVERY,
                 callbacks: Sequence[Callable] = (), overwrite: bool = False) -> dict[str, Any]:
    """Run teacher fine-tuning, general distillation, augmentation, task distillation and the
    evaluation; write the outputs to ``output_dir`` (default ``runs/<profile>``).

    Returns the report (also written as ``report.json``): per-model test metrics, sizes and
    latencies, a summary (accuracy kept, speed-up, size ratio), stage timings, configuration
    and library versions. ``resume=True`` continues from ``output_dir/checkpoints`` after an
    interruption (the same configuration and number of processes are required).
    ``callbacks`` go to every training stage (see :class:`tinylab.distill.StepInfo`).
    Before any work: every model and data name is checked to exist
    (:func:`tinylab.preflight.check_sources`), the device and precision are checked, the
    student's shape is checked against the teacher's configuration (no weights loaded), the
    task data is loaded and checked (:func:`tinylab.data.load_task`), and the output folder is
    claimed
    (:func:`tinylab.run_folder.claim_output_dir`: a folder with files tinylab did not write is
    refused unless ``overwrite``; a resume with changed settings is refused).
    With several processes only the main process runs the final evaluation, writes and
    returns the report;
    the others return ``{}``.
    """
    # Names of models and data that cannot be found, then device and precision: a machine
    # that lacks them fails here, before any data loads.
    check_sources(cfg)
    _, precision = resolve_device_and_precision(cfg.device, cfg.precision)
    out = Path(output_dir) if output_dir is not None else default_output_dir(cfg)
    accelerator = make_accelerator(cfg.device, cfg.precision)
    main = accelerator.is_main_process

    check_student_shape(cfg)
    if main:
        claim_output_dir(out, cfg, resume=resume, overwrite=overwrite, check_only=True)
    # The task data next: a missing column, a single class, labels that are neither ids nor
    # names, empty texts or a file that does not parse stop the run here, before the output
    # folder is created and before any model loads.
    start = time.perf_counter()
    data = load_task(cfg.data)
    data_seconds = time.perf_counter() - start
    if main:
        claim_output_dir(out, cfg, resume=resume, overwrite=overwrite)
    checkpoints = out / "checkpoints"
    run = RunOptions(accelerator=accelerator, checkpoint_dir=checkpoints, resume=resume,
                     progress=progress, checkpoint_every=checkpoint_every,
                     callbacks=tuple(callbacks))
    wall: dict[str, dict[str, Any]] = {}

    def say(message: str) -> None:
        if main:
            print(f"tinylab distill [{cfg.profile}]: {message}", flush=True)

    say(f"output folder {out.resolve()}; {accelerator.num_processes} process(es) on "
        f"{describe(accelerator.device, precision)}")

    labels = data["train"].features["label"].names
    wall["data"] = {"seconds": round(data_seconds, 2),
                    "sizes": {k: len(v) for k, v in data.items()}}

    start = time.perf_counter()
    teacher_cached = is_cached(teacher_folder(cfg))
    say("teacher: " + ("loading the cached fine-tuned teacher" if teacher_cached else
                       f"fine-tuning {cfg.teacher.model}"))
    teacher, tokenizer, h_teacher = finetune_teacher(cfg, data, run=run.sub("teacher"))
    wall["teacher"] = {"seconds": round(time.perf_counter() - start, 2), "cached": teacher_cached}

    start = time.perf_counter()
    general_cached = cfg.general.enabled and is_cached(general_folder(cfg))
    say("general distillation: " + ("disabled" if not cfg.general.enabled else
                                     "loading the cached general student" if general_cached
                                     else "training"))
    student, h_general = general_student(cfg, num_labels=len(labels), id2label=labels,
                                         tokenizer=tokenizer, run=run.sub("general"))
    wall["general"] = {"seconds": round(time.perf_counter() - start, 2),
                       "cached": bool(general_cached)}

    start = time.perf_counter()
    say("data augmentation" + ("" if cfg.augment.enabled else ": disabled"))
    with accelerator.main_process_first():  # the main process fills the cache, others read it
        train = augment_dataset(data["train"], tokenizer, teacher, cfg.augment, seed=cfg.seed,
                                progress=progress and main)
    wall["augment"] = {"seconds": round(time.perf_counter() - start, 2), "examples": len(train)}

    start = time.perf_counter()
    say(f"task distillation on {len(train)} examples")
    h_task = task_distillation(cfg, teacher, student, train, data["validation"],
                               tokenizer=tokenizer, run=run.sub("task"))
    wall["task"] = {"seconds": round(time.perf_counter() - start, 2)}
    history = History.merge(h_teacher, h_general, h_task)

    report: dict[str, Any] = {}
    if main:
        report = _evaluate_and_write(cfg, out, teacher, student, tokenizer, data, history, wall,
                                     accelerator.num_processes,
                                     describe(accelerator.device, precision))
        remove_checkpoint_tree(checkpoints)  # the run is complete (tinylab's files only)
        print(results_table(report), flush=True)
        say(f"wrote {out / 'report.json'}, {out / 'student'}, {out / 'teacher'} and plots")
    accelerator.wait_for_everyone()
    return report


def _evaluate_and_write(cfg: Config, out: Path, teacher, student, tokenizer, data, history,
                        wall: dict, processes: int, training_device: str) -> dict[str, Any]:
    """Export both models, evaluate the exported folders on the test split, write everything.

    The exported folders are what users deploy (standard ``sdpa`` attention, no tinylab), so
    they are what gets timed: both loaded on the CPU, in float32, whatever the training device
    (``training_device`` is recorded in the report).
    """
    labels = data["train"].features["label"].names
    start = time.perf_counter()
    meta = {"profile": cfg.profile, "config": cfg.to_dict()}
    export_student(teacher, tokenizer, out / "teacher", label_names=labels,
                   metadata={**meta, "role": "teacher"})
    export_student(student, tokenizer, out / "student", label_names=labels,
                   metadata={**meta, "role": "student"}, onnx=True)
    models = {name: load_pretrained(AutoModelForSequenceClassification, out / name).eval()
              for name in ("teacher", "student")}
    test = data["test"]
    # Scored at the training max_length, like the validation curves.
    test_tokens = tokenize(test, tokenizer, cfg.data.max_length)
    metrics = {name: evaluate_model(model, test_tokens, tokenizer, batch_size=cfg.eval_batch_size)
               for name, model in models.items()}
    table = compare_models(models, tokenizer, test_tokens, list(test["text"]),
                           reference="teacher", batch_sizes=LATENCY_BATCH_SIZES,
                           batch_size=cfg.eval_batch_size, max_length=cfg.data.max_length,
                           repeats=cfg.latency_repeats, metrics=metrics)
    rows = {name: {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()}
            for name, row in table.to_dict(orient="index").items()}
    for name in models:
        rows[name]["confusion"] = metrics[name]["confusion"]
    ood = out_of_domain(models, tokenizer, labels, cfg.data.max_length, cfg.eval_batch_size,
                        size=cfg.data.ood_size, seed=cfg.data.split_seed)
    wall["evaluation"] = {"seconds": round(time.perf_counter() - start, 2)}
    teacher_acc, student_acc = rows["teacher"]["accuracy"], rows["student"]["accuracy"]
    counts = [0] * len(labels)
    for label in test["label"]:
        counts[label] += 1
    majority = max(counts) / max(1, len(test))
    report = {
        "profile": cfg.profile,
        "task": cfg.data.task,
        "test_examples": len(test),
        "labels": labels,
        "models": rows,
        "summary": {"teacher_accuracy": teacher_acc, "student_accuracy": student_acc,
                    "accuracy_retained": student_acc / teacher_acc if teacher_acc else None,
                    "speedup_b1": rows["student"]["speedup_b1"],
                    "speedup_b32": rows["student"]["speedup_b32"],
                    "size_ratio": rows["student"]["size_ratio"],
                    "params_ratio": rows["student"]["params_ratio"],
                    # A teacher that only predicts the majority class makes retention
                    # meaningless (a student doing the same "keeps 100%").
                    "majority_baseline": majority,
                    "teacher_beats_majority": teacher_acc > majority + 0.01},
        "out_of_domain": ood,
        "validation": {name: log.last_accuracy for name, log in history.stages.items()
                       if log.evals},
        "timings": {"wall_seconds": wall, "stage_training_seconds": _stage_seconds(history),
                    "total_seconds": round(sum(w["seconds"] for w in wall.values()), 2)},
        "stages": {name: log.info for name, log in history.stages.items()},
        "processes": processes,
        "training_device": training_device,
        "config": cfg.to_dict(),
        "versions": library_versions(),
    }

    history.to_json(out / "history.json")
    save_figure(plot_history(history), out / "history.png")
    save_figure(plot_accuracy_latency(table), out / "accuracy_latency.png")
    atomic_write_text(out / "report.json", json.dumps(report, indent=1, default=str))
    return report
