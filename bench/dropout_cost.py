"""What dropout costs a training step of the student and of the teacher on this CPU.

    .venv/bin/python bench/dropout_cost.py [--budget quick]

BERT drops out at four places: the embeddings' output, the attention probabilities (one
value per head, query and key: B x H x L x L numbers a layer), the attention block's output
and the feed-forward block's output (plus the classifier's input). Each draw is a Bernoulli
mask as large as the tensor it masks. This script times one training step (forward, backward,
the fused AdamW step, in the budget's precision: bf16 autocast where the CPU has it, as in
`quick`) of the budget's student and of the teacher, on batches of 32 from the task's training
set, padded and grouped by length as training does them, with dropout:

* as configured (p = 0.1 everywhere, the recipe);
* off on the attention probabilities only;
* off everywhere else only (embeddings, block outputs, classifier);
* off everywhere.

"Off" sets p = 0, which PyTorch skips outright, so the differences are what the masks cost.
The recipe keeps its dropout: what training without it would do to accuracy takes runs with
seeds, which this script does not make. Every variant is timed in each of ``--rounds``
interleaved rounds (``torch.utils.benchmark.Timer``), median reported. Outputs
``results/<budget>/dropout_cost.{md,json}``.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import itertools
import statistics
import sys

import benchlib

VARIANTS = ("as configured", "attention probabilities off", "everything else off", "all off")


def _set_dropout(model, variant: str) -> None:
    """p = 0 on the dropouts ``variant`` turns off (BERT's attention reads its module's p)."""
    import torch

    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Dropout):
            continue
        on_attention = name.endswith("attention.self.dropout")
        if variant == "all off" or (variant == "attention probabilities off" and on_attention) \
                or (variant == "everything else off" and not on_attention):
            module.p = 0.0


def _step_timer(model, batches, precision: str, threads: int, label: str):
    import torch
    from torch.utils.benchmark import Timer

    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-5, fused=True)
    cycle = itertools.cycle(batches)
    autocast = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if precision == "bf16" \
        else contextlib.nullcontext

    def step():
        batch = next(cycle)
        with autocast():
            loss = model(**batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    for _ in range(2):  # the optimiser's state and the first kernels
        step()
    return Timer(stmt="step()", globals={"step": step}, num_threads=threads, sub_label=label)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", default="quick", choices=("ci", "bench", "quick"))
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--batches", type=int, default=8, help="training batches cycled through")
    p.add_argument("--models", default="student,teacher",
                   help="comma-separated: student, teacher (default both)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--output", default=None)
    args = p.parse_args(argv)
    if args.rounds < 1 or args.batches < 1:
        p.error(f"--rounds and --batches must be at least 1, got {args.rounds} and "
                f"{args.batches}")
    wanted = [m.strip() for m in args.models.split(",") if m.strip()]
    if not wanted or set(wanted) - {"student", "teacher"}:
        p.error(f"--models takes student and/or teacher, got {args.models!r}")
    benchlib.quiet_libraries()
    threads = benchlib.set_threads(args.threads)

    import torch

    from tinylab.data import load_task, make_dataloader, tokenize
    from tinylab.device import resolve_device_and_precision
    from tinylab.models import build_student, load_teacher

    cfg = benchlib.budget_config(args.budget)
    precision = resolve_device_and_precision("cpu", cfg.precision)[1]
    data = load_task(cfg.data)
    labels = data["train"].features["label"].names
    teacher, tokenizer = load_teacher(cfg.teacher.model, id2label=labels)
    torch.manual_seed(0)
    student = build_student(teacher, cfg.student, id2label=labels)
    train = tokenize(data["train"].select(range(32 * args.batches)), tokenizer,
                     max_length=cfg.data.max_length)
    loader = make_dataloader(train, tokenizer, 32, shuffle=True, seed=cfg.seed,
                             group_by_length=cfg.group_by_length)    # as training batches them
    batches = [{k: v for k, v in b.items()
                if k in ("input_ids", "attention_mask", "token_type_ids", "labels")}
               for b in loader]
    tokens = sum(int(b["attention_mask"].sum()) for b in batches)
    padded = sum(b["input_ids"].numel() for b in batches)

    models = {name: model for name, model in (("student", student), ("teacher", teacher))
              if name in wanted}
    steps = {"student": 10, "teacher": 2}          # per timed call: about a second each
    timers = {}
    for model_name, model in models.items():
        for variant in VARIANTS:
            copy_ = copy.deepcopy(model)
            _set_dropout(copy_, variant)
            timers[(model_name, variant)] = _step_timer(copy_, batches, precision, threads,
                                                        f"{model_name}, {variant}")
    samples = {key: [] for key in timers}
    for _ in range(args.rounds):               # interleaved: background load hits all alike
        for key, timer in timers.items():
            samples[key].append(timer.timeit(number=steps[key[0]]).mean)
    ms = {key: 1000 * statistics.median(v) for key, v in samples.items()}

    rows = []
    for model_name in models:
        base = ms[(model_name, "as configured")]
        for variant in VARIANTS:
            value = ms[(model_name, variant)]
            saved = "" if variant == "as configured" else f"{100 * (base - value) / base:.0f} %"
            rows.append([model_name, variant, f"{value:.1f}", saved])
    table = benchlib.markdown_table(["model", "dropout", "ms per training step (median)",
                                     "share of the step saved"], rows, "llrr")
    share = {m: (ms[(m, "as configured")] - ms[(m, "all off")]) / ms[(m, "as configured")]
             for m in models}
    result = {"budget": benchlib.budget_record(args.budget), "machine": benchlib.machine_info(),
              "command": benchlib.command_line(), "threads": threads, "precision": precision,
              "rounds": args.rounds, "batches": len(batches), "real_tokens": tokens,
              "padded_tokens": padded,
              "ms_per_step": {f"{m}, {v}": value for (m, v), value in ms.items()},
              "dropout_share": share,
              "samples_s": {f"{m}, {v}": value for (m, v), value in samples.items()}}
    text = "\n".join([
        f"### What dropout costs a training step (budget `{args.budget}`)", "",
        f"Command: `{result['command']}`  ",
        f"One training step (forward, backward, fused AdamW) in {precision} on "
        f"{len(batches)} training batches of 32, batched as in training ("
        f"{padded / len(batches) / 32:.0f} tokens a sentence after padding), cycled; student "
        f"L{cfg.student.num_layers}-H{cfg.student.hidden_size}, teacher "
        f"L{teacher.config.num_hidden_layers}-H{teacher.config.hidden_size}; median over "
        f"{args.rounds} interleaved rounds of `torch.utils.benchmark.Timer`, {threads} "
        f"thread(s).  ",
        benchlib.machine_line(result["machine"]), "", table, "",
        "Dropout's masks take " + " and ".join(
            f"{100 * value:.0f} % of the {name}'s training step" for name, value in share.items())
        + ".", ""])
    out = benchlib.results_dir(args.budget, args.output)
    benchlib.write_json(out / "dropout_cost.json", result)
    benchlib.write_text(out / "dropout_cost.md", text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
