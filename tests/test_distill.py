"""tinylab.distill: the loops, the teacher-output cache, checkpoints and exact resume.

Tiny random BERTs from conftest (a 4-layer 48-wide teacher, 2-layer 32-wide students) on a toy
sentiment task, so every test runs in seconds.
"""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F

from conftest import make_student, toy_texts

from tinylab.distill.options import RunOptions

QUIET = RunOptions(progress=False)
from tinylab.config import get_config
from tinylab.distill import (BASELINES, History, NonFiniteLossError, StageLog, TeacherOutputs,
                             finetune_teacher, general_distillation, general_student,
                             task_distillation, train_baseline, train_stage)
from tinylab.distill.checkpoint import (CheckpointError, atomic_directory, capture_rng_state,
                                        latest_checkpoint, load_checkpoint, restore_rng_state,
                                        save_checkpoint)
from tinylab.distill.loop import evaluation_due
from tinylab.distill.stage_parts import training_set

LABELS = ["negative", "positive"]


class Interrupt(RuntimeError):
    """Raised by a test callback to simulate a crash after a given step."""


def interrupt_at(stage: str, step: int):
    def callback(info):
        if info.stage == stage and info.step == step:
            raise Interrupt(f"interrupted at {stage} step {step}")
    return callback


# --------------------------------------------------------------------------------------------
# Fixtures
# --------------------------------------------------------------------------------------------

def _texts(n: int, seed: int) -> list[str]:
    return toy_texts(n, seed, max_words=14)


@pytest.fixture(scope="module")
def toy_data():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})

    def split(n, seed):
        texts = _texts(n, seed)
        return Dataset.from_dict({"text": texts, "label": [int("good" in t or "great" in t)
                                                           for t in texts]}, features=features)
    return DatasetDict(train=split(64, 0), validation=split(24, 1), test=split(24, 2))


@pytest.fixture(scope="module")
def corpus():
    from datasets import Dataset

    return Dataset.from_dict({"text": _texts(48, 3)})


@pytest.fixture()
def cfg(tiny_teacher_dir):
    return get_config("ci", {
        "teacher.model": str(tiny_teacher_dir), "teacher.batch_size": 16, "teacher.max_steps": 3,
        "student.num_layers": 2, "student.hidden_size": 32, "student.num_heads": 4,
        "student.intermediate_size": 64, "student.init": "random",
        "data.max_length": 24, "data.general_max_length": 24,
        "general.batch_size": 16, "general.epochs": 2.0,
        "task_intermediate.batch_size": 16, "task_intermediate.epochs": 2.0,
        "task_intermediate.max_steps": 6,
        "task_prediction.batch_size": 16, "task_prediction.epochs": 2.0,
        "task_prediction.max_steps": 5, "eval_batch_size": 32})


@pytest.fixture()
def teacher(tiny_teacher_dir):
    from tinylab.models import load_teacher

    return load_teacher(tiny_teacher_dir, id2label=LABELS)


def same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def without_seconds(h: History) -> dict:
    """The training record (steps, evaluations) without wall-clock times and run metadata."""
    return {name: {"steps": log.steps, "evals": log.evals} for name, log in h.stages.items()}


# --------------------------------------------------------------------------------------------
# History
# --------------------------------------------------------------------------------------------

def test_history_json_round_trip_and_merge(tmp_path):
    h = History()
    h.log_step("general", step=1, embedding=1.0, attention=2.0, hidden=3.0, total=6.0, lr=1e-4)
    h.log_step("general", step=2, embedding=0.5, attention=1.0, hidden=1.5, total=float("nan"),
               lr=1e-4)
    h.log_eval("prediction", step=2, accuracy=0.75)
    h.stage("general").seconds = 1.5
    path = h.to_json(tmp_path / "h.json")
    raw = json.loads(path.read_text())  # standard JSON (NaN written as a string)
    assert raw["stages"]["general"]["steps"][0] == {"step": 1, "embedding": 1.0, "attention": 2.0,
                                                    "hidden": 3.0, "total": 6.0, "lr": 1e-4}
    assert raw["stages"]["general"]["steps"][1]["total"] == "nan"
    back = History.from_json(path)
    assert back["general"].steps[0] == h["general"].steps[0]
    assert back["prediction"].last_accuracy == 0.75 and back["general"].seconds == 1.5
    assert list(back.frame("general").columns) == ["step", "embedding", "attention", "hidden",
                                                   "total", "lr"]
    other = History({"teacher": StageLog(steps=[{"step": 1, "total": 0.7}])})
    merged = History.merge(other, {"x": back})
    assert list(merged) == ["teacher", "general", "prediction"]
    with pytest.raises(ValueError, match="appears in two histories"):
        History.merge(back, back)
    with pytest.raises(KeyError, match="no stage 'missing'"):
        back["missing"]


def test_eval_schedule():
    # None: once per epoch (+ the last step); 0: never; n: every n steps (+ the last step)
    assert [s for s in range(1, 11) if evaluation_due(None, s, 10, 4)] == [4, 8, 10]
    assert [s for s in range(1, 11) if evaluation_due(0, s, 10, 4)] == []
    assert [s for s in range(1, 11) if evaluation_due(3, s, 10, 4)] == [3, 6, 9, 10]


# --------------------------------------------------------------------------------------------
# Checkpoints
# --------------------------------------------------------------------------------------------

def test_atomic_directory_leaves_old_or_new(tmp_path):
    target = tmp_path / "ckpt"
    with atomic_directory(target) as tmp:
        (tmp / "a.txt").write_text("one")
    with pytest.raises(RuntimeError):
        with atomic_directory(target) as tmp:
            (tmp / "a.txt").write_text("two")
            raise RuntimeError("crash while writing")
    assert (target / "a.txt").read_text() == "one"          # the old folder survived intact
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt"]  # no temporary leftovers


def test_checkpoint_round_trip_is_exact(tmp_path):
    from transformers import get_linear_schedule_with_warmup

    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5), torch.nn.Linear(8, 2))
    opt = torch.optim.AdamW(model.parameters(), lr=1e-2)
    sched = get_linear_schedule_with_warmup(opt, 2, 10)
    for _ in range(3):
        model(torch.randn(5, 4)).sum().backward()
        opt.step(), sched.step(), opt.zero_grad()
    order = [[3, 1], [0, 2], [4]]
    first = save_checkpoint(tmp_path, step=3, modules={"model": model}, optimizer=opt,
                            scheduler=sched, state={"note": "x"},
                            rng_states=[capture_rng_state()], data_order=order)
    path = save_checkpoint(tmp_path, step=4, modules={"model": model}, optimizer=opt,
                           scheduler=sched, state={"note": "y"},
                           rng_states=[capture_rng_state()], data_order=order)
    assert latest_checkpoint(tmp_path) == path and not first.exists()  # older one removed
    expected_next = torch.rand(3)  # what the generator gives after the checkpoint

    torch.manual_seed(123)
    model2 = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.Dropout(0.5),
                                 torch.nn.Linear(8, 2))
    opt2 = torch.optim.AdamW(model2.parameters(), lr=1e-2)
    sched2 = get_linear_schedule_with_warmup(opt2, 2, 10)
    state, rng, order2 = load_checkpoint(path, modules={"model": model2}, optimizer=opt2,
                                         scheduler=sched2)
    assert state == {"note": "y"} and order2 == order
    assert same_weights(model, model2)
    for p, q in zip(opt.state.values(), opt2.state.values()):
        assert all(torch.equal(p[k], q[k]) for k in p)
    assert sched2.get_last_lr() == sched.get_last_lr()
    restore_rng_state(rng[0])
    assert torch.equal(torch.rand(3), expected_next)
    with pytest.raises(CheckpointError, match="holds modules"):
        load_checkpoint(path, modules={"other": model2}, optimizer=opt2, scheduler=sched2)


# --------------------------------------------------------------------------------------------
# Teacher outputs: cache == on the fly
# --------------------------------------------------------------------------------------------

def test_teacher_cache_matches_on_the_fly(cfg, teacher, toy_data):
    from tinylab.data import make_dataloader
    from tinylab.losses import TinyBertLoss

    model, tok = teacher
    student = make_student(model, cfg).eval()
    criterion = TinyBertLoss.from_config(cfg.loss, student.config, model.config)
    need = criterion.teacher_layers("intermediate") | {"logits": True}
    ds = training_set(toy_data["train"], tok, 24, labels=False)
    cached = TeacherOutputs(model, ds, tok, need, passes=2, progress=False)
    live = TeacherOutputs(model, ds, tok, need, passes=2, memory_budget=1, progress=False)
    assert cached.cached and not live.cached
    assert "budget" in live.info["reason"]
    batch = next(iter(make_dataloader(ds, tok, 16, shuffle=True, seed=0)))
    a, b = cached(batch), live(batch)
    mask = batch["attention_mask"].bool()
    for i in need["hidden_states"]:
        torch.testing.assert_close(a["hidden_states"][i][mask], b["hidden_states"][i][mask],
                                   rtol=2e-3, atol=2e-3)
    pairs = (mask[:, :, None] & mask[:, None, :])[:, None].expand_as(a["attentions"][2])
    for n in need["attentions"]:
        torch.testing.assert_close(a["attentions"][n][pairs], b["attentions"][n][pairs],
                                   rtol=2e-3, atol=2e-3)
    torch.testing.assert_close(a["logits"], b["logits"])
    with torch.no_grad():
        out = student(**{k: v for k, v in batch.items() if k in ("input_ids", "attention_mask",
                                                                 "token_type_ids")},
                      output_hidden_states=True, output_attentions=True)
        la = criterion(out, a, batch["attention_mask"], stage="intermediate")
        lb = criterion(out, b, batch["attention_mask"], stage="intermediate")
    for k in ("embedding", "attention", "hidden", "total"):
        torch.testing.assert_close(la[k], lb[k], rtol=1e-3, atol=1e-5)
    assert cached.info["forward_calls"] == 0 and live.info["forward_calls"] == 1
    once = TeacherOutputs(model, ds, tok, need, passes=1, progress=False)
    assert not once.cached and "save nothing" in once.info["reason"]
    # on the fly, the logits of each forward are kept: a logits-only request is then free
    logits_only = {"hidden_states": [], "attentions": [], "logits": True}
    first = once(batch)
    again = once(batch, logits_only)
    assert once.info["forward_calls"] == 1 and once.info["memo_hits"] == 1
    torch.testing.assert_close(again["logits"], first["logits"], rtol=0, atol=0)
    assert set(cached(batch, logits_only)) == {"logits"}


def test_shared_teacher_outputs_are_built_once_and_equal_a_private_cache(cfg, teacher, toy_data,
                                                                          tmp_path):
    """Runs on the same data share one file of every layer; a later run loads it (no teacher
    pass) and serves its own layers, equal to a private cache; other data, another file."""
    from tinylab.data import make_dataloader
    from tinylab.distill.teacher_outputs import shared_file

    model, tok = teacher
    ds = training_set(toy_data["train"], tok, 24, labels=False)
    uniform = {"hidden_states": [0, 2, 4], "attentions": [2, 4], "logits": False}
    top = {"hidden_states": [3, 4], "attentions": [3, 4], "logits": True}
    first = TeacherOutputs(model, ds, tok, uniform, passes=2, progress=False, shared_dir=tmp_path)
    batch = next(iter(make_dataloader(ds, tok, 16, shuffle=True, seed=0)))
    got = first(batch)
    assert first.info["shared"] == "built" and len(list(tmp_path.iterdir())) == 1
    assert set(got["hidden_states"]) == {0, 2, 4} and "logits" not in got

    calls = []
    model.register_forward_hook(lambda *a: calls.append(1))
    second = TeacherOutputs(model, ds, tok, top, passes=1, progress=False, shared_dir=tmp_path)
    mine = TeacherOutputs(model, ds, tok, top, passes=2, progress=False)
    shared_batch = second(batch)
    assert second.info["shared"] == "loaded" and second.info["forward_calls"] == 0
    n_calls = len(calls)
    private = mine(batch)
    assert len(calls) > n_calls == 0  # the shared run never called the teacher
    for key in ("hidden_states", "attentions"):
        for layer in top[key]:
            assert torch.equal(shared_batch[key][layer], private[key][layer])
    assert torch.equal(shared_batch["logits"], private["logits"])
    model._forward_hooks.clear()

    other = ds.select(range(len(ds) - 1))
    assert shared_file(tmp_path, model, other, "no") != shared_file(tmp_path, model, ds, "no")
    assert shared_file(tmp_path, model, ds, "bf16") != shared_file(tmp_path, model, ds, "no")


def test_logits_only_runs_share_a_file_of_logits_and_train_the_same_student(cfg, teacher,
                                                                          toy_data, tmp_path):
    """Hinton KD with a shared folder writes the teacher's logits alone (not every layer); a
    second run loads them without calling the teacher and trains the same student as a run
    with its own cache."""
    from tinylab.distill.teacher_outputs import logits_only, shared_file

    model, tok = teacher
    stage = dataclasses.replace(cfg.task_prediction, max_steps=6, epochs=6.0, eval_every=0)
    runs = (QUIET, RunOptions(progress=False, shared_teacher_outputs=tmp_path),
            RunOptions(progress=False, shared_teacher_outputs=tmp_path))
    students, infos, calls = [], [], []
    for i, run in enumerate(runs):
        if i == 2:
            model.register_forward_hook(lambda *a: calls.append(1))
        student = make_student(model, cfg)
        h = train_baseline(cfg, model, student, toy_data, "hinton", stage=stage, tokenizer=tok,
                           run=run)
        students.append(student)
        infos.append(h["hinton"].info["teacher"])
    model._forward_hooks.clear()
    assert infos[1]["shared"] == "built" and infos[2]["shared"] == "loaded"
    assert calls == [] and infos[2]["forward_calls"] == 0
    files = list(tmp_path.iterdir())
    assert len(files) == 1 and files[0].name.startswith("teacher-logits-")
    assert same_weights(students[0], students[1]) and same_weights(students[0], students[2])
    assert logits_only({"hidden_states": [], "attentions": [], "logits": True})
    assert not logits_only({"hidden_states": [6], "attentions": [], "logits": True})
    ds = training_set(toy_data["train"], tok, 24, labels=False)
    assert (shared_file(tmp_path, model, ds, "no", logits=True)
            != shared_file(tmp_path, model, ds, "no"))


def test_task_distillation_on_shared_teacher_outputs_trains_the_same_student(cfg, teacher,
                                                                             toy_data, tmp_path):
    model, tok = teacher
    students = []
    for run in (QUIET, RunOptions(progress=False, shared_teacher_outputs=tmp_path),
                RunOptions(progress=False, shared_teacher_outputs=tmp_path)):
        student = make_student(model, cfg)
        h = task_distillation(cfg, model, student, toy_data["train"], tokenizer=tok, run=run)
        students.append((student, h["intermediate"]["intermediate"].info["teacher"]))
    assert students[1][1]["shared"] == "built" and students[2][1]["shared"] == "loaded"
    assert same_weights(students[0][0], students[1][0])
    assert same_weights(students[0][0], students[2][0])


def test_prediction_stage_reuses_logits_of_the_intermediate_stage(cfg, teacher, toy_data):
    model, tok = teacher
    h = task_distillation(cfg, model, make_student(model, cfg), toy_data["train"],
                          tokenizer=tok,
                          run=RunOptions(progress=False, memory_budget=1))  # force on-the-fly
    info = h["prediction"]["prediction"].info["teacher"]
    # 64 examples / 16 = 4 batches per epoch; stage a ran 6 steps (all 4 batches of epoch 0,
    # 2 of epoch 1), stage b's 5 steps use the same batches: no teacher pass needed
    assert info["mode"] == "on-the-fly" and info["forward_calls"] == 6
    assert info["memo_hits"] == 5


# --------------------------------------------------------------------------------------------
# Stages
# --------------------------------------------------------------------------------------------

def test_general_distillation_logs_layer_losses(cfg, teacher, corpus):
    model, tok = teacher
    student = make_student(model, cfg)
    head = {k: v.clone() for k, v in student.state_dict().items() if k.startswith("classifier")}
    h = general_distillation(cfg, model, student, corpus, tokenizer=tok, run=QUIET)
    log = h["general"]
    assert log.info["total_steps"] == 6  # 48 examples / 16 = 3 steps per epoch, 2 epochs
    assert set(log.steps[0]) == {"step", "embedding", "attention", "hidden", "total", "lr"}
    for row in log.steps:
        assert math.isclose(row["total"], row["embedding"] + row["attention"] + row["hidden"],
                            rel_tol=1e-5)
    assert log.steps[-1]["total"] < log.steps[0]["total"]
    assert log.info["teacher"]["mode"] == "cache" and log.evals == []
    # the head is frozen during layer distillation, and unfrozen afterwards
    assert all(torch.equal(student.state_dict()[k], v) for k, v in head.items())
    assert all(p.requires_grad for p in student.parameters())


def test_task_distillation_never_reads_gold_labels(cfg, teacher, toy_data):
    model, tok = teacher
    cfg = cfg.replace("task_intermediate.max_steps=2", "task_prediction.max_steps=2")
    flipped = toy_data["train"].map(lambda ex: {"label": 1 - ex["label"]})
    runs = []
    for train in (toy_data["train"], flipped):
        student = make_student(model, cfg)
        h = task_distillation(cfg, model, student, train, toy_data["validation"], tokenizer=tok,
                              run=QUIET)
        runs.append((student, h))
    assert same_weights(runs[0][0], runs[1][0])
    assert without_seconds(runs[0][1]["prediction"]) == without_seconds(runs[1][1]["prediction"])
    assert list(runs[0][1]) == ["intermediate", "prediction"]
    assert runs[0][1]["prediction"]["prediction"].evals[-1]["step"] == 2


@pytest.mark.parametrize("stage,step", [("intermediate", 5), ("prediction", 3)])
def test_interrupted_run_resumes_to_the_same_end(cfg, teacher, toy_data, tmp_path, stage, step):
    """Interrupt after k steps, resume from the last checkpoint, compare with a clean run.

    64 examples / batch 16 = 4 steps per epoch; stage a runs 6 steps (crosses an epoch),
    checkpoints every 2 steps, so the resumed run must recompute lost steps exactly (data
    order, dropout RNG, Adam moments, scheduler position all restored)."""
    model, tok = teacher
    args = dict(progress=False, checkpoint_every=2)
    clean = make_student(model, cfg)
    h_clean = task_distillation(cfg, model, clean, toy_data["train"], toy_data["validation"],
                                tokenizer=tok,
                                run=RunOptions(checkpoint_dir=tmp_path / "clean", **args))

    broken = make_student(model, cfg)
    with pytest.raises(Interrupt):
        task_distillation(cfg, model, broken, toy_data["train"], toy_data["validation"],
                          tokenizer=tok, run=RunOptions(checkpoint_dir=tmp_path / "run",
                                                        callbacks=[interrupt_at(stage, step)], **args))
    resumed = make_student(model, cfg)  # a new process would rebuild the student from scratch
    h_resumed = task_distillation(cfg, model, resumed, toy_data["train"], toy_data["validation"],
                                  tokenizer=tok, run=RunOptions(checkpoint_dir=tmp_path / "run",
                                                                resume=True, **args))
    assert same_weights(clean, resumed)
    assert not same_weights(clean, make_student(model, cfg))  # training did change the weights
    for name in ("intermediate", "prediction"):
        assert without_seconds(h_resumed[name]) == without_seconds(h_clean[name])
        assert [r["step"] for r in h_resumed[name][name].steps] == list(
            range(1, len(h_clean[name][name].steps) + 1))


def test_resume_refuses_a_different_configuration(cfg, teacher, toy_data, tmp_path):
    model, tok = teacher
    cfg = cfg.replace("task_prediction.enabled=false")
    task_distillation(cfg, model, make_student(model, cfg), toy_data["train"], tokenizer=tok,
                      run=RunOptions(checkpoint_dir=tmp_path, progress=False))
    longer = cfg.replace("task_intermediate.max_steps=7")
    with pytest.raises(CheckpointError, match="total_steps=6"):
        task_distillation(longer, model, make_student(model, cfg), toy_data["train"],
                          tokenizer=tok,
                          run=RunOptions(checkpoint_dir=tmp_path, resume=True, progress=False))


def test_resume_refuses_changed_training_data(cfg, teacher, toy_data, tmp_path):
    """Same configuration, other examples: the checkpoint's data order no longer matches."""
    model, tok = teacher
    cfg = cfg.replace("task_prediction.enabled=false")
    task_distillation(cfg, model, make_student(model, cfg), toy_data["train"], tokenizer=tok,
                      run=RunOptions(checkpoint_dir=tmp_path, progress=False))
    reversed_train = toy_data["train"].select(range(len(toy_data["train"]) - 1, -1, -1))
    changed = reversed_train.map(lambda row: {"text": row["text"] + " indeed"})
    with pytest.raises(CheckpointError, match="training data changed"):
        task_distillation(cfg, model, make_student(model, cfg), changed, tokenizer=tok,
                          run=RunOptions(checkpoint_dir=tmp_path, resume=True, progress=False))


def test_run_options_refuse_bad_values_with_the_fix(tmp_path):
    with pytest.raises(ValueError, match="resume=True needs a checkpoint_dir"):
        RunOptions(resume=True)
    with pytest.raises(ValueError, match="checkpoint_every must be a positive"):
        RunOptions(checkpoint_dir=tmp_path, checkpoint_every=0)
    with pytest.raises(TypeError, match=r"callbacks=\[fn\]"):
        RunOptions(callbacks=print)
    with pytest.raises(TypeError, match=r"run=RunOptions\(progress=False\)"):
        train_baseline(get_config("ci"), None, None, {}, "gold", run={"progress": False})
    sub = RunOptions(checkpoint_dir=tmp_path).sub("prediction")
    assert sub.checkpoint_dir == tmp_path / "prediction"
    assert RunOptions().sub("prediction").checkpoint_dir is None


def test_non_finite_loss_names_component_and_step(cfg, teacher, toy_data):
    model, tok = teacher
    student = make_student(model, cfg)
    ds = training_set(toy_data["train"], tok, 24, labels=True)

    def loss_fn(m, batch):
        ce = F.cross_entropy(m["student"](input_ids=batch["input_ids"],
                                          attention_mask=batch["attention_mask"]).logits,
                             batch["labels"])
        attention = ce * (float("inf") if loss_fn.calls == 2 else 1.0)
        loss_fn.calls += 1
        return {"attention": attention, "total": ce + attention}
    loss_fn.calls = 0
    after_step_2 = {}

    def remember(info):
        if info.step == 2:
            after_step_2.update({k: v.clone() for k, v in student.state_dict().items()})
    with pytest.raises(NonFiniteLossError, match=r"'attention' is inf at step 3/"):
        train_stage("toy", modules={"student": student}, loss_fn=loss_fn, train=ds,
                    tokenizer=tok, stage=cfg.task_prediction, seed=0,
                    run=RunOptions(progress=False, callbacks=[remember]))
    # the run stopped before the bad step could touch the weights
    assert all(torch.equal(after_step_2[k], v) for k, v in student.state_dict().items())


def test_same_seed_same_numbers(cfg, teacher, toy_data):
    model, tok = teacher
    runs = []
    for _ in range(2):
        student = make_student(model, cfg)
        runs.append((student, train_baseline(cfg, model, student, toy_data, "kd", tokenizer=tok,
                    run=QUIET)))
    assert same_weights(runs[0][0], runs[1][0])
    assert without_seconds(runs[0][1]) == without_seconds(runs[1][1])
    other = cfg.replace(seed=cfg.seed + 1)
    student = make_student(model, cfg)
    h = train_baseline(other, model, student, toy_data, "kd", tokenizer=tok, run=QUIET)
    assert h["kd"].steps[0]["total"] != runs[0][1]["kd"].steps[0]["total"]


@pytest.mark.parametrize("kind", BASELINES)
def test_baseline_first_step_matches_reference_loss(cfg, teacher, toy_data, kind):
    """The loss the loop logs at step 1 equals the textbook formula on the same first batch."""
    from tinylab.data import make_dataloader, set_epoch

    model, tok = teacher
    student = make_student(model, cfg, dropout=False)
    reference_student = make_student(model, cfg, dropout=False)
    h = train_baseline(cfg, model, student, toy_data, kind, tokenizer=tok, run=QUIET)
    log = h[kind]
    assert log.info["total_steps"] == 5  # the prediction stage's budget
    assert log.evals and log.evals[-1]["step"] == 5

    ds = training_set(toy_data["train"], tok, 24, labels=True)
    loader = make_dataloader(ds, tok, cfg.task_prediction.batch_size, shuffle=True, seed=cfg.seed)
    set_epoch(loader, 0)
    batch = next(iter(loader))
    inputs = {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}
    with torch.no_grad():
        z_s = reference_student(**inputs).logits
        if kind == "gold":
            expected = F.cross_entropy(z_s, batch["labels"])
        elif kind == "kd":
            t = cfg.loss.temperature
            p_t = F.softmax(model(**inputs).logits / t, -1)
            expected = (p_t * (p_t.log() - F.log_softmax(z_s / t, -1))).sum(-1).mean() * t * t
        else:  # Hinton et al. 2015: alpha * CE(gold) + (1 - alpha) * t^2 * KL, t = cfg.kd
            from torch.distributions import Categorical, kl_divergence

            t, alpha = cfg.kd.temperature, cfg.kd.alpha
            kl = kl_divergence(Categorical(logits=model(**inputs).logits / t),
                               Categorical(logits=z_s / t)).mean()
            gold = -Categorical(logits=z_s).log_prob(batch["labels"]).mean()
            expected = alpha * gold + (1 - alpha) * t * t * kl
    assert math.isclose(log.steps[0]["total"], expected.item(), rel_tol=1e-5, abs_tol=1e-7)


def test_finetune_teacher_is_cached(cfg, toy_data, isolated_cache):
    steps = []
    model, tok, h = finetune_teacher(cfg, toy_data,
                                     run=RunOptions(callbacks=[steps.append], progress=False))
    assert len(steps) == 3 and h["teacher"].evals[-1]["step"] == 3
    folders = list((isolated_cache / "teachers").iterdir())
    assert len(folders) == 1 and (folders[0] / "model.safetensors").exists()
    model2, _, h2 = finetune_teacher(cfg, toy_data,
                                     run=RunOptions(callbacks=[steps.append], progress=False))
    assert len(steps) == 3  # loaded, not trained again
    assert same_weights(model, model2) and h2 == h
    assert model2.config.id2label == {0: "negative", 1: "positive"}


def test_general_student_is_cached(cfg, teacher, corpus, isolated_cache):
    model, tok = teacher
    s1, h1 = general_student(cfg, id2label=LABELS, corpus=corpus, teacher=model, tokenizer=tok,
                             run=QUIET)
    s2, h2 = general_student(cfg, id2label=LABELS, corpus=None, teacher=model, tokenizer=tok,
                             run=QUIET)  # no corpus needed: it comes from the cache
    assert h1 == h2 and len(h1["general"].steps) == 6
    assert same_weights(s1, s2)  # trained now or loaded: the same student (head seeded too)
    assert s2.config.id2label == {0: "negative", 1: "positive"}


def test_shared_baseline_targets_train_the_same_students_with_one_teacher_pass(cfg, teacher,
                                                                              toy_data):
    """A temperature sweep: the teacher's logits do not depend on T, so one baseline_targets
    serves every run, and each run trains exactly the student it trains on its own."""
    from tinylab.distill import baseline_targets

    model, tok = teacher
    calls = []
    hook = model.register_forward_hook(lambda *args: calls.append(1))
    own = {}
    for t in (1.0, 4.0):
        student = make_student(model, cfg, dropout=False)
        train_baseline(cfg.replace(f"kd.temperature={t}"), model, student, toy_data, "hinton",
                       tokenizer=tok, run=QUIET)
        own[t] = student
    alone_calls, calls[:] = len(calls), []
    targets = baseline_targets(cfg, model, toy_data, tokenizer=tok, passes=2.0, run=QUIET)
    for t in (1.0, 4.0):
        student = make_student(model, cfg, dropout=False)
        train_baseline(cfg.replace(f"kd.temperature={t}"), model, student, toy_data, "hinton",
                       tokenizer=tok, run=QUIET, targets=targets)
        assert same_weights(student, own[t]), t
    assert 0 < len(calls) < alone_calls    # evaluation passes remain; the targets are shared
    hook.remove()
    with pytest.raises(ValueError, match="targets cover"):
        train_baseline(cfg, model, make_student(model, cfg), {**toy_data, "train":
                       toy_data["train"].select(range(8))}, "hinton", tokenizer=tok, run=QUIET,
                       targets=targets)
