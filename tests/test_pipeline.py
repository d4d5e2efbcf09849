"""tinylab.pipeline.run_pipeline / ``tinylab distill``: outputs, report, resume, the ci profile."""
from __future__ import annotations

import json

import pytest
import torch

from tinylab.config import get_config
from tinylab.distill import History
from tinylab.pipeline import results_table, run_pipeline

TINY = {"student.num_layers": 2, "student.hidden_size": 32, "student.num_heads": 4,
        "student.intermediate_size": 64, "data.train_size": 96, "data.validation_size": 32,
        "data.test_size": 32, "data.general_size": 64, "augment.max_examples": 32,
        "augment.n_aug": 1, "task_intermediate.epochs": 2.0}


class Interrupt(RuntimeError):
    pass


@pytest.fixture()
def asset_cache(isolated_cache, teacher_asset_dir):
    """An empty private cache that still sees the verified offline assets."""
    isolated_cache.mkdir(parents=True, exist_ok=True)
    (isolated_cache / "assets").symlink_to(teacher_asset_dir.parent, target_is_directory=True)
    return isolated_cache


def _weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "model.safetensors"))


def test_pipeline_outputs_and_exact_resume(tiny_teacher_dir, asset_cache, tmp_path, capsys):
    cfg = get_config("ci", {**TINY, "teacher.model": str(tiny_teacher_dir)})
    report = run_pipeline(cfg, tmp_path / "clean", progress=False)
    out = tmp_path / "clean"
    assert sorted(p.name for p in out.iterdir()) == [
        ".tinylab-run.json", "accuracy_latency.png", "history.json", "history.png",
        "report.json", "student", "teacher"]
    assert report["training_device"].startswith("cpu")
    printed = capsys.readouterr().out
    assert "speed-up @ 32" in printed and "student keeps" in printed
    saved = json.loads((out / "report.json").read_text())
    assert saved["summary"] == report["summary"]
    for name in ("teacher", "student"):
        row = saved["models"][name]
        confusion = row["confusion"]
        assert sum(map(sum, confusion)) == saved["test_examples"] == 32
        correct = sum(confusion[i][i] for i in range(len(confusion)))
        assert row["accuracy"] == pytest.approx(correct / 32)   # the counts agree with it
    assert saved["summary"]["accuracy_retained"] == pytest.approx(
        saved["models"]["student"]["accuracy"] / saved["models"]["teacher"]["accuracy"])
    assert set(saved["timings"]["stage_training_seconds"]) == {"teacher", "general",
                                                               "intermediate", "prediction"}
    assert saved["timings"]["wall_seconds"]["teacher"]["cached"] is False
    assert {"torch", "transformers", "accelerate", "python"} <= set(saved["versions"])
    assert saved["config"]["student"]["hidden_size"] == 32
    history = History.from_json(out / "history.json")
    assert set(history["general"].steps[0]) == {"step", "embedding", "attention", "hidden",
                                                "total", "lr"}
    assert set(history["prediction"].steps[0]) == {"step", "prediction", "total", "lr"}
    assert history["prediction"].evals and history["teacher"].evals

    from transformers import AutoModelForSequenceClassification

    exported = AutoModelForSequenceClassification.from_pretrained(out / "student")
    assert exported.config.id2label == {0: "negative", 1: "positive"}
    assert exported.config.num_hidden_layers == 2

    # Interrupted during task stage a, then `--resume`: the same student as the clean run.
    # (Teacher and general student now come from the cache, as they would for a user.)
    def stop(info):
        if info.stage == "intermediate" and info.step == 3:
            raise Interrupt("simulated crash")
    with pytest.raises(Interrupt):
        run_pipeline(cfg, tmp_path / "resumed", progress=False, checkpoint_every=2,
                     callbacks=[stop])
    assert (tmp_path / "resumed" / "checkpoints" / "task" / "intermediate" / "latest").exists()
    again = run_pipeline(cfg, tmp_path / "resumed", resume=True, progress=False,
                         checkpoint_every=2)
    assert again["timings"]["wall_seconds"]["teacher"]["cached"] is True
    assert again["timings"]["wall_seconds"]["general"]["cached"] is True
    clean_w, resumed_w = _weights(out / "student"), _weights(tmp_path / "resumed" / "student")
    assert clean_w.keys() == resumed_w.keys()
    assert all(torch.equal(clean_w[k], resumed_w[k]) for k in clean_w)
    h2 = History.from_json(tmp_path / "resumed" / "history.json")
    for stage in ("intermediate", "prediction"):
        assert h2[stage].steps == history[stage].steps and h2[stage].evals == history[stage].evals
    assert again["models"]["student"]["accuracy"] == report["models"]["student"]["accuracy"]


def test_results_table_formats_a_report():
    row = {"accuracy": 0.8, "macro_f1": 0.79, "params": 22_700_000, "size_mb": 90.9,
           "latency_b1_ms": 10.0, "latency_b32_ms": 160.0, "speedup_b1": 1.0, "speedup_b32": 1.0}
    student = {**row, "accuracy": 0.78, "params": 7_300_000, "latency_b32_ms": 20.0,
               "speedup_b32": 8.0}
    report = {"models": {"teacher": row, "student": student},
              "summary": {"accuracy_retained": 0.975, "speedup_b32": 8.0, "size_ratio": 3.1}}
    text = results_table(report)
    lines = text.splitlines()
    assert lines[0].split()[:3] == ["model", "accuracy", "macro-F1"]
    assert "22.7" in lines[2] and "8.0x" in lines[3]
    assert lines[-1].startswith("student keeps 97.5% of the teacher's test accuracy, is 8.0x")
    report["out_of_domain"] = {"tweets": {"examples": 2667, "teacher": 0.8, "student": 0.76,
                                          "retained": 0.95}}
    assert results_table(report).splitlines()[-1] == (
        "out of domain, tweets (2667 texts): teacher 0.8000, student 0.7600, student keeps 95.0%")
    report["summary"].update(majority_baseline=0.58, teacher_beats_majority=False)
    assert results_table(report).splitlines()[-1].startswith(
        "warning: the teacher is no better than always predicting the most frequent class "
        "(58.0% of the test set)")


def test_out_of_domain_only_for_binary_sentiment():
    from tinylab.pipeline import out_of_domain

    assert out_of_domain({}, None, ["spam", "ham"], 64, 32) == {}


@pytest.mark.slow
def test_ci_profile_end_to_end(asset_cache, tmp_path):
    """The real ci profile (all-MiniLM-L6-v2 teacher, Rotten Tomatoes), as `tinylab distill`."""
    from tinylab.cli import main

    assert main(["distill", "--profile", "ci", "--output", str(tmp_path / "ci")]) == 0
    report = json.loads((tmp_path / "ci" / "report.json").read_text())
    assert report["profile"] == "ci" and report["processes"] == 1
    ood = report["out_of_domain"]  # product reviews and tweets, scored like the test split
    assert {k: v["examples"] for k, v in ood.items()} == {"amazon": 256, "tweets": 256}
    for row in ood.values():
        assert 0 < row["teacher"] <= 1 and 0 < row["student"] <= 1
        assert row["retained"] == pytest.approx(row["student"] / row["teacher"])
    assert report["models"]["teacher"]["params"] > 20e6  # the real teacher
    assert report["summary"]["speedup_b32"] > 1


def test_a_rerun_keeps_every_file_a_user_added(tiny_teacher_dir, asset_cache, tmp_path):
    """``tinylab distill --output R`` into a finished run: tinylab replaces its own file
    names, and every other file, in every folder the run writes to, stays byte for byte."""
    cfg = get_config("ci", {**TINY, "teacher.model": str(tiny_teacher_dir)})
    out = tmp_path / "run"
    run_pipeline(cfg, out, progress=False)
    user = {out / "notes.md": b"my notes", out / "student" / "handler.py": b"print('mine')",
            out / "teacher" / "eval.csv": b"a,b\n", out / "student" / "README.md.bak": b"old",
            out / "checkpoints" / "keep.txt": b"mine",
            asset_cache / "teachers" / "notes.txt": b"cache notes"}
    for path, data in user.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    run_pipeline(cfg, out, progress=False)
    assert {path: path.read_bytes() for path in user} == user
    assert (out / "student" / "model.safetensors").exists()


def test_a_text_pair_task_runs_end_to_end(tiny_teacher_dir, asset_cache, tmp_path):
    """Premise/hypothesis pairs through every stage: the split keeps pairs, augmentation
    changes one side at a time, and the exported student reads both texts."""
    import random

    import pandas as pd
    from transformers import pipeline

    rng = random.Random(0)
    topics = "film music weather food sport travel garden school".split()
    rows = []
    for i in range(160):
        a, b = rng.sample(topics, 2)
        rows.append({"premise": f"statement {i} is about {a} and more", "hypothesis":
                     f"it mentions {a if i % 2 else b}", "relation": ["differ", "same"][i % 2]})
    pd.DataFrame(rows).to_csv(tmp_path / "pairs.csv", index=False)
    cfg = get_config("ci", {**TINY, "teacher.model": str(tiny_teacher_dir),
                            "data.task": str(tmp_path / "pairs.csv"),
                            "data.text_column": "premise", "data.text_pair_column": "hypothesis",
                            "data.label_column": "relation"})
    report = run_pipeline(cfg, tmp_path / "run", progress=False)
    assert report["labels"] == ["differ", "same"] and report["out_of_domain"] == {}
    assert sum(map(sum, report["models"]["student"]["confusion"])) == report["test_examples"]
    classify = pipeline("text-classification", model=str(tmp_path / "run" / "student"))
    answer = classify({"text": "statement 1 is about film", "text_pair": "it mentions film"})
    assert answer["label"] in ("differ", "same")
    assert (tmp_path / "run" / "student" / "model.onnx").is_file()
