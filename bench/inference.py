"""Teacher against student at inference: latency, throughput, size - fp32, bf16, dynamic int8.

    .venv/bin/python bench/inference.py                  # bench budget (trains a student first
                                                         # if runs/bench/bench/pipeline is empty)
    .venv/bin/python bench/inference.py --teacher DIR --student DIR   # any two saved models

Up to six models are measured in one run on the same inputs: the teacher and the student, each
in float32, in bfloat16 (weights and activations; only where the CPU computes bf16 natively,
``avx512_bf16`` or AMX) and with dynamic int8 quantization
(``torch.ao.quantization.quantize_dynamic`` on every ``nn.Linear``: int8 weights, activations
quantized on the fly). The timing rounds alternate between the models (round 1: all of them,
round 2: all of them, ...) so background load hits them alike; each number is the median over rounds of ``tinylab.evaluate.measure_latency``'s
median. Batch 1 is one user waiting (a test sentence of median length); batch 32 is
throughput (the first 32 test sentences, dynamically padded).

The models are the *exported* folders (standard ``sdpa`` attention, what users deploy). Unless
``--teacher``/``--student`` are given, they come from ``tinylab.pipeline.run_pipeline`` run
with the budget's configuration into ``runs/bench/<budget>/pipeline`` (reused when present;
it shares the cached teacher, general student and augmented data with bench/ablations.py).
Outputs: ``results/<budget>/inference.md``, ``inference.json``, ``inference.png``.
"""
from __future__ import annotations

import argparse
import copy
import statistics
import sys
import tempfile
import warnings
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

BATCH_SIZES = (1, 32)


def quantize_int8(model):
    """A dynamically quantized copy: ``nn.Linear`` weights in int8 (PyTorch eager mode)."""
    import torch
    from torch.ao.quantization import quantize_dynamic

    with warnings.catch_warnings():  # torch marks torch.ao.quantization as deprecated
        warnings.simplefilter("ignore")
        return quantize_dynamic(copy.deepcopy(model), {torch.nn.Linear}, dtype=torch.qint8).eval()


def to_bf16(model):
    """A bfloat16 copy (weights and computation; half the bytes of fp32)."""
    import torch

    return copy.deepcopy(model).to(torch.bfloat16).eval()


def saved_bytes(model) -> int:
    """Bytes of ``torch.save(model.state_dict())`` - one format for fp32 and int8 models
    (safetensors cannot hold PyTorch's packed int8 weights)."""
    import torch

    with tempfile.TemporaryDirectory(prefix="tinylab-bench-") as tmp:
        path = Path(tmp) / "state.pt"
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            torch.save(model.state_dict(), path)
        return path.stat().st_size


def pipeline_models(budget: str, folder: Path) -> tuple[Path, Path]:
    """The teacher and student folders exported by ``run_pipeline`` (run it if needed)."""
    from tinylab.pipeline import run_pipeline

    if not (folder / "report.json").exists():
        print(f"inference: no trained student in {folder}; running tinylab's pipeline with the "
              f"'{budget}' budget first", flush=True)
        run_pipeline(benchlib.budget_config(budget), output_dir=folder)
    return folder / "teacher", folder / "student"


def latency_rounds(models: dict[str, Any], tokenizer, texts: list[str], rounds: int,
                   repeats: int) -> dict[str, dict[int, dict[str, Any]]]:
    """Median latency per model and batch size over ``rounds`` interleaved rounds."""
    from tinylab.evaluate import measure_latency

    samples: dict[str, dict[int, list[float]]] = {n: {b: [] for b in BATCH_SIZES} for n in models}
    seq: dict[str, dict[int, int]] = {n: {} for n in models}
    for r in range(rounds):
        for name, model in models.items():
            res = measure_latency(model, tokenizer, texts, batch_sizes=BATCH_SIZES,
                                  warmup=3 if r == 0 else 1, repeats=repeats)
            for b in BATCH_SIZES:
                samples[name][b].append(res[b]["median_ms"])
                seq[name][b] = res[b]["seq_len"]
    out: dict[str, dict[int, dict[str, Any]]] = {}
    for name in models:
        out[name] = {}
        for b in BATCH_SIZES:
            ms = statistics.median(samples[name][b])
            out[name][b] = {"median_ms": ms, "round_medians_ms": samples[name][b],
                            "examples_per_s": b / (ms / 1000), "seq_len": seq[name][b],
                            "tokens_per_s": b * seq[name][b] / (ms / 1000)}
    return out


def table(rows: dict[str, dict[str, Any]]) -> str:
    header = ["model", "weights", "test acc %", "params (M)", "non-embedding (M)",
              "size (MB)", "ms @ batch 1", "ms @ batch 32", "examples/s @ 32",
              "speed-up @ 1", "speed-up @ 32"]
    lines = []
    for name, r in rows.items():
        lines.append([r["model"], r["weights"], f"{100 * r['accuracy']:.1f}",
                      f"{r['params'] / 1e6:.1f}", f"{r['non_embedding_params'] / 1e6:.2f}",
                      f"{r['size_bytes'] / 1e6:.1f}", f"{r['latency'][1]['median_ms']:.1f}",
                      f"{r['latency'][32]['median_ms']:.1f}",
                      f"{r['latency'][32]['examples_per_s']:.0f}",
                      f"{r['speedup_b1']:.1f}x", f"{r['speedup_b32']:.1f}x"])
    return benchlib.markdown_table(header, lines, "llrrrrrrrrr")


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--budget", choices=list(benchlib.BUDGETS), default="bench",
                   help="configuration of the student (and of the test data); default bench")
    p.add_argument("--teacher", default=None, help="a saved teacher folder (with --student)")
    p.add_argument("--student", default=None, help="a saved student folder (with --teacher)")
    p.add_argument("--rounds", type=int, default=5, help="interleaved timing rounds (default 5)")
    p.add_argument("--repeats", type=int, default=10,
                   help="timed calls per model, batch size and round (default 10)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: all cores)")
    p.add_argument("--output", default=None, help="results folder (default: bench/results/<budget>)")
    args = p.parse_args(argv)
    if (args.teacher is None) != (args.student is None):
        p.error("give both --teacher and --student, or neither")
    if args.rounds < 1 or args.repeats < 1:
        p.error(f"--rounds and --repeats must be >= 1, got {args.rounds}, {args.repeats}")
    return args


def main(argv=None) -> int:
    args = parse_args(argv)
    threads, machine, out, cfg = benchlib.start(args)

    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    from tinylab.data import load_task, tokenize
    from tinylab.evaluate import count_parameters, evaluate_model, size_on_disk
    from tinylab.models import load_pretrained
    from tinylab.plots import plot_accuracy_latency, save_figure

    if args.teacher:
        folders = {"teacher": Path(args.teacher), "student": Path(args.student)}
    else:
        t, s = pipeline_models(args.budget, benchlib.REPO_DIR / "runs" / "bench" / args.budget
                               / "pipeline")
        folders = {"teacher": t, "student": s}
    for name, folder in folders.items():
        if not (folder / "config.json").exists():
            raise SystemExit(f"inference: {name} folder {folder} has no config.json; pass a "
                             f"folder written by save_pretrained / tinylab.export")
    tokenizer = AutoTokenizer.from_pretrained(folders["teacher"])
    fp32 = {name: load_pretrained(AutoModelForSequenceClassification, folder).eval()
            for name, folder in folders.items()}

    test = load_task(cfg.data)["test"]
    texts = list(test["text"])
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True,
                                             max_length=cfg.data.max_length)["input_ids"]]
    median_text = sorted(range(len(texts)), key=lambda i: lengths[i])[len(texts) // 2]
    texts = [texts[median_text]] + [t for i, t in enumerate(texts) if i != median_text]
    test_tokens = tokenize(test, tokenizer, cfg.data.max_length)

    from tinylab.device import cpu_supports_bf16

    models: dict[str, Any] = {}
    rows: dict[str, dict[str, Any]] = {}
    for name, model in fp32.items():
        params = count_parameters(model)
        variants = [("fp32", model)] + ([("bf16", to_bf16(model))] if cpu_supports_bf16()
                                        else []) + [("int8 dynamic", quantize_int8(model))]
        for weights, m in variants:
            key = f"{name} {weights.split()[0]}"
            models[key] = m
            metrics = evaluate_model(m, test_tokens, tokenizer, batch_size=cfg.eval_batch_size)
            rows[key] = {"model": name, "weights": weights, "folder": str(folders[name]),
                         "accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"],
                         "params": params["total"],
                         "non_embedding_params": params["non_embedding"],
                         "size_bytes": saved_bytes(m),
                         "safetensors_bytes": size_on_disk(m) if weights != "int8 dynamic"
                         else None}
    print(f"inference: timing {', '.join(models)} ({args.rounds} rounds x {args.repeats} "
          f"calls, {threads} thread(s))", flush=True)
    latency = latency_rounds(models, tokenizer, texts, args.rounds, args.repeats)
    ref = latency["teacher fp32"]
    for key, row in rows.items():
        row["latency"] = latency[key]
        for b in BATCH_SIZES:
            row[f"speedup_b{b}"] = ref[b]["median_ms"] / latency[key][b]["median_ms"]
            row[f"latency_b{b}_ms"] = latency[key][b]["median_ms"]

    import pandas as pd

    frame = pd.DataFrame({k: {"accuracy": r["accuracy"], "size_mb": r["size_bytes"] / 1e6,
                              "latency_b1_ms": r["latency_b1_ms"],
                              "latency_b32_ms": r["latency_b32_ms"]} for k, r in rows.items()}
                         ).T.astype(float)
    # bubble area = size on disk, so int8 (same parameter count, ~1/4 of the linear weights'
    # bytes) is visibly smaller
    save_figure(plot_accuracy_latency(frame, size="size_mb"), out / "inference.png")
    s32, s1 = rows["student fp32"]["speedup_b32"], rows["student fp32"]["speedup_b1"]
    summary = (f"Student vs teacher (fp32): {s1:.1f}x faster at batch 1, {s32:.1f}x at batch 32, "
               f"{rows['teacher fp32']['params'] / rows['student fp32']['params']:.1f}x fewer "
               f"parameters, keeps {100 * rows['student fp32']['accuracy'] / rows['teacher fp32']['accuracy']:.1f}% "
               f"of the teacher's test accuracy. Dynamic int8 vs fp32: teacher "
               f"{latency['teacher fp32'][32]['median_ms'] / latency['teacher int8'][32]['median_ms']:.2f}x, "
               f"student {latency['student fp32'][32]['median_ms'] / latency['student int8'][32]['median_ms']:.2f}x "
               f"at batch 32.")
    if "student bf16" in rows:
        summary += (
            f" In bf16 the student is {rows['teacher bf16']['latency_b32_ms'] / rows['student bf16']['latency_b32_ms']:.1f}x "
            f"faster than the bf16 teacher at batch 32 (fp32 against fp32: {s32:.1f}x), and bf16 "
            f"vs fp32 runs the teacher {rows['teacher fp32']['latency_b32_ms'] / rows['teacher bf16']['latency_b32_ms']:.2f}x "
            f"and the student {rows['student fp32']['latency_b32_ms'] / rows['student bf16']['latency_b32_ms']:.2f}x "
            f"faster at batch 32.")
    result = {"budget": benchlib.budget_record(args.budget), "machine": machine,
              "command": benchlib.command_line(), "threads": threads, "rounds": args.rounds,
              "repeats": args.repeats, "test_examples": len(test),
              "batch1_tokens": latency["teacher fp32"][1]["seq_len"],
              "batch32_tokens": latency["teacher fp32"][32]["seq_len"],
              "models": rows, "summary": summary, "load_average_end": benchlib.load_average()}
    text = table(rows)
    benchlib.write_json(out / "inference.json", result)
    benchlib.write_text(out / "inference.md", "\n".join([
        f"### Inference: teacher vs student, fp32 vs bf16 vs dynamic int8 (budget "
        f"`{args.budget}`)", "",
        f"Command: `{result['command']}`  ",
        f"Models: {', '.join(f'{k} `{v}`' for k, v in folders.items())}; test split "
        f"({len(test)} sentences) for accuracy. Latency: median over {args.rounds} interleaved "
        f"rounds of the median of {args.repeats} calls; batch 1 = one sentence of "
        f"{result['batch1_tokens']} tokens, batch 32 padded to {result['batch32_tokens']} "
        f"tokens; {threads} thread(s).  ",
        benchlib.machine_line(machine), "",
        text, "",
        summary + " Size: `torch.save` of the state dict (the same format for every "
        "precision; int8 keeps embeddings in fp32, so small students shrink less). "
        "Speed-ups are against the fp32 teacher. Plot: `inference.png`.", ""]))
    print(text)
    print(summary)
    print(f"wrote {out / 'inference.md'}, inference.json, inference.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
