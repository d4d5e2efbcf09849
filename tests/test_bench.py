"""Smoke tests of the benchmark scripts in bench/: each runs end to end on a tiny budget.

The scripts are run as a user runs them (``python bench/<script>.py ...`` in a subprocess),
with the ``ci`` budget cut further by overrides, and their outputs are checked for content,
not just existence. The numbers themselves mean nothing at this size.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import bench_script

REPO = Path(__file__).resolve().parents[1]
BENCH = REPO / "bench"
# Every training stage of the ci profile cut to 2 optimiser steps.
TINY = [f"--set={key}.max_steps=2" for key in
        ("teacher", "general", "task_intermediate", "task_prediction")]

pytestmark = pytest.mark.slow


def run(script: str, *args: str, cache: Path | None = None, timeout: int = 900
        ) -> subprocess.CompletedProcess:
    env = {**os.environ, "TQDM_DISABLE": "1"}
    if cache is not None:
        env["TINYLAB_CACHE"] = str(cache)
    proc = subprocess.run([sys.executable, str(BENCH / script), *args], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=timeout)
    assert proc.returncode == 0, f"{script} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.fixture()
def bench_cache(isolated_cache: Path, teacher_asset_dir: Path) -> Path:
    """An empty cache that still sees the verified offline assets (no download)."""
    isolated_cache.mkdir(parents=True, exist_ok=True)
    (isolated_cache / "assets").symlink_to(teacher_asset_dir.parent, target_is_directory=True)
    return isolated_cache


def test_ablations_runs_resumes_and_tabulates(tmp_path, bench_cache):
    out = tmp_path / "results"
    args = ["--budget", "ci", "--seeds", "1", "--variants", "full,gold", "--output", str(out),
            *TINY]
    first = run("ablations.py", *args, cache=bench_cache)
    assert "0 of 2 runs already done" in first.stdout

    runs = {p.stem: json.loads(p.read_text()) for p in (out / "ablation_runs").glob("*.json")}
    assert set(runs) == {"full__seed42", "gold__seed42"}
    full, gold = runs["full__seed42"], runs["gold__seed42"]
    correct = full["test"]["accuracy"] * full["test"]["n"]      # a count of right answers
    assert full["test"]["n"] > 0 and abs(correct - round(correct)) < 1e-6
    assert set(full["stages"]) == {"intermediate", "prediction"}  # GD is shared, not re-run
    assert full["general_student"]["steps"] == 2
    assert set(gold["stages"]) == {"gold"}
    # the baseline gets as many optimiser steps as full TinyBERT's two task stages
    assert gold["stages"]["gold"]["steps"] == (full["stages"]["intermediate"]["steps"]
                                               + full["stages"]["prediction"]["steps"])
    assert full["budget"]["budget"] == "ci" and "teacher.max_steps=2" in full["budget"]["overrides"]

    table = (out / "ablations.md").read_text()
    assert "budget `ci`" in table and "`full`" in table and "`gold`" in table
    result = json.loads((out / "ablations.json").read_text())
    assert set(result["variants"]) == {"full", "gold"}
    assert result["variants"]["gold"]["delta"] == pytest.approx(
        result["variants"]["gold"]["accuracy_mean"] - result["variants"]["full"]["accuracy_mean"])
    assert (out / "ablations.png").stat().st_size > 0

    second = run("ablations.py", *args, cache=bench_cache)  # resumable: nothing is redone
    assert "2 of 2 runs already done; 0 to run" in second.stdout


def test_shapes_times_trains_and_tabulates(tmp_path, bench_cache):
    out = tmp_path / "results"
    proc = run("shapes.py", "--budget", "ci", "--shapes", "L1-H24-F48,L2-H24-F48", "--seeds", "1",
               "--rounds", "1", "--repeats", "1", "--output", str(out), *TINY, cache=bench_cache)
    result = json.loads((out / "shapes.json").read_text())
    assert result["shapes"] == ["L1-H24-F48", "L2-H24-F48"]
    for shape in result["shapes"]:
        speed = result["speed"]["speedup"][shape]["fp32"]
        # a 1-2 layer, 24-wide student beats the 6-layer, 384-wide teacher
        assert speed["batch 32"] > 1 and speed["batch 1"] > 0
        run_file = out / "shapes" / shape / "ablation_runs" / "full__seed42.json"
        record = json.loads(run_file.read_text())
        assert record["config"]["student"]["hidden_size"] == 24
        assert result["accuracy"][shape]["runs"][0]["accuracy"] == record["test"]["accuracy"]
    assert result["speed"]["params"]["L1-H24-F48"]["non_embedding"] < result["speed"]["params"][
        "L2-H24-F48"]["non_embedding"]
    table = (out / "shapes.md").read_text()
    assert "| L1-H24-F48 |" in table and "speed-up @ 32, fp32" in table
    assert (out / "shapes.png").stat().st_size > 0
    assert "shapes: timing the teacher and 2 shape(s)" in proc.stdout
    bad = subprocess.run([sys.executable, str(BENCH / "shapes.py"), "--shapes", "L2-H100-F48"],
                         cwd=REPO, capture_output=True, text=True)
    assert bad.returncode != 0 and "multiple of the teacher's 12 attention heads" in bad.stderr


def test_ablations_rejects_unknown_variant(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "ablations.py"), "--variants", "full,nope",
                           "--output", str(tmp_path)], cwd=REPO, capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown variant(s) ['nope']" in proc.stderr


def test_run_all_speed_and_inference(tmp_path, bench_cache, tiny_teacher_dir, tiny_bert_dir):
    """run_all.py drives speed.py (real models, 16 examples) and inference.py (tiny saved
    BERTs) end to end and collects their fragments."""
    out = tmp_path / "results"
    run("run_all.py", "--budget", "ci", "--only", "speed,inference", "--output", str(out),
        "--pass", "speed=--examples 16 --epochs 2 --stages general,prediction "
                  "--settings optimised,no_reuse --peak-size 256",
        "--pass", f"inference=--teacher {tiny_teacher_dir} --student {tiny_bert_dir} "
                  "--rounds 1 --repeats 1", cache=bench_cache)

    speed = json.loads((out / "speed.json").read_text())
    from tinylab.device import cpu_supports_bf16

    bf16 = cpu_supports_bf16()
    runs = {(r["stage"], r["setting"], r["precision"]): r for r in speed["runs"]}
    assert set(runs) == {(s, t, "fp32") for s in ("general", "prediction")
                         for t in ("optimised", "no_reuse")} | (
        {(s, "optimised", "bf16") for s in ("general", "prediction")} if bf16 else set())
    for (stage, setting, _), r in runs.items():
        assert r["steps"] == 2 and r["examples"] == 32  # 16 examples, batch 32, 2 epochs
        assert r["teacher_outputs"] == ("cache" if setting == "optimised" else "on-the-fly")
        assert r["padded_tokens"] >= r["real_tokens"] > 0
        assert r["flops"]["trained_model"] > 0 and r["flops"]["teacher"] > 0
        parts = r["parts_seconds"]
        assert parts["student_forward"] > 0 and parts["backward"] > 0
        assert parts["teacher_forward"] > 0
        assert sum(parts.values()) == pytest.approx(r["seconds"], rel=0.02)
    # reused outputs: the teacher runs once per example instead of once per batch and epoch
    assert (runs[("prediction", "optimised", "fp32")]["flops"]["teacher"]
            < runs[("prediction", "no_reuse", "fp32")]["flops"]["teacher"])
    assert set(speed["peaks"]) == ({"fp32", "bf16"} if bf16 else {"fp32"})
    assert all(p["flops_per_s"] > 0 for p in speed["peaks"].values())

    inference = json.loads((out / "inference.json").read_text())
    rows = inference["models"]
    assert set(rows) == {f"{m} {w}" for m in ("teacher", "student")
                         for w in ("fp32", "int8", *(("bf16",) if bf16 else ()))}
    if bf16:  # half the bytes of fp32 (save format overhead aside), same predictions mostly
        for name in ("teacher", "student"):
            assert rows[f"{name} bf16"]["size_bytes"] < 0.6 * rows[f"{name} fp32"]["size_bytes"]
    assert rows["teacher fp32"]["speedup_b1"] == pytest.approx(1.0)
    for name in ("teacher", "student"):
        assert rows[f"{name} int8"]["size_bytes"] < rows[f"{name} fp32"]["size_bytes"]
        assert rows[f"{name} fp32"]["safetensors_bytes"] > 0
        assert rows[f"{name} int8"]["params"] == rows[f"{name} fp32"]["params"]
        for b in ("1", "32"):
            assert rows[f"{name} fp32"]["latency"][b]["median_ms"] > 0
    assert (out / "inference.png").stat().st_size > 0

    text = (out / "RESULTS.md").read_text()
    assert text.startswith("## Results (budget `ci`)")
    assert "### Distillation speed (budget `ci`)" in text and "GEMM" in text
    assert "| prediction | no_reuse |" in text and "| student | int8 dynamic |" in text
    assert "### Ablations" not in text  # not selected with --only


def _fake_report(folder: Path, seed: int, student: float, amazon: float,
                 general_steps: int = 250) -> Path:
    """The parts of a ``tinylab distill`` report.json that pipeline_levers.py reads."""
    folder.mkdir(parents=True)
    report = {"config": {"seed": seed, "general": {"max_steps": general_steps}},
              "summary": {"teacher_accuracy": 0.8, "student_accuracy": student,
                          "accuracy_retained": student / 0.8, "speedup_b32": 10.0 + seed % 2},
              "out_of_domain": {"amazon": {"retained": amazon}},
              "timings": {"total_seconds": 300.0}}
    (folder / "report.json").write_text(json.dumps(report))
    return folder


def test_pipeline_levers_tabulates_seeds_and_refuses_mixed_settings(tmp_path):
    a = _fake_report(tmp_path / "a", 42, 0.76, 0.90)
    b = _fake_report(tmp_path / "b", 43, 0.80, 0.94)
    out = tmp_path / "out"
    proc = subprocess.run([sys.executable, str(BENCH / "pipeline_levers.py"),
                           "--group", f"base={a},{b}", "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    row = json.loads((out / "levers.json").read_text())[0]
    # two runs: mean 0.78, sample sd |0.80 - 0.76| / sqrt(2)
    assert row["student_accuracy"]["mean"] == pytest.approx(0.78)
    assert row["student_accuracy"]["sd"] == pytest.approx(0.04 / 2 ** 0.5)
    assert row["kept_amazon"]["values"] == [0.90, 0.94] and row["seeds"] == [42, 43]
    assert "| base | 42, 43 | 80.0 ± 0.0 | 78.0 ± 2.8 | 97.5 ± 3.5 | 10.5x ± 0.7 | 92.0 ± 2.8 |" \
        in (out / "levers.md").read_text()

    other = _fake_report(tmp_path / "c", 44, 0.79, 0.91, general_steps=750)
    proc = subprocess.run([sys.executable, str(BENCH / "pipeline_levers.py"),
                           "--group", f"mixed={a},{other}", "--output", str(out)],
                          cwd=REPO, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "differs from" in proc.stderr and "general" in proc.stderr


def test_pipeline_levers_reads_a_setting_a_report_predates_at_its_default(tmp_path):
    """A run made before ``augment.filter_neighbours`` existed groups with one that has it at
    its default (False), not with one that turned it on."""
    before = _fake_report(tmp_path / "before", 42, 0.76, 0.90)
    report = json.loads((before / "report.json").read_text())
    report["config"]["augment"] = {"n_aug": 4}
    (before / "report.json").write_text(json.dumps(report))
    runs = {}
    for name, value in (("default", False), ("on", True)):
        run_dir = _fake_report(tmp_path / name, 43, 0.80, 0.94)
        report = json.loads((run_dir / "report.json").read_text())
        report["config"]["augment"] = {"n_aug": 4, "filter_neighbours": value}
        (run_dir / "report.json").write_text(json.dumps(report))
        runs[name] = run_dir
    levers = bench_script("pipeline_levers")
    row = levers.group_row("same", [levers.load_report(f) for f in (before, runs["default"])],
                           [before, runs["default"]])
    assert row["seeds"] == [42, 43]
    with pytest.raises(ValueError, match="differs from .* in augment, not just the seed"):
        levers.group_row("mixed", [levers.load_report(f) for f in (before, runs["on"])],
                         [before, runs["on"]])


def test_bf16_gap_times_shapes_and_breaks_down_a_forward_pass(tmp_path, bench_cache):
    """bf16_gap.py measures the ci shapes in every precision the CPU has, with their variants,
    and splits a forward pass into kinds of operations that add up to its profiled time."""
    out = tmp_path / "results"
    run("bf16_gap.py", "--budget", "ci", "--rounds", "1", "--min-run-time", "0.01",
        "--length", "8", "--no-compile", "--output", str(out), cache=bench_cache)
    from tinylab.device import cpu_supports_bf16

    result = json.loads((out / "bf16_gap.json").read_text())
    precisions = {"fp32", "bf16"} if cpu_supports_bf16() else {"fp32"}
    rows = {(r["model"], r["variant"], r["precision"]): r for r in result["latency"]}
    assert {p for _, _, p in rows} == precisions
    assert {(m, v) for m, v, _ in rows} == {
        ("teacher", "sdpa"), ("teacher", "eager"), ("teacher", "sdpa, attention in fp32"),
        ("student", "sdpa"), ("student", "eager"), ("student", "sdpa, attention in fp32"),
        ("student", "sdpa, heads=6"), ("student", "sdpa, heads=4")}
    assert result["shapes"]["student"]["hidden"] == 96 and result["shapes"]["student"]["layers"] == 2
    for r in rows.values():
        assert r["ms_b32"] > 0
        if r["model"] == "teacher" and r["variant"] == "sdpa":
            assert r["speedup_vs_teacher_sdpa"] == pytest.approx(1.0)
    assert rows[("student", "sdpa, heads=4", "fp32")]["shape"]["heads"] == 4
    for part in result["breakdown"]:
        assert part["ms"]["matmul"] > 0 and all(v >= 0 for v in part["ms"].values())
    text = (out / "bf16_gap.md").read_text()
    assert text.startswith("### Why bf16 favours the teacher (budget `ci`)")
    assert "| student | sdpa, heads=4 | fp32 |" in text and "norm and element-wise" in text


def test_fp32_attention_in_a_bf16_model_is_sdpa_with_its_inputs_upcast():
    """The "attention in fp32" variant of bf16_gap.py against an independent reference: in an
    fp32 model it is sdpa exactly; in a bf16 model each layer's attention equals the fp32
    attention of the bf16 query, key and value, cast back to bf16."""
    import torch
    import torch.nn.functional as F

    from conftest import bench_script

    gap = bench_script("bf16_gap")
    shape = {"vocab": 50, "hidden": 32, "layers": 2, "heads": 4, "ffn": 64}
    inputs = {"input_ids": torch.randint(1, 50, (3, 7), generator=torch.Generator().manual_seed(0)),
              "attention_mask": torch.tensor([[1] * 7, [1] * 5 + [0] * 2, [1] * 3 + [0] * 4])}
    with torch.inference_mode():
        fp32 = gap.build(shape, gap.FP32_SDPA, torch.float32)(**inputs).logits
        reference = gap.build(shape, "sdpa", torch.float32)(**inputs).logits
    torch.testing.assert_close(fp32, reference, rtol=0, atol=0)

    attention = gap.build(shape, gap.FP32_SDPA, torch.bfloat16).bert.encoder.layer[0].attention.self
    q = torch.randn(3, 4, 7, 8, dtype=torch.bfloat16, generator=torch.Generator().manual_seed(1))
    k, v = q.flip(0), q.flip(2)
    from transformers import AttentionInterface

    out, _ = AttentionInterface()[gap.FP32_SDPA](attention, q, k, v, None, scaling=8 ** -0.5)
    expected = F.scaled_dot_product_attention(q.float(), k.float(), v.float(),
                                              scale=8 ** -0.5).to(torch.bfloat16)
    torch.testing.assert_close(out, expected.transpose(1, 2), rtol=0, atol=0)
    assert out.dtype == torch.bfloat16


def test_teacher_head_trains_both_heads_and_its_cls_row_is_the_course_teacher(tmp_path,
                                                                              bench_cache):
    """teacher_head.py fine-tunes the teacher with each pooling; its `cls` run is exactly what
    finetune_teacher trains (same seed, same recipe), so the two rows differ only in the head."""
    out = tmp_path / "results"
    run("teacher_head.py", "--budget", "ci", "--seeds", "1", "--set", "teacher.max_steps=2",
        "--output", str(out), cache=bench_cache)
    result = json.loads((out / "teacher_head.json").read_text())
    runs = {r["head"]: r for r in result["runs"]}
    assert set(runs) == {"cls", "mean"} and all(r["steps"] == 2 for r in runs.values())

    from tinylab.config import get_config
    from tinylab.data import load_task, tokenize
    from tinylab.distill import RunOptions, finetune_teacher
    from tinylab.evaluate import evaluate_model

    cfg = get_config("ci", ["teacher.max_steps=2", "seed=42"])
    data = load_task(cfg.data)
    teacher, tokenizer, _ = finetune_teacher(cfg, data, cache=False,
                                             run=RunOptions(progress=False))
    course = evaluate_model(teacher, tokenize(data["test"], tokenizer, cfg.data.max_length),
                            tokenizer, batch_size=cfg.eval_batch_size)
    assert runs["cls"]["test_accuracy"] == course["accuracy"]
    assert runs["cls"]["test_macro_f1"] == course["macro_f1"]
    text = (out / "teacher_head.md").read_text()
    assert text.startswith("### The teacher's head: pooler on [CLS] or mean of the tokens")
    assert "| cls | 42 |" in text and "| mean | 42 |" in text


def test_teacher_head_rejects_an_unknown_head(tmp_path):
    proc = subprocess.run([sys.executable, str(BENCH / "teacher_head.py"), "--heads", "cls,max",
                           "--output", str(tmp_path)], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 2 and "'cls,max'" in proc.stderr and "cls, mean" in proc.stderr


def test_dropout_cost_times_every_variant_of_the_student(tmp_path, bench_cache):
    out = tmp_path / "dropout"
    proc = run("dropout_cost.py", "--budget", "ci", "--rounds", "1", "--batches", "1",
               "--models", "student", "--output", str(out), cache=bench_cache)
    result = json.loads((out / "dropout_cost.json").read_text())
    variants = {f"{m}, {v}" for m in ("student",)
                for v in ("as configured", "attention probabilities off", "everything else off",
                          "all off")}
    assert set(result["ms_per_step"]) == variants
    assert all(ms > 0 for ms in result["ms_per_step"].values())
    assert set(result["dropout_share"]) == {"student"}
    assert "Dropout's masks take" in proc.stdout and "of the student's training step" in proc.stdout
    assert (out / "dropout_cost.md").read_text().startswith("### What dropout costs")
