"""What lets a notebook stand alone on Colab: its badge, its install cell and its run time.

Most learners open a course notebook in Colab: a fresh machine per notebook, PyTorch (with
CUDA) already installed, often a GPU. Everything such a notebook needs from outside is written
here once and copied into the notebooks by :func:`sync_notebooks` (``tinylab course sync``),
so nothing is typed by hand in six places:

* the repository URL, defined once in ``pyproject.toml`` (``[project.urls] Repository``);
* an "Open in Colab" badge in the first cell, opening the notebook at :func:`release_ref`:
  the tag ``v<version>`` of a release, or ``main`` while the version is a development one
  (``0.2.0.dev0``); ``make release-check`` checks that the tag, the version and every ref in
  the notebooks agree;
* the install cell (the second cell): ``pip install "tinylab-course[deploy] @ git+<URL>@<ref>"``
  plus exact pins of the Hugging Face libraries from ``requirements/lock.txt`` (the versions
  the course was tested with; a newer transformers has broken it before), and no torch pin, so
  Colab keeps its own CUDA build; then ``tinylab assets fetch``. When pip fails the cell stops
  the notebook with one line that names the ref it tried. Outside Colab it does nothing;
* the run-time line of the first cell, from the generated table ``docs/notebook-times.json``
  (:func:`write_times`, fed by ``tinylab course run --alone``: each notebook alone, with an
  empty cache).
"""
from __future__ import annotations

import json
import os
import re
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

__all__ = ["REPO_ROOT", "project_metadata", "repository_url", "release_ref", "colab_url",
           "badge_markdown", "install_cell_source", "install_requirement", "colab_pins",
           "notebook_output_dir", "run_time_line", "sync_notebooks", "write_times", "TIMES_JSON",
           "TIMES_MD", "DISTRIBUTION"]

REPO_ROOT = Path(__file__).resolve().parents[1]
TIMES_JSON = REPO_ROOT / "docs" / "notebook-times.json"
TIMES_MD = REPO_ROOT / "docs" / "notebook-times.md"
COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
_BADGE_LINE = re.compile(r"^\[!\[Open In Colab\]\(.*\)\]\(.*\)\s*$", re.M)
_TIME_PARAGRAPH = re.compile(r"\*\*Time\*\*:.*?(?=\n\n\*\*Prerequisites)", re.S)
_READING = re.compile(r"(\d+) minutes")
DISTRIBUTION = "tinylab-course"
# The libraries the install cell pins to their locked versions. Colab's own torch, numpy,
# pandas and matplotlib are kept: pinning those would downgrade packages Colab relies on.
COLAB_PINNED = ("transformers", "tokenizers", "huggingface-hub", "accelerate", "datasets",
                "safetensors", "kernels", "onnx", "onnxruntime", "onnxscript")


def project_metadata(root: str | Path = REPO_ROOT) -> dict[str, Any]:
    """``[project]`` of ``pyproject.toml`` (a source checkout is needed)."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    path = Path(root) / "pyproject.toml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: notebook cells are generated in a source "
                                f"checkout of tinylab")
    return tomllib.loads(path.read_text(encoding="utf-8"))["project"]


def repository_url(root: str | Path = REPO_ROOT) -> str:
    """The one repository URL (``[project.urls] Repository``), without a trailing slash."""
    urls = project_metadata(root).get("urls", {})
    if "Repository" not in urls:
        raise ValueError("pyproject.toml has no [project.urls] Repository entry; add the "
                         "repository URL there (it is the only place it is written)")
    return urls["Repository"].rstrip("/")


def package_version() -> str:
    """The one version, ``tinylab.__version__`` (``pyproject.toml`` reads it from there)."""
    from tinylab import __version__

    return __version__


def release_ref(version: str | None = None) -> str:
    """The git ref the badges and install cells point at: ``v<version>`` for a release,
    ``main`` for a development version (one with ``.dev``), which has no tag yet."""
    version = version or package_version()
    return "main" if ".dev" in version else f"v{version}"


def colab_pins(root: str | Path = REPO_ROOT) -> list[str]:
    """``name==version`` from ``requirements/lock.txt`` for each of :data:`COLAB_PINNED`."""
    lock = Path(root) / "requirements" / "lock.txt"
    if not lock.is_file():
        raise FileNotFoundError(f"{lock} not found: the install cell pins the locked versions "
                                f"(`make lock` writes it)")
    found = dict(re.findall(r"^([A-Za-z0-9._-]+)==(\S+)", lock.read_text(encoding="utf-8"), re.M))
    missing = [name for name in COLAB_PINNED if name not in found]
    if missing:
        raise ValueError(f"{lock} lacks {missing}; regenerate it with `make lock`")
    return [f"{name}=={found[name]}" for name in COLAB_PINNED]


def colab_url(notebook: str, root: str | Path = REPO_ROOT) -> str:
    """Colab's address for ``notebooks/<notebook>.ipynb`` at the tagged release."""
    url = repository_url(root)
    match = re.match(r"https://github\.com/([^/]+/[^/]+?)(?:\.git)?$", url)
    if not match:
        raise ValueError(f"Colab opens notebooks from GitHub; {url!r} is not a github.com "
                         f"repository URL")
    return (f"https://colab.research.google.com/github/{match.group(1)}/blob/"
            f"{release_ref()}/notebooks/{notebook}.ipynb")


def badge_markdown(notebook: str, root: str | Path = REPO_ROOT) -> str:
    """The "Open in Colab" badge line for a notebook (stem, e.g. ``"02_teacher_inference"``)."""
    return f"[![Open In Colab]({COLAB_BADGE})]({colab_url(notebook, root)})"


def install_requirement(root: str | Path = REPO_ROOT, *, url: str | None = None,
                        ref: str | None = None) -> str:
    """The pip requirement of the install cell: runtime dependencies and ONNX Runtime only."""
    return f"{DISTRIBUTION}[deploy] @ git+{url or repository_url(root)}@{ref or release_ref()}"


def install_cell_source(root: str | Path = REPO_ROOT, *, url: str | None = None,
                        ref: str | None = None) -> str:
    """The second cell of every notebook.

    On Colab it installs :func:`install_requirement` with :func:`colab_pins`, then fetches the
    assets. A failure of either stops the notebook there, in one line naming the ref (an
    exception whose ``_render_traceback_`` is that line: IPython prints it instead of a
    traceback), rather than a cell later at ``import tinylab``.
    """
    url, ref = url or repository_url(root), ref or release_ref()
    pins = [f'"{pin}"' for pin in colab_pins(root)]
    pin_lines = [", ".join(pins[i:i + 4]) for i in range(0, len(pins), 4)]
    return "\n".join([
        "# Colab (or any fresh machine): install tinylab and fetch the offline assets. Colab's own",
        "# torch is kept (tinylab asks for torch>=2.2 only); the Hugging Face libraries are pinned",
        "# to the tested versions. Locally `make lab` did all this and this cell does nothing.",
        "# To keep the cache (fine-tuned teacher, students) across Colab sessions, mount Google",
        "# Drive and point TINYLAB_CACHE at it before running the cell:",
        '#   from google.colab import drive; drive.mount("/content/drive")',
        '#   import os; os.environ["TINYLAB_CACHE"] = "/content/drive/MyDrive/tinylab-cache"',
        "import subprocess, sys",
        'if "google.colab" in sys.modules:',
        f'    TINYLAB_REF = "{ref}"',
        "    PINS = [" + (",\n            ".join(pin_lines)) + "]",
        "",
        "    class SetupFailed(Exception):",
        "        def _render_traceback_(self):  # one line instead of a traceback",
        '            return [f"SetupFailed: {self}"]',
        "",
        "    def run(*args):",
        "        done = subprocess.run([sys.executable, \"-m\", *args], capture_output=True, text=True)",
        "        last = (done.stderr.strip().splitlines() or [\"no output\"])[-1]",
        "        return done.returncode == 0, last",
        "",
        '    ok, why = run("pip", "install", "-q",',
        f'                  f"{DISTRIBUTION}[deploy] @ git+{url}@{{TINYLAB_REF}}", *PINS)',
        "    if not ok:",
        f'        raise SetupFailed(f"pip could not install tinylab from {url} at ref "',
        '                          f"{TINYLAB_REF!r} ({why}); check the ref, or Runtime > Restart")',
        '    ok, why = run("tinylab", "assets", "fetch", "--quiet")',
        "    if not ok:",
        '        raise SetupFailed(f"tinylab assets fetch failed ({why})")',
    ])


def notebook_output_dir(value: str | os.PathLike | None = None) -> Path:
    """Where a notebook writes its results: ``value`` if given (papermill's ``OUTPUT_DIR``),
    else ``/content/runs/course`` on Colab (the notebook's working folder there is
    ``/content``; ``../runs`` would land in ``/runs``, outside it and outside Drive), else
    ``../runs/course`` from the notebooks folder of a checkout.
    ``$TINYLAB_OUTPUT`` overrides both defaults (e.g. a folder on the mounted Drive)."""
    if value:
        return Path(value)
    if os.environ.get("TINYLAB_OUTPUT"):
        return Path(os.environ["TINYLAB_OUTPUT"])
    if "google.colab" in sys.modules:
        return Path("/content/runs/course")
    return Path("../runs/course")


# --------------------------------------------------------------------------------------------
# Run times
# --------------------------------------------------------------------------------------------

def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "not measured yet"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def load_times(path: str | Path = TIMES_JSON) -> dict[str, Any]:
    """The generated table: ``{"runs": {profile: [run, ...]}, "notebooks": {stem: {profile:
    seconds}}}``."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {"runs": {}, "notebooks": {}}


def run_time_line(notebook: str, times: Mapping[str, Any]) -> str:
    """The generated "Run time" sentence of a notebook's first cell."""
    per = times.get("notebooks", {}).get(notebook, {})
    parts = [f"`{profile}` {_fmt_seconds(per.get(profile))}" for profile in ("ci", "quick")]
    return ("**Run time** (this notebook alone, with an empty cache, on 2 CPU cores; generated, "
            "see `docs/notebook-times.md`): " + ", ".join(parts) + ".")


def write_times(summaries: Sequence[str | Path], out_json: str | Path = TIMES_JSON,
                out_md: str | Path = TIMES_MD, *, label: str | None = None) -> dict[str, Any]:
    """Merge ``summary.json`` files of ``tinylab course run --alone`` into the times table.

    Each summary contributes the wall time of every notebook that ran ``ok`` under its
    profile; entries of other profiles already in the table are kept. ``label`` files a run
    that is *not* ``--alone`` (e.g. ``"quick, prepared cache"``: after ``tinylab course
    prepare``) under that name instead of its profile. Writes JSON (read by
    :func:`sync_notebooks`) and Markdown (for people), and returns the table.
    """
    table = load_times(out_json)
    for path in summaries:
        summary = json.loads(Path(path).read_text())
        if not summary.get("alone") and label is None:
            raise ValueError(f"{path} is not from `tinylab course run --alone` (each notebook "
                             f"alone with an empty cache); file other runs under a --label")
        profile = label or summary["profile"]
        ran = [r for r in summary["notebooks"] if r["status"] == "ok"]
        runs = table["runs"].setdefault(profile, [])
        runs.append({"finished": summary.get("finished"), "machine": summary.get("machine"),
                     "notebooks": [r["name"] for r in ran]})
        for run in ran:  # a later run of the same notebook and profile replaces the earlier
            table["notebooks"].setdefault(run["name"], {})[profile] = run["wall_time_s"]
    from tinylab.atomic import atomic_write_text

    atomic_write_text(out_json, json.dumps(table, indent=2, sort_keys=True) + "\n")
    profiles = sorted(table["runs"])
    lines = ["# Notebook run times", "",
             "Generated by `tinylab course times` from `tinylab course run --alone` runs: each",
             "notebook executed on its own, with an empty cache (only the offline assets present),",
             "so it fine-tunes the teacher and trains every model it needs itself. A column with",
             "a label instead of a profile name is another kind of run (`--label`), e.g. after",
             "`tinylab course prepare`. Do not edit by hand; the notebook headers carry the",
             "`ci` and `quick` figures.", "",
             "| notebook | " + " | ".join(f"`{p}` (s)" for p in profiles) + " |",
             "|---|" + "---:|" * len(profiles)]
    for stem in sorted(table["notebooks"]):
        cells = [f"{table['notebooks'][stem][p]:.1f}" if p in table["notebooks"][stem] else "-"
                 for p in profiles]
        lines.append(f"| {stem} | " + " | ".join(cells) + " |")
    lines += ["", "Runs (a later run of a notebook replaces its earlier figure):", ""]
    for p in profiles:
        for run in table["runs"][p]:
            lines.append(f"- `{p}`, finished {run.get('finished')} on {run.get('machine')}: "
                         f"{', '.join(run.get('notebooks', []))}")
    atomic_write_text(out_md, "\n".join(lines) + "\n")
    return table


# --------------------------------------------------------------------------------------------
# Writing the cells into the notebooks
# --------------------------------------------------------------------------------------------

def expected_first_cell(source: str, notebook: str, times: Mapping[str, Any],
                        root: str | Path = REPO_ROOT) -> str:
    """The first cell with its badge (line 2) and its generated time paragraph."""
    lines = _BADGE_LINE.sub("", source).strip("\n").split("\n")
    title, rest = lines[0], "\n".join(lines[1:]).lstrip("\n")
    match = _TIME_PARAGRAPH.search(rest)
    if match is None:
        raise ValueError(f"{notebook}: the first cell needs a '**Time**: ...' paragraph followed "
                         f"by '**Prerequisites**'")
    reading = _READING.search(match.group(0))
    if reading is None:
        raise ValueError(f"{notebook}: the '**Time**' paragraph must say 'about N minutes' of "
                         f"reading")
    paragraph = (f"**Time**: about {reading.group(1)} minutes of reading and exercises.\n\n"
                 + run_time_line(notebook, times))
    rest = rest[:match.start()] + paragraph + rest[match.end():]
    return f"{title}\n\n{badge_markdown(notebook, root)}\n\n{rest}"


def sync_notebooks(notebook_dir: str | Path | None = None, *, check: bool = False,
                   root: str | Path = REPO_ROOT) -> list[str]:
    """Write the badge, the install cell and the run-time line into every course notebook.

    Returns the notebooks that changed (with ``check=True``: that would change, nothing is
    written). Only those two cells are touched; outputs and ids stay as they are.
    """
    import nbformat

    from tinylab.course import list_notebooks

    times = load_times(Path(root) / "docs" / "notebook-times.json")
    changed = []
    for path in list_notebooks(notebook_dir or Path(root) / "notebooks"):
        nb = nbformat.read(path, as_version=4)
        first = expected_first_cell(nb.cells[0].source, path.stem, times, root)
        install = install_cell_source(root)
        if nb.cells[0].source != first or nb.cells[1].source != install:
            changed.append(path.stem)
            if not check:
                nb.cells[0].source, nb.cells[1].source = first, install
                nbformat.write(nb, path)
    return changed


if __name__ == "__main__":  # python -m tinylab.colab: same as `tinylab course sync`
    print("\n".join(sync_notebooks()) or "notebooks already in sync", file=sys.stderr)
