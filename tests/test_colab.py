"""Colab: every notebook's badge and install cell come from the one URL, and the install works.

The slow test does what a learner's first cell does on Colab, as closely as this machine
allows: a fresh virtual environment that already has torch (Colab ships its own), then the
install cell's exact pip requirement and pins pointed at a local ``git+file://`` clone of this
repository at the ref the cell names, then ``import tinylab`` and ``tinylab assets list``.
Another test runs the cell itself in a Jupyter kernel that believes it is on Colab, against a
ref that does not exist, and checks that the notebook stops there in one line.
"""
from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest

from tinylab.course import list_notebooks, notebook_output_dir, package_version, release_ref

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import notebook_cells  # noqa: E402
import repository  # noqa: E402
import times  # noqa: E402

NOTEBOOKS = list_notebooks(ROOT / "notebooks")


def test_repository_url_is_defined_once_in_pyproject():
    url = repository.repository_url(ROOT)
    assert url.startswith("https://github.com/")
    # The URL is typed nowhere else: notebooks and README carry generated copies only.
    for path in [*ROOT.glob("tinylab/**/*.py"), *ROOT.glob("tools/*.py"),
                 *ROOT.glob("tests/*.py"), ROOT / "Makefile"]:
        assert url not in path.read_text(encoding="utf-8"), f"{path} hard-codes {url}"


def test_notebooks_are_in_sync_with_the_generated_cells():
    stale = notebook_cells.sync_notebooks(ROOT / "notebooks", check=True, root=ROOT)
    assert not stale, f"run `make sync`: {stale} differ from the generated cells"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_badge_and_install_cell_use_the_one_url(path):
    nb = nbformat.read(path, as_version=4)
    url, ref = repository.repository_url(ROOT), release_ref()
    slug = url.removeprefix("https://github.com/")
    badge = re.search(r"\(https://colab\.research\.google\.com/github/(.+?)/blob/(.+?)/"
                      r"notebooks/(.+?)\.ipynb\)", nb.cells[0].source)
    assert badge, f"{path.name}: no Open-in-Colab badge in the first cell"
    assert badge.groups() == (slug, ref, path.stem)
    install = nb.cells[1].source
    assert f'TINYLAB_REF = "{ref}"' in install
    assert f'"tinylab-course[deploy] @ git+{url}@{{TINYLAB_REF}}"' in install
    assert "[course]" not in install and '"torch' not in install
    assert '"assets", "fetch"' in install


def test_release_ref_is_the_tag_of_a_release_and_main_before_one():
    assert release_ref("0.2.0") == "v0.2.0"
    assert release_ref("0.2.0.dev0") == "main"


def test_install_cell_pins_the_locked_hugging_face_libraries():
    lock = (ROOT / "requirements" / "lock.txt").read_text(encoding="utf-8")
    install = nbformat.read(NOTEBOOKS[0], as_version=4).cells[1].source
    for pin in notebook_cells.colab_pins(ROOT):
        assert f'"{pin}"' in install and f"\n{pin}\n" in f"\n{lock}"


def test_notebook_output_dir_stays_under_content_on_colab(monkeypatch):
    import types

    monkeypatch.delenv("TINYLAB_OUTPUT", raising=False)
    assert notebook_output_dir(None) == Path("../runs/course")
    assert notebook_output_dir("/x/y") == Path("/x/y")
    monkeypatch.setitem(sys.modules, "google.colab", types.ModuleType("google.colab"))
    assert notebook_output_dir(None) == Path("/content/runs/course")
    monkeypatch.setenv("TINYLAB_OUTPUT", "/content/drive/MyDrive/runs")
    assert notebook_output_dir(None) == Path("/content/drive/MyDrive/runs")


@pytest.mark.slow
def test_a_failed_colab_install_stops_the_notebook_in_one_line(tmp_path):
    """The install cell, in a real kernel that believes it is on Colab, against a ref that
    cannot be installed: the cell raises, the next cell never runs, and the error is one line
    naming the ref."""
    from nbclient import NotebookClient
    from nbclient.exceptions import CellExecutionError

    missing = tmp_path / "no-such-repository"
    cell = notebook_cells.install_cell_source(ROOT, url=f"file://{missing}", ref="v9.9.9")
    nb = nbformat.v4.new_notebook(cells=[
        nbformat.v4.new_code_cell("import sys, types\n"
                                  "sys.modules['google.colab'] = types.ModuleType('google.colab')"),
        nbformat.v4.new_code_cell(cell),
        nbformat.v4.new_code_cell("print('went on')"),
    ])
    client = NotebookClient(nb, kernel_name="python3", timeout=120)
    with pytest.raises(CellExecutionError):
        client.execute()
    error = [o for o in nb.cells[1].outputs if o.output_type == "error"][0]
    assert error.ename == "SetupFailed"
    assert len(error.traceback) == 1 and "'v9.9.9'" in error.traceback[0]
    assert str(missing) in error.traceback[0]
    assert not nb.cells[2].get("outputs")


def test_readme_colab_badges_are_the_generated_ones():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    for path in NOTEBOOKS:
        assert notebook_cells.badge_markdown(path.stem, ROOT) in readme, (
            f"README's Colab table lacks the badge of {path.stem}")


def test_time_lines_come_from_the_generated_table(tmp_path):
    table = repository.load_times(ROOT / "docs" / "notebook-times.json")
    for path in NOTEBOOKS:
        first = nbformat.read(path, as_version=4).cells[0].source
        assert notebook_cells.run_time_line(path.stem, table) in first


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
    table = times.write_times([good], tmp_path / "t.json", tmp_path / "t.md")
    assert table["notebooks"] == {"01_tokenization": {"ci": 1.5}}
    assert "| 01_tokenization | 1.5 |" in (tmp_path / "t.md").read_text()
    assert "`ci` 2 s" in notebook_cells.run_time_line("01_tokenization", table)
    again = times.write_times([good], tmp_path / "t.json", tmp_path / "t.md")
    assert len(again["runs"]["ci"]) == 1            # the same run filed twice is listed once
    assert (tmp_path / "t.md").read_text().count("finished now") == 1
    with pytest.raises(ValueError, match="--alone"):
        times.write_times([bad], tmp_path / "t.json", tmp_path / "t.md")


def _install_requirements(cell: str) -> list[str]:
    """The cell's pip arguments: the tinylab requirement at TINYLAB_REF, then the pins."""
    ref = re.search(r'TINYLAB_REF = "(.+?)"', cell).group(1)
    requirement = re.search(r'f"(tinylab-course\[deploy\] @ git\+.+?)@\{TINYLAB_REF\}"',
                            cell).group(1) + "@" + ref
    pins = re.findall(r'"([A-Za-z0-9._-]+==[^"]+)"', cell)
    return [requirement, *pins]


@pytest.mark.slow
def test_install_cell_installs_into_a_fresh_environment_with_torch(tmp_path):
    import torch

    requirement, *pins = _install_requirements(
        nbformat.read(NOTEBOOKS[0], as_version=4).cells[1].source)
    url, ref = repository.repository_url(ROOT), release_ref()
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", "--no-local", str(ROOT), str(clone)], check=True)
    # The clone holds the committed tree; the ref the cell names must exist in it.
    subprocess.run(["git", "-C", str(clone), "branch", "-f", "main", "HEAD"], check=False,
                   capture_output=True)
    if ref != "main":
        subprocess.run(["git", "-C", str(clone), "tag", "-f", ref], check=True,
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
    done = subprocess.run([*pip, local, *pins], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-3000:]

    check = subprocess.run(
        [py, "-c", "import importlib.metadata as md, torch, tinylab; "
                   "print(torch.__version__, md.version('tinylab-course')); "
                   "import importlib.util as u; "
                   "print([m for m in ('jupyterlab', 'papermill', 'nbval', 'pytest') "
                   "if u.find_spec(m)])"],
        capture_output=True, text=True, check=True)
    torch_after, tinylab_version, extras = check.stdout.strip().splitlines()[0].split()[0], \
        check.stdout.split()[1], check.stdout.strip().splitlines()[1]
    assert torch_after.split("+")[0] == torch_version  # Colab's torch is kept
    assert tinylab_version == package_version()
    assert extras == "[]", f"the install cell pulled development tools: {extras}"
    listed = subprocess.run([str(venv / "bin" / "tinylab"), "assets", "list"],
                            capture_output=True, text=True)
    assert listed.returncode == 0, listed.stderr
    assert "all-MiniLM-L6-v2" in listed.stdout and "rotten-tomatoes" in listed.stdout


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_every_notebook_resolves_its_output_folder_the_colab_aware_way(path):
    setup = nbformat.read(path, as_version=4).cells[3].source
    assert "OUTPUT_DIR = notebook_output_dir(OUTPUT_DIR)" in setup
    assert '"../runs/course"' not in setup
