"""Does the teacher do better with the head its backbone was trained for?

    .venv/bin/python bench/teacher_head.py [--budget quick] [--seeds 2]

all-MiniLM-L6-v2 was trained (by sentence-transformers) to give sentence embeddings as the
*mean* of its last hidden states over the real tokens. ``BertForSequenceClassification``, the
course's teacher, classifies from BERT's pooler instead: ``tanh(W_p h_[CLS] + b_p)``, a layer
the sentence-embedding training never used. This script fine-tunes the teacher both ways with
the budget's own recipe (``finetune_teacher``'s stage: epochs, learning rate, batch, warm-up,
precision) and compares test accuracy:

* ``cls``: the pooler on ``[CLS]``, exactly what ``tinylab.distill.finetune_teacher`` trains;
* ``mean``: the classifier on the masked mean of the last hidden states,
  ``sum_t m_t h_t / sum_t m_t`` (:func:`mean_pool`), the pooler left out.

Both start from the same backbone and the same seeded classifier weights; only the pooling
differs. One process per run. Outputs ``results/<budget>/teacher_head.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch
from torch import nn

import benchlib

FIRST_SEED = 42
HEADS = ("cls", "mean")


def mean_pool(hidden: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``hidden`` (B, T, H) over the real tokens of ``attention_mask`` (B, T): (B, H).

    ``sum_t m_t h_t / sum_t m_t``, the pooling all-MiniLM-L6-v2 was trained with (padding
    contributes nothing; ``[CLS]`` and ``[SEP]`` count as tokens, as in sentence-transformers).
    """
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class MeanPooledClassifier(nn.Module):
    """A ``BertForSequenceClassification`` whose classifier reads the mean of the last hidden
    states instead of the pooler's ``[CLS]`` vector. It reuses the model's backbone
    (``bert``), dropout and classifier, so the two heads compared start from the same weights.
    ``forward`` takes the usual inputs and returns an object with ``.logits`` (B, num_labels).
    """

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        self.config = model.config

    def forward(self, input_ids, attention_mask=None, token_type_ids=None, **_):
        from transformers.modeling_outputs import SequenceClassifierOutput

        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        hidden = self.model.bert(input_ids=input_ids, attention_mask=attention_mask,
                                 token_type_ids=token_type_ids).last_hidden_state
        pooled = mean_pool(hidden, attention_mask)
        return SequenceClassifierOutput(logits=self.model.classifier(self.model.dropout(pooled)))


def one_run(budget: str, head: str, seed: int, overrides: list[str]) -> dict:
    """Fine-tune one teacher with ``head`` pooling; its validation curve and test accuracy."""
    benchlib.quiet_libraries()
    import torch.nn.functional as F
    from accelerate.utils import set_seed

    from tinylab.data import load_task, tokenize
    from tinylab.device import resolve_device_and_precision
    from tinylab.distill import RunOptions, train_stage
    from tinylab.distill.loop import model_inputs
    from tinylab.distill.stage_parts import accuracy_fn, training_set
    from tinylab.distill.stages import _teacher_stage
    from tinylab.evaluate import evaluate_model
    from tinylab.models import load_teacher

    cfg = benchlib.budget_config(budget, (*overrides, f"seed={seed}"))
    data = load_task(cfg.data)
    labels = data["train"].features["label"].names
    set_seed(cfg.seed)  # the classification head is drawn from the seeded generator
    model, tokenizer = load_teacher(cfg.teacher.model, num_labels=len(labels), id2label=labels)
    net = model if head == "cls" else MeanPooledClassifier(model)
    run = RunOptions(progress=False).with_accelerator(cfg)
    train = training_set(data["train"], tokenizer, cfg.data.max_length, labels=True)

    def loss_fn(m, batch):
        return {"total": F.cross_entropy(m["teacher"](**model_inputs(batch)).logits,
                                         batch["labels"])}

    net.train()
    history = train_stage("teacher", modules={"teacher": net}, loss_fn=loss_fn, train=train,
                          tokenizer=tokenizer, stage=_teacher_stage(cfg), seed=cfg.seed,
                          evaluate=accuracy_fn(net, data["validation"], tokenizer, cfg,
                                               run.accelerator),
                          run=run, group_by_length=cfg.group_by_length)
    log = history["teacher"]
    test = evaluate_model(net.eval(), tokenize(data["test"], tokenizer, cfg.data.max_length),
                          tokenizer, batch_size=cfg.eval_batch_size)
    _, precision = resolve_device_and_precision(cfg.device, cfg.precision)
    return {"head": head, "seed": seed, "precision": precision, "steps": len(log.steps),
            "validation_accuracy": log.evals[-1]["accuracy"] if log.evals else None,
            "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"],
            "n_test": test["n"], "train_seconds": log.seconds}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--budget", default="quick", choices=tuple(benchlib.BUDGETS))
    p.add_argument("--seeds", type=int, default=2)
    p.add_argument("--heads", default=",".join(HEADS), help="comma-separated: cls,mean")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="more config overrides (e.g. teacher.epochs=2)")
    p.add_argument("--output", type=Path, default=None)
    p.add_argument("--one", default=None, help=argparse.SUPPRESS)  # internal: "head:seed"
    args = p.parse_args(argv)
    heads = [h.strip() for h in args.heads.split(",") if h.strip()]
    unknown = sorted(set(heads) - set(HEADS))
    if unknown or not heads:
        p.error(f"--heads {args.heads!r}: choose from {', '.join(HEADS)}")
    if args.one is not None:
        head, seed = args.one.split(":")
        print(json.dumps(one_run(args.budget, head, int(seed), args.set)))
        return 0

    out = benchlib.results_dir(args.budget, args.output)
    machine = benchlib.machine_info()
    start = time.perf_counter()
    runs = []
    for seed in range(FIRST_SEED, FIRST_SEED + args.seeds):
        for head in heads:
            cmd = [sys.executable, __file__, "--budget", args.budget, "--one", f"{head}:{seed}"]
            for item in args.set:
                cmd += ["--set", item]
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                sys.stderr.write(done.stderr[-4000:])
                raise SystemExit(f"teacher_head.py: the {head} run with seed {seed} failed")
            runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
            r = runs[-1]
            print(f"{head:>4}, seed {seed}: test accuracy {r['test_accuracy']:.4f}, "
                  f"{r['steps']} steps, {r['train_seconds']:.0f} s", flush=True)
    result = {"budget": benchlib.budget_record(args.budget, args.set), "heads": heads,
              "command": benchlib.command_line(), "machine": machine, "runs": runs,
              "wall_seconds": time.perf_counter() - start}
    benchlib.write_json(out / "teacher_head.json", result)
    benchlib.write_text(out / "teacher_head.md", markdown(result))
    print(markdown(result))
    return 0


def _mean_sd(values: list[float]) -> str:
    mean = 100 * statistics.fmean(values)
    return f"{mean:.2f}" + (f" ± {100 * statistics.stdev(values):.2f}" if len(values) > 1 else "")


def markdown(result: dict) -> str:
    rows = []
    for head in result["heads"]:
        runs = [r for r in result["runs"] if r["head"] == head]
        per_seed = ", ".join(f"{100 * r['test_accuracy']:.2f}" for r in runs)
        rows.append([head, ", ".join(str(r["seed"]) for r in runs),
                     _mean_sd([r["test_accuracy"] for r in runs]), per_seed,
                     _mean_sd([r["test_macro_f1"] for r in runs]),
                     f"{statistics.fmean(r['train_seconds'] for r in runs):.0f}"])
    table = benchlib.markdown_table(
        ["head", "seeds", "test accuracy % (mean ± sd)", "per seed", "macro-F1 %",
         "training s (mean)"], rows, "llrrrr")
    budget = result["budget"]
    return "\n".join([
        "### The teacher's head: pooler on [CLS] or mean of the tokens", "",
        f"Command: `{result['command']}`  ",
        f"Budget `{budget['budget']}` (profile `{budget['profile']}`"
        + (f", overrides `{' '.join(budget['overrides'])}`" if budget["overrides"] else "")
        + f"); test split of {result['runs'][0]['n_test']} examples; "
        f"precision {result['runs'][0]['precision']}.  ",
        benchlib.machine_line(result["machine"]), "",
        table, "",
        "`cls`: BERT's pooler on the [CLS] vector (the course's teacher, "
        "`BertForSequenceClassification`); `mean`: the same classifier on the masked mean of "
        "the last hidden states, the pooling the backbone was trained with. Same backbone, "
        "same seeded classifier weights, same training recipe.", ""])


if __name__ == "__main__":
    sys.exit(main())
