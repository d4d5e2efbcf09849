"""Run the course: execute every notebook in order and summarise what they measured.

``tinylab course run`` calls :func:`run_course`; ``tinylab course lab`` calls :func:`open_lab`;
``tinylab course prepare`` calls :func:`prepare`.

Each notebook is executed with papermill (kernel ``python3``, working directory ``notebooks/``)
and receives two parameters, ``PROFILE`` and ``OUTPUT_DIR``. The executed copy (with all
outputs) is written to the output folder under the notebook's own name. Notebooks that measure
something for the summary save it with :func:`tinylab.course.results.save_results`. After the
last notebook, :func:`run_course` collects those files into ``summary.json`` and
``summary.md`` (teacher vs student figures, plus each notebook's wall time) and prints the
markdown. The first failing notebook stops the run; the message names the notebook, the failing
cell and the executed copy to open.

The notebooks come from the source checkout (:func:`tinylab.course.checkout.require_checkout`)
unless a ``notebook_dir`` is given.
"""
from __future__ import annotations

import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping, Sequence

from tinylab import assets
from tinylab.atomic import atomic_write_text
from tinylab.config import get_config, resolve_profile_name
from tinylab.course.checkout import require_checkout
from tinylab.course.results import (RESULTS_SUFFIX, NotebookRun, build_summary,
                                    summary_markdown)
from tinylab.run_folder import claim_folder

__all__ = ["DEFAULT_OUTPUT_DIR", "default_notebook_dir", "list_notebooks", "select_notebooks",
           "run_notebook", "run_course", "open_lab", "fresh_cache", "prepare"]

DEFAULT_OUTPUT_DIR = Path("runs/course")
_NOTEBOOK_PATTERN = re.compile(r"^\d\d_.+\.ipynb$")


# ----------------------------------------------------------------------------------------------
# Finding notebooks
# ----------------------------------------------------------------------------------------------

def default_notebook_dir() -> Path:
    """``<checkout>/notebooks``; :class:`~tinylab.course.checkout.CheckoutNeeded` (one line)
    when tinylab is an installed package without the repository."""
    return require_checkout("the course notebooks (tinylab course run, solutions, lab)") \
        / "notebooks"


def list_notebooks(notebook_dir: str | Path | None = None) -> list[Path]:
    """The course notebooks (``NN_name.ipynb``) in ``notebook_dir``, in course order.

    ``notebook_dir`` defaults to :func:`default_notebook_dir` (``<checkout>/notebooks``).
    """
    folder = Path(notebook_dir if notebook_dir is not None else default_notebook_dir())
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
    folder = Path(notebook_dir if notebook_dir is not None else default_notebook_dir())
    available = list_notebooks(folder)
    if not available:
        raise FileNotFoundError(f"no notebooks (NN_name.ipynb) in {folder}")
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
    import papermill  # the `course` extra: absent from a plain install

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
    # The training engine loads torch: imported here, so `import tinylab.course` (every
    # `tinylab course` / `cache` command, and `make sync`) stays light.
    from tinylab.augment import augment_dataset
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
    the ones the notebook headers state (``make times``).
    Before the first kernel starts, the profile's device and precision are checked and the
    output folder is claimed (:func:`tinylab.run_folder.claim_folder`): a folder holding files
    ``course run`` did not write is refused unless ``overwrite``, and a symbolic link in place
    of one of its outputs (an executed notebook, a results file, ``summary.*``) is refused.
    Returns 0 when every notebook ran, 1 when one failed (the run stops there).
    """
    from tinylab.device import resolve_device, resolve_precision  # loads torch (see prepare)

    profile_name = resolve_profile_name(profile)
    cfg = get_config(profile_name)          # $TINYLAB_DEVICE / $TINYLAB_PRECISION checked too
    resolve_precision(cfg.precision, resolve_device(cfg.device))
    notebook_dir = Path(notebook_dir if notebook_dir is not None else default_notebook_dir())
    selected = select_notebooks(notebooks, notebook_dir)
    out = Path(output_dir if output_dir is not None else DEFAULT_OUTPUT_DIR)
    writes = [n for p in selected for n in (p.name, f"{p.stem}{RESULTS_SUFFIX}")]
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
                for found in Path(params["OUTPUT_DIR"]).glob(f"*{RESULTS_SUFFIX}"):
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
    if importlib.util.find_spec("jupyterlab") is None:
        raise FileNotFoundError('JupyterLab is not installed: pip install "tinylab[course]" '
                                '(or run `make lab`)')
    folder = Path(notebook_dir if notebook_dir is not None else default_notebook_dir())
    if not folder.is_dir():
        raise FileNotFoundError(f"notebook folder {folder} not found (run from a source checkout)")
    command = [sys.executable, "-m", "jupyterlab", f"--ServerApp.root_dir={folder}",
               *(extra_args or [])]
    return subprocess.call(command)
