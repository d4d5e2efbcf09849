"""How fast tinylab distils: throughput per stage, what each optimisation buys, where time goes.

    .venv/bin/python bench/speed.py                         # bench budget (about 8 minutes)
    .venv/bin/python bench/speed.py --budget ci --examples 64 --epochs 2   # smoke test

For each training stage - teacher fine-tuning, general distillation (GD), task distillation
stage a (intermediate layers) and stage b (prediction layer) - the package's own stage
function runs ``--epochs`` epochs over ``--examples`` examples, once per setting:

* ``optimised``      - the defaults: teacher outputs computed once and reused
  (``cache_teacher_outputs``), dynamic padding (each batch padded to its longest example) and
  length grouping (``group_by_length``: batches of similar lengths);
* ``no_reuse``       - the teacher runs on every batch (``cache_teacher_outputs=false``);
* ``no_grouping``    - random batches (``group_by_length=false``), still dynamically padded;
* ``static_padding`` - every example padded to ``max_length`` (what a fixed-shape pipeline
  does; grouping then changes nothing);
* ``naive``          - none of the three.

Reported: examples/s and tokens/s (real and padded), the share of time in the teacher's
forward pass, the student's forward and backward passes, the losses and the optimiser step
(global module hooks and a timed ``accelerator.backward``; nothing in the package changes),
and the achieved FLOP/s against this machine's measured matrix-multiply peaks, fp32 and bf16
(utilisation is against the better of the two: on a CPU with bf16 units, fp32 alone leaves
half the machine idle). ``--precisions fp32,bf16`` (the default where the CPU has bf16) adds
the ``optimised`` setting of every stage under bf16 autocast (``precision=bf16``), measured in
the same interleaved rounds. The FLOP model is in ``bench/benchlib.py``. The teacher here is the pre-trained backbone with a new
classification head: a fine-tuned teacher has the same shape and costs the same.
Outputs: ``results/<budget>/speed.md`` and ``speed.json``.
"""
from __future__ import annotations

import argparse
import contextlib
import dataclasses
import math
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

STAGES = ("teacher", "general", "intermediate", "prediction")
SETTINGS = {  # name -> (reuse teacher outputs, dynamic padding, length grouping)
    "optimised": (True, True, True),
    "no_reuse": (False, True, True),
    "no_grouping": (True, True, False),
    "static_padding": (True, False, False),
    "naive": (False, False, False),
}
# Default workload per budget: (examples, epochs). Several epochs, so reusing teacher outputs
# has something to save (the package only caches when a stage sees an example twice or more).
WORKLOADS = {"ci": (64, 2), "bench": (480, 3), "quick": (2048, 3)}
PART_NAMES = ("teacher_forward", "student_forward", "loss", "backward", "optimizer")


# --------------------------------------------------------------------------------------------
# Where the time goes
# --------------------------------------------------------------------------------------------

class TimeSplit(contextlib.AbstractContextManager):
    """Accumulate wall time per part of a training step, without touching the package.

    * ``teacher_forward`` / ``student_forward``: forward passes of the given teacher, and of
      any other ``BertForSequenceClassification`` (the model being trained), measured with
      global module forward hooks (pre-hook starts the clock, hook stops it);
    * ``loss``: calls of a ``TinyBertLoss`` module (projections + loss terms);
    * ``backward``: ``accelerator.backward`` (the loop calls it), wrapped on this instance;
    * ``optimizer``: ``accelerator.clip_grad_norm_`` and ``optimizer.step`` (global optimiser
      hooks).
    The rest of the stage's time (data collation, cached-output look-up, logging, scheduler)
    is reported as ``other`` by the caller.
    """

    def __init__(self, teacher, accelerator):
        self.teacher = teacher
        self.accelerator = accelerator
        self.totals: dict[str, float] = defaultdict(float)
        self._open: dict[int, float] = {}
        self._handles: list[Any] = []

    def _role(self, module) -> str | None:
        from transformers import BertForSequenceClassification

        from tinylab.losses import TinyBertLoss

        if module is self.teacher:
            return "teacher_forward"
        if isinstance(module, BertForSequenceClassification):
            return "student_forward"
        if isinstance(module, TinyBertLoss):
            return "loss"
        return None

    def _pre(self, module, args):
        if self._role(module):
            self._open[id(module)] = time.perf_counter()

    def _post(self, module, args, output):
        role = self._role(module)
        if role and id(module) in self._open:
            self.totals[role] += time.perf_counter() - self._open.pop(id(module))

    def _timed(self, part: str, fn):
        def wrapper(*args, **kwargs):
            start = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                self.totals[part] += time.perf_counter() - start
        return wrapper

    def __enter__(self):
        from torch.nn.modules import module as nn_module
        from torch.optim.optimizer import (register_optimizer_step_post_hook,
                                           register_optimizer_step_pre_hook)

        self._handles = [nn_module.register_module_forward_pre_hook(self._pre),
                         nn_module.register_module_forward_hook(self._post)]
        starts: dict[int, float] = {}

        def step_pre(opt, args, kwargs):
            starts[id(opt)] = time.perf_counter()

        def step_post(opt, args, kwargs):
            self.totals["optimizer"] += time.perf_counter() - starts.pop(id(opt), time.perf_counter())

        self._handles += [register_optimizer_step_pre_hook(step_pre),
                          register_optimizer_step_post_hook(step_post)]
        acc = self.accelerator
        acc.backward = self._timed("backward", acc.backward)
        acc.clip_grad_norm_ = self._timed("optimizer", acc.clip_grad_norm_)
        return self

    def __exit__(self, *exc):
        for handle in self._handles:
            handle.remove()
        for name in ("backward", "clip_grad_norm_"):
            self.accelerator.__dict__.pop(name, None)  # back to the class's method
        return False


# --------------------------------------------------------------------------------------------
# Workload: data, batch shapes, FLOPs
# --------------------------------------------------------------------------------------------

def pad_statically(ds, tokenizer, max_length: int):
    """Tokenise ``ds`` with every example padded to ``max_length`` (the package's loaders then
    find nothing left to pad: the batch length is always ``max_length``)."""
    def encode(batch):
        return tokenizer(batch["text"], truncation=True, max_length=max_length,
                         padding="max_length")
    return ds.map(encode, batched=True, desc="pad to max_length")


def batch_shapes(ds, tokenizer, stage, seed: int, group_by_length: bool
                 ) -> list[tuple[int, int, int]]:
    """``(B, padded length, real tokens)`` of every optimiser step ``train_stage`` takes on
    ``ds`` - the data order the loop documents: epoch e uses the batches of
    ``make_dataloader(ds, shuffle=True, seed=seed)`` after ``set_epoch(loader, e)``."""
    from tinylab.data import make_dataloader, set_epoch

    loader = make_dataloader(ds, tokenizer, stage.batch_size, shuffle=True, seed=seed,
                             group_by_length=group_by_length)
    lengths = [len(ids) for ids in ds["input_ids"]]
    real = [int(sum(m)) for m in ds["attention_mask"]]
    epochs: dict[int, list[list[int]]] = {}
    set_epoch(loader, 0)
    per_epoch = len(list(loader.batch_sampler))
    total = math.ceil(stage.epochs * per_epoch)
    if stage.max_steps is not None:
        total = min(total, stage.max_steps)
    shapes = []
    for step in range(total):
        epoch, position = divmod(step, per_epoch)
        if epoch not in epochs:
            set_epoch(loader, epoch)
            epochs[epoch] = [list(b) for b in loader.batch_sampler]
        batch = epochs[epoch][position]
        shapes.append((len(batch), max(lengths[i] for i in batch), sum(real[i] for i in batch)))
    return shapes


def teacher_pass_shapes(ds, batch_size: int) -> list[tuple[int, int]]:
    """Shapes of the one teacher pass that fills the output cache: examples longest first, in
    chunks of ``batch_size`` (``tinylab.distill.teacher_outputs``)."""
    lengths = sorted((len(ids) for ids in ds["input_ids"]), reverse=True)
    return [(len(chunk), chunk[0]) for chunk in
            (lengths[i:i + batch_size] for i in range(0, len(lengths), batch_size))]


def stage_flops(stage_name: str, shapes, teacher_shapes, student_shape, teacher_shape,
                projections: int) -> dict[str, float]:
    """Matrix-multiply FLOPs of a stage (see benchlib's module docstring).

    Trained model: 3 x forward per step (forward + backward ~ 2 x forward), plus the
    projections W (d' -> d) on ``projections`` hidden states per token, also trained.
    Teacher: one forward per batch (on the fly) or per example once (cache).
    """
    trained_shape = teacher_shape if stage_name == "teacher" else student_shape
    trained = sum(3 * benchlib.forward_flops(trained_shape, b, l) for b, l, _ in shapes)
    if projections:
        d_s, d_t = student_shape["d"], teacher_shape["d"]
        trained += sum(3 * 2 * d_s * d_t * b * l * projections for b, l, _ in shapes)
    teacher = sum(benchlib.forward_flops(teacher_shape, b, l) for b, l in teacher_shapes)
    return {"trained_model": trained, "teacher": teacher, "total": trained + teacher}


# --------------------------------------------------------------------------------------------
# One measurement
# --------------------------------------------------------------------------------------------

def measure(stage_name: str, setting: str, ctx: dict[str, Any], epochs: float,
            progress: bool, max_steps: int | None = None, precision: str = "fp32"
            ) -> dict[str, Any]:
    """Run one stage under one setting and precision with the package's stage function; time
    it. ``max_steps`` caps the stage (used for the untimed warm-up runs)."""
    from transformers import set_seed

    from tinylab.distill import (RunOptions, finetune_teacher, general_distillation,
                                 make_accelerator, task_distillation)
    from tinylab.losses import TinyBertLoss
    from tinylab.models import build_student

    reuse, dynamic, group = SETTINGS[setting]
    cap = "none" if max_steps is None else str(max_steps)
    cfg = ctx["cfg"].replace(f"cache_teacher_outputs={reuse}", f"group_by_length={group}",
                             f"teacher.epochs={epochs}", f"teacher.max_steps={cap}",
                             f"precision={precision}")
    for name in ("general", "task_intermediate", "task_prediction"):
        cfg = cfg.replace(f"{name}.epochs={epochs}", f"{name}.eval_every=0",
                          f"{name}.max_steps={cap}")
    key = "general" if stage_name == "general" else "task"
    ds = ctx[f"{key}_{'dynamic' if dynamic else 'static'}"]
    tokenizer, teacher = ctx["tokenizer"], ctx["teacher"]
    accelerator = make_accelerator(cfg.device, cfg.precision)
    set_seed(cfg.seed)
    student = build_student(teacher, cfg.student, id2label=ctx["labels"])
    common = dict(run=RunOptions(accelerator=accelerator, progress=progress))
    wall, cpu = time.perf_counter(), time.process_time()
    with TimeSplit(teacher, accelerator) as split:
        if stage_name == "teacher":
            history = finetune_teacher(cfg, {"train": ds}, cache=False, **common)[2]
            stage_cfg = dataclasses.replace(cfg.task_prediction, epochs=cfg.teacher.epochs,
                                            batch_size=cfg.teacher.batch_size)
        elif stage_name == "general":
            history = general_distillation(cfg, teacher, student, ds, tokenizer=tokenizer,
                                           **common)
            stage_cfg = cfg.general
        elif stage_name == "intermediate":
            history = task_distillation(cfg.replace("task_prediction.enabled=false"), teacher,
                                        student, ds, tokenizer=tokenizer, **common)["intermediate"]
            stage_cfg = cfg.task_intermediate
        else:
            history = task_distillation(cfg.replace("task_intermediate.enabled=false"), teacher,
                                        student, ds, tokenizer=tokenizer, **common)["prediction"]
            stage_cfg = cfg.task_prediction
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    log = history[stage_name]
    seconds = log.seconds
    shapes = batch_shapes(ds, tokenizer, stage_cfg, cfg.seed, group)
    teacher_info = log.info.get("teacher", {})
    mode = teacher_info.get("mode")
    if stage_name == "teacher":
        teacher_shapes = []
    elif mode == "cache":
        teacher_shapes = teacher_pass_shapes(ds, cfg.eval_batch_size)
    else:
        teacher_shapes = [(b, l) for b, l, _ in shapes]
    projections = 0
    if stage_name in ("general", "intermediate"):
        criterion = TinyBertLoss.from_config(cfg.loss, student.config, teacher.config)
        projections = len(criterion.teacher_layers(stage_name)["hidden_states"])
    flops = stage_flops(stage_name, shapes, teacher_shapes, ctx["student_shape"],
                        ctx["teacher_shape"], projections)
    examples = sum(b for b, _, _ in shapes)
    padded = sum(b * l for b, l, _ in shapes)
    real = sum(r for _, _, r in shapes)
    parts = {p: split.totals.get(p, 0.0) for p in PART_NAMES}
    parts["other"] = max(0.0, seconds - sum(parts.values()))
    return {"stage": stage_name, "setting": setting, "precision": precision,
            "steps": len(log.steps),
            "seconds": seconds, "call_wall_seconds": wall, "call_cpu_seconds": cpu,
            "examples": examples, "real_tokens": real, "padded_tokens": padded,
            "examples_per_s": examples / seconds, "real_tokens_per_s": real / seconds,
            "padded_tokens_per_s": padded / seconds, "padding_efficiency": real / padded,
            "teacher_outputs": mode or "-", "teacher_cache_build_s": teacher_info.get(
                "build_seconds"), "parts_seconds": parts, "flops": flops,
            "flops_per_s": flops["total"] / seconds}


class Workload(dict):
    """Backbone teacher, tokenizer and the training sets, each built on first use:
    ``task_dynamic`` / ``task_static`` (task examples, unpadded or padded to max_length) and
    ``general_dynamic`` / ``general_static`` (general-corpus sentences)."""

    def __init__(self, cfg, examples: int):
        from tinylab.data import load_task
        from tinylab.models import load_teacher, student_config

        data = load_task(cfg.data)
        labels = data["train"].features["label"].names
        teacher, tokenizer = load_teacher(cfg.teacher.model, id2label=labels)
        task = data["train"].shuffle(seed=0).select(range(min(examples, len(data["train"]))))
        super().__init__(
            cfg=cfg, teacher=teacher.eval(), tokenizer=tokenizer, labels=labels,
            examples=examples, task=task.select_columns(["text", "label"]),
            teacher_shape=benchlib.model_shape(teacher.config),
            student_shape=benchlib.model_shape(student_config(teacher.config, cfg.student,
                                                              id2label=labels)))

    def __missing__(self, key: str):
        from tinylab.data import load_general_corpus, tokenize

        kind, _, padding = key.partition("_")
        if kind not in ("task", "general") or padding not in ("dynamic", "static"):
            raise KeyError(key)
        cfg = self["cfg"]
        if kind == "task":
            ds, max_length = self["task"], cfg.data.max_length
        else:
            corpus = load_general_corpus(cfg.data)
            ds = corpus.shuffle(seed=0).select(range(min(self["examples"], len(corpus))))
            max_length = cfg.data.general_max_length
        if padding == "dynamic":
            self[key] = tokenize(ds, self["tokenizer"], max_length)
        else:
            self[key] = pad_statically(ds, self["tokenizer"], max_length)
        return self[key]


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def tables(result: dict[str, Any]) -> str:
    runs = result["runs"]
    by = {(r["stage"], r["setting"], r.get("precision", "fp32")): r for r in runs}
    rows = []
    for r in runs:
        ref = by.get((r["stage"], "optimised", "fp32"))
        slower = f"{r['seconds'] / ref['seconds']:.2f}x" if ref else "-"
        rows.append([r["stage"], r["setting"], r.get("precision", "fp32"), r["steps"],
                     f"{r['examples_per_s']:.1f}",
                     f"{r['real_tokens_per_s']:,.0f}", f"{r['padded_tokens_per_s']:,.0f}",
                     f"{100 * r['padding_efficiency']:.0f}%", r["teacher_outputs"],
                     f"{r['seconds']:.1f}", slower])
    throughput = benchlib.markdown_table(
        ["stage", "setting", "precision", "steps", "examples/s", "real tokens/s",
         "padded tokens/s", "real / padded", "teacher outputs", "seconds",
         "time vs optimised fp32"], rows, "lllrrrrrlrr")

    rows = []
    for r in runs:
        if r["setting"] not in ("optimised", "no_reuse"):
            continue
        parts = r["parts_seconds"]
        total = r["seconds"]
        rows.append([r["stage"], r["setting"], r.get("precision", "fp32")]
                    + [f"{100 * parts[p] / total:.0f}%" for p in (*PART_NAMES, "other")])
    split = benchlib.markdown_table(
        ["stage", "setting", "precision", "teacher forward", "student forward*", "losses",
         "backward", "optimiser", "other"], rows, "lllrrrrrr")

    peaks = _peaks(result)
    best = max(p["flops_per_s"] for p in peaks.values())
    rows = []
    for r in runs:
        if r["setting"] != "optimised":
            continue
        f, precision = r["flops"], r.get("precision", "fp32")
        rows.append([r["stage"], precision, benchlib.fmt_si(f["total"] / r["steps"], "FLOP"),
                     f"{100 * f['teacher'] / f['total']:.0f}%" if f["total"] else "-",
                     benchlib.fmt_si(r["flops_per_s"], "FLOP/s"),
                     f"{100 * r['flops_per_s'] / peaks[precision]['flops_per_s']:.0f}%"
                     if precision in peaks else "-",
                     f"{100 * r['flops_per_s'] / best:.0f}%"])
    flops = benchlib.markdown_table(
        ["stage (optimised)", "precision", "FLOPs per step", "of which teacher", "achieved",
         "of its own GEMM peak", "of the best GEMM peak"], rows, "llrrrrr")
    return "\n\n".join([throughput, split, flops])


def _peaks(result: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The measured GEMM peak per dtype (older result files hold the fp32 one only)."""
    return result.get("peaks") or {"fp32": result["peak"]}


def fragment(result: dict[str, Any], text: str) -> str:
    b, w = result["budget"], result["workload"]
    peaks = _peaks(result)
    any_peak = next(iter(peaks.values()))
    peak_line = (f"Matrix-multiply peaks (GEMM {any_peak['n']}x{any_peak['n']}, best of "
                 f"{any_peak['repeats']}, {any_peak['threads']} thread(s)): " + ", ".join(
                     f"{dtype} **{benchlib.fmt_si(p['flops_per_s'], 'FLOP/s')}**"
                     for dtype, p in peaks.items()))
    if len(peaks) == 2:
        ratio = peaks["bf16"]["flops_per_s"] / peaks["fp32"]["flops_per_s"]
        peak_line += f" (bf16/fp32 = {ratio:.2f}x)"
    one = result.get("peak_1_thread")
    if one:
        peak_line += f"; fp32 with 1 thread {benchlib.fmt_si(one['flops_per_s'], 'FLOP/s')}"
    return "\n".join([
        f"### Distillation speed (budget `{b['budget']}`)", "",
        f"Command: `{result['command']}`  ",
        f"Workload: {w['examples']} task examples (general distillation: {w['examples']} "
        f"corpus sentences), {w['epochs']} epochs per stage, batch "
        f"{w['batch_size']}, max length {w['max_length']}; teacher {w['teacher']}, student "
        f"{w['student']}. Median of {result['repeats']} timed round(s) after an untimed "
        f"warm-up.  ",
        peak_line + ".  ",
        benchlib.machine_line(result["machine"]), "",
        text, "",
        "Real tokens exclude padding; padded tokens are what the model computes. *In the "
        "`teacher` stage the model being trained is the teacher: its forward pass is in the "
        "student column. Time split: "
        "forward hooks on the models and the loss module, a timed `accelerator.backward`, "
        "optimiser hooks; `other` = data collation, cached-output look-up, logging. FLOPs: "
        "~2 x (parameters in matrix multiplies) x padded tokens + 4 x T^2 x d per layer for "
        "attention, x3 for a training step; the teacher's forward counted once per batch "
        "(on the fly) or once per example (reused); formula in `bench/benchlib.py`.", ""])


def _describe(shape: dict[str, int]) -> str:
    return f"{shape['layers']} layers x {shape['d']} wide, FFN {shape['ffn']}"


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=list(benchlib.BUDGETS), default="bench",
                   help="profile whose models and data are used (default: bench)")
    p.add_argument("--examples", type=int, default=None,
                   help="examples per stage (default per budget: "
                   + ", ".join(f"{k} {v[0]}" for k, v in WORKLOADS.items()) + ")")
    p.add_argument("--epochs", type=float, default=None, help="epochs per stage (default: "
                   + ", ".join(f"{k} {v[1]}" for k, v in WORKLOADS.items()) + ")")
    p.add_argument("--stages", default=",".join(STAGES),
                   help=f"comma-separated subset of {', '.join(STAGES)}")
    p.add_argument("--settings", default=",".join(SETTINGS),
                   help=f"comma-separated subset of {', '.join(SETTINGS)}")
    p.add_argument("--repeats", type=int, default=1,
                   help="timed rounds; the median round is reported (default: 1)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--peak-size", type=int, default=2048, help="GEMM size for the peak")
    p.add_argument("--precisions", default=None,
                   help="comma-separated fp32,bf16 (default: both where the CPU has bf16); "
                        "bf16 runs the optimised setting of every stage")
    p.add_argument("--output", default=None, help="results folder (default: bench/results/<budget>)")
    args = p.parse_args(argv)
    args.stage_list = [s.strip() for s in args.stages.split(",") if s.strip()]
    args.setting_list = [s.strip() for s in args.settings.split(",") if s.strip()]
    bad = [s for s in args.stage_list if s not in STAGES] + [
        s for s in args.setting_list if s not in SETTINGS]
    if bad:
        p.error(f"unknown stage(s)/setting(s) {bad}; stages: {', '.join(STAGES)}; settings: "
                f"{', '.join(SETTINGS)}")
    from tinylab.device import cpu_supports_bf16

    args.precision_list = [s.strip() for s in (args.precisions or (
        "fp32,bf16" if cpu_supports_bf16() else "fp32")).split(",") if s.strip()]
    if "fp32" not in args.precision_list or not set(args.precision_list) <= {"fp32", "bf16"}:
        p.error(f"--precisions must include fp32 and may add bf16, got {args.precisions!r}")
    if "bf16" in args.precision_list and not cpu_supports_bf16():
        p.error("--precisions bf16: this CPU has no native bf16 (avx512_bf16 or AMX)")
    examples, epochs = WORKLOADS[args.budget]
    args.examples = args.examples or examples
    args.epochs = args.epochs or epochs
    if args.examples < 2 or args.epochs <= 0 or args.repeats < 1:
        p.error(f"need --examples >= 2, --epochs > 0 and --repeats >= 1, got {args.examples}, "
                f"{args.epochs}, {args.repeats}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    threads, machine, out, cfg = benchlib.start(args)
    print(f"speed: budget '{args.budget}', {args.examples} examples x {args.epochs} epochs, "
          f"{threads} thread(s)", flush=True)
    peaks = {dtype: benchlib.matmul_peak(args.peak_size, dtype=dtype)
             for dtype in args.precision_list}
    peak_one = benchlib.matmul_peak(args.peak_size, threads=1) if threads > 1 else None
    print("  GEMM peaks: " + ", ".join(f"{d} {benchlib.fmt_si(p['flops_per_s'], 'FLOP/s')}"
                                       for d, p in peaks.items()) + f" ({threads} threads)",
          flush=True)
    ctx = Workload(cfg, args.examples)
    plan = [(stage_name, setting, "fp32") for stage_name in args.stage_list
            for setting in args.setting_list
            if not (stage_name == "teacher" and not SETTINGS[setting][0])]  # no teacher to reuse
    plan += [(stage_name, "optimised", precision) for precision in args.precision_list
             if precision != "fp32" for stage_name in args.stage_list
             if "optimised" in args.setting_list]
    for stage_name, _, precision in {(s, "", p) for s, _, p in plan}:  # untimed warm-up
        measure(stage_name, "optimised", ctx, args.epochs, progress=False, max_steps=1,
                precision=precision)
    measured: dict[tuple[str, str, str], list[dict]] = {key: [] for key in plan}
    for repeat in range(args.repeats):  # rounds interleave the settings: background load is shared
        for stage_name, setting, precision in plan:
            r = measure(stage_name, setting, ctx, args.epochs, progress=False,
                        precision=precision)
            measured[(stage_name, setting, precision)].append(r)
            print(f"  [{repeat + 1}/{args.repeats}] {stage_name:<12} {setting:<15} {precision} "
                  f"{r['steps']:>4} steps {r['seconds']:7.1f} s  {r['examples_per_s']:8.1f} ex/s"
                  f"  {r['real_tokens_per_s']:9.0f} tok/s  "
                  f"{benchlib.fmt_si(r['flops_per_s'], 'FLOP/s')}", flush=True)
    runs = []
    for key in plan:  # the median run (by seconds) of each stage and setting
        ordered = sorted(measured[key], key=lambda r: r["seconds"])
        run = dict(ordered[(len(ordered) - 1) // 2])
        run["all_seconds"] = [r["seconds"] for r in measured[key]]
        runs.append(run)
    result = {"budget": benchlib.budget_record(args.budget), "machine": machine,
              "command": benchlib.command_line(), "peak": peaks["fp32"], "peaks": peaks,
              "peak_1_thread": peak_one,
              "repeats": args.repeats,
              "workload": {"examples": args.examples, "epochs": args.epochs,
                           "batch_size": cfg.task_intermediate.batch_size,
                           "max_length": cfg.data.max_length,
                           "teacher": f"{cfg.teacher.model} ({_describe(ctx['teacher_shape'])})",
                           "student": _describe(ctx["student_shape"])},
              "runs": runs, "load_average_end": benchlib.load_average()}
    text = tables(result)
    benchlib.write_json(out / "speed.json", result)
    benchlib.write_text(out / "speed.md", fragment(result, text))
    print(text)
    print(f"wrote {out / 'speed.md'} and speed.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
