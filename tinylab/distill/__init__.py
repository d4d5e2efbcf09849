"""The explicit training loops of TinyBERT (Jiao et al. 2020, "TinyBERT learning"): notebook 05.

Read in this order:

* :mod:`~tinylab.distill.loop` - the one training loop all stages share (Accelerate for the
  device, precision and processes; the loop itself written out);
* :mod:`~tinylab.distill.options` - :class:`RunOptions`, how a stage runs (accelerator,
  checkpoints and resume, callbacks, progress bars) as opposed to what it learns (the config);
* :mod:`~tinylab.distill.stages` - teacher fine-tuning, general distillation, task distillation
  (stage a: intermediate layers, stage b: prediction layer) and the baselines (gold labels,
  stage b alone, Hinton et al.'s KD);
* :mod:`~tinylab.distill.stage_parts` - the parts those stages are built from: the training
  set, the frozen head, the loss module and layer loss, the accuracy curve, stage b;
* :mod:`~tinylab.distill.cache` - where fine-tuned teachers and general students are kept:
  cache keys, folders, saving and loading, and the folder of teacher outputs runs share;
* :mod:`~tinylab.distill.objectives` - the other ways to distil of notebook 08: DistilBERT's
  triple loss and MiniLM's last-layer self-attention transfer, on the same loop;
* :mod:`~tinylab.distill.teacher_outputs` - teacher outputs computed once and reused;
* :mod:`~tinylab.distill.history` and :mod:`~tinylab.distill.checkpoint` - what a run leaves
  behind: per-step logs and resumable, atomically written safetensors checkpoints.

Typical use (what ``tinylab distill`` does, see :func:`tinylab.pipeline.run_pipeline`)::

    cfg = get_config("quick")
    data = load_task(cfg.data)
    teacher, tokenizer, h_teacher = finetune_teacher(cfg, data)          # cached
    student, h_general = general_student(cfg, id2label=teacher.config.id2label)   # cached
    augmented = augment_dataset(data["train"], tokenizer, teacher, cfg.augment, seed=cfg.seed)
    h_task = task_distillation(cfg, teacher, student, augmented, data["validation"],
                               tokenizer=tokenizer)
"""
from tinylab.device import make_accelerator
from tinylab.distill.cache import general_cache_key, shared_outputs_dir, teacher_cache_key
from tinylab.distill.checkpoint import CheckpointError
from tinylab.distill.history import History, StageLog
from tinylab.distill.loop import NonFiniteLossError, StepInfo, train_stage
from tinylab.distill.options import RunOptions
from tinylab.distill.stages import (BASELINES, baseline_targets, finetune_teacher,
                                    general_distillation, general_student, task_distillation,
                                    train_baseline)
from tinylab.distill.teacher_outputs import TeacherOutputs

__all__ = ["History", "StageLog", "finetune_teacher", "general_distillation", "general_student",
           "task_distillation", "train_baseline", "baseline_targets", "BASELINES", "train_stage", "StepInfo",
           "NonFiniteLossError", "CheckpointError", "TeacherOutputs", "make_accelerator",
           "teacher_cache_key", "general_cache_key", "RunOptions", "shared_outputs_dir"]
from tinylab.distill.objectives import train_distilbert, train_minilm  # noqa: E402 (notebook 08)
__all__ += ["train_distilbert", "train_minilm"]
