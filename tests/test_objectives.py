"""tinylab.distill.objectives: DistilBERT's and MiniLM's objectives on the shared loop.

Tiny random BERTs from conftest (a 4-layer 48-wide 4-head teacher, 2-layer 32-wide students).
The first logged loss of each run is compared with a reference built another way: eager
attention probabilities and forward hooks on the value projections instead of tinylab's
scores and recomputed values, ``torch.distributions`` and ``CosineEmbeddingLoss`` instead of
tinylab's losses.
"""
from __future__ import annotations

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch.distributions import Categorical, kl_divergence

from conftest import MetaAccelerator, make_student, toy_texts

from tinylab.distill.options import RunOptions

QUIET = RunOptions(progress=False)
from tinylab.config import get_config
from tinylab.distill import objectives, task_distillation
from tinylab.distill.objectives import (DISTILBERT_WEIGHTS, attention_values, describe_needs,
                                        hidden_projection, teacher_needs, train_distilbert,
                                        train_minilm)
from tinylab.distill.stage_parts import training_set

LABELS = ["negative", "positive"]


@pytest.fixture(scope="module")
def toy_data():
    from datasets import ClassLabel, Dataset, DatasetDict, Features, Value

    features = Features({"text": Value("string"), "label": ClassLabel(names=LABELS)})

    def split(n, seed):
        texts = toy_texts(n, seed, max_words=14)
        return Dataset.from_dict({"text": texts, "label": [int("good" in t) for t in texts]},
                                 features=features)
    return DatasetDict(train=split(48, 0), validation=split(16, 1))


@pytest.fixture()
def cfg(tiny_teacher_dir):
    return get_config("ci", {
        "teacher.model": str(tiny_teacher_dir),
        "student.num_layers": 2, "student.hidden_size": 32, "student.num_heads": 4,
        "student.intermediate_size": 64, "student.init": "random", "data.max_length": 24,
        "task_intermediate.batch_size": 16, "task_intermediate.max_steps": 3,
        "task_prediction.batch_size": 16, "task_prediction.max_steps": 2,
        "eval_batch_size": 32, "device": "cpu"})


@pytest.fixture()
def teacher(tiny_teacher_dir):
    from tinylab.models import load_teacher

    return load_teacher(tiny_teacher_dir, id2label=LABELS)


def first_batch(cfg, tokenizer, data, batch_size, *, labels):
    from tinylab.data import make_dataloader, set_epoch

    ds = training_set(data, tokenizer, cfg.data.max_length, labels=labels)
    loader = make_dataloader(ds, tokenizer, batch_size, shuffle=True, seed=cfg.seed)
    set_epoch(loader, 0)
    batch = next(iter(loader))
    return {k: batch[k] for k in ("input_ids", "attention_mask", "token_type_ids")}, batch


@contextlib.contextmanager
def captured_values(model, layer: int):
    """The output of ``layer``'s value projection, caught by a forward hook."""
    seen = {}
    module = model.bert.encoder.layer[layer - 1].attention.self.value
    handle = module.register_forward_hook(lambda mod, args, out: seen.__setitem__("v", out))
    try:
        yield seen
    finally:
        handle.remove()


# --------------------------------------------------------------------------------------------
# Pieces
# --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("layer", [1, 4])
def test_attention_values_equal_what_the_value_projection_computes(teacher, layer):
    model, tok = teacher
    batch = tok(["a good film", "the plot is very dull and slow"], padding=True,
                return_tensors="pt").to(model.device)
    with captured_values(model, layer) as seen, torch.no_grad():
        out = model(**batch, output_hidden_states=True)
    heads = model.config.num_attention_heads
    hooked = seen["v"].view(2, -1, heads, model.config.hidden_size // heads).transpose(1, 2)
    torch.testing.assert_close(attention_values(model, out.hidden_states[layer - 1], layer),
                               hooked)
    with pytest.raises(ValueError, match=r"layer must be in 1..4, got 5"):
        attention_values(model, out.hidden_states[0], 5)


def test_hidden_projection_is_seeded_and_identity_for_equal_widths():
    a, b = hidden_projection(32, 48, seed=3), hidden_projection(32, 48, seed=3)
    torch.testing.assert_close(a.weight, b.weight)
    assert not torch.equal(a.weight, hidden_projection(32, 48, seed=4).weight)
    same = hidden_projection(8, 8, seed=0)
    x = torch.randn(5, 8)
    torch.testing.assert_close(same(x), x)


def test_teacher_needs_and_their_description(cfg, teacher):
    from tinylab.losses import TinyBertLoss
    from tinylab.models import student_config

    t_config = teacher[0].config
    assert describe_needs(teacher_needs("hinton", cfg, t_config)) == "logits"
    assert describe_needs(teacher_needs("distilbert", cfg, t_config)) == "hidden states 4; logits"
    assert describe_needs(teacher_needs("minilm", cfg, t_config)) == (
        "attention scores of layer 4; values of layer 4; logits")
    tiny = teacher_needs("tinybert", cfg, t_config)
    criterion = TinyBertLoss.from_config(cfg.loss, student_config(t_config, cfg.student), t_config)
    assert tiny["hidden_states"] == criterion.teacher_layers("intermediate")["hidden_states"]
    assert describe_needs(tiny) == ("hidden states 0, 2, 4 (0 = embeddings); attention scores "
                                    "of layer 2, 4; logits")
    assert [teacher_needs(m, cfg, t_config)["gold_labels"] for m in objectives.METHODS] == [
        True, True, False, False]
    with pytest.raises(ValueError, match="unknown method 'bert'"):
        teacher_needs("bert", cfg, t_config)


def test_training_functions_ask_the_teacher_for_what_teacher_needs_lists(cfg, teacher, toy_data,
                                                                         monkeypatch):
    asked = []

    class Recording(objectives.TeacherOutputs):
        def __init__(self, model, train, tokenizer, need, **kwargs):
            asked.append(dict(need))
            super().__init__(model, train, tokenizer, need, **kwargs)

    monkeypatch.setattr(objectives, "TeacherOutputs", Recording)
    model, tok = teacher
    cfg = cfg.replace("task_prediction.enabled=False")
    train_distilbert(cfg, model, make_student(model, cfg, dropout=False), toy_data, tokenizer=tok,
                     run=QUIET)
    train_minilm(cfg, model, make_student(model, cfg, dropout=False), toy_data["train"],
                 tokenizer=tok, run=QUIET)
    distil, minilm = asked
    needs = teacher_needs("distilbert", cfg, model.config)
    assert distil["hidden_states"] == needs["hidden_states"] and distil["logits"]
    needs = teacher_needs("minilm", cfg, model.config)
    assert minilm["attentions"] == needs["attention_scores"]
    assert minilm["hidden_states"] == [v - 1 for v in needs["values"]]   # values' layer input


# --------------------------------------------------------------------------------------------
# DistilBERT
# --------------------------------------------------------------------------------------------

def test_distilbert_first_step_matches_the_triple_loss(cfg, teacher, toy_data):
    model, tok = teacher
    student = make_student(model, cfg, dropout=False)
    reference = make_student(model, cfg, dropout=False)
    h = train_distilbert(cfg, model, student, toy_data, tokenizer=tok, run=QUIET)
    log = h["distilbert"]
    assert log.info["total_steps"] == 2 and log.evals[-1]["step"] == 2
    assert set(log.steps[0]) == {"step", "soft", "cosine", "gold", "total", "lr"}

    inputs, batch = first_batch(cfg, tok, toy_data["train"], 16, labels=True)
    projection = hidden_projection(32, 48, cfg.seed)
    t = cfg.kd.temperature
    with torch.no_grad():
        s_out = reference(**inputs, output_hidden_states=True)
        t_out = model(**inputs, output_hidden_states=True)
        soft = kl_divergence(Categorical(logits=t_out.logits / t),
                             Categorical(logits=s_out.logits / t)).mean() * t * t
        gold = -Categorical(logits=s_out.logits).log_prob(batch["labels"]).mean()
        real = inputs["attention_mask"].bool()
        projected = projection(s_out.hidden_states[-1])[real]
        cosine = torch.nn.CosineEmbeddingLoss()(projected, t_out.hidden_states[-1][real],
                                                torch.ones(len(projected)))
    first = log.steps[0]
    assert math.isclose(first["soft"], soft.item(), rel_tol=1e-5, abs_tol=1e-7)
    assert math.isclose(first["gold"], gold.item(), rel_tol=1e-5, abs_tol=1e-7)
    assert math.isclose(first["cosine"], cosine.item(), rel_tol=1e-5, abs_tol=1e-7)
    expected = (DISTILBERT_WEIGHTS["soft"] * soft + DISTILBERT_WEIGHTS["gold"] * gold
                + DISTILBERT_WEIGHTS["cosine"] * cosine)
    assert math.isclose(first["total"], expected.item(), rel_tol=1e-5, abs_tol=1e-7)


def test_distilbert_without_gold_labels_trains_on_unlabelled_text(cfg, teacher, toy_data):
    model, tok = teacher
    unlabelled = {"train": toy_data["train"].remove_columns("label")}
    student = make_student(model, cfg, dropout=False)
    before = copy.deepcopy(student.state_dict())
    h = train_distilbert(cfg, model, student, unlabelled, weights={"gold": 0}, tokenizer=tok,
                         run=QUIET)
    assert "gold" not in h["distilbert"].steps[0]
    assert any(not torch.equal(before[k], v) for k, v in student.state_dict().items())
    with pytest.raises(ValueError, match="needs a 'label' column"):
        train_distilbert(cfg, model, make_student(model, cfg, dropout=False), unlabelled,
                         tokenizer=tok, run=QUIET)
    with pytest.raises(ValueError, match=r"unknown DistilBERT weight\(s\) \['mlm'\]"):
        train_distilbert(cfg, model, student, toy_data, weights={"mlm": 1.0}, tokenizer=tok)


# --------------------------------------------------------------------------------------------
# MiniLM
# --------------------------------------------------------------------------------------------

def eager_probabilities_and_values(model, inputs):
    """The last layer's attention probabilities (eager attention) and values (a hook)."""
    eager = copy.deepcopy(model)
    eager.set_attn_implementation("eager")
    last = eager.config.num_hidden_layers
    with captured_values(eager, last) as seen, torch.no_grad():
        out = eager(**inputs, output_attentions=True)
    heads = eager.config.num_attention_heads
    d_k = eager.config.hidden_size // heads
    values = seen["v"].view(*seen["v"].shape[:2], heads, d_k).transpose(1, 2)
    return out.attentions[-1], values


def test_minilm_first_step_matches_eager_attention_and_hooked_values(cfg, teacher, toy_data):
    model, tok = teacher
    student = make_student(model, cfg, dropout=False)
    reference = make_student(model, cfg, dropout=False)
    h = train_minilm(cfg, model, student, toy_data["train"], toy_data["validation"],
                     tokenizer=tok, run=QUIET)
    assert list(h) == ["minilm", "prediction"]
    log = h["minilm"]["minilm"]
    assert log.info["total_steps"] == 3 and log.info["teacher_layer"] == 4
    # One teacher pass serves both stages, as in task_distillation (cached: 1.7 passes).
    a_info, b_info = log.info["teacher"], h["prediction"]["prediction"].info["teacher"]
    assert a_info["mode"] == b_info["mode"] == "cache" and b_info["forward_calls"] == 0
    assert set(log.steps[0]) == {"step", "attention", "value_relation", "total", "lr"}

    inputs, _ = first_batch(cfg, tok, toy_data["train"], 16, labels=False)
    a_s, v_s = eager_probabilities_and_values(reference, inputs)
    a_t, v_t = eager_probabilities_and_values(model, inputs)
    lengths = inputs["attention_mask"].sum(1).tolist()
    at = vr = 0.0
    rows = 0
    for b, n in enumerate(lengths):
        for head in range(4):
            r_t = v_t[b, head, :n] @ v_t[b, head, :n].T / math.sqrt(v_t.shape[-1])
            r_s = v_s[b, head, :n] @ v_s[b, head, :n].T / math.sqrt(v_s.shape[-1])
            for q in range(n):
                at += kl_divergence(Categorical(probs=a_t[b, head, q, :n]),
                                    Categorical(probs=a_s[b, head, q, :n])).item()
                vr += kl_divergence(Categorical(logits=r_t[q]), Categorical(logits=r_s[q])).item()
                rows += 1
    first = log.steps[0]
    assert math.isclose(first["attention"], at / rows, rel_tol=1e-4)
    assert math.isclose(first["value_relation"], vr / rows, rel_tol=1e-4)
    assert math.isclose(first["total"], (at + vr) / rows, rel_tol=1e-4)


def test_minilm_stage_b_is_tinyberts_prediction_stage(cfg, teacher, toy_data):
    """After stage a, MiniLM's stage b trains exactly as task_distillation's stage b would."""
    model, tok = teacher
    only_a = cfg.replace("task_prediction.enabled=False")
    student = make_student(model, cfg)
    head = {k: v.clone() for k, v in student.state_dict().items() if k.startswith("classifier")}
    h_a = train_minilm(only_a, model, student, toy_data["train"], tokenizer=tok, run=QUIET)
    assert list(h_a) == ["minilm"]
    assert all(torch.equal(student.state_dict()[k], v) for k, v in head.items())  # head frozen
    twin = copy.deepcopy(student)
    h_b = train_minilm(cfg.replace("task_intermediate.enabled=False"), model, student,
                       toy_data["train"], tokenizer=tok, run=QUIET)
    reference = task_distillation(cfg.replace("task_intermediate.enabled=False"), model, twin,
                                  toy_data["train"], tokenizer=tok, run=QUIET)
    assert list(h_b) == ["prediction"]
    assert h_b["prediction"]["prediction"].steps == reference["prediction"]["prediction"].steps


def test_minilm_needs_the_teachers_head_count(cfg, teacher, toy_data):
    model, tok = teacher
    two_heads = cfg.replace("student.num_heads=2")
    with pytest.raises(ValueError, match="heads: teacher 4, student 2"):
        train_minilm(two_heads, model, make_student(model, two_heads, dropout=False),
                     toy_data["train"], tokenizer=tok, run=QUIET)


# --------------------------------------------------------------------------------------------
# Device placement (see tests/test_device.py): every tensor of the loss on the training device
# --------------------------------------------------------------------------------------------

def test_objectives_compute_on_the_training_device(cfg, teacher, toy_data, meta_loop):
    model, tok = teacher
    cfg = cfg.replace("cache_teacher_outputs=False")
    train_distilbert(cfg, model, make_student(model, cfg, dropout=False), toy_data, tokenizer=tok,
                     run=RunOptions(accelerator=MetaAccelerator(), progress=False))
    train_minilm(cfg, model, make_student(model, cfg, dropout=False), toy_data["train"],
                 tokenizer=tok, run=RunOptions(accelerator=MetaAccelerator(), progress=False))
    assert meta_loop == [("distilbert", ["cosine", "gold", "soft", "total"]),
                         ("minilm", ["attention", "total", "value_relation"]),
                         ("prediction", ["prediction", "total"])]


@pytest.mark.skipif(not __import__("tinylab.device", fromlist=["x"]).cpu_supports_bf16(),
                    reason="this CPU has no bf16 units (quick uses bf16 only where it has)")
def test_objectives_train_under_bf16_autocast(cfg, teacher, toy_data):
    """The quick profile's precision=auto is bf16 autocast here: the value projections called
    outside the autocast forward and the 16-bit scores must still give finite float32 losses."""
    model, tok = teacher
    bf16 = cfg.replace("precision=bf16", "task_prediction.enabled=False")
    h = train_distilbert(bf16, model, make_student(model, bf16, dropout=False), toy_data,
                         tokenizer=tok, stage=bf16.task_intermediate, run=QUIET)
    m = train_minilm(bf16, model, make_student(model, bf16, dropout=False), toy_data["train"],
                     tokenizer=tok, run=QUIET)
    for log in (h["distilbert"], m["minilm"]["minilm"]):
        assert log.info["total_steps"] == 3
        assert all(math.isfinite(v) for step in log.steps for v in step.values())
        assert log.steps[0]["total"] > 0
