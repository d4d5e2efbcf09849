"""Early stopping: stops after `patience` evaluations without a better score, ends with the best
evaluated weights, survives an interrupted run, and is what the teacher's settings switch on."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from tinylab.distill.options import RunOptions
from tinylab.config import get_config
from tinylab.distill import train_stage
from tinylab.distill.early_stopping import EarlyStopping
from tinylab.distill.stage_parts import training_set

from conftest import make_student
from test_distill import LABELS, Interrupt, cfg, teacher, toy_data  # noqa: F401


def test_observe_counts_patience_and_restores_the_best_weights():
    layer = torch.nn.Linear(2, 1)
    stopper = EarlyStopping(2, {"layer": layer})
    decisions = []
    for step, score in [(1, 0.5), (2, 0.7), (3, 0.6), (4, 0.7)]:  # a tie is no improvement
        with torch.no_grad():
            layer.weight.fill_(float(step))
        decisions.append(stopper.observe(step, score))
    assert decisions == [False, False, False, True]
    assert (stopper.best_step, stopper.best_score, stopper.stopped_at) == (2, 0.7, 4)
    stopper.restore()
    assert torch.all(layer.weight == 2.0)  # the weights of step 2, not of the last step


def test_disabled_keeps_nothing_and_never_stops():
    layer = torch.nn.Linear(2, 1)
    stopper = EarlyStopping(None, {"layer": layer})
    assert not any(stopper.observe(s, -s) for s in range(1, 10))
    assert stopper.weights is None
    with pytest.raises(ValueError, match="patience must be None or >= 1, got 0"):
        EarlyStopping(0, {"layer": layer})


def test_bad_patience_setting_is_refused_before_any_work():
    with pytest.raises(ValueError, match=r"teacher.patience=0 \(must be None"):
        get_config("ci", ["teacher.patience=0"])


def _run(cfg, model, tok, toy_data, scores, callbacks=(), **options):
    """train_stage on a tiny student whose 'validation accuracy' follows ``scores``."""
    student = make_student(model, cfg, dropout=False)
    ds = training_set(toy_data["train"], tok, 24, labels=True)
    after = {}

    def loss_fn(m, batch):
        logits = m["student"](input_ids=batch["input_ids"],
                              attention_mask=batch["attention_mask"]).logits
        return {"total": F.cross_entropy(logits, batch["labels"])}

    evaluated: list[float] = []

    def evaluate():
        evaluated.append(scores[len(evaluated)])
        return {"accuracy": evaluated[-1], "loss": 0.0}

    def remember(info):
        after[info.step] = {k: v.clone() for k, v in student.state_dict().items()}

    stage = cfg.task_prediction.__class__(epochs=10.0, batch_size=16, learning_rate=1e-3,
                                          eval_every=1, patience=2, max_steps=8)
    history = train_stage("toy", modules={"student": student}, loss_fn=loss_fn, train=ds,
                          tokenizer=tok, stage=stage, seed=0, evaluate=evaluate,
                          run=RunOptions(progress=False, callbacks=[remember, *callbacks],
                                         **options))
    return student, history, after


def test_training_stops_and_ends_with_the_best_weights(cfg, teacher, toy_data):  # noqa: F811
    model, tok = teacher
    student, history, after = _run(cfg, model, tok, toy_data, [0.6, 0.8, 0.7, 0.75, 0.9, 0.9])
    log = history["toy"]
    assert [e["step"] for e in log.evals] == [1, 2, 3, 4]  # stopped after 2 worse evaluations
    assert len(log.steps) == 4 and sorted(after) == [1, 2, 3, 4]
    assert log.info["early_stopping"] == {"patience": 2, "best_score": 0.8, "best_step": 2,
                                          "bad_evaluations": 2, "stopped_at": 4}
    final = student.state_dict()
    assert all(torch.equal(final[k], after[2][k]) for k in final)
    assert not all(torch.equal(final[k], after[4][k]) for k in final)


def test_an_interrupted_run_remembers_its_best_weights(cfg, teacher, toy_data,  # noqa: F811
                                                       tmp_path):
    model, tok = teacher
    scores = [0.6, 0.8, 0.7, 0.75, 0.9, 0.9]

    def interrupt(info):
        if info.step == 3:
            raise Interrupt("after step 3")

    with pytest.raises(Interrupt):
        _run(cfg, model, tok, toy_data, scores, checkpoint_dir=tmp_path, checkpoint_every=1,
             callbacks=[interrupt])
    # a new process: fresh student, evaluations continue where the run stopped (the 4th score)
    student, history, after = _run(cfg, model, tok, toy_data, scores[3:],
                                   checkpoint_dir=tmp_path, resume=True)
    assert history["toy"].info["early_stopping"]["best_step"] == 2
    assert [e["step"] for e in history["toy"].evals] == [1, 2, 3, 4]
    clean, _, clean_after = _run(cfg, model, tok, toy_data, scores)
    assert all(torch.equal(student.state_dict()[k], v) for k, v in clean.state_dict().items())
