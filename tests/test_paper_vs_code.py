"""docs/paper-vs-code.md: the rows say what the authors' code does, and the switches do it."""
from __future__ import annotations

from pathlib import Path

import torch

from tinylab.config import StageConfig
from tinylab.distill.loop import make_scheduler

ROOT = Path(__file__).resolve().parents[1]
DOC = (ROOT / "docs" / "paper-vs-code.md").read_text(encoding="utf-8")


def _learning_rates(stage: StageConfig, total: int = 20) -> list[float]:
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    scheduler = make_scheduler(optimizer, stage, total)
    rates = []
    for _ in range(total):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    return rates


def test_official_intermediate_schedule_is_constant_without_warmup():
    """The authors' task_distill.py uses schedule='none' in the intermediate stage: the full
    learning rate from the first step. schedule=constant with warmup_ratio=0 gives exactly that."""
    assert _learning_rates(StageConfig(schedule="constant", warmup_ratio=0.0)) == [1.0] * 20
    warm = _learning_rates(StageConfig(schedule="constant", warmup_ratio=0.1))
    assert warm[0] == 0.0 and warm[-1] == 1.0        # "constant" alone still warms up
    linear = _learning_rates(StageConfig(schedule="linear", warmup_ratio=0.1))
    assert linear[0] == 0.0 and max(linear) == 1.0 and linear[-1] < 0.1


def test_docs_describe_the_official_schedules_and_checkpoints():
    assert "warm-up then constant" not in DOC
    assert "no** warm-up" in DOC and "warmup_ratio=0" in DOC
    assert "warmup_ratio=0" in StageConfig.__doc__
    assert "which weights a stage ends with" in DOC and "best-dev" in DOC
    assert "regression tasks (STS-B)" in DOC and "**gold** score" in DOC


def test_docs_compare_the_augmentation_settings():
    for fact in ("SST-2 and QNLI 20", "MNLI and QQP 10", "first 100,000 words",
                 "once per word on the original sentence", "weaker substitute"):
        assert fact in DOC, fact
