"""Why bfloat16 speeds the teacher up more than the student, and what closes the gap.

    .venv/bin/python bench/bf16_gap.py                   # the quick shapes (about 4 minutes)
    .venv/bin/python bench/bf16_gap.py --budget ci --rounds 1 --no-compile   # smoke test

In ``bench/inference.py`` the student is more than 10x faster than the teacher at batch 32 in
float32, but not when both run in bfloat16: bf16 runs the teacher's forward pass about 1.7x
faster and the student's only about 1.4x. This script takes the two shapes of the budget's
configuration (the teacher backbone and ``cfg.student``) with random weights (the weights do
not change the time of a forward pass), one batch of 32 sequences of ``--length`` tokens, and
measures in interleaved rounds (``torch.utils.benchmark``, median of the rounds' medians):

* float32 and bfloat16 (weights and activations) with the attention every exported model uses
  (``sdpa``), and with the eager attention (``eager``);
* attention in fp32 inside a bf16 model (``sdpa, attention in fp32``, both models): on this
  CPU the fused attention kernel is slower in bf16 than in fp32 when heads are 16 wide;
* the student with fewer, wider heads (``heads=6``, ``heads=4``: the same parameters, the
  attention in fewer and larger matrix multiplies);
* ``torch.compile`` of each model (``--no-compile`` skips it): the element-wise work between
  the matrix multiplies fused into a few generated kernels.

Then, with ``torch.profiler``, where one forward pass of each model spends its time, by kind
of operation: the matrix multiplies (``linear``/``addmm``/``mm``/``bmm``), attention
(``scaled_dot_product_attention``, softmax), layer norms and element-wise work (GELU, adds,
dropout is off at inference), casts and copies, the embedding look-ups, the rest. bf16 only
speeds up the first kind; the more of a model's time goes to the others, the less it gains.
Outputs: ``results/<budget>/bf16_gap.md`` and ``bf16_gap.json``.
"""
from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import benchlib  # noqa: E402

BATCH = 32
KINDS = {  # profiler op name -> kind (self time is summed per kind)
    "aten::addmm": "matmul", "aten::mm": "matmul", "aten::bmm": "matmul",
    "aten::baddbmm": "matmul", "aten::_addmm_activation": "matmul",
    "aten::_scaled_dot_product_flash_attention_for_cpu": "attention",
    "aten::_scaled_dot_product_attention_math": "attention", "aten::_softmax": "attention",
    "aten::native_layer_norm": "norm and element-wise", "aten::gelu": "norm and element-wise",
    "aten::add": "norm and element-wise", "aten::add_": "norm and element-wise",
    "aten::mul": "norm and element-wise", "aten::div": "norm and element-wise",
    "aten::tanh": "norm and element-wise", "aten::rsub": "norm and element-wise",
    "aten::copy_": "casts and copies", "aten::_to_copy": "casts and copies",
    "aten::clone": "casts and copies", "aten::contiguous": "casts and copies",
    "aten::embedding": "embedding", "aten::index_select": "embedding",
}
KIND_ORDER = ("matmul", "attention", "norm and element-wise", "casts and copies", "embedding",
              "other")


FP32_SDPA = "sdpa_fp32"  # the attention implementation of the "attention in fp32" rows


def register_fp32_sdpa() -> str:
    """Register :data:`FP32_SDPA`: transformers' ``sdpa`` attention with query, key and value
    cast to float32 for the one fused call and the output cast back.

    In a bf16 model everything else stays bf16 (the projections around it, the FFN, the
    norms); in an fp32 model it is exactly ``sdpa``. On this CPU the fused attention kernel is
    slower in bf16 than in fp32 for heads 16 wide (the student's), so this is the precision
    policy that asks whether attention alone holds the student's bf16 speed back.
    """
    from transformers import AttentionInterface
    from transformers.integrations.sdpa_attention import sdpa_attention_forward
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    def fp32_sdpa(module, query, key, value, attention_mask, **kwargs):
        dtype = query.dtype
        if attention_mask is not None and attention_mask.is_floating_point():
            attention_mask = attention_mask.float()
        output, weights = sdpa_attention_forward(module, query.float(), key.float(),
                                                 value.float(), attention_mask, **kwargs)
        return output.to(dtype), weights

    AttentionInterface.register(FP32_SDPA, fp32_sdpa)
    AttentionMaskInterface.register(FP32_SDPA, sdpa_mask)
    return FP32_SDPA


def build(shape: dict[str, int], attention: str, dtype):
    """A randomly initialised BERT classifier of ``shape`` in eval mode."""
    import torch
    from transformers import BertConfig, BertForSequenceClassification

    if attention == FP32_SDPA:
        register_fp32_sdpa()
    config = BertConfig(vocab_size=shape["vocab"], hidden_size=shape["hidden"],
                        num_hidden_layers=shape["layers"], num_attention_heads=shape["heads"],
                        intermediate_size=shape["ffn"], max_position_embeddings=512,
                        num_labels=2, attn_implementation=attention)
    torch.manual_seed(0)
    return BertForSequenceClassification(config).to(dtype).eval()


def shapes_of(cfg) -> dict[str, dict[str, int]]:
    """The teacher backbone's shape (from its config, no weights loaded) and the student's."""
    from transformers import AutoConfig

    from tinylab.assets import resolve_model_path

    t = AutoConfig.from_pretrained(resolve_model_path(cfg.teacher.model))
    teacher = {"vocab": t.vocab_size, "hidden": t.hidden_size, "layers": t.num_hidden_layers,
               "heads": t.num_attention_heads, "ffn": t.intermediate_size}
    s = cfg.student
    student = {"vocab": t.vocab_size, "hidden": s.hidden_size, "layers": s.num_layers,
               "heads": s.num_heads, "ffn": s.intermediate_size}
    return {"teacher": teacher, "student": student}


def variants(shapes: dict[str, dict[str, int]], compile_models: bool) -> list[dict[str, Any]]:
    """Every (model, attention, heads, compiled) combination measured in each precision."""
    rows = []
    for role in ("teacher", "student"):
        rows.append({"model": role, "variant": "sdpa", "shape": shapes[role],
                     "attention": "sdpa", "compile": False})
        rows.append({"model": role, "variant": "eager", "shape": shapes[role],
                     "attention": "eager", "compile": False})
        rows.append({"model": role, "variant": "sdpa, attention in fp32", "shape": shapes[role],
                     "attention": FP32_SDPA, "compile": False})
        if compile_models:
            rows.append({"model": role, "variant": "sdpa + torch.compile", "shape": shapes[role],
                         "attention": "sdpa", "compile": True})
            rows.append({"model": role, "variant": "sdpa, attention in fp32 + torch.compile",
                         "shape": shapes[role], "attention": FP32_SDPA, "compile": True})
    student = shapes["student"]
    for heads in (6, 4):
        if heads < student["heads"] and student["hidden"] % heads == 0:
            rows.append({"model": "student", "variant": f"sdpa, heads={heads}",
                         "shape": {**student, "heads": heads}, "attention": "sdpa",
                         "compile": False})
    return rows


def measure(rows, precisions, inputs, rounds: int, min_run_time: float) -> dict:
    """Median forward latency (ms) of every row in every precision, rounds interleaved."""
    import torch
    from torch.utils import benchmark

    models = {}
    for row in rows:
        for name, dtype in precisions.items():
            model = build(row["shape"], row["attention"], dtype)
            if row["compile"]:
                model = torch.compile(model)
            with torch.inference_mode():
                for _ in range(3):               # warm-up (compiles on the first call)
                    model(**inputs)
            models[(row["model"], row["variant"], name)] = model
    times: dict[tuple, list[float]] = defaultdict(list)
    for _ in range(rounds):
        for key, model in models.items():
            timer = benchmark.Timer("with torch.inference_mode(): model(**inputs)",
                                    globals={"model": model, "inputs": inputs, "torch": torch},
                                    num_threads=torch.get_num_threads())  # Timer's default: 1
            times[key].append(timer.blocked_autorange(min_run_time=min_run_time).median * 1e3)
    return {key: statistics.median(v) for key, v in times.items()}


def breakdown(shape, attention: str, dtype, inputs, repeats: int = 5) -> dict[str, float]:
    """Self CPU milliseconds per forward pass, by kind of operation (``KINDS``)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    model = build(shape, attention, dtype)
    with torch.inference_mode():
        for _ in range(3):
            model(**inputs)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(repeats):
                model(**inputs)
    kinds: dict[str, float] = defaultdict(float)
    for event in prof.key_averages():
        kinds[KINDS.get(event.key, "other")] += event.self_cpu_time_total / 1e3 / repeats
    return {k: kinds.get(k, 0.0) for k in KIND_ORDER}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--budget", default="quick", choices=sorted(benchlib.BUDGETS))
    parser.add_argument("--length", type=int, default=57,
                        help="tokens per sequence (57: bench/inference.py's batch of 32)")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-run-time", type=float, default=0.5,
                        help="seconds each timing of each model runs for")
    parser.add_argument("--no-compile", dest="compile", action="store_false")
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--output", default=None)
    args = parser.parse_args(argv)
    threads, machine, out, cfg = benchlib.start(args)

    import torch

    from tinylab.device import cpu_supports_bf16

    precisions = {"fp32": torch.float32}
    if cpu_supports_bf16():
        precisions["bf16"] = torch.bfloat16
    else:
        print("this CPU has no native bf16 (avx512_bf16 or AMX): measuring fp32 only")
    shapes = shapes_of(cfg)
    generator = torch.Generator().manual_seed(0)
    inputs = {"input_ids": torch.randint(1000, 2000, (BATCH, args.length), generator=generator),
              "attention_mask": torch.ones(BATCH, args.length, dtype=torch.long)}
    rows = variants(shapes, args.compile)
    latency = measure(rows, precisions, inputs, args.rounds, args.min_run_time)

    teacher_ms = {p: latency[("teacher", "sdpa", p)] for p in precisions}
    table, records = [], []
    for row in rows:
        for p in precisions:
            ms = latency[(row["model"], row["variant"], p)]
            same_variant_teacher = latency.get(("teacher", row["variant"], p), teacher_ms[p])
            record = {"model": row["model"], "variant": row["variant"], "precision": p,
                      "shape": row["shape"], "ms_b32": ms,
                      "bf16_gain": (latency[(row["model"], row["variant"], "fp32")] / ms
                                    if p != "fp32" else 1.0),
                      "speedup_vs_teacher_sdpa": teacher_ms[p] / ms,
                      "speedup_vs_teacher_same_variant": same_variant_teacher / ms}
            records.append(record)
            table.append([row["model"], row["variant"], p, f"{ms:.1f}",
                          f"{record['bf16_gain']:.2f}x" if p != "fp32" else "",
                          f"{record['speedup_vs_teacher_sdpa']:.1f}x"
                          if row["model"] == "student" else "",
                          f"{record['speedup_vs_teacher_same_variant']:.1f}x"
                          if row["model"] == "student" else ""])
    parts = {}
    for role in ("teacher", "student"):
        for p, dtype in precisions.items():
            parts[(role, p)] = breakdown(shapes[role], "sdpa", dtype, inputs)
    part_rows = []
    for (role, p), kinds in parts.items():
        total = sum(kinds.values())
        part_rows.append([role, p, f"{total:.1f}",
                          *(f"{kinds[k]:.1f} ({100 * kinds[k] / total:.0f}%)" for k in KIND_ORDER)])

    lines = [f"### Why bf16 favours the teacher (budget `{args.budget}`)", "",
             f"Command: `{benchlib.command_line()}`  ",
             f"Random weights, the shapes of the budget's teacher "
             f"(L{shapes['teacher']['layers']}-H{shapes['teacher']['hidden']}, "
             f"{shapes['teacher']['heads']} heads, FFN {shapes['teacher']['ffn']}) and student "
             f"(L{shapes['student']['layers']}-H{shapes['student']['hidden']}, "
             f"{shapes['student']['heads']} heads, FFN {shapes['student']['ffn']}); one batch of "
             f"{BATCH} x {args.length} tokens; median over {args.rounds} interleaved rounds of "
             f"`torch.utils.benchmark` medians; {threads} thread(s).  ",
             benchlib.machine_line(machine), "",
             benchlib.markdown_table(
                 ["model", "variant", "precision", "ms @ batch 32", "bf16 vs fp32",
                  "speed-up vs teacher (sdpa)", "speed-up vs teacher (same variant)"], table,
                 align="lllrrrr"),
             "", "Self CPU time of one forward pass by kind of operation (ms, share), "
             "`sdpa` attention, from `torch.profiler`:", "",
             benchlib.markdown_table(["model", "precision", "total ms", *KIND_ORDER], part_rows,
                                     align="llr" + "r" * len(KIND_ORDER))]
    text = "\n".join(lines) + "\n"
    print(text)
    benchlib.write_text(out / "bf16_gap.md", text)
    benchlib.write_json(out / "bf16_gap.json", {
        "machine": machine, "threads": threads, "length": args.length, "batch": BATCH,
        "rounds": args.rounds, "shapes": shapes, "latency": records,
        "breakdown": [{"model": r, "precision": p, "ms": k} for (r, p), k in parts.items()]})
    return 0


if __name__ == "__main__":
    sys.exit(main())
