"""The training loop every stage shares, written out in full.

TinyBERT is four optimiser runs (teacher fine-tuning, general distillation, task distillation
stage a and stage b) plus two baselines. They differ only in *what the loss is*; the loop around
it is the same, so it lives here once and each stage passes a ``loss_fn``::

    for step in range(start, total_steps):
        batch = next batch of this process                  # fixed order, see below
        losses = loss_fn(modules, batch)                     # {"total": ..., "attention": ...}
        check every component is finite                      # else stop, naming it and the step
        accelerator.backward(losses["total"])                # gradients (synchronised across processes)
        clip_grad_norm_(params, max_grad_norm)
        optimizer.step(); scheduler.step(); optimizer.zero_grad()    # AdamW, fused kernel
        log the components and the learning rate; evaluate / checkpoint when due

Accelerate (``Accelerator``) handles the device, mixed precision (``--mixed_precision`` of
``accelerate launch`` or ``ACCELERATE_MIXED_PRECISION``) and several data-parallel processes
(``torchrun`` / ``accelerate launch``): it wraps each trained module in
``DistributedDataParallel`` so ``backward`` averages gradients over processes. Nothing else is
hidden: no Trainer, no callbacks framework.

Data order, explicitly. Epoch ``e`` uses the batches of
``make_dataloader(train, shuffle=True, seed=seed)`` after ``set_epoch(e)`` (length-grouped,
dynamically padded), sharded by ``accelerator.prepare_data_loader``: with P processes,
optimiser step s of epoch e gives batch ``s * P + rank`` to process ``rank``; an epoch
therefore has ``len(batches) // P`` steps (the few left-over batches are skipped, so no
process waits for a partner that has no batch). Because the order is a function of
``(seed, epoch)``, a resumed run skips to its position (``accelerator.skip_first_batches``)
and sees the same batches; the order is also saved in every checkpoint and checked on resume.

The loop's body is those eight lines; what surrounds them lives in helpers below
(:func:`_batches`, :func:`_finite_record`, :func:`_evaluate`, :class:`_Checkpoints`). The
set-up pieces are public, so that code outside the loop builds exactly what it builds: the
optimiser (:func:`param_groups`, :func:`adamw`, :func:`make_scheduler`), the batches
(:func:`make_loader`, :func:`epoch_batches`, :func:`collate`) and the evaluation schedule
(:func:`evaluation_due`). The accelerator comes from :func:`tinylab.device.make_accelerator`.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from accelerate.utils import gather_object, set_seed
from torch import nn
from tqdm.auto import tqdm
from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

from tinylab.config import StageConfig
from tinylab.data import make_dataloader, set_epoch
from tinylab.device import make_accelerator
from tinylab.distill.checkpoint import (CheckpointError, capture_rng_state, clear_checkpoints,
                                        latest_checkpoint, load_checkpoint, restore_rng_state,
                                        save_checkpoint)
from tinylab.distill.early_stopping import EarlyStopping
from tinylab.distill.history import History, StageLog
from tinylab.distill.options import RunOptions, as_run_options

__all__ = ["train_stage", "StepInfo", "NonFiniteLossError", "model_inputs", "batch_to_device",
           "MODEL_INPUTS", "EXAMPLE_INDEX",
           # the loop's own parts, public for the exercises, the teacher-output cache and tests
           "param_groups", "adamw", "make_scheduler", "make_loader", "epoch_batches", "collate",
           "evaluation_due"]

MODEL_INPUTS = ("input_ids", "attention_mask", "token_type_ids")
# Column added to training sets so a batch knows which examples it holds (teacher-output cache).
EXAMPLE_INDEX = "example_idx"


class NonFiniteLossError(FloatingPointError):
    """A loss component became NaN or infinite; training stops instead of corrupting weights."""


@dataclass(frozen=True)
class StepInfo:
    """What a callback receives after every optimiser step (``record`` = the logged values)."""

    stage: str
    step: int
    total_steps: int
    epoch: int
    record: dict[str, float]


def batch_to_device(batch: Mapping[str, torch.Tensor], device: torch.device | str
                    ) -> dict[str, torch.Tensor]:
    """Move a collated batch to the training device, except its ``example_idx`` column.

    ``example_idx`` only tells the teacher-output cache (which lives in CPU memory) which rows
    to fetch; keeping it on the CPU saves a device-to-host copy (and a GPU sync) per step.
    """
    return {k: (v if k == EXAMPLE_INDEX else v.to(device)) for k, v in batch.items()}


def model_inputs(batch: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The entries of a batch a BERT forward pass takes (``input_ids``, masks, token types)."""
    return {k: v for k, v in batch.items() if k in MODEL_INPUTS}


# --------------------------------------------------------------------------------------------
# Set-up helpers
# --------------------------------------------------------------------------------------------

def param_groups(modules: Mapping[str, nn.Module], weight_decay: float) -> list[dict]:
    """AdamW groups: no weight decay on biases and LayerNorm weights (BERT's, and TinyBERT's
    official ``no_decay = ['bias', 'LayerNorm.bias', 'LayerNorm.weight']``)."""
    decay, no_decay = [], []
    for module in modules.values():
        for name, p in module.named_parameters():
            if not p.requires_grad:
                continue
            (no_decay if name.endswith("bias") or "LayerNorm" in name else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("nothing to train: no module has parameters with requires_grad=True")
    return [{"params": decay, "weight_decay": weight_decay},
            {"params": no_decay, "weight_decay": 0.0}]


def adamw(groups: list[dict], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW, with PyTorch's fused kernel where it has one (CPU and CUDA).

    The update is the same; the default CPU implementation loops over parameters in Python
    and makes several passes over each, which for a student whose 5.9 M-row embedding table is
    updated at every step costs a sizeable share of the step (``bench/optimizer.py``)."""
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=lr, fused=True if fused else None)


def make_scheduler(optimizer, stage: StageConfig, total_steps: int):
    """transformers' warm-up schedules: linear decay to 0, or constant after warm-up. Both
    warm up for ``stage.warmup_ratio`` of the steps; the official code's intermediate stage
    (constant, no warm-up) is ``schedule="constant"`` with ``warmup_ratio=0``."""
    warmup = int(stage.warmup_ratio * total_steps)
    if stage.schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    if stage.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    raise ValueError(f"unknown schedule {stage.schedule!r}; use 'linear' or 'constant'")


def make_loader(train, tokenizer, batch_size: int, seed: int, group_by_length: bool):
    """The training loader of a stage: shuffled from ``seed`` (length-grouped if
    ``group_by_length``), dynamically padded, the last short batch kept
    (:func:`tinylab.data.make_dataloader`). Its order per epoch is :func:`epoch_batches`."""
    return make_dataloader(train, tokenizer, batch_size, shuffle=True, seed=seed,
                           group_by_length=group_by_length, drop_last=False)


def epoch_batches(loader, epoch: int) -> list[list[int]]:
    """The batches (lists of example indices) of one epoch: a pure function of (seed, epoch)."""
    set_epoch(loader, epoch)
    return [[int(i) for i in b] for b in loader.batch_sampler]


def collate(loader, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """Fetch and pad one batch exactly as ``loader`` would (its dataset and collate function)."""
    ds = loader.dataset
    rows = ds.__getitems__(list(indices)) if hasattr(ds, "__getitems__") else [
        ds[i] for i in indices]
    return loader.collate_fn(rows)


def evaluation_due(every: int | None, step: int, total: int, steps_per_epoch: int) -> bool:
    """Evaluation schedule: ``None`` once per epoch, ``0`` never, ``n`` every n steps; always
    at the last step unless ``0``."""
    if every == 0:
        return False
    if step == total:
        return True
    return step % (every or steps_per_epoch) == 0


def _prepare(accelerator, modules: Mapping[str, nn.Module]) -> dict[str, nn.Module]:
    """Wrap trained modules for the device / processes; modules without trainable parameters
    (e.g. the loss module in the prediction stage) are only moved to the device (DDP refuses
    modules with nothing to synchronise)."""
    prepared = {}
    for name, module in modules.items():
        if any(p.requires_grad for p in module.parameters()):
            # Accelerate marks what it prepares and hands a marked module back untouched. Every
            # stage unwraps its modules when it ends (the mixed-precision forward comes off), so
            # a module an earlier stage trained (general distillation, then stage a, then stage
            # b) must lose the mark too: kept, it would train this stage without autocast, in
            # fp32 under precision="bf16", and only when the earlier stage ran in this process.
            vars(module).pop("_is_accelerate_prepared", None)
            prepared[name] = accelerator.prepare(module)
        else:
            prepared[name] = module.to(accelerator.device)
    return prepared


# --------------------------------------------------------------------------------------------
# The loop's helpers: steps, data, finite losses, evaluation, checkpoints
# --------------------------------------------------------------------------------------------

def _count_steps(name: str, n_examples: int, n_batches: int, stage: StageConfig,
                 world: int) -> tuple[int, int]:
    """``(steps_per_epoch, total_steps)``; an epoch is ``n_batches // world`` steps."""
    steps_per_epoch = n_batches // world
    if steps_per_epoch == 0:
        raise ValueError(f"stage {name!r}: {n_examples} examples make {n_batches} batch(es) of "
                         f"{stage.batch_size}, fewer than the {world} processes; lower "
                         f"batch_size or use more data")
    total = math.ceil(stage.epochs * steps_per_epoch)
    if stage.max_steps is not None:
        total = min(total, stage.max_steps)
    if total < 1:
        raise ValueError(f"stage {name!r} would run 0 steps (epochs={stage.epochs}, "
                         f"max_steps={stage.max_steps}); set epochs > 0 or max_steps >= 1")
    return steps_per_epoch, total


def _batches(loader, accelerator, start: int, total: int, steps_per_epoch: int):
    """Yield ``(step, epoch, batch)`` for steps ``start + 1 .. total``.

    ``loader`` is prepared by Accelerate (``accelerator.prepare_data_loader``): with P
    processes, process ``rank`` gets batches ``rank, rank + P, ...`` of the epoch's order, so
    step ``s`` of epoch ``e`` trains on batch ``s * P + rank``. Epoch ``e``'s order comes from
    ``loader.set_epoch(e)``; a run resumed mid-epoch skips the batches already trained on
    (``accelerator.skip_first_batches``). An epoch ends after ``steps_per_epoch`` steps, so the
    few batches left over when P does not divide their number are never used.
    """
    step = start
    while step < total:
        epoch, position = divmod(step, steps_per_epoch)
        loader.set_epoch(epoch)
        epoch_loader = accelerator.skip_first_batches(loader, position) if position else loader
        try:
            for batch in epoch_loader:
                step += 1
                yield step, epoch, batch_to_device(batch, accelerator.device)
                if step == total or step % steps_per_epoch == 0:
                    break
        finally:  # a loop left early must leave Accelerate's list of active data loaders
            epoch_loader.end()


def _finite_record(name: str, losses: Mapping[str, torch.Tensor], step: int, total: int,
                   stage: StageConfig, accelerator) -> dict[str, float]:
    """The loss components as floats (mean over processes); stop on NaN or infinity."""
    values = torch.stack([v.detach().float() for v in losses.values()])
    if accelerator.num_processes > 1:  # every process logs the same numbers
        values = accelerator.reduce(values, reduction="mean")
    record = dict(zip(losses, values.tolist()))
    bad = [k for k, v in record.items() if not math.isfinite(v)]
    if bad:
        raise NonFiniteLossError(
            f"stage {name!r}: loss component {bad[0]!r} is {record[bad[0]]} at step "
            f"{step}/{total} (all components: {record}). Lower the learning rate "
            f"(now {stage.learning_rate}) or check the inputs of that loss term")
    return record


def _evaluate(name: str, step: int, evaluate: Callable[[], dict[str, float]], log: StageLog,
              stopper: EarlyStopping, wrapped: Mapping[str, nn.Module],
              say: Callable[[str], None]) -> bool:
    """Run ``evaluate`` (on every process: it shards the validation set and gathers the
    predictions, so every process sees the same metrics and takes the same early-stopping
    decision), log it, and return early stopping's verdict."""
    metrics = {k: float(v) for k, v in evaluate().items()}
    log.evals.append({"step": step, **metrics})
    say(f"[{name}] step {step}: " + ", ".join(f"{k}={v:.4f}" for k, v in metrics.items()))
    for module in wrapped.values():
        module.train()
    if not stopper.enabled:
        return False
    stop = stopper.observe(step, next(iter(metrics.values())))
    if stop:
        say(f"[{name}] early stop at step {step}: no better score in {stopper.patience} "
                  f"evaluation(s); best {stopper.best_score:.4f} at step {stopper.best_step}")
    return stop


class _Checkpoints:
    """Resume from and save to ``run.checkpoint_dir`` (nothing at all without one).

    A checkpoint holds the modules, optimiser, scheduler, every process's RNG state, the
    epoch's data order (checked on resume), the log so far and early stopping's state.
    """

    def __init__(self, name: str, run: RunOptions, accelerator, modules, optimizer, scheduler,
                 stopper: EarlyStopping, base_loader, *, seed: int, total: int):
        self.name, self.run, self.accelerator = name, run, accelerator
        self.modules, self.optimizer, self.scheduler = modules, optimizer, scheduler
        self.stopper, self.base_loader = stopper, base_loader
        self.seed, self.total = seed, total
        self.directory = Path(run.checkpoint_dir) if run.checkpoint_dir is not None else None

    def resume(self, log: StageLog) -> tuple[int, StageLog]:
        """``(first step, log)``: from the latest checkpoint if ``run.resume``, else ``(0,
        log)`` after clearing tinylab's old checkpoints (only those: other files in the
        folder are the user's and stay)."""
        if self.directory is None:
            return 0, log
        acc, main = self.accelerator, self.accelerator.is_main_process
        found = latest_checkpoint(self.directory) if self.run.resume else None
        if found is None:
            if main and self.directory.exists():
                clear_checkpoints(self.directory)
            acc.wait_for_everyone()
            return 0, log
        state, rng_states, order = load_checkpoint(found, modules=self.modules,
                                                   optimizer=self.optimizer,
                                                   scheduler=self.scheduler)
        for key, expected in (("total_steps", self.total), ("processes", acc.num_processes),
                              ("seed", self.seed)):
            if state[key] != expected:
                raise CheckpointError(f"checkpoint {found} was made with {key}={state[key]}, "
                                      f"this run has {expected}: resume with the same "
                                      f"configuration and number of processes")
        if order != epoch_batches(self.base_loader, state["epoch"]):
            raise CheckpointError(f"checkpoint {found} trained on another order of examples "
                                  f"than this run would: the training data changed; resume "
                                  f"with the same data, or start afresh without resume")
        restore_rng_state(rng_states[acc.process_index])
        start = state["step"]
        if self.stopper.enabled and "early_stopping" in state:
            self.stopper.load(found, state["early_stopping"])
            if self.stopper.stopped_at is not None:  # it had already stopped: nothing to train
                start = self.total
        if main:
            print(f"[{self.name}] resumed from {found} at step {start}/{self.total}")
        acc.wait_for_everyone()
        return start, StageLog.from_dict(state["log"])

    def due(self, step: int, stop: bool) -> bool:
        every = self.run.checkpoint_every
        return self.directory is not None and (
            stop or step == self.total or bool(every and step % every == 0))

    def save(self, step: int, epoch: int, log: StageLog, seconds: float) -> None:
        acc = self.accelerator
        rng = gather_object([capture_rng_state()]) if acc.num_processes > 1 else [
            capture_rng_state()]
        if acc.is_main_process:
            state = {"step": step, "epoch": epoch, "total_steps": self.total,
                     "processes": acc.num_processes, "seed": self.seed, "stage": self.name,
                     "log": {**log.to_dict(), "seconds": seconds}}
            if self.stopper.enabled:
                state["early_stopping"] = self.stopper.state()
            save_checkpoint(self.directory, step=step, modules=self.modules,
                            optimizer=self.optimizer, scheduler=self.scheduler, state=state,
                            rng_states=rng, data_order=epoch_batches(self.base_loader, epoch),
                            extra=self.stopper.save if self.stopper.enabled else None)
        acc.wait_for_everyone()


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

def train_stage(name: str, *, modules: dict[str, nn.Module],
                loss_fn: Callable[[dict[str, nn.Module], dict[str, torch.Tensor]],
                                  dict[str, torch.Tensor]],
                train, tokenizer, stage: StageConfig, seed: int,
                evaluate: Callable[[], dict[str, float]] | None = None,
                history: History | None = None, run: RunOptions | None = None,
                group_by_length: bool = True, info: dict[str, Any] | None = None) -> History:
    """Run one optimiser stage and return its :class:`History` (stage ``name``).

    ``modules``: the trained modules by name, e.g. ``{"student": student, "projections":
    loss_module}``; parameters with ``requires_grad=False`` are frozen. ``loss_fn(modules,
    batch)`` gets the *prepared* modules (call them, not the originals: only the wrapped
    forward synchronises gradients across processes) and a batch on the device, and returns a
    dict of scalar losses with key ``"total"`` (the one back-propagated; the others are logged).
    ``train``: a tokenised ``datasets.Dataset`` (``input_ids``, ``attention_mask``, optional
    ``labels``, ``example_idx``). ``evaluate()`` returns metrics (e.g. ``{"accuracy": ..}``)
    and runs on every process (shard the data and gather, as
    :func:`tinylab.evaluate.evaluate_model` does with ``accelerator=``), when
    :attr:`StageConfig.eval_every` says so.
    ``stage.patience``: stop after that many evaluations without a better score (the first
    metric ``evaluate`` returns) and end with the best evaluated weights
    (:class:`~tinylab.distill.early_stopping.EarlyStopping`; ``log.info["early_stopping"]``).
    ``run``: the :class:`~tinylab.distill.options.RunOptions` - accelerator, checkpoints
    (``resume=True`` continues from the latest one in ``run.checkpoint_dir``; otherwise
    tinylab's earlier checkpoints there are deleted - only those, see
    :func:`~tinylab.distill.checkpoint.clear_checkpoints`), callbacks (called with a
    :class:`StepInfo` after each step; tests use one to interrupt), progress bar.
    Modules are trained in place; the returned history holds only this stage.
    """
    run = as_run_options(run)
    accelerator = run.accelerator or make_accelerator()
    history = history if history is not None else History()
    set_seed(seed)

    base_loader = make_loader(train, tokenizer, stage.batch_size, seed, group_by_length)
    steps_per_epoch, total = _count_steps(name, len(train), len(base_loader), stage,
                                          accelerator.num_processes)
    optimizer = adamw(param_groups(modules, stage.weight_decay), stage.learning_rate,
                       accelerator.device)
    scheduler = make_scheduler(optimizer, stage, total)
    wrapped = _prepare(accelerator, modules)
    optimizer = accelerator.prepare(optimizer)
    # Shards the batches across processes; batch_to_device moves all but example_idx.
    loader = accelerator.prepare_data_loader(base_loader, device_placement=False)
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]

    log = StageLog(info={"examples": len(train), "batch_size": stage.batch_size,
                         "processes": accelerator.num_processes,
                         "steps_per_epoch": steps_per_epoch, "total_steps": total,
                         **(info or {})})
    stopper = EarlyStopping(stage.patience if evaluate is not None else None, modules)
    checkpoints = _Checkpoints(name, run, accelerator, modules, optimizer, scheduler, stopper,
                               base_loader, seed=seed, total=total)
    start, log = checkpoints.resume(log)

    quiet = {} if (run.progress and accelerator.is_main_process) else {"disable": True}
    bar = tqdm(total=total, initial=start, desc=name, dynamic_ncols=True, **quiet)
    say = bar.write if accelerator.is_main_process else (lambda text: None)
    for module in wrapped.values():
        module.train()
    t0, seconds_before = time.perf_counter(), log.seconds
    try:
        for step, epoch, batch in _batches(loader, accelerator, start, total, steps_per_epoch):
            losses = loss_fn(wrapped, batch)
            record = _finite_record(name, losses, step, total, stage, accelerator)
            accelerator.backward(losses["total"])
            if stage.max_grad_norm:
                accelerator.clip_grad_norm_(params, stage.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            log.steps.append({"step": step, **record, "lr": scheduler.get_last_lr()[0]})
            bar.update(1)
            bar.set_postfix(loss=f"{record['total']:.4g}", refresh=False)
            stop = (evaluate is not None and evaluation_due(stage.eval_every, step, total,
                                                     steps_per_epoch)
                    and _evaluate(name, step, evaluate, log, stopper, wrapped, say))
            if checkpoints.due(step, stop):
                checkpoints.save(step, epoch, log,
                                 seconds_before + time.perf_counter() - t0)
            for callback in run.callbacks:
                callback(StepInfo(name, step, total, epoch, {**record, "lr": log.steps[-1]["lr"]}))
            if stop:
                break
    finally:
        bar.close()
        log.seconds = seconds_before + time.perf_counter() - t0
        for module in wrapped.values():  # drop mixed-precision forward wrappers, if any
            accelerator.unwrap_model(module, keep_fp32_wrapper=False)
        accelerator.free_memory()

    if stopper.enabled:  # end with the best evaluated weights, not the last step's
        stopper.restore()
        log.info["early_stopping"] = stopper.state()
    history.stages[name] = log
    return history
