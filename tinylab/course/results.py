"""What a course run records: each notebook's results file, and the summary of a run.

Notebooks that measure something for the summary save it with :func:`save_results`, which
writes ``OUTPUT_DIR/<notebook>_results.json``::

    save_results(OUTPUT_DIR, "06_task_distillation", profile=cfg.profile,
                 models={"teacher": {"accuracy": 0.81, "parameters": 22_700_000},
                         "student": {"accuracy": 0.78, "parameters": 7_300_000}},
                 metrics={"speed-up": 7.4})

After the last notebook, :func:`tinylab.course.runner.run_course` collects those files with
:func:`build_summary` into ``summary.json`` and, through :func:`summary_markdown`,
``summary.md`` (teacher vs student figures, plus each notebook's wall time).
"""
from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from tinylab.atomic import atomic_write_text

__all__ = ["NotebookRun", "RESULTS_SUFFIX", "save_results", "load_results", "build_summary",
           "summary_markdown"]

#: The ending of a notebook's results file: ``<notebook>_results.json``.
RESULTS_SUFFIX = "_results.json"
# Column order of the summary table; other metrics follow alphabetically.
_METRIC_ORDER = ("accuracy", "macro_f1", "parameters", "size_mb", "latency_ms")


@dataclass
class NotebookRun:
    """What happened to one notebook: ``status`` is ``"ok"``, ``"failed"`` or ``"skipped"``."""

    name: str
    status: str
    wall_time_s: float | None = None
    output: str | None = None
    error: str | None = None
    failing_cell: dict[str, Any] | None = field(default=None)


# ----------------------------------------------------------------------------------------------
# Results the notebooks write
# ----------------------------------------------------------------------------------------------

def save_results(output_dir: str | Path, notebook: str, *, profile: str,
                 models: Mapping[str, Mapping[str, float | int]] | None = None,
                 metrics: Mapping[str, Any] | None = None) -> Path:
    """Write ``output_dir/<notebook>_results.json`` atomically; return its path.

    ``models`` maps a model name (``"teacher"``, ``"student (TinyBERT)"``, ...) to its figures
    (``accuracy``, ``macro_f1``, ``parameters``, ``size_mb``, ``latency_ms``, ...); these rows
    make the teacher-vs-student table of the course summary. ``metrics`` holds any other
    JSON-able numbers worth reporting. Values must be JSON-serialisable (cast tensors with
    ``float()``).
    """
    if not re.match(r"^\d\d_", notebook):
        raise ValueError(f"notebook {notebook!r} must be the notebook's stem, e.g. "
                         f"'02_teacher_inference'")
    payload = {"notebook": notebook, "profile": profile,
               "models": {k: dict(v) for k, v in (models or {}).items()},
               "metrics": dict(metrics or {})}
    try:
        text = json.dumps(payload, indent=2, sort_keys=False, allow_nan=True)
    except TypeError as err:
        raise TypeError(f"results of {notebook} are not JSON-serialisable ({err}); convert "
                        f"tensors and numpy values with float() or int()") from None
    path = Path(output_dir) / f"{notebook}{RESULTS_SUFFIX}"
    atomic_write_text(path, text + "\n")
    return path


def load_results(output_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every ``*_results.json`` in ``output_dir``, keyed by notebook stem, in course order."""
    folder = Path(output_dir)
    found = sorted(folder.glob(f"*{RESULTS_SUFFIX}")) if folder.is_dir() else []
    return {p.name.removesuffix(RESULTS_SUFFIX): json.loads(p.read_text()) for p in found}


# ----------------------------------------------------------------------------------------------
# Summary
# ----------------------------------------------------------------------------------------------

def build_summary(runs: Sequence[NotebookRun], output_dir: str | Path, profile: str
                  ) -> dict[str, Any]:
    """The course summary: notebook statuses and wall times, plus every results file."""
    # Only results measured under this run's profile: a `ci` run (e.g. nbval) that wrote into
    # the same folder earlier must not mix its figures into a `quick` summary.
    everything = load_results(output_dir)
    results = {nb: r for nb, r in everything.items() if r.get("profile") == profile}
    ignored = sorted(set(everything) - set(results))
    model_rows = []
    for notebook, content in results.items():
        for model, figures in content.get("models", {}).items():
            model_rows.append({"notebook": notebook, "model": model, **figures})
    return {
        "profile": profile,
        "finished": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "total_wall_time_s": round(sum(r.wall_time_s or 0.0 for r in runs), 1),
        "notebooks": [asdict(r) for r in runs],
        "models": model_rows,
        "results": results,
        "ignored_results": ignored,
    }


def _fmt(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, int):
        return f"{value:,}"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1e5 else f"{value:,.0f}"
    return str(value)


def summary_markdown(summary: Mapping[str, Any]) -> str:
    """The summary as markdown: the models table, other metrics, and the wall times."""
    lines = [f"# tinylab course run (profile `{summary['profile']}`)", ""]
    rows = summary["models"]
    if rows:
        keys = {k for row in rows for k in row} - {"notebook", "model"}
        columns = [k for k in _METRIC_ORDER if k in keys] + sorted(keys - set(_METRIC_ORDER))
        lines += ["## Teacher vs student", "",
                  "| notebook | model | " + " | ".join(columns) + " |",
                  "|---|---|" + "---|" * len(columns)]
        for row in rows:
            cells = [_fmt(row.get(c, "")) if c in row else "" for c in columns]
            lines.append(f"| {row['notebook']} | {row['model']} | " + " | ".join(cells) + " |")
        lines.append("")
    other = [(nb, k, v) for nb, content in summary["results"].items()
             for k, v in content.get("metrics", {}).items()]
    if other:
        lines += ["## Other measurements", "", "| notebook | metric | value |", "|---|---|---|"]
        lines += [f"| {nb} | {k} | {_fmt(v)} |" for nb, k, v in other]
        lines.append("")
    lines += ["## Notebooks", "", "| notebook | status | wall time (s) |", "|---|---|---|"]
    for run in summary["notebooks"]:
        wall = "" if run["wall_time_s"] is None else f"{run['wall_time_s']:.1f}"
        lines.append(f"| {run['name']} | {run['status']} | {wall} |")
    lines += ["", f"Total: {summary['total_wall_time_s']:.1f} s", ""]
    if summary.get("ignored_results"):
        lines += [f"Ignored results from another profile: {', '.join(summary['ignored_results'])}",
                  ""]
    return "\n".join(lines)
