"""Run the course: execute every notebook in order and summarise what they measured.

``tinylab course run`` calls :func:`run_course`; ``tinylab course lab`` calls :func:`open_lab`.

Each notebook is executed with papermill (kernel ``python3``, working directory ``notebooks/``)
and receives two parameters, ``PROFILE`` and ``OUTPUT_DIR``. The executed copy (with all
outputs) is written to the output folder under the notebook's own name. Notebooks that measure
something for the summary save it with :func:`save_results`, which writes
``OUTPUT_DIR/<notebook>_results.json``::

    save_results(OUTPUT_DIR, "06_task_distillation", profile=cfg.profile,
                 models={"teacher": {"accuracy": 0.81, "parameters": 22_700_000},
                         "student": {"accuracy": 0.78, "parameters": 7_300_000}},
                 metrics={"speed-up": 7.4})

After the last notebook, :func:`run_course` collects those files into ``summary.json`` and
``summary.md`` (teacher vs student figures, plus each notebook's wall time) and prints the
markdown. The first failing notebook stops the run; the message names the notebook, the failing
cell and the executed copy to open.
"""
from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Mapping, Sequence

from tinylab.atomic import atomic_write_text

__all__ = ["NOTEBOOK_DIR", "DEFAULT_OUTPUT_DIR", "NotebookRun", "list_notebooks",
           "select_notebooks", "run_notebook", "run_course", "save_results", "load_results",
           "build_summary", "summary_markdown", "open_lab", "fresh_cache", "prepare",
           "repository_file"]

#: The course notebooks (a source checkout: ``<repo>/notebooks``).
NOTEBOOK_DIR = Path(__file__).resolve().parents[1] / "notebooks"
DEFAULT_OUTPUT_DIR = Path("runs/course")
_NOTEBOOK_PATTERN = re.compile(r"^\d\d_.+\.ipynb$")
_RESULTS_SUFFIX = "_results.json"
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
# Finding notebooks
# ----------------------------------------------------------------------------------------------

def list_notebooks(notebook_dir: str | Path | None = None) -> list[Path]:
    """The course notebooks (``NN_name.ipynb``) in ``notebook_dir``, in course order.

    ``notebook_dir`` defaults to :data:`NOTEBOOK_DIR` (``<repo>/notebooks``).
    """
    folder = Path(notebook_dir if notebook_dir is not None else NOTEBOOK_DIR)
    if not folder.is_dir():
        raise FileNotFoundError(
            f"notebook folder {folder} not found: the course runs from a source checkout "
            f"(git clone the tinylab repository and `pip install -e .` inside it)")
    return sorted(p for p in folder.iterdir() if _NOTEBOOK_PATTERN.match(p.name))


def select_notebooks(names: Sequence[str] | None,
                     notebook_dir: str | Path | None = None) -> list[Path]:
    """Pick notebooks by number (``"03"``), stem (``"03_soft_label_math"``), file name or path.

    ``None`` or an empty list selects every notebook. The result keeps the course order.
    """
    available = list_notebooks(notebook_dir)
    if not available:
        raise FileNotFoundError(f"no notebooks (NN_name.ipynb) in "
                                f"{notebook_dir if notebook_dir is not None else NOTEBOOK_DIR}")
    if not names:
        return available
    chosen: set[Path] = set()
    for name in names:
        key = Path(name).name.removesuffix(".ipynb")
        matches = [p for p in available if p.stem == key or p.stem.split("_", 1)[0] == key]
        if not matches:
            valid = ", ".join(p.stem for p in available)
            raise ValueError(f"unknown notebook {name!r}; choose from: {valid} "
                             f"(or just their numbers, e.g. 03)")
        chosen.update(matches)
    return [p for p in available if p in chosen]


# ----------------------------------------------------------------------------------------------
# Files of the repository, from a checkout or from GitHub
# ----------------------------------------------------------------------------------------------

def repository_file(relative: str, *, timeout: float = 30.0) -> Path:
    """A file of the tinylab repository (``"bench/results/bench/shapes.json"``): from the
    source checkout when tinylab runs from one, else downloaded once from GitHub at this
    version's ref (``colab.release_ref()``: ``main`` or ``v<version>``) into the tinylab
    cache. A notebook on Colab, which installs the package without the repository, reads the
    same file a checkout has. Raises ``FileNotFoundError`` in one line when neither works."""
    import urllib.request
    from importlib import metadata

    from tinylab.assets import cache_dir
    from tinylab.colab import release_ref

    local = Path(__file__).resolve().parents[1] / relative
    if local.is_file():
        return local
    urls = dict(u.split(", ", 1) for u in metadata.metadata("tinylab-course").get_all(
        "Project-URL") or [] if ", " in u)
    if "Repository" not in urls:
        raise FileNotFoundError(f"{relative} is not in a source checkout here, and the "
                                f"installed tinylab-course names no Repository URL to "
                                f"download it from")
    repo = urls["Repository"].rstrip("/")
    raw = repo.replace("https://github.com/", "https://raw.githubusercontent.com/")
    url = f"{raw}/{release_ref()}/{relative}"
    target = cache_dir() / "repository" / release_ref() / relative
    if not target.is_file():
        try:
            with urllib.request.urlopen(url, timeout=timeout) as response:
                data = response.read()
        except OSError as err:
            raise FileNotFoundError(f"{relative} is not in a source checkout here and could "
                                    f"not be downloaded from {url} ({err})") from None
        from tinylab.atomic import atomic_write_bytes

        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    return target


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
    path = Path(output_dir) / f"{notebook}{_RESULTS_SUFFIX}"
    atomic_write_text(path, text + "\n")
    return path


def load_results(output_dir: str | Path) -> dict[str, dict[str, Any]]:
    """Every ``*_results.json`` in ``output_dir``, keyed by notebook stem, in course order."""
    folder = Path(output_dir)
    found = sorted(folder.glob(f"*{_RESULTS_SUFFIX}")) if folder.is_dir() else []
    return {p.name.removesuffix(_RESULTS_SUFFIX): json.loads(p.read_text()) for p in found}


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


# ----------------------------------------------------------------------------------------------
# Running
# ----------------------------------------------------------------------------------------------

def _failing_cell(err: BaseException) -> dict[str, Any] | None:
    """Index, execution count and source of the failing cell from a papermill error."""
    if not hasattr(err, "cell_index"):
        return None
    return {"index": err.cell_index, "execution_count": err.exec_count,
            "source": err.source, "error": f"{err.ename}: {err.evalue}"}


def run_notebook(path: str | Path, output_path: str | Path, *, parameters: Mapping[str, Any],
                 cwd: str | Path | None = None, progress: bool = True,
                 execution_timeout: int | None = None) -> float:
    """Execute one notebook with papermill; return its wall time in seconds.

    The executed copy is written to ``output_path`` even when a cell fails (papermill saves it
    after every cell), so the error can be read in context. Raises papermill's
    ``PapermillExecutionError`` (attributes ``cell_index``, ``exec_count``, ``source``,
    ``ename``, ``evalue``) when a cell fails.
    """
    import papermill

    path = Path(path)
    start = time.perf_counter()
    papermill.execute_notebook(
        str(path), str(output_path), parameters=dict(parameters), kernel_name="python3",
        cwd=str(cwd if cwd is not None else path.parent), progress_bar=progress,
        log_output=False, execution_timeout=execution_timeout)
    return time.perf_counter() - start


def prepare(profile: str | None = None, *, progress: bool = True) -> dict[str, float]:
    """Fill the cache with everything the notebooks would otherwise compute (room set-up).

    The fine-tuned teacher (notebooks 02-08), the general student and the augmented training
    set (notebooks 05 and 06), each under the configuration the notebook uses
    (``get_config(profile, preset="two-stage")`` for those two) and therefore under the same
    cache key. Returns the seconds each step took (0-ish when it was cached already). Notebook
    06's five students are trained in the notebook itself.
    """
    from tinylab.augment import augment_dataset
    from tinylab.config import get_config
    from tinylab.data import load_general_corpus, load_task
    from tinylab.distill import RunOptions, finetune_teacher, general_student

    seconds: dict[str, float] = {}
    start = time.perf_counter()
    cfg = get_config(profile)
    data = load_task(cfg.data)
    run = RunOptions(progress=progress)
    teacher, tokenizer, _ = finetune_teacher(cfg, data, run=run)
    seconds["teacher"] = time.perf_counter() - start
    cfg05 = get_config(profile, preset="two-stage")
    labels = data["train"].features["label"].names
    start = time.perf_counter()
    general_student(cfg05, id2label=labels, corpus=load_general_corpus(cfg05.data), run=run)
    seconds["general student"] = time.perf_counter() - start
    start = time.perf_counter()
    augment_dataset(data["train"], tokenizer, teacher, cfg05.augment, seed=cfg05.seed,
                    progress=progress)
    seconds["augmented data"] = time.perf_counter() - start
    return seconds


def fresh_cache(folder: str | Path) -> Path:
    """An empty tinylab cache in ``folder`` that holds only the offline assets.

    The assets (teacher backbone, data, text) are what a learner's first cell fetches on a
    new machine; they are linked from the current cache (fetched there first if missing)
    instead of downloaded again. Everything else - the fine-tuned teacher, general students,
    augmented data - is absent, so a notebook run with ``TINYLAB_CACHE=folder`` must build
    what it needs, as on a fresh Colab machine.
    """
    from tinylab import assets

    folder = Path(folder)
    if folder.exists() and any(folder.iterdir()):
        raise FileExistsError(f"{folder} is not empty; a fresh cache needs a new folder")
    source = assets.cache_dir() / "assets"
    if source.parent.resolve() == folder.resolve():
        raise ValueError(f"$TINYLAB_CACHE already points at {folder}: a fresh cache links the "
                         f"assets of another cache; unset it or choose another folder")
    if not all((source / name).is_dir() for name in assets.ASSETS):
        assets.fetch(progress=False)
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "assets").symlink_to(source.resolve(), target_is_directory=True)
    return folder


def _machine() -> str:
    import platform

    return f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}"


def run_course(profile: str | None = None, output_dir: str | Path | None = None,
               notebooks: Sequence[str] | None = None, *,
               notebook_dir: str | Path | None = None, progress: bool | None = None,
               execution_timeout: int | None = None, alone: bool = False,
               overwrite: bool = False) -> int:
    """Execute the course notebooks in order; write ``summary.json`` / ``summary.md``.

    ``profile``: ``ci``, ``quick`` or ``full`` (``None``: ``$TINYLAB_PROFILE``, else ``quick``).
    ``output_dir``: executed copies, results and summary (default ``runs/course``).
    ``notebooks``: a subset (numbers, stems or file names); default all.
    ``alone``: run every notebook as on a fresh machine - its own empty cache
    (:func:`fresh_cache`, a temporary folder under ``output_dir/alone/<notebook>/``, removed
    afterwards) and its own output folder there, so nothing an earlier notebook built is
    found. The wall times of such a run are
    the ones the notebook headers state (``tinylab course times``).
    Before the first kernel starts, the profile's device and precision are checked and the
    output folder is claimed (:func:`tinylab.run_folder.claim_folder`): a folder holding files
    ``course run`` did not write is refused unless ``overwrite``, and a symbolic link in place
    of one of its outputs (an executed notebook, a results file, ``summary.*``) is refused.
    Returns 0 when every notebook ran, 1 when one failed (the run stops there).
    """
    from tinylab.config import get_config, resolve_profile_name
    from tinylab.device import resolve_device, resolve_precision
    from tinylab.run_folder import claim_folder

    profile_name = resolve_profile_name(profile)
    cfg = get_config(profile_name)          # $TINYLAB_DEVICE / $TINYLAB_PRECISION checked too
    resolve_precision(cfg.precision, resolve_device(cfg.device))
    notebook_dir = Path(notebook_dir if notebook_dir is not None else NOTEBOOK_DIR)
    selected = select_notebooks(notebooks, notebook_dir)
    out = Path(output_dir if output_dir is not None else DEFAULT_OUTPUT_DIR)
    writes = [n for p in selected for n in (p.name, f"{p.stem}{_RESULTS_SUFFIX}")]
    claim_folder(out, "tinylab course run", overwrite=overwrite,
                 writes=[*writes, "summary.json", "summary.md"])
    out = out.resolve()
    if progress is None:
        progress = os.environ.get("TQDM_DISABLE", "").lower() not in {"1", "true", "yes"}
    parameters = {"PROFILE": profile_name, "OUTPUT_DIR": str(out)}

    print(f"tinylab course: {len(selected)} notebook(s), profile {profile_name!r}, "
          f"output {out}", flush=True)
    runs: list[NotebookRun] = []
    exit_code = 0
    for i, path in enumerate(selected, start=1):
        executed = out / path.name
        print(f"[{i}/{len(selected)}] {path.stem} ...", flush=True)
        start = time.perf_counter()
        saved_cache = os.environ.get("TINYLAB_CACHE")
        params = dict(parameters)
        if alone:  # a new machine for this notebook: empty cache, empty output folder
            own = out / "alone" / path.stem
            own.mkdir(parents=True, exist_ok=True)
            cache = fresh_cache(tempfile.mkdtemp(dir=own, prefix="cache-"))
            os.environ["TINYLAB_CACHE"] = str(cache)
            params["OUTPUT_DIR"] = str(tempfile.mkdtemp(dir=own, prefix="output-"))
        try:
            wall = run_notebook(path, executed, parameters=params, cwd=notebook_dir,
                                progress=progress, execution_timeout=execution_timeout)
            if alone:  # its results join the others in the summary
                for found in Path(params["OUTPUT_DIR"]).glob(f"*{_RESULTS_SUFFIX}"):
                    os.replace(found, out / found.name)
        except Exception as err:  # noqa: BLE001 - any failure stops the run with a report
            wall = time.perf_counter() - start
            cell = _failing_cell(err)
            runs.append(NotebookRun(path.stem, "failed", round(wall, 1), str(executed),
                                    error=f"{type(err).__name__}: {getattr(err, 'evalue', err)}",
                                    failing_cell=cell))
            _report_failure(path, executed, err, cell)
            runs += [NotebookRun(p.stem, "skipped") for p in selected[i:]]
            exit_code = 1
            break
        finally:
            if alone:  # the temporary cache is tinylab's own: models it trained, linked assets
                shutil.rmtree(cache, ignore_errors=True)
                if saved_cache is None:
                    os.environ.pop("TINYLAB_CACHE", None)
                else:
                    os.environ["TINYLAB_CACHE"] = saved_cache
        runs.append(NotebookRun(path.stem, "ok", round(wall, 1), str(executed)))
        print(f"[{i}/{len(selected)}] {path.stem} done in {wall:.1f} s", flush=True)

    summary = build_summary(runs, out, profile_name)
    summary["alone"] = alone
    summary["machine"] = _machine()
    markdown = summary_markdown(summary)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2) + "\n")
    atomic_write_text(out / "summary.md", markdown)
    print()
    print(markdown)
    print(f"summary written to {out / 'summary.md'} and {out / 'summary.json'}")
    return exit_code


def _report_failure(path: Path, executed: Path, err: BaseException,
                    cell: dict[str, Any] | None) -> None:
    lines = [f"tinylab course: notebook {path.name} FAILED"]
    if cell is not None:
        lines.append(f"  failing cell: index {cell['index']} (In [{cell['execution_count']}])")
        source = cell["source"].strip().splitlines()
        lines += [f"    | {line}" for line in source[:12]]
        if len(source) > 12:
            lines.append(f"    | ... ({len(source) - 12} more lines)")
        lines.append(f"  error: {cell['error']}")
    else:
        lines.append(f"  error: {type(err).__name__}: {err}")
    lines.append(f"  executed copy: {executed}")
    print("\n".join(lines), file=sys.stderr, flush=True)


def open_lab(extra_args: Sequence[str] | None = None, *,
             notebook_dir: str | Path | None = None) -> int:
    """Open JupyterLab on the course notebooks; return its exit code."""
    import importlib.util

    if importlib.util.find_spec("jupyterlab") is None:
        raise FileNotFoundError('JupyterLab is not installed: pip install "tinylab[course]" '
                                '(or run `make lab`)')
    folder = Path(notebook_dir if notebook_dir is not None else NOTEBOOK_DIR)
    if not folder.is_dir():
        raise FileNotFoundError(f"notebook folder {folder} not found (run from a source checkout)")
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}",
               *(extra_args or [])]
    return subprocess.call(command)
