"""How good can the teacher get? Fine-tune it until validation accuracy stops improving.

    .venv/bin/python bench/teacher_ceiling.py [--epochs 5] [--patience 2] [--evals-per-epoch 2]

A teacher fine-tuned for a fixed, small number of epochs may be short of what its backbone can
reach, and every student distilled from it inherits the gap: "the student keeps 98 % of the
teacher" means little against an undertrained teacher. This script fine-tunes the course's
teacher (the ``quick`` recipe: all-MiniLM-L6-v2 on the offline Rotten Tomatoes task) with
early stopping (:mod:`tinylab.distill.early_stopping`): evaluate ``--evals-per-epoch`` times
per epoch on the validation split, stop after ``--patience`` evaluations without a better
accuracy, keep the best weights. It reports the validation curve, where the best model was
found, and its test accuracy; with ``--seeds N``, for N seeds.

Outputs: ``results/<budget>/teacher_ceiling.{md,json,png}``. The fine-tuned teachers land in
the tinylab cache like any other (their cache key includes these settings).
"""
from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import benchlib

FIRST_SEED = 42


def one_teacher(budget: str, overrides: list[str], seed: int) -> dict:
    """Fine-tune (or load) one teacher; its validation curve and test accuracy."""
    benchlib.quiet_libraries()
    from tinylab.data import load_task, tokenize
    from tinylab.distill import RunOptions, finetune_teacher, teacher_cache_key
    from tinylab.evaluate import evaluate_model

    cfg = benchlib.budget_config(budget, (*overrides, f"seed={seed}"))
    data = load_task(cfg.data)
    teacher, tokenizer, history = finetune_teacher(cfg, data, run=RunOptions(progress=False))
    log = history["teacher"]
    test = tokenize(data["test"], tokenizer, cfg.data.max_length)
    m = evaluate_model(teacher, test, tokenizer, batch_size=cfg.eval_batch_size)
    steps_per_epoch = log.info["steps_per_epoch"]
    from tinylab.device import resolve_device_and_precision

    _, precision = resolve_device_and_precision(cfg.device, cfg.precision)
    return {"seed": seed, "key": teacher_cache_key(cfg), "precision": precision,
            "test_accuracy": m["accuracy"], "n_test": m["n"],
            "curve": [{"epoch": e["step"] / steps_per_epoch, "step": e["step"],
                       "accuracy": e["accuracy"]} for e in log.evals],
            "early_stopping": log.info.get("early_stopping"), "steps": len(log.steps),
            "steps_per_epoch": steps_per_epoch, "train_seconds": log.seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", default="quick", choices=("ci", "bench", "quick"))
    p.add_argument("--epochs", type=float, default=5.0, help="upper bound (default 5)")
    p.add_argument("--patience", type=int, default=2, help="evaluations without improvement")
    p.add_argument("--evals-per-epoch", type=int, default=2)
    p.add_argument("--precision", default="auto", help="fp32, bf16 or auto (default)")
    p.add_argument("--seeds", type=int, default=1)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="more config overrides (e.g. teacher.learning_rate=5e-5)")
    p.add_argument("--output", type=Path, default=None)
    p.add_argument("--one", type=int, default=None, help=argparse.SUPPRESS)  # internal: a seed
    args = p.parse_args(argv)

    cfg = benchlib.budget_config(args.budget)
    from tinylab.data import load_task

    train_examples = len(load_task(cfg.data)["train"])
    steps_per_epoch = train_examples // cfg.teacher.batch_size
    every = max(1, steps_per_epoch // args.evals_per_epoch)
    overrides = [f"teacher.epochs={args.epochs}", f"teacher.patience={args.patience}",
                 f"teacher.eval_every={every}", f"precision={args.precision}", *args.set]
    if args.one is not None:
        print(json.dumps(one_teacher(args.budget, overrides, args.one)))
        return 0

    out = benchlib.results_dir(args.budget, args.output)
    machine = benchlib.machine_info()
    start = time.perf_counter()
    runs = []
    for seed in range(FIRST_SEED, FIRST_SEED + args.seeds):  # one process per teacher
        cmd = [sys.executable, __file__, "--budget", args.budget, "--epochs", str(args.epochs),
               "--patience", str(args.patience), "--evals-per-epoch", str(args.evals_per_epoch),
               "--precision", args.precision, "--one", str(seed)]
        for item in args.set:
            cmd += ["--set", item]
        done = subprocess.run(cmd, check=True, capture_output=True, text=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
        r = runs[-1]
        print(f"seed {seed}: test accuracy {r['test_accuracy']:.4f}, best at epoch "
              f"{r['curve'][_best(r)]['epoch']:.2f}, {r['steps']} steps, "
              f"{r['train_seconds']:.0f} s", flush=True)
    result = {"budget": benchlib.budget_record(args.budget, overrides), "overrides": overrides,
              "command": benchlib.command_line(), "machine": machine, "runs": runs,
              "wall_seconds": time.perf_counter() - start}
    benchlib.write_json(out / "teacher_ceiling.json", result)
    benchlib.write_text(out / "teacher_ceiling.md", markdown(result))
    plot(result, out / "teacher_ceiling.png")
    print(markdown(result))
    return 0


def _best(run: dict) -> int:
    accs = [c["accuracy"] for c in run["curve"]]
    return accs.index(max(accs))


def markdown(result: dict) -> str:
    rows = []
    for r in result["runs"]:
        best = r["curve"][_best(r)]
        rows.append([r["seed"], r["precision"], f"{best['epoch']:.2f}",
                     f"{100 * best['accuracy']:.2f}", f"{100 * r['test_accuracy']:.2f}",
                     f"{r['steps'] / r['steps_per_epoch']:.2f}", f"{r['train_seconds']:.0f}"])
    tests = [r["test_accuracy"] for r in result["runs"]]
    mean = sum(tests) / len(tests)
    sd = (math.sqrt(sum((t - mean) ** 2 for t in tests) / (len(tests) - 1))
          if len(tests) > 1 else float("nan"))
    table = benchlib.markdown_table(
        ["seed", "precision", "best epoch", "val. acc. at best (%)", "test acc. (%)",
         "epochs trained", "training s"], rows, "llrrrrr")
    return "\n".join([
        "### The teacher at its ceiling (early stopping on the validation split)", "",
        f"Command: `{result['command']}`  ",
        f"Settings: `{' '.join(result['overrides'])}` on budget "
        f"`{result['budget']['budget']}`.  ",
        benchlib.machine_line(result["machine"]), "",
        table, "",
        f"Test accuracy over {len(tests)} seed(s): {100 * mean:.2f} %"
        + (f" ± {100 * sd:.2f}" if len(tests) > 1 else "") + ". The kept model is the best "
        "validated one; training stops after the patience runs out. Plot: "
        "`teacher_ceiling.png`.", ""])


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from tinylab.plots import save_figure

    fig, ax = plt.subplots(figsize=(6, 3.5))
    for r in result["runs"]:
        ax.plot([c["epoch"] for c in r["curve"]], [100 * c["accuracy"] for c in r["curve"]],
                marker="o", label=f"seed {r['seed']} (test {100 * r['test_accuracy']:.1f} %)")
        best = r["curve"][_best(r)]
        ax.scatter([best["epoch"]], [100 * best["accuracy"]], s=120, facecolors="none",
                   edgecolors="black")
    ax.set_xlabel("epoch")
    ax.set_ylabel("validation accuracy (%)")
    ax.set_title("teacher fine-tuning: where the best model is (circled)")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


if __name__ == "__main__":
    sys.exit(main())
