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
``make_dataloader(train, shuffle=True, seed=seed)`` after ``set_epoch(loader, e)``
(length-grouped, dynamically padded).
With P processes, optimiser step s of epoch e gives batch ``s * P + rank`` to process ``rank``;
an epoch therefore has ``len(batches) // P`` steps (the few left-over batches are skipped, so
no process waits for a partner that has no batch). Because the order is a function of
``(seed, epoch)`` and is also saved in every checkpoint, a resumed run sees the same batches.
"""
from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

import torch
from torch import nn

from tinylab.config import StageConfig
from tinylab.distill.checkpoint import (CheckpointError, capture_rng_state, clear_checkpoints,
                                        latest_checkpoint, load_checkpoint, restore_rng_state,
                                        save_checkpoint)
from tinylab.distill.early_stopping import EarlyStopping
from tinylab.distill.history import History, StageLog

__all__ = ["make_accelerator", "train_stage", "StepInfo", "NonFiniteLossError", "model_inputs",
           "batch_to_device",
           "MODEL_INPUTS", "EXAMPLE_INDEX"]

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


def make_accelerator(device: str = "auto", precision: str = "fp32", **kwargs: Any):
    """An ``accelerate.Accelerator`` for ``device`` and ``precision`` (``Config.device`` /
    ``Config.precision``; see :mod:`tinylab.device`).

    Both are checked first (:func:`tinylab.device.resolve_device` and
    :func:`~tinylab.device.resolve_precision`): a device or precision this machine lacks is a
    one-line :class:`~tinylab.device.DeviceError`. ``device="cpu"`` sets Accelerate's
    ``cpu=True``, which also makes several processes started by ``torchrun`` on a machine
    without a GPU a multi-process CPU run (gloo), so ``torchrun --nproc_per_node 2 ... tinylab
    distill`` trains data-parallel on two CPU processes. (``accelerate launch --cpu
    --num_processes 2`` starts a single process on such a machine; use ``torchrun``.)
    ``precision`` becomes ``mixed_precision`` (autocast; the master weights stay fp32).

    Accelerate keeps one mixed precision per process. In a single process (a notebook, a
    benchmark comparing fp32 with bf16) nothing else holds on to it, so asking for another
    precision starts Accelerate's state afresh; in a multi-process run it is refused in one
    line (every process must train in the same precision).
    """
    from accelerate import Accelerator
    from accelerate.utils import DistributedDataParallelKwargs

    from tinylab.device import accelerate_precision, resolve_device, resolve_precision

    target = resolve_device(device)
    kwargs.setdefault("cpu", target.type == "cpu")
    kwargs.setdefault("mixed_precision", accelerate_precision(resolve_precision(precision,
                                                                                target)))
    _allow_precision_change(kwargs["mixed_precision"])
    # Ablations (e.g. hidden weight 0) leave some parameters without a gradient; DDP must be
    # told to expect that, or it stops with "Expected to have finished reduction".
    kwargs.setdefault("kwargs_handlers",
                      [DistributedDataParallelKwargs(find_unused_parameters=True)])
    return Accelerator(**kwargs)


def _allow_precision_change(mixed_precision: str) -> None:
    """Let a single process switch Accelerate's mixed precision (see :func:`make_accelerator`)."""
    from accelerate.state import AcceleratorState, PartialState

    from tinylab.device import DeviceError

    if not AcceleratorState._shared_state:
        return  # nothing set yet
    current = AcceleratorState._shared_state.get("_mixed_precision")
    if current is None or current == mixed_precision:
        return
    if PartialState().num_processes > 1:
        raise DeviceError(f"this run's processes already train with precision {current!r}; "
                          f"one run cannot switch to {mixed_precision!r}: restart it with the "
                          f"precision setting you want")
    AcceleratorState._reset_state()  # Accelerate's own reset; the process state is kept


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

def _param_groups(modules: Mapping[str, nn.Module], weight_decay: float) -> list[dict]:
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


def _adamw(groups: list[dict], lr: float, device: torch.device) -> torch.optim.AdamW:
    """AdamW, with PyTorch's fused kernel where it has one (CPU and CUDA).

    The update is the same; the default CPU implementation loops over parameters in Python
    and makes several passes over each, which for a student whose 5.9 M-row embedding table is
    updated at every step costs a sizeable share of the step (``bench/optimizer.py``)."""
    fused = torch.device(device).type in ("cpu", "cuda")
    return torch.optim.AdamW(groups, lr=lr, fused=True if fused else None)


def _scheduler(optimizer, stage: StageConfig, total_steps: int):
    """transformers' warm-up schedules: linear decay to 0, or constant after warm-up (the
    official code's intermediate stage)."""
    from transformers import get_constant_schedule_with_warmup, get_linear_schedule_with_warmup

    warmup = int(stage.warmup_ratio * total_steps)
    if stage.schedule == "linear":
        return get_linear_schedule_with_warmup(optimizer, warmup, total_steps)
    if stage.schedule == "constant":
        return get_constant_schedule_with_warmup(optimizer, warmup)
    raise ValueError(f"unknown schedule {stage.schedule!r}; use 'linear' or 'constant'")


def _make_loader(train, tokenizer, batch_size: int, seed: int, group_by_length: bool):
    from tinylab.data import make_dataloader

    return make_dataloader(train, tokenizer, batch_size, shuffle=True, seed=seed,
                           group_by_length=group_by_length, drop_last=False)


def _epoch_batches(loader, epoch: int) -> list[list[int]]:
    """The batches (lists of example indices) of one epoch: a pure function of (seed, epoch)."""
    from tinylab.data import set_epoch

    set_epoch(loader, epoch)
    return [[int(i) for i in b] for b in loader.batch_sampler]


def _collate(loader, indices: Sequence[int]) -> dict[str, torch.Tensor]:
    """Fetch and pad one batch exactly as ``loader`` would (its dataset and collate function)."""
    ds = loader.dataset
    rows = ds.__getitems__(list(indices)) if hasattr(ds, "__getitems__") else [
        ds[i] for i in indices]
    return loader.collate_fn(rows)


def _should(every: int | None, step: int, total: int, steps_per_epoch: int) -> bool:
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
            prepared[name] = accelerator.prepare(module)
        else:
            prepared[name] = module.to(accelerator.device)
    return prepared


# --------------------------------------------------------------------------------------------
# The loop
# --------------------------------------------------------------------------------------------

def train_stage(name: str, *, modules: dict[str, nn.Module],
                loss_fn: Callable[[dict[str, nn.Module], dict[str, torch.Tensor]],
                                  dict[str, torch.Tensor]],
                train, tokenizer, stage: StageConfig, seed: int,
                evaluate: Callable[[], dict[str, float]] | None = None,
                history: History | None = None, accelerator=None,
                checkpoint_dir: str | Path | None = None, checkpoint_every: int | None = None,
                resume: bool = False, callbacks: Sequence[Callable[[StepInfo], None]] = (),
                group_by_length: bool = True, progress: bool = True,
                info: dict[str, Any] | None = None) -> History:
    """Run one optimiser stage and return its :class:`History` (stage ``name``).

    ``modules``: the trained modules by name, e.g. ``{"student": student, "projections":
    loss_module}``; parameters with ``requires_grad=False`` are frozen. ``loss_fn(modules,
    batch)`` gets the *prepared* modules (call them, not the originals: only the wrapped
    forward synchronises gradients across processes) and a batch on the device, and returns a
    dict of scalar losses with key ``"total"`` (the one back-propagated; the others are logged).
    ``train``: a tokenised ``datasets.Dataset`` (``input_ids``, ``attention_mask``, optional
    ``labels``, ``example_idx``). ``evaluate()`` returns metrics (e.g. ``{"accuracy": ..}``); it
    runs on the main process only, when :attr:`StageConfig.eval_every` says so.
    ``stage.patience``: stop after that many evaluations without a better score (the first
    metric ``evaluate`` returns) and end with the best evaluated weights
    (:class:`~tinylab.distill.early_stopping.EarlyStopping`; ``log.info["early_stopping"]``).
    ``checkpoint_dir``: save a resumable checkpoint every ``checkpoint_every`` steps and at
    the end; ``resume=True`` continues from the latest one there (otherwise tinylab's earlier
    checkpoints there are deleted - only those, see :func:`~tinylab.distill.checkpoint.
    clear_checkpoints`; other files in the folder are never touched).
    ``callbacks``: called with a :class:`StepInfo` after each step (tests use one to interrupt).
    Modules are trained in place; the returned history holds only this stage.
    """
    if accelerator is None:
        accelerator = make_accelerator()
    from accelerate.utils import broadcast_object_list, gather_object, set_seed

    history = history if history is not None else History()
    world, rank, main = accelerator.num_processes, accelerator.process_index, \
        accelerator.is_main_process
    set_seed(seed)

    # -- how many steps ---------------------------------------------------------------------
    loader = _make_loader(train, tokenizer, stage.batch_size, seed, group_by_length)
    batches = _epoch_batches(loader, 0)
    steps_per_epoch = len(batches) // world
    if steps_per_epoch == 0:
        raise ValueError(f"stage {name!r}: {len(train)} examples make {len(batches)} batch(es) of "
                         f"{stage.batch_size}, fewer than the {world} processes; lower "
                         f"batch_size or use more data")
    total = math.ceil(stage.epochs * steps_per_epoch)
    if stage.max_steps is not None:
        total = min(total, stage.max_steps)
    if total < 1:
        raise ValueError(f"stage {name!r} would run 0 steps (epochs={stage.epochs}, "
                         f"max_steps={stage.max_steps}); set epochs > 0 or max_steps >= 1")

    optimizer = _adamw(_param_groups(modules, stage.weight_decay), stage.learning_rate,
                       accelerator.device)
    scheduler = _scheduler(optimizer, stage, total)
    wrapped = _prepare(accelerator, modules)
    optimizer = accelerator.prepare(optimizer)
    params = [p for m in modules.values() for p in m.parameters() if p.requires_grad]

    log = StageLog(info={"examples": len(train), "batch_size": stage.batch_size,
                         "processes": world, "steps_per_epoch": steps_per_epoch,
                         "total_steps": total, **(info or {})})
    start, current_epoch = 0, 0
    stopper = EarlyStopping(stage.patience if evaluate is not None else None, modules)

    # -- resume -----------------------------------------------------------------------------
    if checkpoint_dir is not None:
        checkpoint_dir = Path(checkpoint_dir)
        found = latest_checkpoint(checkpoint_dir) if resume else None
        if found is not None:
            state, rng_states, batches = load_checkpoint(
                found, modules=modules, optimizer=optimizer, scheduler=scheduler)
            for key, expected in (("total_steps", total), ("processes", world),
                                  ("seed", seed)):
                if state[key] != expected:
                    raise CheckpointError(f"checkpoint {found} was made with {key}={state[key]}, "
                                          f"this run has {expected}: resume with the same "
                                          f"configuration and number of processes")
            restore_rng_state(rng_states[rank])
            start, current_epoch = state["step"], state["epoch"]
            log = StageLog.from_dict(state["log"])
            if stopper.enabled and "early_stopping" in state:
                stopper.load(found, state["early_stopping"])
                if stopper.stopped_at is not None:  # it had already stopped: nothing to train
                    start = total
            if main:
                print(f"[{name}] resumed from {found} at step {start}/{total}")
        elif main and checkpoint_dir.exists():
            # A fresh run: old checkpoints must not be mixed in. Only tinylab's own entries go;
            # anything else in the folder is the user's and stays.
            clear_checkpoints(checkpoint_dir)
        accelerator.wait_for_everyone()

    def save(step: int) -> None:
        rng = gather_object([capture_rng_state()]) if world > 1 else [capture_rng_state()]
        if main:
            state = {"step": step, "epoch": current_epoch, "total_steps": total,
                     "processes": world, "seed": seed, "stage": name,
                     "log": {**log.to_dict(), "seconds": log.seconds + time.perf_counter() - t0}}
            if stopper.enabled:
                state["early_stopping"] = stopper.state()
            save_checkpoint(checkpoint_dir, step=step, modules=modules, optimizer=optimizer,
                            scheduler=scheduler, state=state, rng_states=rng, data_order=batches,
                            extra=stopper.save if stopper.enabled else None)
        accelerator.wait_for_everyone()

    # -- train ------------------------------------------------------------------------------
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    quiet = {} if (progress and main) else {"disable": True}  # else $TQDM_DISABLE decides
    bar = tqdm(total=total, initial=start, desc=name, dynamic_ncols=True, **quiet)
    for module in wrapped.values():
        module.train()
    step = start
    try:
        for step in range(start + 1, total + 1):
            epoch, position = divmod(step - 1, steps_per_epoch)
            if epoch != current_epoch:
                batches = _epoch_batches(loader, epoch)
                current_epoch = epoch
            batch = _collate(loader, batches[position * world + rank])
            batch = batch_to_device(batch, accelerator.device)

            losses = loss_fn(wrapped, batch)
            values = torch.stack([v.detach().float() for v in losses.values()])
            if world > 1:  # log the mean over processes; every process sees the same numbers
                values = accelerator.reduce(values, reduction="mean")
            record = dict(zip(losses, values.tolist()))
            bad = [k for k, v in record.items() if not math.isfinite(v)]
            if bad:
                raise NonFiniteLossError(
                    f"stage {name!r}: loss component {bad[0]!r} is {record[bad[0]]} at step "
                    f"{step}/{total} (all components: {record}). Lower the learning rate "
                    f"(now {stage.learning_rate}) or check the inputs of that loss term")

            accelerator.backward(losses["total"])
            if stage.max_grad_norm:
                accelerator.clip_grad_norm_(params, stage.max_grad_norm)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)

            record["lr"] = scheduler.get_last_lr()[0]
            log.steps.append({"step": step, **record})
            bar.update(1)
            bar.set_postfix(loss=f"{record['total']:.4g}", refresh=False)

            stop = False
            if evaluate is not None and _should(stage.eval_every, step, total, steps_per_epoch):
                score = [None]
                if main:
                    metrics = evaluate()
                    log.evals.append({"step": step, **{k: float(v) for k, v in metrics.items()}})
                    bar.write(f"[{name}] step {step}: " + ", ".join(
                        f"{k}={v:.4f}" for k, v in metrics.items()))
                    score = [float(next(iter(metrics.values())))]
                for module in wrapped.values():
                    module.train()
                accelerator.wait_for_everyone()
                if stopper.enabled:  # every process takes the main process's decision
                    if world > 1:
                        score = broadcast_object_list(score, from_process=0)
                    stop = stopper.observe(step, score[0])
                    if stop and main:
                        bar.write(f"[{name}] early stop at step {step}: no better score in "
                                  f"{stopper.patience} evaluation(s); best {stopper.best_score:.4f}"
                                  f" at step {stopper.best_step}")
            if checkpoint_dir is not None and (stop or step == total or (
                    checkpoint_every and step % checkpoint_every == 0)):
                save(step)
            for callback in callbacks:
                callback(StepInfo(name, step, total, epoch, record))
            if stop:
                break
    finally:
        bar.close()
        log.seconds += time.perf_counter() - t0
        for module in wrapped.values():  # drop mixed-precision forward wrappers, if any
            accelerator.unwrap_model(module, keep_fp32_wrapper=False)
        accelerator.free_memory()

    if world > 1 and evaluate is not None:  # evaluations ran on the main process: share them
        log.evals = gather_object([log.evals])[0]
    if stopper.enabled:  # end with the best evaluated weights, not the last step's
        stopper.restore()
        log.info["early_stopping"] = stopper.state()
    history.stages[name] = log
    return history
