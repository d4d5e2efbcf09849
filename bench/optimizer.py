"""What one AdamW step costs the student, and what makes it cheaper.

    .venv/bin/python bench/optimizer.py [--budget quick]

The student's 30,522-word embedding table holds most of its parameters (5.9 M of 6.9 M for a
3-layer, 192-wide student; of 6.6 M for the 2-layer `quick` student), and AdamW updates every
one of them at every step, although a batch touches a few hundred rows. This script times
``optimizer.step()`` on the student's parameters (gradients filled with random values, as
after a backward pass) for:

* the AdamW implementations PyTorch offers on the CPU: ``foreach=False`` (a Python loop over
  parameters, the CPU default), ``foreach=True`` (grouped tensor ops), ``fused=True`` (one
  kernel);
* each of them with the word embeddings frozen (``requires_grad=False``: no gradient, no
  update, no optimiser state for 5.9 M parameters).

Timing: ``torch.utils.benchmark.Timer``, every variant interleaved in each of ``--rounds``
rounds, median reported, at a fixed thread count. Outputs ``results/<budget>/optimizer.{md,json}``.
What freezing costs in accuracy needs training runs with seeds; this script does not measure
it.
"""
from __future__ import annotations

import argparse
import statistics
import sys

import benchlib

IMPLEMENTATIONS = {"for-loop (CPU default)": {"foreach": False},
                   "foreach": {"foreach": True},
                   "fused": {"fused": True}}


def _optimizer(student, frozen: bool, kwargs: dict):
    import torch

    params = [p for n, p in student.named_parameters()
              if not (frozen and "word_embeddings" in n)]
    return torch.optim.AdamW(params, lr=1e-4, weight_decay=0.01, **kwargs), params


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", default="quick", choices=("ci", "bench", "quick"))
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--steps", type=int, default=10, help="optimiser steps timed per round")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    benchlib.quiet_libraries()
    threads = benchlib.set_threads(args.threads)

    import torch
    from torch.utils.benchmark import Timer

    from tinylab.models import build_student, load_teacher

    cfg = benchlib.budget_config(args.budget)
    teacher, _ = load_teacher(cfg.teacher.model, id2label=["negative", "positive"])
    torch.manual_seed(0)
    student = build_student(teacher, cfg.student.__class__(**{**cfg.student.__dict__,
                                                              "init": "random"}),
                            id2label=["negative", "positive"])
    total = sum(p.numel() for p in student.parameters())
    embedding = student.bert.embeddings.word_embeddings.weight.numel()

    variants = {}
    for frozen in (False, True):
        for impl, kwargs in IMPLEMENTATIONS.items():
            name = impl + (", word embeddings frozen" if frozen else "")
            opt, params = _optimizer(student, frozen, kwargs)
            for q in params:
                q.grad = torch.randn_like(q) * 1e-3
            opt.step()  # creates the moment buffers (first step is not typical)
            variants[name] = Timer(stmt="opt.step()", globals={"opt": opt},
                                   num_threads=threads, label="AdamW step", sub_label=name)
    samples = {name: [] for name in variants}
    for _ in range(args.rounds):  # interleaved: background load hits every variant alike
        for name, timer in variants.items():
            samples[name].append(timer.timeit(number=args.steps).mean)
    ms = {name: 1000 * statistics.median(v) for name, v in samples.items()}
    base = ms["for-loop (CPU default)"]
    rows = [[name, f"{value:.2f}", f"{base / value:.2f}x"] for name, value in ms.items()]
    table = benchlib.markdown_table(["AdamW variant", "ms per step (median)", "speed-up"], rows,
                                    "lrr")
    result = {"budget": benchlib.budget_record(args.budget), "machine": benchlib.machine_info(),
              "command": benchlib.command_line(), "threads": threads, "rounds": args.rounds,
              "steps_per_round": args.steps, "parameters": total,
              "word_embedding_parameters": embedding, "ms_per_step": ms,
              "samples_s": samples}
    text = "\n".join([
        f"### One AdamW step of the student (budget `{args.budget}`)", "",
        f"Command: `{result['command']}`  ",
        f"Student: {total / 1e6:.2f} M parameters, of which the word embeddings "
        f"{embedding / 1e6:.2f} M. Median over {args.rounds} interleaved rounds of "
        f"{args.steps} steps (`torch.utils.benchmark.Timer`), {threads} thread(s).  ",
        benchlib.machine_line(result["machine"]), "", table, ""])
    out = benchlib.results_dir(args.budget, args.output)
    benchlib.write_json(out / "optimizer.json", result)
    benchlib.write_text(out / "optimizer.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
