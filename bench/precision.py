"""fp32 against bf16 autocast, side by side in one call: does bf16 cost accuracy?

    .venv/bin/python bench/precision.py [--budget bench] [--seeds 3]

For each precision (each in its own processes: Accelerate fixes the mixed precision once per
process) it trains, with seeds 42, 43, ...:

* the teacher (``quick``'s fine-tuning recipe; seed 42 is the course's teacher), scored on the
  test split;
* the ablation table's ``full`` row (``bench/ablations.py --variants full``: general
  distillation, augmentation, both task stages), whose seed 42 is what ``tinylab distill``
  trains under the same budget.

It writes ``bench/results/<budget>/precision.{md,json}``: mean and sample standard deviation
over seeds for both precisions, their difference and whether it is inside seed noise (the
difference of the means is smaller than twice its standard error). bf16 is *mixed*
precision: matrix products in bf16, master weights, optimiser state and losses in fp32.
Training times are printed too; they are only comparable when nothing else ran.
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

PRECISIONS = ("fp32", "bf16")
FIRST_SEED = 42


def teacher_run(budget: str, precision: str, seed: int) -> dict:
    """Fine-tune (or load from the cache) the teacher of ``seed``; its test accuracy."""
    benchlib.quiet_libraries()
    from tinylab.data import load_task, tokenize
    from tinylab.distill import RunOptions, finetune_teacher, teacher_cache_key
    from tinylab.evaluate import evaluate_model

    cfg = benchlib.budget_config(budget, (f"precision={precision}", f"seed={seed}"))
    data = load_task(cfg.data)
    teacher, tokenizer, history = finetune_teacher(cfg, data, run=RunOptions(progress=False))
    test = tokenize(data["test"], tokenizer, cfg.data.max_length)
    m = evaluate_model(teacher, test, tokenizer, batch_size=cfg.eval_batch_size)
    return {"precision": precision, "seed": seed, "key": teacher_cache_key(cfg),
            "accuracy": m["accuracy"], "n": m["n"],
            "train_seconds": history["teacher"].seconds}


def _mean_sd(values: list[float]) -> tuple[float, float]:
    mean = sum(values) / len(values)
    sd = math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 \
        else float("nan")
    return mean, sd


def compare(rows: dict[str, list[float]]) -> dict:
    """Mean ± sd per precision, bf16 - fp32, its standard error, and 'within noise'."""
    (m32, s32), (m16, s16) = _mean_sd(rows["fp32"]), _mean_sd(rows["bf16"])
    se = math.sqrt(s32 ** 2 / len(rows["fp32"]) + s16 ** 2 / len(rows["bf16"]))
    delta = m16 - m32
    return {"fp32": [m32, s32], "bf16": [m16, s16], "delta": delta, "se": se,
            "within_noise": bool(abs(delta) <= 2 * se) if math.isfinite(se) else None,
            "values": rows}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="bench", choices=("ci", "bench", "quick"))
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--output", type=Path, default=None)
    parser.add_argument("--teacher-run", nargs=2, metavar=("PRECISION", "SEED"),
                        help=argparse.SUPPRESS)  # internal: one teacher in this process
    args = parser.parse_args(argv)
    if args.teacher_run:
        print(json.dumps(teacher_run(args.budget, args.teacher_run[0], int(args.teacher_run[1]))))
        return 0

    out = benchlib.results_dir(args.budget, args.output)
    seeds = list(range(FIRST_SEED, FIRST_SEED + args.seeds))
    machine = benchlib.machine_info()
    start = time.perf_counter()
    students, teachers, walls = {}, {}, {}
    for precision in PRECISIONS:
        t0 = time.perf_counter()
        folder = out / f"precision-{precision}"
        subprocess.run([sys.executable, str(benchlib.BENCH_DIR / "ablations.py"),
                        "--budget", args.budget, "--variants", "full", "--seeds", str(args.seeds),
                        "--set", f"precision={precision}", "--output", str(folder)], check=True)
        runs = sorted((folder / "ablation_runs").glob("full__seed*.json"))
        records = [json.loads(p.read_text()) for p in runs]
        accuracy = {r["seed"]: r["test"]["accuracy"] for r in records}
        students[precision] = [accuracy[s] for s in seeds]
        teachers[precision] = []
        for seed in seeds:  # seed 42 was just trained by ablations.py: a cache hit
            done = subprocess.run([sys.executable, __file__, "--budget", args.budget,
                                   "--teacher-run", precision, str(seed)],
                                  check=True, capture_output=True, text=True)
            teachers[precision].append(json.loads(done.stdout.strip().splitlines()[-1]))
        walls[precision] = time.perf_counter() - t0
        print(f"{precision}: done in {walls[precision] / 60:.1f} min", flush=True)

    result = {"budget": benchlib.budget_record(args.budget), "seeds": seeds,
              "command": benchlib.command_line(), "machine": machine,
              "wall_seconds": time.perf_counter() - start, "wall_per_precision": walls,
              "teacher": compare({p: [t["accuracy"] for t in teachers[p]] for p in PRECISIONS}),
              "teacher_runs": teachers,
              "full": compare(students)}
    benchlib.write_json(out / "precision.json", result)
    benchlib.write_text(out / "precision.md", markdown(result))
    print(markdown(result))
    return 0


def _row(name: str, c: dict) -> list[str]:
    noise = {True: "yes", False: "**no**", None: "-"}[c["within_noise"]]
    return [name, f"{100 * c['fp32'][0]:.2f} ± {100 * c['fp32'][1]:.2f}",
            f"{100 * c['bf16'][0]:.2f} ± {100 * c['bf16'][1]:.2f}",
            f"{100 * c['delta']:+.2f}", f"{100 * c['se']:.2f}", noise]


def markdown(result: dict) -> str:
    teacher_seconds = {p: sum(t["train_seconds"] for t in result["teacher_runs"][p])
                       for p in PRECISIONS}
    table = benchlib.markdown_table(
        ["model", "fp32 test acc. (%)", "bf16 test acc. (%)", "Δ (pp)", "SE (pp)",
         "within seed noise (Δ within ±2 SE)"],
        [_row("teacher (fine-tuned)", result["teacher"]),
         _row("TinyBERT student (`full`)", result["full"])])
    b = result["budget"]
    return "\n".join([
        f"### fp32 vs bf16 autocast (budget `{b['budget']}`)", "",
        f"Command: `{result['command']}`  ",
        f"Seeds {result['seeds']}, mean ± sample standard deviation; the student row is "
        f"`bench/ablations.py --variants full` run once per precision.  ",
        benchlib.machine_line(result["machine"]), "",
        table, "",
        "Teacher fine-tuning time summed over seeds (cached teachers count their original "
        "time): " + ", ".join(f"{p} {teacher_seconds[p] / 60:.1f} min" for p in PRECISIONS)
        + ". Whole call: " + ", ".join(f"{p} {result['wall_per_precision'][p] / 60:.1f} min"
                                       for p in PRECISIONS) + ".", ""])


if __name__ == "__main__":
    sys.exit(main())
