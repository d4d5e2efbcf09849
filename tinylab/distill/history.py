"""What a training stage leaves behind: every loss component per step, accuracy per evaluation.

A :class:`History` is a plain container of named stages (``"teacher"``, ``"general"``,
``"intermediate"``, ``"prediction"``, ``"gold"``, ``"kd"``, ...). Each stage is a
:class:`StageLog`: a list of step records, a list of evaluation records, the wall-clock seconds
and a small ``info`` dict (number of examples, steps, whether teacher outputs were cached...).
On disk it is JSON of this shape::

    {"stages": {"general": {"steps": [{"step": 1, "embedding": .., "attention": ..,
                                        "hidden": .., "total": .., "lr": ..}, ...],
                            "evals": [{"step": 50, "accuracy": ..}, ...],
                            "seconds": 12.3, "info": {...}},
                "intermediate": {...}, ...}}

Plots (``tinylab.plots.plot_history``) and notebooks read it; ``History.frame(stage)`` gives a
``pandas.DataFrame`` of the steps for quick looks.
"""
from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from tinylab.atomic import atomic_write_text

__all__ = ["StageLog", "History"]


@dataclass
class StageLog:
    """The log of one stage. ``steps[i]`` has ``step`` (1-based optimiser step), one float per
    loss component (``total`` included) and ``lr``; ``evals[j]`` has ``step`` and metrics."""

    steps: list[dict[str, float]] = field(default_factory=list)
    evals: list[dict[str, float]] = field(default_factory=list)
    seconds: float = 0.0
    info: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"steps": list(self.steps), "evals": list(self.evals),
                "seconds": round(float(self.seconds), 3), "info": dict(self.info)}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "StageLog":
        return cls(steps=list(d.get("steps", [])), evals=list(d.get("evals", [])),
                   seconds=float(d.get("seconds", 0.0)), info=dict(d.get("info", {})))

    @property
    def last_accuracy(self) -> float | None:
        """Accuracy of the last evaluation, or ``None`` if the stage never evaluated."""
        return self.evals[-1].get("accuracy") if self.evals else None


class History:
    """Per-stage step logs and evaluations of one or more training stages.

    >>> h = History()
    >>> h.log_step("general", step=1, total=0.5, lr=1e-4)
    >>> h.log_eval("general", step=1, accuracy=0.75)
    >>> h["general"].steps[0]["total"], h["general"].last_accuracy
    (0.5, 0.75)
    """

    def __init__(self, stages: dict[str, StageLog] | None = None):
        self.stages: dict[str, StageLog] = dict(stages or {})

    # -- recording ---------------------------------------------------------------------------
    def stage(self, name: str) -> StageLog:
        """The log of stage ``name``, created empty on first use."""
        return self.stages.setdefault(name, StageLog())

    def log_step(self, stage: str, step: int, **values: float) -> None:
        self.stage(stage).steps.append({"step": int(step), **{k: float(v) for k, v in values.items()}})

    def log_eval(self, stage: str, step: int, **metrics: float) -> None:
        self.stage(stage).evals.append({"step": int(step), **{k: float(v) for k, v in metrics.items()}})

    # -- access ------------------------------------------------------------------------------
    def __getitem__(self, name: str) -> StageLog:
        if name not in self.stages:
            raise KeyError(f"no stage {name!r} in this history; stages: {', '.join(self.stages) or 'none'}")
        return self.stages[name]

    def __contains__(self, name: object) -> bool:
        return name in self.stages

    def __iter__(self):
        return iter(self.stages)

    def __repr__(self) -> str:
        parts = [f"{name}: {len(log.steps)} steps, {len(log.evals)} evals, {log.seconds:.1f}s"
                 for name, log in self.stages.items()]
        return f"History({'; '.join(parts)})"

    def __eq__(self, other: object) -> bool:
        return isinstance(other, History) and self.to_dict() == other.to_dict()

    def frame(self, stage: str, kind: str = "steps"):
        """A ``pandas.DataFrame`` of one stage's ``"steps"`` or ``"evals"``."""
        if kind not in ("steps", "evals"):
            raise ValueError(f"kind must be 'steps' or 'evals', got {kind!r}")
        return pd.DataFrame(getattr(self[stage], kind))

    @classmethod
    def merge(cls, *histories: "History | dict[str, History]") -> "History":
        """One history holding the stages of all arguments (dicts of histories are flattened,
        as returned by ``task_distillation``). A stage name may appear only once."""
        merged = cls()
        for h in histories:
            for item in (h.values() if isinstance(h, dict) else [h]):
                for name, log in item.stages.items():
                    if name in merged.stages:
                        raise ValueError(f"stage {name!r} appears in two histories; rename one")
                    merged.stages[name] = log
        return merged

    # -- (de)serialisation -------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {"stages": {name: log.to_dict() for name, log in self.stages.items()}}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> "History":
        if "stages" not in d:
            raise ValueError("not a tinylab history: the JSON has no 'stages' key")
        return cls({name: StageLog.from_dict(s) for name, s in d["stages"].items()})

    def to_json(self, path: str | Path) -> Path:
        """Write the history as JSON (atomically: temporary file, then rename)."""
        return atomic_write_text(path, json.dumps(_finite(self.to_dict()), indent=1))

    @classmethod
    def from_json(cls, path: str | Path) -> "History":
        return cls.from_dict(json.loads(Path(path).read_text()))


def _finite(obj: Any) -> Any:
    """JSON has no NaN/inf: write them as strings so the file stays standard JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


