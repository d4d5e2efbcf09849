"""Exercises of notebook 05 (two-stage distillation), Jiao et al. 2020, "TinyBERT learning" and the data augmentation:

* ``stage_plan``: which teacher, which data and which loss terms each of the three training
  runs uses;
* ``distillation_step``: one hand-written training step of task distillation stage a
  (intermediate layers), checked against the package's own loop
  (:func:`tinylab.distill.train_stage`) on tiny random BERTs, same batch, same optimiser;
* ``augment_sentence``: the sampling loop of TinyBERT's data augmentation (Algorithm 1) on one
  sentence with a fixed candidate table, checked by the properties every correct sampler has
  (on thousands of seeded draws), not by comparing random sentences.
"""
from __future__ import annotations

import copy
import functools
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from tinylab.exercises import register

# -- 1. the recipe -----------------------------------------------------------------------------

STAGES = ("general", "intermediate", "prediction")
TEACHERS = ("pretrained", "finetuned")
DATA = ("general corpus", "augmented task data", "task data with gold labels")
TERMS = ("embedding", "attention", "hidden", "prediction")


def stage_plan(stage: str) -> dict:
    """TinyBERT's recipe for one stage: the teacher, the data and the loss terms.

    ``stage``: ``"general"`` (general distillation), ``"intermediate"`` (task distillation,
    stage a) or ``"prediction"`` (task distillation, stage b). Returns
    ``{"teacher": ..., "data": ..., "terms": [...]}`` with values from ``TEACHERS``, ``DATA``
    and ``TERMS``.
    """
    if stage == "general":
        return {"teacher": "pretrained", "data": "general corpus",
                "terms": ["embedding", "attention", "hidden"]}
    if stage == "intermediate":
        return {"teacher": "finetuned", "data": "augmented task data",
                "terms": ["embedding", "attention", "hidden"]}
    if stage == "prediction":
        return {"teacher": "finetuned", "data": "augmented task data", "terms": ["prediction"]}
    raise ValueError(f"unknown stage {stage!r}")


_WHY = {
    ("general", "teacher"): "general distillation imitates the pre-trained (not fine-tuned) "
                            "BERT: there is no task yet",
    ("general", "data"): "general distillation runs on a large unlabelled general corpus "
                         "(the paper: Wikipedia)",
    ("general", "terms"): "general distillation has no task predictions to imitate, so only the "
                          "transformer-layer and embedding terms",
    ("intermediate", "teacher"): "task distillation imitates the teacher fine-tuned on the task",
    ("intermediate", "data"): "task distillation runs on the augmented task sentences (no gold "
                              "labels needed: the teacher provides every target)",
    ("intermediate", "terms"): "stage a distils the embeddings, attention scores and hidden "
                               "states",
    ("prediction", "teacher"): "the soft targets come from the fine-tuned teacher",
    ("prediction", "data"): "stage b uses the same augmented data; the gold labels are never "
                            "used as targets",
    ("prediction", "terms"): "stage b distils the prediction layer only (soft cross-entropy)",
}


def _check_stage_plan(candidate) -> None:
    for stage in STAGES:
        got = candidate(stage)
        assert isinstance(got, dict), f"stage {stage!r}: return a dict, got {type(got).__name__}"
        missing = {"teacher", "data", "terms"} - set(got)
        assert not missing, f"stage {stage!r}: the dict needs the keys {sorted(missing)}"
        expected = stage_plan(stage)
        for key in ("teacher", "data"):
            allowed = TEACHERS if key == "teacher" else DATA
            assert got[key] in allowed, (f"stage {stage!r}: {key}={got[key]!r} is not one of "
                                         f"{allowed}")
            assert got[key] == expected[key], f"stage {stage!r}: {_WHY[(stage, key)]}"
        terms = got["terms"]
        unknown = set(terms) - set(TERMS)
        assert not unknown, f"stage {stage!r}: unknown terms {sorted(unknown)}; use {TERMS}"
        assert sorted(terms) == sorted(expected["terms"]), f"stage {stage!r}: {_WHY[(stage, 'terms')]}"


register("nb05.stage_plan", checker=_check_stage_plan, reference=stage_plan,
         hint=("Three runs, in order: general distillation, then task distillation in two "
               "stages. Which teacher exists before there is a task? What data has no task? "
               "Which loss term needs the task's predictions?",
               "General distillation imitates a teacher that has seen no task, on text without "
               "a task, so it cannot distil predictions. Task distillation imitates the "
               "teacher fine-tuned on the task, on the augmented task data: stage a everything "
               "except the predictions, stage b the predictions alone."))


# -- 2. one training step of stage a ------------------------------------------------------------

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


register("nb05.distillation_step", checker=_check_distillation_step,
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


# -- 3. data augmentation, Algorithm 1 ----------------------------------------------------------

def augment_sentence(words: list[str], candidates: dict[int, list[str]], p_t: float,
                     n_aug: int, rng: np.random.Generator) -> list[list[str]]:
    """``n_aug`` new versions of a sentence (TinyBERT, Jiao et al. 2020, Alg. 1).

    ``words``: the sentence as a list of words. ``candidates[i]``: the replacement words of
    word ``i`` (up to K candidates; empty or absent: never replaced). For each attempt, every word
    with candidates is replaced with probability ``p_t`` (one coin per word) by a candidate
    drawn uniformly; the other words stay. Every attempt starts from the original sentence.
    Returns ``n_aug`` lists of words, one per attempt (repeats included). All randomness
    comes from ``rng``. (The coins and candidate indices are drawn in the same order as
    :func:`tinylab.augment.augment_sentence` draws them.)
    """
    slots = [i for i in sorted(candidates) if candidates[i]]
    out = []
    for _ in range(n_aug):
        replace = rng.random(len(slots)) < p_t                         # one coin per word
        pick = rng.integers(0, [len(candidates[i]) for i in slots])    # uniform in 0..K_i-1
        new = list(words)                                               # from the original
        for i, hit, j in zip(slots, replace, pick):
            if hit:
                new[i] = candidates[i][j]
        out.append(new)
    return out


# "the plot is slow , the acting dull and the ending strangely moving"; word 11 is eligible
# but found no neighbours. No list holds its own word, so every replacement is visible.
_AUG_WORDS = "the plot is slow , the acting dull and the ending strangely moving".split()
_AUG_CANDIDATES = {
    1: ["story", "script", "premise"],
    3: ["sluggish", "tedious"],
    6: ["cast", "performances", "casting", "direction"],
    7: ["boring", "flat", "lifeless"],
    10: ["finale", "conclusion"],
    12: ["touching", "affecting", "powerful", "stirring", "poignant"],
}
_AUG_ATTEMPTS = 1500
_AUG_SIGMAS = 5.0  # tolerance of every frequency check, in binomial standard deviations


def _sentences(candidate, words, candidates, p_t, n_aug, seed) -> list[list[str]]:
    """Call the learner's function on copies and check the shape of what comes back."""
    given_words, given_cands = list(words), copy.deepcopy(candidates)
    out = candidate(given_words, given_cands, p_t, n_aug, np.random.default_rng(seed))
    assert given_words == list(words), ("you changed the `words` list you were given: copy it "
                                        "(new = list(words)) and replace words in the copy")
    assert given_cands == candidates, "you changed the candidate table you were given"
    assert out is not None, "your function returned None: return the list of new sentences"
    assert isinstance(out, (list, tuple)), (f"return a list of sentences, got "
                                            f"{type(out).__name__}")
    assert len(out) == n_aug, (f"N_a = {n_aug} gave {len(out)} sentences: return exactly one per "
                               f"attempt, repeats included (tinylab.augment drops repeats "
                               f"afterwards; this exercise does not)")
    for s in out:
        assert not isinstance(s, str), ("return each sentence as a list of words (like `words`), "
                                        "not a joined string")
        assert len(s) == len(words), (f"a sentence has {len(s)} words, the original "
                                      f"{len(words)}: replace words one for one, never insert "
                                      f"or drop")
    if n_aug > 1 and len({id(s) for s in out}) < len(out):
        raise AssertionError("some of your sentences are the same list object: build a new "
                             "list (list(words)) for every attempt")
    return [[str(w) for w in s] for s in out]


def _check_augment_sentence(candidate) -> None:
    words, cands = _AUG_WORDS, _AUG_CANDIDATES
    eligible = sorted(cands)

    # shape, and the two ends of p_t
    _sentences(candidate, words, cands, 0.4, 5, seed=0)
    out = _sentences(candidate, words, cands, 0.0, 20, seed=1)
    changed = [(i, s[i]) for s in out for i in range(len(words)) if s[i] != words[i]]
    assert not changed, (f"with p_t = 0 nothing may change, but word {changed[0][0]} "
                         f"({words[changed[0][0]]!r}) became {changed[0][1]!r}: replace a word "
                         f"only when its draw is below p_t (rng.random() < p_t)")
    out = _sentences(candidate, words, cands, 1.0, 20, seed=2)
    kept = [i for s in out for i in eligible if s[i] == words[i]]
    assert not kept, (f"with p_t = 1 every word with candidates is replaced, but word {kept[0]} "
                      f"({words[kept[0]]!r}) was kept: replace a word when its draw is below "
                      f"p_t (rng.random() < p_t, always true for p_t = 1)")
    assert _sentences(candidate, words, cands, 0.4, 0, seed=3) == [], (
        "N_a = 0 asks for no sentences: return an empty list")
    out = _sentences(candidate, words, {}, 0.5, 3, seed=4)
    assert all(s == words for s in out), ("without any candidates every attempt is the "
                                          "original sentence")
    with_empty = {**cands, 11: []}
    try:
        out = _sentences(candidate, words, with_empty, 0.5, 20, seed=5)
    except (IndexError, ValueError, ZeroDivisionError, KeyError) as err:
        raise AssertionError(f"word 11 ({words[11]!r}) has an empty candidate list and your code "
                             f"raised {type(err).__name__}: {err}. A word without candidates "
                             f"is never replaced: skip it") from None
    assert all(s[11] == words[11] for s in out), (f"word 11 ({words[11]!r}) has an empty "
                                                  f"candidate list, yet it was replaced")

    # the same generator state must give the same sentences
    first = _sentences(candidate, words, cands, 0.4, 30, seed=6)
    again = _sentences(candidate, words, cands, 0.4, 30, seed=6)
    assert first == again, ("two calls with identically seeded generators gave different "
                            "sentences: draw every random number from `rng` (not from random, "
                            "np.random or torch)")

    # many attempts: where replacements happen, what they are, how often
    p_t, n = 0.4, _AUG_ATTEMPTS
    out = _sentences(candidate, words, cands, p_t, n, seed=7)
    for s in out:
        for i, w in enumerate(s):
            if w == words[i]:
                continue
            assert i in cands, (f"word {i} ({words[i]!r}) has no candidates but became {w!r}: "
                                f"words without candidates stay as they are")
            assert w in cands[i], (f"word {i} ({words[i]!r}) became {w!r}, which is not one of "
                                   f"its candidates {cands[i]}")
    tol = _AUG_SIGMAS * math.sqrt(p_t * (1 - p_t) / n)
    for i in eligible:
        rate = sum(s[i] != words[i] for s in out) / n
        if abs(rate - p_t) <= tol:
            continue
        why = ""
        if abs(rate - (1 - p_t)) <= tol:
            why = (" - that is 1 - p_t: replace when the draw is below p_t "
                   "(rng.random() < p_t), not above")
        elif rate > p_t:
            why = (" - too often: does every attempt start again from the original words? "
                   "Replacements must not pile up from one attempt to the next")
        raise AssertionError(f"word {i} ({words[i]!r}) was replaced in {rate:.1%} of {n} "
                             f"attempts, expected p_t = {p_t:.0%} (within ±{tol:.1%}){why}")
    # one coin per word: "all or none replaced" is rare for independent coins
    k = len(eligible)
    all_or_none = sum(all(s[i] != words[i] for i in eligible) or
                      all(s[i] == words[i] for i in eligible) for s in out) / n
    expected = p_t ** k + (1 - p_t) ** k
    spread = _AUG_SIGMAS * math.sqrt(expected * (1 - expected) / n)
    assert all_or_none <= expected + spread, (
        f"in {all_or_none:.0%} of the attempts either every word with candidates was replaced or "
        f"none was; with one independent coin per word that happens in {expected:.1%}. Draw a "
        f"separate random number for every word, not one per sentence")
    # uniform choice among a word's candidates
    for i in eligible:
        drawn = [s[i] for s in out if s[i] != words[i]]
        counts = {c: drawn.count(c) for c in cands[i]}
        if len(drawn) and counts[cands[i][0]] == len(drawn):
            raise AssertionError(f"word {i} ({words[i]!r}) was always replaced by its first "
                                 f"candidate {cands[i][0]!r}: choose one of its {len(cands[i])} "
                                 f"candidates uniformly at random")
        never = [c for c, m in counts.items() if m == 0]
        assert not never, (f"word {i} ({words[i]!r}): candidate {never[0]!r} was never chosen in "
                           f"{len(drawn)} replacements. Draw an index from all "
                           f"{len(cands[i])} candidates: rng.integers(0, K) already excludes K")
        share = 1 / len(cands[i])
        sd = math.sqrt(len(drawn) * share * (1 - share))
        for c, m in counts.items():
            assert abs(m - len(drawn) * share) <= _AUG_SIGMAS * sd, (
                f"word {i} ({words[i]!r}): candidate {c!r} was chosen {m} times out of "
                f"{len(drawn)}, expected about {len(drawn) * share:.0f} for a uniform choice "
                f"among {len(cands[i])} candidates")


register("nb05.augment_sentence", checker=_check_augment_sentence, reference=augment_sentence,
         forbidden=("tinylab.augment.augment_sentence", "tinylab.augment.augment_dataset"),
         why="this exercise asks you to write the sampling loop of Algorithm 1 yourself",
         hint=("Every one of the n_aug attempts starts again from the original words. Which "
               "words can change at all, how many coins do you toss per attempt, and where must "
               "every random number come from?",
               "For each attempt take a fresh copy of the words; for each position with a "
               "non-empty candidate list, draw a uniform number from rng and replace the word "
               "when it is below p_t, by one of its candidates picked uniformly (an index drawn "
               "from rng in 0..K-1). Positions without candidates stay. Keep one list per "
               "attempt, repeats included."))
