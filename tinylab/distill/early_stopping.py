"""Early stopping on the validation split, keeping the best weights.

Fine-tuning a teacher for a fixed number of epochs either stops before it is as good as it
gets (an undertrained teacher caps every student distilled from it) or goes on past the point
where it starts to overfit. The usual fix, and what this does:

    after every evaluation:   score = metrics[first key]  (accuracy; higher is better)
        if score > best:      best, best_step = score, step;  keep a CPU copy of the weights
        else:                 bad += 1
        if bad == patience:   stop training
    at the end:               load the kept weights (the best evaluation, not the last step)

``patience`` counts *evaluations*, so its meaning follows ``eval_every``: with one evaluation
per epoch, ``patience=1`` stops at the first epoch that does not improve. Every process of a
data-parallel run holds the same weights and takes the same decision (every process
evaluates its share of the validation set and the predictions are gathered, so all see the
same score). The kept weights go into each checkpoint, so a resumed
run remembers them.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Mapping

import torch
from safetensors.torch import load_file, save_file
from torch import nn

__all__ = ["EarlyStopping"]

_PREFIX = "best."


class EarlyStopping:
    """Patience bookkeeping and the best weights of ``modules`` (disabled when ``patience`` is
    ``None``: then it keeps nothing and never stops)."""

    def __init__(self, patience: int | None, modules: Mapping[str, nn.Module]):
        if patience is not None and patience < 1:
            raise ValueError(f"patience must be None or >= 1, got {patience}")
        self.patience = patience
        self.modules = modules
        self.best_score = -math.inf
        self.best_step: int | None = None
        self.bad_evaluations = 0
        self.stopped_at: int | None = None
        self.weights: dict[str, dict[str, torch.Tensor]] | None = None

    @property
    def enabled(self) -> bool:
        return self.patience is not None

    def observe(self, step: int, score: float) -> bool:
        """Record the validation ``score`` of ``step``; ``True`` when training should stop."""
        if not self.enabled:
            return False
        if score > self.best_score:
            self.best_score, self.best_step, self.bad_evaluations = score, step, 0
            self.weights = {name: {k: v.detach().to("cpu", copy=True)
                                   for k, v in module.state_dict().items()}
                            for name, module in self.modules.items()}
        else:
            self.bad_evaluations += 1
        if self.bad_evaluations >= self.patience:
            self.stopped_at = step
            return True
        return False

    def restore(self) -> None:
        """Load the best evaluated weights into the modules (in place), if any were kept."""
        if self.weights is None:
            return
        for name, module in self.modules.items():
            module.load_state_dict(self.weights[name])

    def state(self) -> dict[str, Any]:
        """JSON-able bookkeeping, for checkpoints and the stage log."""
        return {"patience": self.patience, "best_score": self.best_score,
                "best_step": self.best_step, "bad_evaluations": self.bad_evaluations,
                "stopped_at": self.stopped_at}

    def save(self, folder: str | Path) -> None:
        """Write the kept weights next to a checkpoint's own (``best.<module>.safetensors``)."""
        for name, tensors in (self.weights or {}).items():
            save_file({k: v.contiguous() for k, v in tensors.items()},
                      str(Path(folder) / f"{_PREFIX}{name}.safetensors"))

    def load(self, folder: str | Path, state: Mapping[str, Any]) -> None:
        """Restore what :meth:`save` and :meth:`state` wrote (on resume)."""
        self.best_score = state["best_score"]
        self.best_step = state["best_step"]
        self.bad_evaluations = state["bad_evaluations"]
        self.stopped_at = state.get("stopped_at")
        files = {name: Path(folder) / f"{_PREFIX}{name}.safetensors" for name in self.modules}
        if all(f.exists() for f in files.values()):
            self.weights = {name: load_file(str(f)) for name, f in files.items()}
