"""TinyBERT's ablations (Jiao et al. 2020, its ablation studies), reproduced at CPU scale.

    .venv/bin/python bench/ablations.py                      # bench budget, all variants, 3 seeds
    .venv/bin/python bench/ablations.py --budget ci --seeds 1 --variants full,gold   # smoke test
    .venv/bin/python bench/ablations.py --list               # the variants and what they change

Every variant is the full TinyBERT recipe with one thing taken away (or changed), trained with
the same budget and seeds, and scored on the same test split:

* ``full``: general distillation (GD) -> data augmentation (DA) -> task distillation stage a
  (embedding + attention + hidden losses) -> stage b (prediction loss); uniform layer mapping;
* ``no_gd`` / ``no_td`` / ``no_da``: without GD (the student starts from the profile's
  initialisation), without TD stage a, without augmentation (the paper's ablation of the learning procedure);
* ``no_embd`` / ``no_attn`` / ``no_hidn`` / ``no_trm``: a loss term at weight 0 in task
  distillation (the paper's ablation of the distillation objectives; GD is the shared full-loss general student);
* ``no_pred``: stage b replaced by fine-tuning on the gold labels (same number of steps);
* ``map_top`` / ``map_bottom``: the other layer mappings, in GD and TD (the paper's comparison of mapping functions; the
  uniform mapping is ``full``);
* baselines ``gold`` (cross-entropy on gold labels) and ``kd`` (logits-only Hinton KD): a
  fresh student (the profile's initialisation, no GD, no DA, no intermediate layers) trained
  for as many optimiser steps as ``full``'s two task stages together.

Shared work is done once and cached by the package: the fine-tuned teacher (one teacher for
all seeds, the profile's seed), the augmented data per seed, the general student per
(seed, mapping). Each finished run is written atomically to
``results/<budget>/ablation_runs/<variant>__seed<k>.json`` and skipped when the script runs
again with the same configuration. By default two runs train at a time, each in its own
process with one torch thread (``--workers``, ``--threads``). Outputs: ``ablations.md`` (table), ``ablations.json``, ``ablations.png``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

PROTOCOL = "ablations-v1"  # bump when the run procedure changes: old run files are redone


@dataclass(frozen=True)
class Variant:
    """One row of the ablation table.

    ``overrides`` change the student-side configuration; those starting with ``general.`` or
    ``loss.layer_mapping`` also change the general student (so loss ablations share one GD).
    ``kind``: ``"tinybert"``, ``"no_pred"`` (stage b on gold labels) or a baseline
    (``"gold"``, ``"kd"``, ``"hinton"``; see :func:`tinylab.distill.train_baseline`). ``paper``: the row of the paper's ablation tables (Jiao et al. 2020,
    ablation tables, arXiv 1909.10351 v5) and its GLUE-dev average (MNLI-m, MNLI-mm, MRPC, CoLA).
    """

    name: str
    title: str
    overrides: tuple[str, ...] = ()
    kind: str = "tinybert"
    paper: str | None = None
    paper_avg: float | None = None

    def gd_overrides(self) -> tuple[str, ...]:
        return tuple(o for o in self.overrides
                     if o.startswith(("general.", "loss.layer_mapping")))


PAPER_FULL_AVG = 75.6  # TinyBERT4, GLUE-dev average of MNLI-m, MNLI-mm, MRPC and CoLA
VARIANTS: dict[str, Variant] = {v.name: v for v in (
    Variant("full", "TinyBERT (full; uniform mapping)", paper="TinyBERT4 full",
            paper_avg=PAPER_FULL_AVG),
    Variant("no_gd", "w/o general distillation", ("general.enabled=false",),
            paper="w/o GD", paper_avg=72.5),
    Variant("no_td", "w/o task distillation stage a (intermediate)",
            ("task_intermediate.enabled=false",), paper="w/o TD", paper_avg=68.5),
    Variant("no_da", "w/o data augmentation", ("augment.enabled=false",),
            paper="w/o DA", paper_avg=68.4),
    Variant("no_embd", "w/o embedding loss", ("loss.embedding_weight=0",),
            paper="w/o Embd", paper_avg=74.1),
    Variant("no_attn", "w/o attention loss", ("loss.attention_weight=0",),
            paper="w/o Attn", paper_avg=71.0),
    Variant("no_hidn", "w/o hidden-state loss", ("loss.hidden_weight=0",),
            paper="w/o Hidn", paper_avg=72.9),
    Variant("no_trm", "w/o attention and hidden losses (Trm)",
            ("loss.attention_weight=0", "loss.hidden_weight=0"),
            paper="w/o Trm", paper_avg=56.3),
    Variant("no_pred", "w/o prediction loss (stage b on gold labels)", kind="no_pred",
            paper="w/o Pred", paper_avg=73.5),
    Variant("map_top", "mapping: top", ("loss.layer_mapping=top",),
            paper="mapping: Top", paper_avg=70.9),
    Variant("map_bottom", "mapping: bottom", ("loss.layer_mapping=bottom",),
            paper="mapping: Bottom", paper_avg=71.3),
    Variant("gold", "baseline: gold labels only", kind="gold"),
    Variant("kd", "baseline: stage b alone (logits only, t=1, no gold labels)", kind="kd"),
    Variant("hinton", "baseline: Hinton KD (t=2, alpha=0.1 on gold labels)", kind="hinton"),
)}
BASELINE_KINDS = ("gold", "kd", "hinton")  # trained on the labelled sources, no general student
# Two single-threaded processes train faster than one process with two threads on a 2-core
# CPU: a student this small keeps one core busy but gains little from a second thread, and
# any background load makes threads wait for each other (bench/README.md).
DEFAULT_WORKERS = min(2, benchlib.thread_budget())
FIRST_SEED = 42  # the profiles' seed: seed 42 of `full` is exactly what `tinylab distill` trains


# --------------------------------------------------------------------------------------------
# Configurations of one run
# --------------------------------------------------------------------------------------------

def run_configs(budget: str, extra: tuple[str, ...], variant: Variant, seed: int):
    """``(base, student, general)`` configs: the budget's (teacher, seed 42), the variant's
    for this seed, and the one its general student is trained with."""
    base = benchlib.budget_config(budget, extra)
    student = base.replace(*variant.overrides, seed=seed)
    general = base.replace(*variant.gd_overrides(), seed=seed)
    if variant.kind in BASELINE_KINDS:
        general = general.replace("general.enabled=false")
    return base, student, general


def run_key(budget: str, extra: tuple[str, ...], variant: Variant, seed: int) -> str:
    from tinylab.config import config_hash

    base, student, general = run_configs(budget, extra, variant, seed)

    def settings(cfg) -> dict[str, Any]:
        # ``kd`` (added after most runs were stored) matters to the Hinton baseline only; left
        # out elsewhere, the stored runs of the other variants keep their keys.
        d = cfg.to_dict()
        if variant.kind != "hinton":
            d.pop("kd")
        return d
    # The title is how the table names the row, not what was run.
    what = {k: v for k, v in dataclasses.asdict(variant).items() if k != "title"}
    return config_hash(PROTOCOL, what, *(settings(c) for c in (base, student, general)))


def stage_steps(stage, examples: int) -> int:
    """Optimiser steps ``train_stage`` runs for ``stage`` on ``examples`` (one process)."""
    per_epoch = math.ceil(examples / stage.batch_size)
    total = math.ceil(stage.epochs * per_epoch)
    return total if stage.max_steps is None else min(total, stage.max_steps)


def matched_stage(stage, steps: int, examples: int):
    """``stage`` made to run exactly ``steps`` optimiser steps on ``examples`` examples."""
    per_epoch = math.ceil(examples / stage.batch_size)
    return dataclasses.replace(stage, enabled=True, epochs=float(math.ceil(steps / per_epoch)),
                               max_steps=steps)


# --------------------------------------------------------------------------------------------
# Shared state of a process (loaded once per worker)
# --------------------------------------------------------------------------------------------

_SHARED: dict[tuple, dict[str, Any]] = {}


def shared(budget: str, extra: tuple[str, ...], progress: bool) -> dict[str, Any]:
    """Task data and the fine-tuned teacher (trained on first use, then from the cache)."""
    key = (budget, extra)
    if key not in _SHARED:
        from tinylab.data import load_task, tokenize
        from tinylab.distill import RunOptions, finetune_teacher

        cfg = benchlib.budget_config(budget, extra)
        data = load_task(cfg.data)
        teacher, tokenizer, history = finetune_teacher(cfg, data, run=RunOptions(progress=progress))
        _SHARED[key] = {"cfg": cfg, "data": data, "teacher": teacher, "tokenizer": tokenizer,
                        "teacher_history": history,
                        "test": tokenize(data["test"], tokenizer, cfg.data.max_length),
                        "labels": data["train"].features["label"].names}
    return _SHARED[key]


def init_worker(threads: int) -> None:
    benchlib.quiet_libraries()
    benchlib.set_threads(threads)


def training_sets(ctx: dict[str, Any], cfg, seed: int, progress: bool) -> dict[str, Any]:
    """The augmented task data of this seed and its sources (gold-labelled originals)."""
    from tinylab.augment import augment_dataset

    args = dict(seed=seed, progress=progress)
    source_cfg = dataclasses.replace(cfg.augment, enabled=False)
    return {"augmented": augment_dataset(ctx["data"]["train"], ctx["tokenizer"], ctx["teacher"],
                                         cfg.augment, **args),
            "sources": augment_dataset(ctx["data"]["train"], ctx["tokenizer"], ctx["teacher"],
                                       source_cfg, **args)}


def shared_outputs_dir() -> Path:
    """Where the runs share teacher outputs (:class:`tinylab.distill.TeacherOutputs`)."""
    from tinylab.assets import cache_dir

    return cache_dir() / "teacher_outputs"


def share_teacher_outputs(ctx: dict[str, Any], cfg, texts, progress: bool) -> dict[str, Any]:
    """Run the teacher once over ``texts`` and keep every layer in :func:`shared_outputs_dir`
    (or find it there): each variant of this seed then reads the layers it needs from that
    file instead of running the teacher again."""
    from tinylab.distill import TeacherOutputs, make_accelerator
    from tinylab.distill.stage_parts import training_set
    from tinylab.distill.teacher_outputs import all_layers

    ds = training_set(texts, ctx["tokenizer"], cfg.data.max_length, labels=False)
    outputs = TeacherOutputs(ctx["teacher"], ds, ctx["tokenizer"],
                             all_layers(ctx["teacher"].config), passes=2,
                             batch_size=cfg.eval_batch_size, progress=progress,
                             accelerator=make_accelerator(cfg.device, cfg.precision),
                             shared_dir=shared_outputs_dir())
    return outputs.build().summary()


def prepare(budget: str, extra: tuple[str, ...], what: str, seed: int, overrides: tuple[str, ...],
            progress: bool) -> str:
    """Fill one cache entry: ``what="augment"`` (the augmented data of ``seed``) or
    ``"general"`` (the general student for ``seed`` and the GD ``overrides``)."""
    from tinylab.distill import RunOptions, general_student

    ctx = shared(budget, extra, progress)
    start = time.perf_counter()
    cfg = ctx["cfg"].replace(*overrides, seed=seed)
    if what == "augment":
        full = cfg.replace("augment.enabled=true")
        sets = training_sets(ctx, full, seed, progress)
        for texts in sets.values():  # the teacher runs once per training set, for every run
            share_teacher_outputs(ctx, full, texts, progress)
        return (f"augmented data and its teacher outputs, seed {seed}: "
                f"{len(sets['augmented'])} examples ({time.perf_counter() - start:.0f} s)")
    general_student(cfg, num_labels=len(ctx["labels"]), id2label=ctx["labels"],
                    tokenizer=ctx["tokenizer"], run=RunOptions(progress=progress))
    return (f"general student, seed {seed}, {' '.join(overrides) or 'uniform'} "
            f"({time.perf_counter() - start:.0f} s)")


# --------------------------------------------------------------------------------------------
# One run
# --------------------------------------------------------------------------------------------

def run_one(budget: str, extra: tuple[str, ...], name: str, seed: int, path: str,
            progress: bool) -> dict[str, Any]:
    """Train variant ``name`` with ``seed``, score it on the test split, write ``path``."""
    import torch
    from transformers import set_seed

    from tinylab.distill import (History, RunOptions, general_student, task_distillation,
                                 train_baseline)
    from tinylab.evaluate import evaluate_model

    start, cpu_start = time.perf_counter(), time.process_time()
    variant = VARIANTS[name]
    ctx = shared(budget, extra, progress)
    _, cfg, gd_cfg = run_configs(budget, extra, variant, seed)
    teacher, tokenizer, labels = ctx["teacher"], ctx["tokenizer"], ctx["labels"]
    validation = ctx["data"]["validation"]
    sets = training_sets(ctx, cfg, seed, progress)
    # What full TinyBERT's two task stages would run on (for the matched-step variants).
    full_sets = sets if cfg.augment.enabled else training_sets(
        ctx, cfg.replace("augment.enabled=true"), seed, progress)
    n_full = len(full_sets["augmented"])
    steps_a = stage_steps(cfg.task_intermediate, n_full)
    steps_b = stage_steps(cfg.task_prediction, n_full)

    set_seed(seed)  # the fresh classification head (and a fresh student) depend on it
    student, h_general = general_student(gd_cfg, num_labels=len(labels), id2label=labels,
                                         tokenizer=tokenizer, run=RunOptions(progress=progress))
    set_seed(seed)
    histories: list[Any] = [h_general]
    common = dict(tokenizer=tokenizer, run=RunOptions(
        progress=progress, shared_teacher_outputs=shared_outputs_dir()))
    if variant.kind == "tinybert":
        histories.append(task_distillation(cfg, teacher, student, sets["augmented"], validation,
                                           **common))
    elif variant.kind == "no_pred":
        td = cfg.replace("task_prediction.enabled=false")
        histories.append(task_distillation(td, teacher, student, sets["augmented"], validation,
                                           **common))
        stage = matched_stage(cfg.task_prediction, steps_b, len(sets["sources"]))
        histories.append(train_baseline(cfg, teacher, student, {
            "train": sets["sources"], "validation": validation}, kind="gold", stage=stage,
            **common))
    else:  # a baseline: as many steps as full TinyBERT's stages a + b
        stage = matched_stage(cfg.task_prediction, steps_a + steps_b, len(sets["sources"]))
        histories.append(train_baseline(cfg, teacher, student, {
            "train": sets["sources"], "validation": validation}, kind=variant.kind,
            stage=stage, **common))
    history = History.merge(*histories)

    metrics = evaluate_model(student, ctx["test"], tokenizer, batch_size=cfg.eval_batch_size)
    last_eval = [log.evals[-1] for log in history.stages.values() if log.evals]
    record = {
        "variant": name, "title": variant.title, "kind": variant.kind, "seed": seed,
        "key": run_key(budget, extra, variant, seed),
        "test": {k: metrics[k] for k in ("accuracy", "macro_f1", "n", "confusion")},
        "validation_accuracy": last_eval[-1].get("accuracy") if last_eval else None,
        "training_examples": {"task": len(sets["sources"] if variant.kind in BASELINE_KINDS
                                          else sets["augmented"]),
                              "sources": len(sets["sources"])},
        # Stages trained in this run (the general student was trained once and is shared).
        "stages": {stage_name: {"steps": len(log.steps), "seconds": round(log.seconds, 2),
                                "info": log.info}
                   for stage_name, log in history.stages.items() if stage_name != "general"},
        "general_student": ({"steps": len(h_general["general"].steps),
                             "seconds_when_trained": round(h_general["general"].seconds, 2)}
                            if "general" in h_general else None),
        "seconds": round(time.perf_counter() - start, 2),
        "cpu_seconds": round(time.process_time() - cpu_start, 2),
        "torch_threads": torch.get_num_threads(),
        "budget": benchlib.budget_record(budget, extra),
        "config": cfg.to_dict(),
    }
    benchlib.write_json(path, record)
    return record


# --------------------------------------------------------------------------------------------
# Aggregation
# --------------------------------------------------------------------------------------------

def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = statistics.fmean(values)
    return mean, (statistics.stdev(values) if len(values) > 1 else float("nan"))


def direction(delta: float, se: float, paper_delta: float | None, n: int) -> str:
    """Does our change in accuracy point the paper's way? ``se``: standard error of ``delta``."""
    if paper_delta is None:
        return "-"
    if delta == 0:
        return "no difference"
    if n < 2 or not math.isfinite(se):
        word = "agrees" if (delta < 0) == (paper_delta < 0) else "opposite"
        return f"{word} (1 seed: no error bar)"
    if abs(delta) < 2 * se:
        return "within noise (< 2 SE)"
    return "agrees" if (delta < 0) == (paper_delta < 0) else "**opposite**"


def aggregate(runs: list[dict[str, Any]], names: list[str], teacher: dict[str, Any]
              ) -> dict[str, Any]:
    by_variant: dict[str, list[dict]] = {n: [] for n in names}
    for r in runs:
        if r["variant"] in by_variant:
            by_variant[r["variant"]].append(r)
    rows: dict[str, Any] = {}
    for name, items in by_variant.items():
        if not items:
            continue
        items.sort(key=lambda r: r["seed"])
        acc = [r["test"]["accuracy"] for r in items]
        f1 = [r["test"]["macro_f1"] for r in items]
        mean, sd = _mean_sd(acc)
        rows[name] = {"title": VARIANTS[name].title, "paper": VARIANTS[name].paper,
                      "paper_avg": VARIANTS[name].paper_avg, "seeds": [r["seed"] for r in items],
                      "accuracies": acc, "accuracy_mean": mean, "accuracy_sd": sd,
                      "macro_f1_mean": statistics.fmean(f1), "n": len(acc),
                      "seconds": [r["seconds"] for r in items],
                      "training_examples": items[0]["training_examples"]["task"]}
    full = rows.get("full")
    for name, row in rows.items():
        v = VARIANTS[name]
        paper_delta = None if v.paper_avg is None or name == "full" else v.paper_avg - PAPER_FULL_AVG
        row["paper_delta"] = paper_delta
        if full is None or name == "full":
            row["delta"], row["delta_se"], row["direction"] = None, None, "-"
            continue
        delta = row["accuracy_mean"] - full["accuracy_mean"]
        se = math.sqrt((row["accuracy_sd"] ** 2 / row["n"] if row["n"] > 1 else math.nan)
                       + (full["accuracy_sd"] ** 2 / full["n"] if full["n"] > 1 else math.nan))
        row["delta"], row["delta_se"] = delta, se
        row["direction"] = direction(delta, se, paper_delta, min(row["n"], full["n"]))
    return {"teacher": teacher, "variants": rows}


def _pct(x: float | None, signed: bool = False) -> str:
    if x is None or not math.isfinite(x):
        return "-"
    return f"{100 * x:+.1f}" if signed else f"{100 * x:.1f}"


def markdown(result: dict[str, Any]) -> str:
    header = ["variant", "test accuracy % (mean ± sd)", "Δ vs full (pp, ± SE)", "macro-F1 %",
              "seeds", "paper row", "paper Δ Avg (pp)", "direction vs paper"]
    t = result["teacher"]
    lines = [["teacher (fine-tuned, reference)", _pct(t["accuracy"]), "-", _pct(t["macro_f1"]),
              "-", "-", "-", "-"]]
    for name, r in result["variants"].items():
        sd = "" if not math.isfinite(r["accuracy_sd"]) else f" ± {100 * r['accuracy_sd']:.1f}"
        se = r.get("delta_se")
        se = f" ± {100 * se:.1f}" if se is not None and math.isfinite(se) else ""
        lines.append([f"`{name}`: {r['title']}", _pct(r["accuracy_mean"]) + sd,
                      _pct(r["delta"], signed=True) + (se if r["delta"] is not None else ""),
                      _pct(r["macro_f1_mean"]), r["n"],
                      r["paper"] or "-",
                      "-" if r["paper_delta"] is None else f"{r['paper_delta']:+.1f}",
                      r["direction"]])
    return benchlib.markdown_table(header, lines, "lrrrrlrl")


def plot(result: dict[str, Any], budget: str):
    from matplotlib.figure import Figure

    rows = result["variants"]
    names = list(rows)[::-1]
    fig = Figure(figsize=(7.5, 0.42 * len(names) + 1.6), layout="constrained")
    ax = fig.add_subplot()
    means = [100 * rows[n]["accuracy_mean"] for n in names]
    sds = [100 * rows[n]["accuracy_sd"] if math.isfinite(rows[n]["accuracy_sd"]) else 0.0
           for n in names]
    colors = ["C0" if rows[n]["paper"] else "C7" for n in names]
    colors = ["C2" if n == "full" else c for n, c in zip(names, colors)]
    # Points, not bars: the axis does not start at 0, and bars would exaggerate differences.
    for i, (m, sd, c) in enumerate(zip(means, sds, colors)):
        ax.errorbar(m, i, xerr=sd, fmt="o", color=c, ms=7, capsize=4, lw=1.5)
    for i, n in enumerate(names):  # each seed's accuracy as a small dot
        ax.plot([100 * a for a in rows[n]["accuracies"]], [i] * rows[n]["n"], "k.", ms=3,
                alpha=0.6)
    ax.set_yticks(range(len(names)), [f"{rows[n]['title']}" for n in names], fontsize="small")
    if "full" in rows:
        ax.axvline(100 * rows["full"]["accuracy_mean"], color="C2", ls="--", lw=1, label="full")
    ax.axvline(100 * result["teacher"]["accuracy"], color="k", ls=":", lw=1, label="teacher")
    lo = min(m - s for m, s in zip(means, sds))
    hi = max(max(m + s for m, s in zip(means, sds)), 100 * result["teacher"]["accuracy"])
    ax.set_xlim(max(0.0, lo - 2), min(100.0, hi + 2))
    ax.set_ylim(-0.7, len(names) - 0.3)
    ax.set(xlabel="test accuracy % (mean ± sd over seeds; dots = seeds)",
           title=f"TinyBERT ablations, budget '{budget}'")
    ax.legend(loc="lower right", fontsize="small")
    ax.grid(alpha=0.3)
    return fig


# --------------------------------------------------------------------------------------------
# Main
# --------------------------------------------------------------------------------------------

def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=list(benchlib.BUDGETS), default="bench",
                   help="how much training (default: bench); see bench/README.md")
    p.add_argument("--variants", default="all",
                   help=f"comma-separated subset of: {', '.join(VARIANTS)} (default: all)")
    p.add_argument("--seeds", type=int, default=3,
                   help=f"number of seeds, {FIRST_SEED}, {FIRST_SEED + 1}, ... (default: 3)")
    p.add_argument("--workers", type=int, default=DEFAULT_WORKERS,
                   help="runs in parallel, each in its own process with --threads torch "
                   f"threads (default: {DEFAULT_WORKERS}, one per core up to 2)")
    p.add_argument("--threads", type=int, default=None,
                   help="torch threads per worker (default: cores // workers, where "
                   "OMP_NUM_THREADS, when set, stands for the cores)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="extra config override on top of the budget (recorded in the results)")
    p.add_argument("--output", default=None, help="results folder (default: "
                   "bench/results/<budget>)")
    p.add_argument("--force", action="store_true", help="redo runs that already have results")
    p.add_argument("--list", action="store_true", help="list the variants and exit")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds must be >= 1, got {args.seeds}")
    if args.workers < 1:
        p.error(f"--workers must be >= 1, got {args.workers}")
    names = list(VARIANTS) if args.variants == "all" else [
        v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in names if v not in VARIANTS]
    if unknown:
        p.error(f"unknown variant(s) {unknown}; valid: {', '.join(VARIANTS)}")
    args.names = names
    return args


def _pool(workers: int, threads: int):
    return ProcessPoolExecutor(max_workers=workers, mp_context=get_context("spawn"),
                               initializer=init_worker, initargs=(threads,))


def _run_tasks(tasks: list[tuple], fn, pool, desc: str) -> list[Any]:
    """Run ``fn(*task)`` for each task: in this process (``pool=None``) or in the pool."""
    from tqdm.auto import tqdm

    results = []
    if pool is None:
        for task in tasks:
            results.append(fn(*task))
            print(f"[{desc}] {_describe(results[-1])}", flush=True)
        return results
    futures = {pool.submit(fn, *task): task for task in tasks}
    bar = tqdm(total=len(futures), desc=desc, dynamic_ncols=True)
    for future in as_completed(futures):
        results.append(future.result())  # re-raises a worker's error here
        bar.write(f"[{desc}] {_describe(results[-1])}")
        bar.update(1)
    bar.close()
    return results


def _cost_rank(name: str) -> int:
    """Cheap variants last: they fill the gaps when workers finish at different times."""
    return {"no_da": 3, "gold": 2, "kd": 2, "hinton": 2, "no_td": 1}.get(name, 0)


def _describe(result: Any) -> str:
    if isinstance(result, dict) and "variant" in result:
        return (f"{result['variant']} seed {result['seed']}: test accuracy "
                f"{100 * result['test']['accuracy']:.1f}% ({result['seconds']:.0f} s)")
    return str(result)


def main(argv=None) -> int:
    args = parse_args(argv)
    if args.list:
        for v in VARIANTS.values():
            print(f"{v.name:<11} {v.title:<48} {' '.join(v.overrides) or v.kind}")
        return 0
    benchlib.quiet_libraries()
    cores = benchlib.thread_budget()
    threads = args.threads or max(1, cores // args.workers)
    benchlib.set_threads(threads if args.workers == 1 else cores)  # workers set their own
    extra = tuple(args.set)
    out = benchlib.results_dir(args.budget, args.output)
    runs_dir = out / "ablation_runs"
    seeds = [FIRST_SEED + i for i in range(args.seeds)]
    machine = benchlib.machine_info()
    wall = time.perf_counter()
    print(f"ablations: budget '{args.budget}' ({benchlib.BUDGETS[args.budget][2]})")
    print(f"  variants {', '.join(args.names)}; seeds {seeds}; {args.workers} worker(s) x "
          f"{threads} thread(s); results in {out}", flush=True)

    plan = [(name, seed) for name in args.names for seed in seeds]
    todo = []
    for name, seed in plan:
        path = runs_dir / f"{name}__seed{seed}.json"
        key = run_key(args.budget, extra, VARIANTS[name], seed)
        if not args.force and path.exists() and json.loads(path.read_text()).get("key") == key:
            continue
        todo.append((name, seed, path))
    print(f"  {len(plan) - len(todo)} of {len(plan)} runs already done; {len(todo)} to run",
          flush=True)

    progress = args.workers == 1
    # 1. the teacher (and its test accuracy), in this process
    start = time.perf_counter()
    ctx = shared(args.budget, extra, progress=True)
    teacher = _teacher_record(ctx, out)
    print(f"[shared] teacher: test accuracy {100 * teacher['accuracy']:.1f}% "
          f"({time.perf_counter() - start:.0f} s)", flush=True)
    if todo:
        # 2. shared caches: augmented data per seed, general students per (seed, GD config)
        needs = {("augment", seed, ()) for _, seed, _ in todo}
        needs |= {("general", seed, VARIANTS[n].gd_overrides()) for n, seed, _ in todo
                  if VARIANTS[n].kind not in BASELINE_KINDS
                  and "general.enabled=false" not in VARIANTS[n].gd_overrides()}
        tasks = [(args.budget, extra, what, seed, ov, progress) for what, seed, ov in
                 sorted(needs, key=lambda t: (t[0] != "augment", t[1], t[2]))]
        with (_pool(args.workers, threads) if args.workers > 1
              else contextlib.nullcontext()) as pool:
            _run_tasks(tasks, prepare, pool, "shared")
            # 3. the runs (longest first, so the last minutes are not one worker alone)
            tasks = [(args.budget, extra, name, seed, str(path), progress)
                     for name, seed, path in sorted(todo, key=lambda t: _cost_rank(t[0]))]
            _run_tasks(tasks, run_one, pool, "runs")

    runs = []
    for name, seed in plan + _other_seeds(runs_dir, args.names, seeds):
        path = runs_dir / f"{name}__seed{seed}.json"
        if path.exists():
            record = json.loads(path.read_text())
            if record.get("key") == run_key(args.budget, extra, VARIANTS[name], seed):
                runs.append(record)
    result = aggregate(runs, args.names, teacher)
    result.update({"budget": benchlib.budget_record(args.budget, extra), "machine": machine,
                   "workers": args.workers, "threads_per_worker": threads,
                   "wall_seconds": round(time.perf_counter() - wall, 1),
                   "command": benchlib.command_line()})
    table = markdown(result)
    benchlib.write_json(out / "ablations.json", result)
    from tinylab.plots import save_figure

    save_figure(plot(result, args.budget), out / "ablations.png")
    benchlib.write_text(out / "ablations.md", fragment(result, table))
    print(table)
    print(f"wrote {out / 'ablations.md'}, ablations.json, ablations.png "
          f"(wall {result['wall_seconds']:.0f} s)")
    return 0


def _other_seeds(runs_dir: Path, names: list[str], seeds: list[int]) -> list[tuple[str, int]]:
    """Runs of the selected variants with seeds beyond ``--seeds`` that an earlier call made."""
    extra = []
    for path in sorted(runs_dir.glob("*__seed*.json")) if runs_dir.exists() else []:
        name, _, seed = path.stem.partition("__seed")
        if name in names and seed.isdigit() and int(seed) not in seeds:
            extra.append((name, int(seed)))
    return extra


def _teacher_record(ctx: dict[str, Any], out: Path) -> dict[str, Any]:
    """The teacher's test accuracy (computed once per teacher, kept in teacher.json)."""
    from tinylab.distill import teacher_cache_key
    from tinylab.evaluate import evaluate_model

    key = teacher_cache_key(ctx["cfg"])
    path = out / "teacher.json"
    if path.exists():
        record = json.loads(path.read_text())
        if record.get("key") == key:
            return record
    m = evaluate_model(ctx["teacher"], ctx["test"], ctx["tokenizer"],
                       batch_size=ctx["cfg"].eval_batch_size)
    record = {"key": key, "model": ctx["cfg"].teacher.model, "accuracy": m["accuracy"],
              "macro_f1": m["macro_f1"], "n": m["n"]}
    benchlib.write_json(path, record)
    return record


def fragment(result: dict[str, Any], table: str) -> str:
    b = result["budget"]
    rows = result["variants"]
    examples = {r["training_examples"] for n, r in rows.items() if n == "full"}
    seeds = sorted({s for r in rows.values() for s in r["seeds"]})
    train_seconds = [x for r in rows.values() for x in r["seconds"]]
    train_minutes = sum(train_seconds) / 60
    mean_seconds = sum(train_seconds) / max(1, len(train_seconds))
    return "\n".join([
        f"### Ablations (budget `{b['budget']}`)", "",
        f"Command: `{result['command']}`  ",
        f"Budget: {b['description']} (profile `{b['profile']}`"
        + (f", overrides `{' '.join(b['overrides'])}`" if b["overrides"] else "") + ").  ",
        f"Seeds {seeds}; test split of {result['teacher']['n']} examples; "
        + (f"full TinyBERT trains on {examples.pop()} (augmented) examples; " if examples else "")
        + f"training time {train_minutes:.0f} min summed over runs (mean "
          f"{mean_seconds:.0f} s per run), with {result['workers']} worker(s) x "
          f"{result['threads_per_worker']} thread(s); this call took "
          f"{result['wall_seconds'] / 60:.1f} min.  ",
        benchlib.machine_line(result["machine"]), "",
        table, "",
        "Δ: difference of mean test accuracy to `full`, in percentage points; SE: its standard "
        "error over seeds. Paper Δ: the GLUE-dev average of the variant minus TinyBERT4's "
        f"{PAPER_FULL_AVG} on MNLI-m, MNLI-mm, MRPC and CoLA (Jiao et al. 2020, the ablation tables): "
        "other tasks, so compare directions, not sizes. Baselines train a fresh "
        "student for as many steps as `full`'s task stages. Plot: `ablations.png`.", ""])


if __name__ == "__main__":
    sys.exit(main())
