"""The site builder and its browser check (``tools/site.py``).

The real site is built and checked by ``make test`` after pytest, from the notebooks pytest
executed. These tests show each check can fail: a broken link, a missing anchor, a console
error, a figure that does not load; and that the builder refuses what it must refuse.
"""
from __future__ import annotations

import importlib.util
import json
import shutil
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
_spec = importlib.util.spec_from_file_location("tinylab_site", ROOT / "tools" / "site.py")
site = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(site)

BADGE = ("[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
         "(https://colab.research.google.com/github/o/r/blob/v1/notebooks/05_x.ipynb)")


def _nb(cells):
    return {"cells": cells, "metadata": {"kernelspec": {"name": "python3"}}, "nbformat": 4,
            "nbformat_minor": 5}


def _code(outputs):
    return {"cell_type": "code", "source": "x", "metadata": {}, "outputs": outputs,
            "execution_count": 1}


PNG = {"output_type": "display_data", "data": {"image/png": "iVBORw0KGgo=", "text/plain": "fig"},
       "metadata": {}}
WIDGET = {"output_type": "display_data", "metadata": {},
          "data": {"application/vnd.jupyter.widget-view+json": {"model_id": "m"}}}


def test_site_notebook_drops_what_would_load_from_the_internet():
    nb = _nb([{"cell_type": "markdown", "metadata": {}, "source": f"# 05 · X\n\n{BADGE}\n"},
              _code([WIDGET, PNG])])
    nb["metadata"]["widgets"] = {"state": {}}
    out = site.site_notebook(nb)
    text = out["cells"][0]["source"]
    assert "colab-badge.svg" not in text
    assert "[Open this notebook in Colab](https://colab.research.google.com/github/o/r/" in text
    assert "widgets" not in out["metadata"]
    assert "application/vnd.jupyter.widget-view+json" not in out["cells"][1]["outputs"][0]["data"]
    assert "widgets" in nb["metadata"], "the executed notebook itself must be left alone"
    assert site.count_figures(out) == 1


def test_find_executed_names_missing_and_failed_notebooks(tmp_path):
    (tmp_path / "a").mkdir()
    (tmp_path / "a" / "01_x.ipynb").write_text(json.dumps(_nb([_code([PNG])])))
    with pytest.raises(site.SiteError, match="02_y.ipynb"):
        site.find_executed(tmp_path, ["01_x.ipynb", "02_y.ipynb"])
    error = {"output_type": "error", "ename": "ValueError", "evalue": "boom", "traceback": []}
    (tmp_path / "02_y.ipynb").write_text(json.dumps(_nb([_code([error])])))
    with pytest.raises(site.SiteError, match="error output"):
        site.find_executed(tmp_path, ["01_x.ipynb", "02_y.ipynb"])
    (tmp_path / "02_y.ipynb").write_text(json.dumps(_nb([_code([PNG])])))
    found = site.find_executed(tmp_path, ["01_x.ipynb", "02_y.ipynb"])
    assert found["01_x.ipynb"] == tmp_path / "a" / "01_x.ipynb"


def test_fresh_dir_never_empties_a_folder_it_did_not_make(tmp_path):
    mine = tmp_path / "html"
    mine.mkdir()
    (mine / "notes.txt").write_text("the user's")
    with pytest.raises(site.SiteError, match="not made by tools/site.py"):
        site._fresh_dir(mine)
    assert (mine / "notes.txt").read_text() == "the user's"
    ours = site._fresh_dir(tmp_path / "built")
    (ours / "page.html").write_text("old")
    site._fresh_dir(ours)
    assert not (ours / "page.html").exists() and (ours / site.MARKER).exists()


def _write(path: Path, body: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    head = '<title>t</title><link rel="icon" href="data:,">'  # no favicon request
    path.write_text(f"<!doctype html><html><head>{head}</head><body>{body}</body></html>")


def test_broken_links_finds_missing_files_and_anchors(tmp_path):
    site._parse.cache_clear()
    _write(tmp_path / "index.html", '<a href="docs/a.html#ok">a</a> <a href="docs/a.html#gone">'
           'b</a> <a href="missing.html">c</a> <a href="https://example.org/x">d</a> '
           '<a href="#top" id="top">e</a>')
    _write(tmp_path / "docs" / "a.html", '<h1 id="ok">A</h1><a href="../index.html">up</a>')
    problems = site.broken_links(tmp_path)
    assert problems == ["index.html: link 'docs/a.html#gone' -> no id 'gone' there",
                        "index.html: link 'missing.html' -> missing file"]


def test_landing_page_has_every_notebook_and_its_measured_times():
    notebooks = {"01_a.ipynb": _nb([{"cell_type": "markdown", "metadata": {},
                                     "source": "# 01 · Alpha\n\n**Prerequisites**: none.\n"}]),
                 "02_b.ipynb": _nb([{"cell_type": "markdown", "metadata": {},
                                     "source": "# 02 · Beta\n"}])}
    times = {"notebooks": {"01_a": {"ci": 18.7, "quick": 206.9}, "02_b": {"ci": 20.0}}}
    page = site.landing_page(notebooks, times, "ci", "2026-01-01")
    assert "| [01 · Alpha](notebooks/01_a.ipynb) | 19 s | 3.4 min | none. |" in page
    assert "| [02 · Beta](notebooks/02_b.ipynb) | 20 s | - | - |" in page
    assert "notebooks/01_a\nnotebooks/02_b" in page
    assert "Transformers: 2 notebooks" in page          # the count follows the course


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_browser_check_fails_on_console_errors_and_missing_figures(tmp_path):
    """A tiny site with one console error and one figure that does not load: both reported,
    and a clean page passes."""
    site._parse.cache_clear()
    _write(tmp_path / "index.html", '<p>fine</p><a href="notebooks/05_x.html">nb</a>')
    _write(tmp_path / "notebooks" / "05_x.html",
           '<div class="cell_output"><img src="missing.png"></div>'
           '<script>console.error("boom")</script>')
    (tmp_path / "figures.json").write_text(json.dumps({"05_x": 1}))
    passed, failures = site.check(tmp_path, tmp_path / "shots")
    assert passed == 1
    text = "\n".join(failures)
    assert "notebooks/05_x.html: console error: boom" in text
    assert "notebooks/05_x.html: shows 0 figure(s), the notebook has 1" in text
    assert "request failed" in text or "404" in text
    assert (tmp_path / "shots" / "landing.png").stat().st_size > 0


def test_site_drops_ci_only_cells_and_keeps_the_rest():
    ci = {"cell_type": "code", "source": 'assert check("nb03.x", reference_x)', "outputs": [],
          "metadata": {"tags": ["ci-only", "remove-cell"]}, "execution_count": 2}
    nb = _nb([{"cell_type": "markdown", "metadata": {}, "source": "# 03 · X\n"}, _code([PNG]), ci,
              {**_code([]), "metadata": {"tags": ["keep_output"]}}])
    out = site.site_notebook(nb)
    assert [c["source"] for c in out["cells"]] == ["# 03 · X\n", "x", "x"]
    assert len(nb["cells"]) == 4, "the executed notebook itself must be left alone"


def test_site_pages_of_the_course_have_no_reference_checks(tmp_path):
    """Every course notebook, as the site renders it: the CI-only cells (the reference
    solutions passing their checkers) are gone, every other cell is still there, and the
    source notebooks (what CI executes) still hold them."""
    import re

    check_reference = re.compile(r'assert check\("nb\d\d\.\w+", reference_\w+\)')
    names = sorted(p.name for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
    dropped = 0
    for name in names:
        nb = json.loads((ROOT / "notebooks" / name).read_text(encoding="utf-8"))
        page = site.site_notebook(nb)
        tagged = [c for c in nb["cells"] if "ci-only" in c["metadata"].get("tags", [])]
        assert len(page["cells"]) == len(nb["cells"]) - len(tagged)
        dropped += len(tagged)
        assert not any(check_reference.search("".join(c["source"])) for c in page["cells"]), name
    assert dropped >= 10


def test_assemble_writes_pages_without_the_ci_only_cells(tmp_path, monkeypatch):
    """The site's source folder, as `build` assembles it from executed notebooks: the page of a
    notebook with a CI-only cell lacks it, the executed copy keeps it."""
    mathjax = tmp_path / "mathjax"
    mathjax.mkdir()
    (mathjax / "tex-svg.js").write_text("// stand-in")
    monkeypatch.setattr(site, "_mathjax_folder", lambda: mathjax)
    ci = {"cell_type": "code", "source": 'assert check("nb03.x", reference_x)', "outputs": [],
          "metadata": {"tags": ["ci-only", "remove-cell"]}, "execution_count": 2}
    executed = tmp_path / "executed" / "03_x.ipynb"
    executed.parent.mkdir()
    executed.write_text(json.dumps(_nb([{"cell_type": "markdown", "metadata": {},
                                         "source": "# 03 · X\n"}, _code([PNG]), ci])))
    src = site._fresh_dir(tmp_path / "src")
    figures = site.assemble({"03_x.ipynb": executed}, src, profile="ci")
    page = json.loads((src / "notebooks" / "03_x.ipynb").read_text())
    assert [c["cell_type"] for c in page["cells"]] == ["markdown", "code"]
    assert "reference_x" not in json.dumps(page)
    assert "reference_x" in executed.read_text()
    assert figures == {"03_x": 1}
