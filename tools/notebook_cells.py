"""What lets a notebook stand alone on Colab: its badge, its install cell and its run time.

    .venv/bin/python tools/notebook_cells.py          # write the cells (`make sync`)
    .venv/bin/python tools/notebook_cells.py --check  # exit 1 if a notebook is out of date

Most learners open a course notebook in Colab: a fresh machine per notebook, PyTorch (with
CUDA) already installed, often a GPU. Everything such a notebook needs from outside is written
here once and copied into the notebooks by :func:`sync_notebooks`, so nothing is typed by hand
in nine places:

* the repository URL, defined once in ``pyproject.toml`` (``[project.urls] Repository``);
* an "Open in Colab" badge in the first cell, opening the notebook at
  :func:`tinylab.course.release_ref`: the tag ``v<version>`` of a release, or ``main`` while
  the version is a development one (``0.2.0.dev0``); ``make release-check`` checks that the
  tag, the version and every ref in the notebooks agree;
* the install cell (the second cell): ``pip install "tinylab-course[deploy] @ git+<URL>@<ref>"``
  plus exact pins of the Hugging Face libraries from ``requirements/lock.txt`` (the versions
  the course was tested with; a newer transformers has broken it before), and no torch pin, so
  Colab keeps its own CUDA build; then ``tinylab assets fetch``. When pip fails the cell stops
  the notebook with one line that names the ref it tried. Outside Colab it does nothing;
* the run-time line of the first cell, from the generated table ``docs/notebook-times.json``
  (``tools/times.py``, fed by ``tinylab course run --alone``: each notebook alone, with an
  empty cache).
"""
from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path
from typing import Any, Mapping

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repository import REPO_ROOT, load_times, repository_url  # noqa: E402

from tinylab.course import list_notebooks, release_ref  # noqa: E402

__all__ = ["colab_url", "badge_markdown", "install_cell_source", "install_requirement",
           "colab_pins", "run_time_line", "expected_first_cell", "sync_notebooks",
           "DISTRIBUTION"]

COLAB_BADGE = "https://colab.research.google.com/assets/colab-badge.svg"
_BADGE_LINE = re.compile(r"^\[!\[Open In Colab\]\(.*\)\]\(.*\)\s*$", re.M)
_TIME_PARAGRAPH = re.compile(r"\*\*Time\*\*:.*?(?=\n\n\*\*Prerequisites)", re.S)
_READING = re.compile(r"(\d+) minutes")
DISTRIBUTION = "tinylab-course"
# The libraries the install cell pins to their locked versions. Colab's own torch, numpy,
# pandas and matplotlib are kept: pinning those would downgrade packages Colab relies on.
COLAB_PINNED = ("transformers", "tokenizers", "huggingface-hub", "accelerate", "datasets",
                "safetensors", "kernels", "onnx", "onnxruntime", "onnxscript")


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


# --------------------------------------------------------------------------------------------
# Run times
# --------------------------------------------------------------------------------------------

def _fmt_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "not measured yet"
    if seconds < 90:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min"


def run_time_line(notebook: str, times: Mapping[str, Any]) -> str:
    """The generated "Run time" sentence of a notebook's first cell."""
    per = times.get("notebooks", {}).get(notebook, {})
    parts = [f"`{profile}` {_fmt_seconds(per.get(profile))}" for profile in ("ci", "quick")]
    return ("**Run time** (this notebook alone, with an empty cache, on 2 CPU cores; generated, "
            "see `docs/notebook-times.md`): " + ", ".join(parts) + ".")


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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true",
                        help="only report what would change; exit 1 if anything would")
    args = parser.parse_args(argv)
    changed = sync_notebooks(check=args.check)
    if args.check and changed:
        print(f"notebook_cells: out of sync (run `make sync`): {', '.join(changed)}",
              file=sys.stderr)
        return 1
    print(("updated: " + ", ".join(changed)) if changed else "notebooks in sync")
    return 0


if __name__ == "__main__":
    sys.exit(main())
