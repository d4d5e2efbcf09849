"""Data-parallel training on two CPU processes (torchrun + Accelerate, gloo backend).

Two checks: the distillation stages give the processes disjoint shares of the data that
together cover it, and keep both processes' weights identical (gradients of the student AND of
the loss module's projections are averaged); and ``tinylab distill`` under
``torchrun --nproc_per_node 2`` completes with only the main process writing and printing.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

TINY_STUDENT = ["student.num_layers=2", "student.hidden_size=32", "student.num_heads=4",
                "student.intermediate_size=64"]


def torchrun(args: list[str], cwd: Path, env_extra: dict[str, str], timeout: int = 600):
    env = {**os.environ, "TQDM_DISABLE": "1", "TRANSFORMERS_VERBOSITY": "error",
           "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", **env_extra}
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
           "2", *args]
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True,
                          timeout=timeout)
    assert proc.returncode == 0, f"torchrun failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


SCRIPT = """
import json, sys, torch
from datasets import ClassLabel, Dataset, Features, Value
from tinylab.config import get_config
from tinylab.distill import make_accelerator, task_distillation
from tinylab.models import build_student, load_teacher

teacher_dir, out = sys.argv[1], sys.argv[2]
acc = make_accelerator()
words = "the film movie good great bad awful fine funny boring dull smart moving".split()
texts = [" ".join(words[(i * 7 + j * 3) % len(words)] for j in range(3 + i % 9)) for i in range(64)]
feats = Features({"text": Value("string"), "label": ClassLabel(names=["negative", "positive"])})
train = Dataset.from_dict({"text": texts, "label": [int("good" in t) for t in texts]}, features=feats)
cfg = get_config("ci", {"student.num_layers": 2, "student.hidden_size": 32, "student.num_heads": 4,
                        "student.intermediate_size": 64, "student.init": "random",
                        "task_intermediate.batch_size": 8, "task_prediction.batch_size": 8,
                        "data.max_length": 16})
import tinylab.distill.stages as stages
made = []  # keep the loss module: its projections W_e, W_h are trained too
seen = []  # the example ids this process trains on in stage a
layer_loss = stages.layer_loss_fn
def recording(*a, **k):
    fn = layer_loss(*a, **k)
    def loss_fn(m, batch):
        seen.extend(batch["example_idx"].tolist())
        return fn(m, batch)
    return loss_fn
stages.layer_loss_fn = recording
build_loss = stages.loss_module
stages.loss_module = lambda *a, **k: made.append(build_loss(*a, **k)) or made[-1]
teacher, tok = load_teacher(teacher_dir, id2label=["negative", "positive"])
torch.manual_seed(0)
student = build_student(teacher, cfg.student, id2label=["negative", "positive"])
from tinylab.distill import RunOptions
from tinylab.evaluate import evaluate_model
hist = task_distillation(cfg, teacher, student, train, train, tokenizer=tok,
                         run=RunOptions(accelerator=acc, progress=False))
# 52 rows in batches of 8 = 7 batches: the second process's 4th batch repeats rows, which
# gather_for_metrics must drop
held_out = train.select(range(52))
sharded = evaluate_model(student, held_out, tok, batch_size=8, max_length=16, accelerator=acc)
alone = evaluate_model(student, held_out, tok, batch_size=8, max_length=16)
params = [*student.parameters(), *made[0].parameters()]
flat = torch.cat([p.detach().flatten() for p in params])
digests = acc.gather(torch.stack([flat.sum(), flat.abs().sum(), flat.pow(2).sum()])[None])
from accelerate.utils import gather_object
per_rank = gather_object([seen])
info = {name: h[name].info for name, h in hist.items()}
evals = {name: h[name].evals for name, h in hist.items()}
if acc.is_main_process:
    json.dump({"digests": digests.tolist(), "info": info, "evals": evals, "seen": per_rank,
               "rank": acc.process_index, "world": acc.num_processes, "sharded": sharded,
               "alone": alone}, open(out, "w"))
else:
    json.dump({"evals": evals, "sharded": sharded}, open(out + ".rank1", "w"))
"""


def test_two_processes_keep_identical_weights(tiny_teacher_dir, tmp_path):
    script = tmp_path / "dp.py"
    script.write_text(textwrap.dedent(SCRIPT))
    out = tmp_path / "result.json"
    torchrun([str(script), str(tiny_teacher_dir), str(out)], cwd=tmp_path,
             env_extra={"TINYLAB_CACHE": str(tmp_path / "cache")})
    result = json.loads(out.read_text())
    assert result["world"] == 2
    rank0, rank1 = result["digests"]
    assert rank0 == rank1  # DDP kept the replicas (student and projections) in lockstep
    # ... while each process trained on its own examples: disjoint shares that cover the data
    # (equal weights alone would also follow if both had trained on the same batches).
    seen0, seen1 = (set(ids) for ids in result["seen"])
    assert seen0 and seen1 and not seen0 & seen1
    assert seen0 | seen1 == set(range(64))
    for name in ("intermediate", "prediction"):
        info = result["info"][name]
        # 64 examples / batch 8 = 8 batches per epoch, shared by 2 processes -> 4 steps
        assert info["processes"] == 2 and info["steps_per_epoch"] == 4
    # evaluations: each process predicts its share, gather_for_metrics joins them, so both
    # processes log the same scores
    rank1 = json.loads((tmp_path / "result.json.rank1").read_text())
    assert rank1["evals"] == result["evals"] and result["evals"]["prediction"]
    # ... and they equal a single process's evaluation of the same model: all 52 rows once,
    # the padding rows of the uneven last round dropped
    assert result["sharded"]["n"] == rank1["sharded"]["n"] == result["alone"]["n"] == 52
    assert result["sharded"]["confusion"] == rank1["sharded"]["confusion"]
    assert result["sharded"]["confusion"] == result["alone"]["confusion"]


def test_cli_distill_under_torchrun(tiny_teacher_dir, teacher_asset_dir, tmp_path):
    """``torchrun --nproc_per_node 2 -m tinylab distill --profile ci`` (tiny teacher, real data)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    (cache / "assets").symlink_to(teacher_asset_dir.parent, target_is_directory=True)
    out = tmp_path / "run"
    sets = [f"teacher.model={tiny_teacher_dir}", *TINY_STUDENT, "data.train_size=128",
            "data.general_size=128", "augment.enabled=false"]
    proc = torchrun(["-m", "tinylab", "distill", "--profile", "ci", "--output", str(out),
                     *[a for s in sets for a in ("--set", s)]], cwd=tmp_path,
                    env_extra={"TINYLAB_CACHE": str(cache)})
    assert proc.stdout.count("speed-up @ 32") == 1  # one results table: the main process's
    assert "2 process(es)" in proc.stdout
    report = json.loads((out / "report.json").read_text())
    assert report["processes"] == 2
    assert all(stage["processes"] == 2 for stage in report["stages"].values())
    assert sorted(p.name for p in out.iterdir()) == [
        ".tinylab-run.json", "accuracy_latency.png", "history.json", "history.png",
        "report.json", "student", "teacher"]  # checkpoints removed after success, no
    # temporary leftovers; the marker says tinylab owns the folder
