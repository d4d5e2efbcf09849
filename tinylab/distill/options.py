"""How a stage runs, as opposed to what it learns: one small options object.

Every stage function (:func:`~tinylab.distill.stages.finetune_teacher`,
:func:`~tinylab.distill.stages.general_student`, :func:`~tinylab.distill.stages.task_distillation`,
:func:`~tinylab.distill.stages.train_baseline`, notebook 08's trainers) takes *what* to train from
the :class:`~tinylab.config.Config` and *how to run it* from a :class:`RunOptions`::

    run = RunOptions(checkpoint_dir="runs/mine/ckpt", checkpoint_every=100, resume=True)
    task_distillation(cfg, teacher, student, augmented, data["validation"], run=run)

None of these settings changes the trained weights (a resumed run equals an uninterrupted one;
the teacher-output cache gives the same targets as the teacher run on the fly), which is why
they live here and not in the configuration that names cached results.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Sequence

from tinylab.device import make_accelerator

__all__ = ["RunOptions"]


@dataclass(frozen=True)
class RunOptions:
    """Plumbing shared by every training function.

    ``accelerator``: an ``accelerate.Accelerator`` (default: one made from ``cfg.device`` and
    ``cfg.precision``, see :func:`~tinylab.device.make_accelerator`).
    ``checkpoint_dir`` / ``checkpoint_every``: where and how often (in steps) to save a
    resumable checkpoint; one is always written at the end of a stage. Stages that run several
    optimiser stages put each in a sub-folder named after it.
    ``resume``: continue from the latest checkpoint in ``checkpoint_dir``.
    ``callbacks``: called with a :class:`~tinylab.distill.loop.StepInfo` after every step.
    ``progress``: show tqdm bars (main process only).
    ``memory_budget``: bytes the teacher-output cache may use (default: its own budget).
    ``shared_teacher_outputs``: a folder where runs on the same training set and teacher share
    one teacher-output cache on disk (:class:`~tinylab.distill.teacher_outputs.TeacherOutputs`,
    ``shared_dir``): the first run computes every layer once, later ones load the file. The
    ablation benchmark uses it; the targets are the float16 copies a private cache holds.
    """

    accelerator: Any = None
    checkpoint_dir: str | Path | None = None
    checkpoint_every: int | None = None
    resume: bool = False
    callbacks: Sequence[Callable[[Any], None]] = ()
    progress: bool = True
    memory_budget: int | None = None
    shared_teacher_outputs: str | Path | None = None

    def __post_init__(self) -> None:
        if self.checkpoint_every is not None and self.checkpoint_every < 1:
            raise ValueError(f"checkpoint_every must be a positive number of steps or None, "
                             f"got {self.checkpoint_every}")
        if self.resume and self.checkpoint_dir is None:
            raise ValueError("resume=True needs a checkpoint_dir to resume from")
        if callable(self.callbacks):
            raise TypeError("callbacks must be a sequence of functions, e.g. callbacks=[fn], "
                            "not a single function")

    def replace(self, **changes: Any) -> "RunOptions":
        """A copy with ``changes`` (``dataclasses.replace``)."""
        return dataclasses.replace(self, **changes)

    def sub(self, name: str) -> "RunOptions":
        """The same options with checkpoints in ``checkpoint_dir / name`` (one optimiser stage
        of several, e.g. ``"intermediate"`` and ``"prediction"``)."""
        if self.checkpoint_dir is None:
            return self
        return self.replace(checkpoint_dir=Path(self.checkpoint_dir) / name)

    def with_accelerator(self, cfg) -> "RunOptions":
        """These options with an accelerator: the given one, or one for ``cfg``'s device and
        precision."""
        if self.accelerator is not None:
            return self
        return self.replace(accelerator=make_accelerator(cfg.device, cfg.precision))


def as_run_options(run: RunOptions | None) -> RunOptions:
    """``run`` itself, or the defaults; anything else is refused with the fix."""
    if run is None:
        return RunOptions()
    if not isinstance(run, RunOptions):
        raise TypeError(f"run must be a tinylab.distill.RunOptions, got {type(run).__name__}; "
                        f"e.g. run=RunOptions(progress=False)")
    return run
