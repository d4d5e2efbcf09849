"""Exercises of notebook 06 (task distillation), Jiao et al. 2020, "TinyBERT learning":

* ``distillation_step``: one hand-written training step of task distillation stage a
  (intermediate layers), checked against the package's own loop
  (:func:`tinylab.distill.train_stage`) on tiny random BERTs, same batch, same optimiser.
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Any

import torch

from tinylab.exercises import register

# What only the checkers (and their helpers) need is imported inside them: the answer key
# copies this module's top-level imports into every solution cell
# (tinylab.course.answer_key), and the learner's notebook should not receive them.

# -- 1. one training step of stage a ------------------------------------------------------------

def distillation_step(student, teacher, criterion, optimizer, batch) -> float:
    """One optimiser step of task distillation stage a (intermediate layers: L_embd + L_attn + L_hidn).

    ``student``, ``teacher``: BERT models that return pre-softmax attention scores
    (:func:`tinylab.models.use_attention_scores`). ``criterion``: a
    :class:`tinylab.losses.TinyBertLoss`; ``criterion(student_out, teacher_out, mask)["total"]``
    is L_embd + L_attn + L_hidn. ``optimizer``: holds the student's parameters and the
    criterion's projections W_e, W_h (they are learned too). ``batch``: ``input_ids``,
    ``attention_mask``, ``token_type_ids``, each (B, L). Returns the loss of this batch
    (before the update) as a float.
    """
    student_out = student(**batch, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():  # the teacher only gives targets: no graph, no gradients
        teacher_out = teacher(**batch, output_hidden_states=True, output_attentions=True)
    loss = criterion(student_out, teacher_out, batch["attention_mask"])["total"]
    loss.backward()        # gradients of the student and of W_e, W_h
    optimizer.step()
    optimizer.zero_grad()  # else the next step adds its gradients to these
    return loss.item()


@dataclass(frozen=True)
class _StepSetup:
    """Tiny random teacher and student, a TinyBertLoss, a training set and the stage budget."""

    tokenizer: Any
    teacher: Any
    student: Any
    criterion: Any
    train: Any
    stage: Any


_STEP_SEED = 0
_STEP_CALLS = 2  # two steps: a forgotten zero_grad only shows at the second


@functools.lru_cache(maxsize=1)
def _step_setup() -> _StepSetup:
    """Built once per process (about 40k parameters in all); every check copies it."""
    import datasets
    from transformers import BertConfig, BertForSequenceClassification, BertTokenizerFast

    from tinylab.config import StageConfig
    from tinylab.distill.stages import HEAD_PARAMETERS
    from tinylab.losses import TinyBertLoss
    from tinylab.models import use_attention_scores

    tokens = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + [f"w{i}" for i in range(40)]
    tokenizer = BertTokenizerFast(vocab={t: i for i, t in enumerate(tokens)})

    def bert(layers: int, width: int):
        config = BertConfig(vocab_size=len(tokens), hidden_size=width, num_hidden_layers=layers,
                            num_attention_heads=2, intermediate_size=2 * width,
                            max_position_embeddings=32, num_labels=2,
                            hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
        return use_attention_scores(BertForSequenceClassification(config))

    with torch.random.fork_rng(devices=[]):  # leave the caller's random stream alone
        torch.manual_seed(_STEP_SEED)
        teacher = bert(4, 24).eval()
        student = bert(2, 16)
        criterion = TinyBertLoss(student.config, teacher.config)  # W_e, W_h: 16 -> 24
        gen = torch.Generator().manual_seed(_STEP_SEED)
        lengths = torch.randint(3, 12, (10,), generator=gen).tolist()  # batches need padding
        ids = [[2] + torch.randint(5, len(tokens), (n - 2,), generator=gen).tolist() + [3]
               for n in lengths]
    # stage a trains neither the pooler nor the classifier (task_distillation freezes them)
    for name, p in student.named_parameters():
        if name.startswith(HEAD_PARAMETERS):
            p.requires_grad_(False)
    train = datasets.Dataset.from_dict({"input_ids": ids,
                                        "token_type_ids": [[0] * len(i) for i in ids],
                                        "attention_mask": [[1] * len(i) for i in ids]})
    # no warm-up, constant rate, no clipping: the step is forward, loss, backward, update
    stage = StageConfig(epochs=1.0, learning_rate=1e-3, batch_size=4, warmup_ratio=0.0,
                        weight_decay=0.01, max_grad_norm=0.0, max_steps=_STEP_CALLS,
                        schedule="constant")
    return _StepSetup(tokenizer, teacher, student, criterion, train, stage)


def _trained(student, criterion) -> dict[str, torch.Tensor]:
    """Copies of every trainable parameter of the student and the projections."""
    out = {f"student.{n}": p.detach().clone() for n, p in student.named_parameters()
           if p.requires_grad}
    out.update({f"criterion.{n}": p.detach().clone() for n, p in criterion.named_parameters()
                if p.requires_grad})
    return out


def _optimizer(setup: _StepSetup, student, criterion, device):
    """The optimiser train_stage builds: AdamW, no decay on biases and LayerNorm weights."""
    from tinylab.distill.loop import adamw, param_groups

    groups = param_groups({"student": student, "projections": criterion},
                          setup.stage.weight_decay)
    return adamw(groups, setup.stage.learning_rate, device)


def _tinylab_steps(setup: _StepSetup, accelerator):
    """What the package does: ``train_stage`` with stage a's loss for two steps.

    Returns the batches it used, the parameters after each step and the logged losses.
    """
    from tinylab.distill.loop import (batch_to_device, collate, epoch_batches, make_loader,
                                      model_inputs, train_stage)
    from tinylab.distill.options import RunOptions
    from tinylab.distill.stage_parts import layer_loss_fn

    device = accelerator.device
    student, criterion = copy.deepcopy(setup.student), copy.deepcopy(setup.criterion)
    teacher = copy.deepcopy(setup.teacher).to(device)

    @torch.no_grad()
    def targets(batch):
        return teacher(**model_inputs(batch), output_hidden_states=True, output_attentions=True)

    after: list[dict[str, torch.Tensor]] = []
    history = train_stage(
        "intermediate", modules={"student": student, "projections": criterion},
        loss_fn=layer_loss_fn(targets, "intermediate", criterion.active_terms("intermediate")),
        train=setup.train, tokenizer=setup.tokenizer, stage=setup.stage, seed=_STEP_SEED,
        run=RunOptions(accelerator=accelerator, progress=False,
                       callbacks=[lambda info: after.append(_trained(student, criterion))]))
    losses = [row["total"] for row in history["intermediate"].steps]
    # the same batches, rebuilt with the loop's own helpers (same seed, same epoch order)
    loader = make_loader(setup.train, setup.tokenizer, setup.stage.batch_size, _STEP_SEED, True)
    batches = [batch_to_device(collate(loader, rows), device)
               for rows in epoch_batches(loader, 0)[:_STEP_CALLS]]
    return batches, after, losses


class _StepProbe:
    """Watches a learner's step: grad mode in each forward, gradients when the optimiser steps."""

    def __init__(self, student, teacher, optimizer):
        self.student_grad: list[bool] = []
        self.teacher_grad: list[bool] = []
        self.steps: list[bool] = []  # per optimizer.step(): did any parameter have a gradient?
        params = [p for group in optimizer.param_groups for p in group["params"]]
        # hooks on the embedding layer fire whether the learner calls model(...) or model.bert(...)
        student.base_model.embeddings.register_forward_pre_hook(
            lambda module, args: self.student_grad.append(torch.is_grad_enabled()))
        teacher.base_model.embeddings.register_forward_pre_hook(
            lambda module, args: self.teacher_grad.append(torch.is_grad_enabled()))
        optimizer.register_step_pre_hook(
            lambda opt, args, kwargs: self.steps.append(any(p.grad is not None and
                                                            bool(p.grad.abs().sum() > 0)
                                                            for p in params)))

    def reset(self) -> None:
        self.student_grad.clear()
        self.teacher_grad.clear()
        self.steps.clear()


_STUDENT_NO_GRAD = ("the student's forward pass ran without gradients (inside torch.no_grad() "
                    "or inference_mode?), so the loss has nothing to back-propagate to and the "
                    "student learns nothing. Only the teacher's forward belongs under "
                    "torch.no_grad()")


def _check_step_call(probe: _StepProbe, teacher, call: int) -> None:
    """The named mistakes, read from what the probe saw during one call."""
    where = f"step {call + 1}: "
    assert probe.student_grad, (where + "your function never ran the student: call "
                                "student(**batch, output_hidden_states=True, "
                                "output_attentions=True)")
    assert any(probe.student_grad), where + _STUDENT_NO_GRAD
    assert probe.teacher_grad, (where + "your function never ran the teacher: its outputs on "
                                "this batch are the targets (teacher(**batch, "
                                "output_hidden_states=True, output_attentions=True))")
    teacher_grads = [n for n, p in teacher.named_parameters() if p.grad is not None]
    assert not any(probe.teacher_grad) and not teacher_grads, (
        where + "the teacher ran with gradients on"
        + (f" (its parameter {teacher_grads[0]} now has a .grad)" if teacher_grads else "")
        + ": autograd kept its whole graph in memory and back-propagated into a model that is "
          "not trained. Run the teacher's forward inside `with torch.no_grad():`")
    assert probe.steps, (where + "optimizer.step() was never called, so no parameter changed: "
                         "after loss.backward(), call optimizer.step()")
    assert len(probe.steps) == 1, (where + f"optimizer.step() ran {len(probe.steps)} times in "
                                   f"one call; a training step updates once")
    assert probe.steps[0], (where + "no parameter had a gradient when optimizer.step() ran: call "
                            "loss.backward() before optimizer.step(), and optimizer.zero_grad() "
                            "after the step (or before the backward), never between the two")


def _named_mismatch(got: dict, expected: dict) -> str | None:
    """The first parameter whose values differ, with assert_close's description, or None."""
    for name, value in expected.items():
        try:
            torch.testing.assert_close(got[name], value, rtol=1e-4, atol=1e-6)
        except AssertionError as err:
            lines = [line.strip() for line in str(err).splitlines() if line.strip()]
            return f"{name}: " + " ".join(lines[:3])
    return None


def _unmasked_step(student, teacher, criterion, optimizer, batch) -> None:
    """The usual wrong step: the loss without the padding mask."""
    student_out = student(**batch, output_hidden_states=True, output_attentions=True)
    with torch.no_grad():
        teacher_out = teacher(**batch, output_hidden_states=True, output_attentions=True)
    criterion(student_out, teacher_out)["total"].backward()
    optimizer.step()
    optimizer.zero_grad()


def _check_distillation_step(candidate) -> None:
    from tinylab.distill.checkpoint import capture_rng_state, restore_rng_state
    from tinylab.device import make_accelerator

    setup = _step_setup()
    rng_state = capture_rng_state()  # train_stage re-seeds; the notebook's stream must not move
    try:
        accelerator = make_accelerator(precision="fp32")
        device = accelerator.device
        batches, expected_params, expected_losses = _tinylab_steps(setup, accelerator)

        student = copy.deepcopy(setup.student).to(device).train()
        criterion = copy.deepcopy(setup.criterion).to(device)
        teacher = copy.deepcopy(setup.teacher).to(device).eval()
        optimizer = _optimizer(setup, student, criterion, device)
        probe = _StepProbe(student, teacher, optimizer)
        for call, batch in enumerate(batches):
            leftover = [n for n, p in student.named_parameters()
                        if p.grad is not None and bool(p.grad.abs().sum() > 0)]
            probe.reset()
            try:
                result = candidate(student, teacher, criterion, optimizer, dict(batch))
            except RuntimeError as err:
                if probe.student_grad and not any(probe.student_grad) and "grad" in str(err):
                    raise AssertionError(f"step {call + 1}: {_STUDENT_NO_GRAD}") from None
                raise
            _check_step_call(probe, teacher, call)

            got = _trained(student, criterion)
            wrong = _named_mismatch(got, expected_params[call])
            if wrong is not None and call == 0:
                twin_s = copy.deepcopy(setup.student).to(device).train()
                twin_c = copy.deepcopy(setup.criterion).to(device)
                _unmasked_step(twin_s, teacher, twin_c, _optimizer(setup, twin_s, twin_c, device),
                               dict(batch))
                assert _named_mismatch(got, _trained(twin_s, twin_c)) is not None, (
                    "step 1: your update equals a step whose loss ignores the padding: pass "
                    "batch['attention_mask'] to the criterion, so padded positions are left out "
                    "of the attention and hidden-state MSEs")
            if wrong is not None and call > 0 and leftover:
                raise AssertionError(
                    f"step {call + 1}: the first step matched tinylab's, the second did not, and "
                    f"the gradients of step 1 were still there when step 2 began (e.g. "
                    f"{leftover[0]}): backward() adds to .grad, so step 2 used the sum of both "
                    f"batches' gradients. Call optimizer.zero_grad() after optimizer.step()")
            assert wrong is None, (
                f"step {call + 1}: after your step the parameters differ from those of "
                f"tinylab's train_stage on the same batch, with the same optimiser: {wrong}. "
                f"Compute the loss with criterion(student_out, teacher_out, "
                f"batch['attention_mask'])['total'], back-propagate it, and let the optimiser "
                f"you are given do the update")

            assert result is not None, ("your function returned None: return the loss of the "
                                        "batch as a float (loss.item())")
            assert not isinstance(result, torch.Tensor), (
                "return loss.item(), a Python float, not the loss tensor: a list of tensors "
                "that require grad keeps every step's graph alive")
            try:
                value = float(result)
            except (TypeError, ValueError):
                raise AssertionError(f"return the loss as a float (loss.item()), got "
                                     f"{type(result).__name__}") from None
            assert math.isclose(value, expected_losses[call], rel_tol=1e-4, abs_tol=1e-6), (
                f"step {call + 1}: you returned {value:.6g}, but the stage-a loss of this batch "
                f"is {expected_losses[call]:.6g}: return criterion(student_out, teacher_out, "
                f"batch['attention_mask'])['total'], the loss you back-propagated")
    finally:
        restore_rng_state(rng_state)


register("nb06.distillation_step", checker=_check_distillation_step,
         reference=distillation_step,
         forbidden=("tinylab.distill.loop.train_stage",
                    "tinylab.distill.stages.task_distillation",
                    "tinylab.distill.stages.general_distillation",
                    "tinylab.distill.stage_parts.layer_loss_fn"),
         why="this exercise asks you to write the step yourself: the two forward passes, the "
             "loss, the backward pass and the update",
         hint=("A training step: forward, loss, backward, update. Which of the two models "
               "needs gradients and which only provides targets? What must happen to the "
               "gradients once the update is done?",
               "Run the student asking for hidden states and attentions; run the teacher the "
               "same way, but without gradients. The criterion takes both outputs and the "
               "batch's attention mask and returns a dict whose 'total' is the stage-a loss. "
               "Back-propagate it, let the optimiser step, clear the gradients, and return the "
               "loss as a Python float."))
