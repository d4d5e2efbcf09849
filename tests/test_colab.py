"""Colab: every notebook's badge and install cell come from the one URL, and the install works.

The slow test does what a learner's first cell does on Colab, as closely as this machine
allows: a fresh virtual environment that already has torch (Colab ships its own), then the
install cell's exact pip requirement pointed at a local ``git+file://`` clone of this
repository with the release tag, then ``import tinylab`` and ``tinylab assets list``.
"""
from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tinylab import colab
from tinylab.course import list_notebooks

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = list_notebooks(ROOT / "notebooks")


def test_repository_url_is_defined_once_in_pyproject():
    url = colab.repository_url(ROOT)
    assert url.startswith("https://github.com/")
    # The URL is typed nowhere else: notebooks and README carry generated copies only.
    for path in [*ROOT.glob("tinylab/**/*.py"), *ROOT.glob("tests/*.py"), ROOT / "Makefile"]:
        assert url not in path.read_text(encoding="utf-8"), f"{path} hard-codes {url}"


def test_notebooks_are_in_sync_with_the_generated_cells():
    stale = colab.sync_notebooks(ROOT / "notebooks", check=True, root=ROOT)
    assert not stale, f"run `tinylab course sync`: {stale} differ from the generated cells"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_badge_and_install_cell_use_the_one_url(path):
    nb = nbformat.read(path, as_version=4)
    url, version = colab.repository_url(ROOT), colab.project_metadata(ROOT)["version"]
    slug = url.removeprefix("https://github.com/")
    badge = re.search(r"\(https://colab\.research\.google\.com/github/(.+?)/blob/(.+?)/"
                      r"notebooks/(.+?)\.ipynb\)", nb.cells[0].source)
    assert badge, f"{path.name}: no Open-in-Colab badge in the first cell"
    assert badge.groups() == (slug, f"v{version}", path.stem)
    install = nb.cells[1].source
    assert f'%pip install -q "tinylab @ git+{url}@v{version}"' in install
    assert "[course]" not in install and "torch" not in install.split("%pip", 1)[1].split("\n")[0]
    assert "tinylab assets fetch" in install


def test_readme_colab_badges_are_the_generated_ones():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert colab.badge_markdown(path.stem, ROOT) in readme, (
            f"README's Colab table lacks the badge of {path.stem}")


def test_time_lines_come_from_the_generated_table(tmp_path):
    times = colab.load_times(ROOT / "docs" / "notebook-times.json")
    for path in NOTEBOOKS:
        first = nbformat.read(path, as_version=4).cells[0].source
        assert colab.run_time_line(path.stem, times) in first


def test_write_times_takes_only_alone_runs(tmp_path):
    import json

    summary = {"profile": "ci", "alone": True, "finished": "now", "machine": "test",
               "total_wall_time_s": 3.0,
               "notebooks": [{"name": "01_tokenization", "status": "ok", "wall_time_s": 1.5},
                             {"name": "02_teacher_inference", "status": "failed",
                              "wall_time_s": 1.5}]}
    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text(json.dumps(summary))
    bad.write_text(json.dumps({**summary, "alone": False}))
    table = colab.write_times([good], tmp_path / "t.json", tmp_path / "t.md")
    assert table["notebooks"] == {"01_tokenization": {"ci": 1.5}}
    assert "| 01_tokenization | 1.5 |" in (tmp_path / "t.md").read_text()
    assert "`ci` 2 s" in colab.run_time_line("01_tokenization", table)
    with pytest.raises(ValueError, match="--alone"):
        colab.write_times([bad], tmp_path / "t.json", tmp_path / "t.md")


def _install_command(cell: str) -> str:
    line = next(l.strip() for l in cell.splitlines() if l.strip().startswith("%pip install"))
    return shlex.split(line.removeprefix("%pip install"))[-1]


@pytest.mark.slow
def test_install_cell_installs_into_a_fresh_environment_with_torch(tmp_path):
    import torch

    requirement = _install_command(nbformat.read(NOTEBOOKS[0], as_version=4).cells[1].source)
    url, version = colab.repository_url(ROOT), colab.project_metadata(ROOT)["version"]
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-local", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "tag", "-f", f"v{version}"], check=True,
                   capture_output=True)
    local = requirement.replace(f"git+{url}", f"git+file://{clone}")
    assert local != requirement

    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, "--upgrade", "pip"], check=True)  # Colab's pip is a recent one
    # Colab comes with torch; here the same version as the test environment stands in for it.
    torch_version = torch.__version__.split("+")[0]
    subprocess.run([*pip, f"torch=={torch_version}"], check=True)
    done = subprocess.run([*pip, local], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    check = subprocess.run(
        [py, "-c", "import importlib.metadata as md, torch, tinylab; "
                   "print(torch.__version__, md.version('tinylab')); "
                   "import importlib.util as u; "
                   "print([m for m in ('jupyterlab', 'papermill', 'nbval', 'pytest') "
                   "if u.find_spec(m)])"],
        capture_output=True, text=True, check=True)
    torch_after, tinylab_version, extras = check.stdout.strip().splitlines()[0].split()[0], \
        check.stdout.split()[1], check.stdout.strip().splitlines()[1]
    assert torch_after.split("+")[0] == torch_version  # Colab's torch is kept
    assert tinylab_version == version
    assert extras == "[]", f"the install cell pulled development tools: {extras}"
    listed = subprocess.run([str(venv / "bin" / "tinylab"), "assets", "list"],
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "all-MiniLM-L6-v2" in listed.stdout and "rotten-tomatoes" in listed.stdout
