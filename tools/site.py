"""Build the course as a static site, and check it in a real browser.

    python tools/site.py build [--profile quick] [--notebooks DIR] [--output runs/site]
    python tools/site.py check [--output runs/site]

``build`` executes the course notebooks with ``tinylab course run`` (or takes already executed
copies from ``--notebooks DIR``, e.g. ``runs/course`` or CI's ``runs/ci-notebooks``), then
assembles a Sphinx source folder (``<output>/src``: a generated landing page with the course
map and measured run times, the notebooks with every output, ``docs/*.md``, and an API page
per module from the docstrings) and renders it to ``<output>/html``.

``check`` serves ``<output>/html`` on localhost and opens every page in headless Chromium
(Playwright driving the distribution's ``/usr/bin/chromium``). A page fails when it logs a
console error, raises, or requests anything that does not load; a notebook page fails when
it shows fewer figures than the executed notebook has; any page fails on an internal link
whose file or ``#anchor`` does not exist. Screenshots of the landing page and of notebook 05
go to ``<output>/screenshots``. It ends with one line, ``site: N passed, M failed``.

``<output>/src`` and ``<output>/html`` are rebuilt from scratch on every build, and the script
only ever removes folders that carry its own marker file: point ``--output`` at a folder of
yours and it refuses.
"""
from __future__ import annotations

import argparse
import functools
import http.server
import json
import os
import pkgutil
import re
import shutil
import subprocess
import sys
import threading
import time
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote, urldefrag, urlparse

sys.path.insert(0, str(Path(__file__).resolve().parent))
from repository import REPO_ROOT as ROOT  # noqa: E402
from repository import load_times  # noqa: E402

from tinylab.course import list_notebooks, run_course  # noqa: E402
MARKER = ".tinylab-site"
DOCS = ["instructor", "notebook-times", "results", "paper-vs-code", "references", "equations",
        "design", "devices", "faults", "offline-assets"]
FIGURES = ["two-stage.svg"]  # pictures the guides and the landing page show
BROWSER_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]
_BADGE = re.compile(r"\[!\[Open In Colab\]\([^)]*\)\]\(([^)]*)\)")
_IMAGE_TYPES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
#: Cells that exist for CI only (e.g. "the reference solution passes its checker"): executed by
#: the tests, left out of every page.
HIDDEN_TAGS = {"ci-only", "remove-cell"}


class SiteError(Exception):
    """A one-line, actionable reason why the site could not be built or checked."""


# ---------------------------------------------------------------------------------------- build

def _fresh_dir(path: Path) -> Path:
    """Empty ``path`` for a new build, but only if it is one of ours (it holds ``MARKER``)."""
    if path.exists():
        if not (path / MARKER).exists():
            raise SiteError(f"{path} exists and was not made by tools/site.py (no {MARKER}); "
                            f"choose another --output or move the folder away")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by tools/site.py; rebuilt on every build\n")
    return path


def find_executed(folder: Path, names: list[str]) -> dict[str, Path]:
    """The executed copy of each course notebook under ``folder`` (searched recursively).

    Raises :class:`SiteError` naming the missing notebooks, and any copy that holds an error
    output (a failed run must not become a page).
    """
    found: dict[str, Path] = {}
    for name in names:
        hits = sorted(p for p in folder.rglob(name) if ".ipynb_checkpoints" not in p.parts
                      and "src" not in p.relative_to(folder).parts[:1])
        if hits:
            found[name] = max(hits, key=lambda p: p.stat().st_mtime)
    missing = [n for n in names if n not in found]
    if missing:
        raise SiteError(f"{folder} has no executed copy of {', '.join(missing)}; run "
                        f"`tinylab course run --output {folder}` or drop --notebooks")
    for name, path in found.items():
        nb = json.loads(path.read_text(encoding="utf-8"))
        if any(o.get("output_type") == "error" for c in nb["cells"] for o in c.get("outputs", [])):
            raise SiteError(f"{path} holds an error output: that run failed; re-run it")
    return found


def site_notebook(nb: dict) -> dict:
    """A copy of an executed notebook fit for a page that works offline.

    The Colab badge image lives on Colab's servers; the page shows a plain link instead.
    Widget state (progress bars) would make the page fetch a widget manager from a CDN.
    Cells tagged ``ci-only`` (or ``remove-cell``) are dropped: they only prove to CI that the
    exercises' reference solutions pass, and are not part of the course a learner reads.
    """
    nb = json.loads(json.dumps(nb))
    nb["metadata"].pop("widgets", None)
    nb["metadata"].pop("papermill", None)
    nb["cells"] = [c for c in nb["cells"]
                   if not HIDDEN_TAGS & set(c.get("metadata", {}).get("tags", []))]
    for cell in nb["cells"]:
        if cell["cell_type"] == "markdown":
            source = "".join(cell["source"])
            cell["source"] = _BADGE.sub(r"[Open this notebook in Colab](\1)", source)
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if "application/vnd.jupyter.widget-view+json" in data:
                del data["application/vnd.jupyter.widget-view+json"]
                data.setdefault("text/plain", "")
    return nb


def count_figures(nb: dict) -> int:
    """How many image outputs an executed notebook holds: the figures its page must show."""
    return sum(1 for c in nb["cells"] for o in c.get("outputs", [])
               if any(t in o.get("data", {}) for t in _IMAGE_TYPES))


def _first_cell_facts(nb: dict) -> tuple[str, str]:
    """(title, prerequisites) from a course notebook's first cell."""
    text = "".join(nb["cells"][0]["source"])
    title = next((line[2:].strip() for line in text.splitlines() if line.startswith("# ")), "")
    prereq = re.search(r"\*\*Prerequisites\*\*:\s*(.+)", text)
    return title, prereq.group(1).strip() if prereq else ""


def landing_page(notebooks: dict[str, dict], times: dict, profile: str, built: str) -> str:
    """The landing page: what the course is, the course map with measured run times."""
    columns: list[str] = []
    for figures in times.get("notebooks", {}).values():
        columns += [c for c in figures if c not in columns]
    rows = []
    for name, nb in notebooks.items():
        stem = name[:-len(".ipynb")]
        title, prereq = _first_cell_facts(nb)
        figures = times.get("notebooks", {}).get(stem, {})
        cells = " | ".join(_seconds(figures.get(col)) for col in columns)
        rows.append(f"| [{title}](notebooks/{stem}.ipynb) | {cells} | {prereq or '-'} |")
    header = " | ".join(f"`{c}`" if " " not in c else c for c in columns)
    return "\n".join([
        "# tinylab: distilling BERT, TinyBERT-style",
        "",
        f"A hands-on course in knowledge distillation of Transformers: {len(notebooks)} notebooks",
        "that take a learner from tokenization and the teacher's logits, through the soft-label",
        "maths and TinyBERT's combined loss, to two-stage distillation with data augmentation,",
        "a deployed student, and other objectives (Hinton KD, DistilBERT, MiniLM) trained on one",
        "budget. Every page below was executed for this site; the outputs and plots are real",
        f"(profile `{profile}`, built {built}).",
        "",
        "## Course map",
        "",
        "TinyBERT's recipe in two stages; the notebooks build it up piece by piece.",
        "",
        "![TinyBERT's two stages: general distillation from a pre-trained teacher on plain "
        "text, then task-specific distillation (stage a: the layer losses on augmented task "
        "data; stage b: the prediction loss) from a fine-tuned teacher](docs/two-stage.svg)",
        "",
        "Run times are measured, not estimated: each notebook run alone on a fresh machine",
        "(2 CPU cores), from the generated table [notebook run times](docs/notebook-times.md).",
        "",
        f"| notebook | {header} | prerequisites |",
        "|---|" + "---:|" * len(columns) + "---|",
        *rows,
        "",
        "## Also here",
        "",
        "- [Instructor guide](docs/instructor.md): agendas, room preparation, questions, errors.",
        "- [TinyBERT: the paper and the authors' code](docs/paper-vs-code.md); "
        "[references and glossary](docs/references.md).",
        "- [Results](docs/results.md): every benchmark table and how far each target is met.",
        "- [Design](docs/design.md), [devices and precision](docs/devices.md) and the "
        "[API reference](api/index.md).",
        "- [Faults and bad input](docs/faults.md), [offline assets](docs/offline-assets.md).",
        "",
        "```{toctree}",
        ":hidden:",
        ":caption: Notebooks",
        "",
        *[f"notebooks/{n[:-len('.ipynb')]}" for n in notebooks],
        "```",
        "",
        "```{toctree}",
        ":hidden:",
        ":caption: Guides",
        "",
        *[f"docs/{d}" for d in DOCS],
        "api/index",
        "```",
        "",
    ])


def _seconds(value) -> str:
    if value is None:
        return "-"
    return f"{value:.0f} s" if value < 120 else f"{value / 60:.1f} min"


#: Subpackages whose page documents each of their modules in turn (the package itself only
#: by its docstring): the course tooling, whose modules were once pages of their own, and the
#: data, one module per job. For ``exercises`` only the framework: the ``nbNN`` modules hold
#: the exercises' reference solutions.
MODULE_BY_MODULE = {"course": None, "data": None, "exercises": ("framework",)}


def _automodule(name: str, *options: str) -> str:
    lines = [f".. automodule:: tinylab.{name}", *(f"   :{o}:" for o in options)]
    return "```{eval-rst}\n" + "\n".join(lines) + "\n```\n"


def api_pages(dest: Path) -> list[str]:
    """One page per public ``tinylab`` module, each an ``automodule`` of its docstrings (for
    :data:`MODULE_BY_MODULE`, one section per module of the subpackage)."""
    import importlib

    import tinylab

    modules = sorted(m.name for m in pkgutil.iter_modules(tinylab.__path__)
                     if not m.name.startswith("_"))
    dest.mkdir(parents=True)
    for name in modules:
        if name not in MODULE_BY_MODULE:
            (dest / f"{name}.md").write_text(f"# `tinylab.{name}`\n\n{_automodule(name)}")
            continue
        package = importlib.import_module(f"tinylab.{name}")
        parts = [f"# `tinylab.{name}`\n\n{_automodule(name, 'no-members')}"]
        for sub in MODULE_BY_MODULE[name] or sorted(
                m.name for m in pkgutil.iter_modules(package.__path__)
                if not m.name.startswith("_")):
            parts.append(f"\n## `tinylab.{name}.{sub}`\n\n{_automodule(f'{name}.{sub}')}")
        (dest / f"{name}.md").write_text("".join(parts))
    listing = "\n".join(f"- [`tinylab.{m}`]({m}.md)" for m in modules)
    (dest / "index.md").write_text(
        "# API reference\n\nGenerated from the package's docstrings (shapes, equations and "
        "paper references are in them).\n\n" + listing + "\n\n```{toctree}\n:hidden:\n\n"
        + "\n".join(modules) + "\n```\n")
    return modules


def _mathjax_folder() -> Path:
    """MathJax 3's browser files, put in the venv by the Makefile (``make site-deps``)."""
    folder = Path(sys.prefix) / "share" / "mathjax"
    if not (folder / "tex-svg.js").exists():
        raise SiteError(f"MathJax is not in {folder} (the site serves it itself, for rooms "
                        f"without internet); run `make site-deps`")
    return folder


def assemble(executed: dict[str, Path], src: Path, *, profile: str) -> dict[str, int]:
    """Write the Sphinx source folder; return the number of figures per notebook page."""
    shutil.copy(ROOT / "site" / "conf.py", src / "conf.py")
    shutil.copytree(_mathjax_folder(), src / "_static" / "mathjax")
    shutil.copy(ROOT / "site" / "favicon.svg", src / "_static" / "favicon.svg")
    (src / "notebooks").mkdir()
    notebooks, figures = {}, {}
    for name, path in executed.items():
        nb = site_notebook(json.loads(path.read_text(encoding="utf-8")))
        (src / "notebooks" / name).write_text(json.dumps(nb, indent=1), encoding="utf-8")
        notebooks[name] = nb
        figures[name[:-len(".ipynb")]] = count_figures(nb)
    (src / "docs").mkdir()
    for doc in DOCS:
        shutil.copy(ROOT / "docs" / f"{doc}.md", src / "docs" / f"{doc}.md")
    for picture in FIGURES:
        shutil.copy(ROOT / "docs" / picture, src / "docs" / picture)
    for doc in DOCS:  # plots the guides show from elsewhere in the repository (bench/results/)
        text = (ROOT / "docs" / f"{doc}.md").read_text(encoding="utf-8")
        for target in re.findall(r"!\[[^\]]*\]\((\.\./[^)\s]+)\)", text):
            source = (ROOT / "docs" / target).resolve()
            if source.is_file() and ROOT in source.parents:
                dest = src / source.relative_to(ROOT)
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy(source, dest)
    api_pages(src / "api")
    built = time.strftime("%Y-%m-%d", time.gmtime())
    (src / "index.md").write_text(landing_page(notebooks, load_times(), profile, built))
    (src / "figures.json").write_text(json.dumps(figures, indent=1) + "\n")
    return figures


def build(profile: str, output: Path, notebooks: Path | None) -> Path:
    """Execute (or collect) the notebooks, assemble the source folder, render the HTML."""
    output.mkdir(parents=True, exist_ok=True)
    names = [p.name for p in list_notebooks()]
    start = time.perf_counter()
    if notebooks is None:
        notebooks = output / "notebooks"
        os.environ.setdefault("TQDM_DISABLE", "1")  # text progress, not widgets, in outputs
        # the site's own folder: earlier builds' executed copies are replaced
        if run_course(profile, notebooks, progress=False, overwrite=True) != 0:
            raise SiteError(f"a notebook failed under profile {profile!r}; see "
                            f"{notebooks / 'summary.md'}")
    executed = find_executed(notebooks, names)
    src = _fresh_dir(output / "src")
    figures = assemble(executed, src, profile=profile)
    html = _fresh_dir(output / "html")
    log = output / "sphinx.log"
    cmd = [sys.executable, "-m", "sphinx", "-b", "html", "-q", "-j", "1", str(src), str(html)]
    with open(log, "w") as fh:
        result = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SiteError(f"sphinx-build failed (exit {result.returncode}); see {log}")
    (html / MARKER).write_text("made by tools/site.py; rebuilt on every build\n")
    shutil.copy(src / "figures.json", html / "figures.json")
    warnings = [line for line in log.read_text().splitlines() if "WARNING" in line or "ERROR" in line]
    print(f"site: built {html} from {notebooks} in {time.perf_counter() - start:.1f} s "
          f"({sum(figures.values())} figures, {len(warnings)} Sphinx warnings in {log})")
    return html


# ---------------------------------------------------------------------------------------- check

class _Anchors(HTMLParser):
    """The ids on a page and the hrefs/srcs it points at."""

    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.links: list[str] = []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        for key in ("id", "name"):
            if attrs.get(key):
                self.ids.add(attrs[key])
        if tag in {"a", "link"} and attrs.get("href"):
            self.links.append(attrs["href"])
        if tag in {"img", "script"} and attrs.get("src"):
            self.links.append(attrs["src"])


def broken_links(html: Path) -> list[str]:
    """Every internal link of every page whose target file or ``#anchor`` does not exist."""
    pages = {p: _parse(p) for p in html.rglob("*.html")}
    problems = []
    for page, parsed in sorted(pages.items()):
        for link in parsed.links:
            parts = urlparse(link)
            if parts.scheme or parts.netloc or link.startswith(("mailto:", "javascript:")):
                continue
            path, fragment = urldefrag(link)
            target = (page.parent / unquote(path.split("?")[0])).resolve() if path else page
            if target.is_dir():
                target = target / "index.html"
            rel = page.relative_to(html)
            if not target.exists():
                problems.append(f"{rel}: link {link!r} -> missing file")
                continue
            if fragment and target.suffix == ".html":
                ids = pages.get(target, None) or _parse(target)
                if unquote(fragment) not in ids.ids:
                    problems.append(f"{rel}: link {link!r} -> no id {fragment!r} there")
    return problems


@functools.lru_cache(maxsize=None)
def _parse(page: Path) -> _Anchors:
    parser = _Anchors()
    parser.feed(page.read_text(encoding="utf-8", errors="replace"))
    return parser


def _chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if not path:
        raise SiteError("Chromium is not installed; as root: apt-get install chromium "
                        "(`make browser` does it)")
    return path


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the check reports failures itself
        pass


def check(html: Path, screenshots: Path) -> tuple[int, list[str]]:
    """Open every page in headless Chromium; return (pages passed, failure lines)."""
    from playwright.sync_api import sync_playwright

    if not (html / "index.html").exists():
        raise SiteError(f"{html} has no index.html; build the site first (make site)")
    figures = json.loads((html / "figures.json").read_text())
    pages = sorted(p for p in html.rglob("*.html") if "_static" not in p.parts
                   and "_sources" not in p.parts)
    link_problems = broken_links(html)
    handler = functools.partial(_QuietHandler, directory=str(html))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}/"
    screenshots.mkdir(parents=True, exist_ok=True)
    failures: list[str] = []
    passed = 0
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=_chromium(), args=BROWSER_FLAGS)
            context = browser.new_context(viewport={"width": 1280, "height": 900})
            for page_path in pages:
                rel = page_path.relative_to(html).as_posix()
                problems = _check_page(context, base + rel, rel, figures, screenshots)
                problems += [p for p in link_problems if p.startswith(f"{rel}:")]
                if problems:
                    failures += problems
                else:
                    passed += 1
            browser.close()
    finally:
        server.shutdown()
    return passed, failures


def _check_page(context, url: str, rel: str, figures: dict, screenshots: Path) -> list[str]:
    page = context.new_page()
    problems: list[str] = []
    page.on("console", lambda m: problems.append(f"{rel}: console {m.type}: {m.text[:200]}")
            if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"{rel}: script error: {str(e)[:200]}"))
    page.on("requestfailed", lambda r: problems.append(
        f"{rel}: request failed: {r.url[:120]} ({r.failure})"))
    response = page.goto(url, wait_until="load")
    if response is None or not response.ok:
        problems.append(f"{rel}: HTTP {response.status if response else 'no response'}")
    # Images, scripts and styles are in by "load"; MathJax typesets after it and loads its
    # extensions as it goes, so wait for its start-up promise (pages without formulas have
    # none). Waiting for "networkidle" instead costs half a second of silence per page.
    page.evaluate("""() => window.MathJax && MathJax.startup && MathJax.startup.promise
                         ? MathJax.startup.promise.then(() => true) : true""")
    stem = Path(rel).stem
    if rel.startswith("notebooks/") and stem in figures:
        shown = page.evaluate("""() => [...document.querySelectorAll('.cell_output img')]
            .filter(img => img.complete && img.naturalWidth > 0).length""")
        if shown < figures[stem]:
            problems.append(f"{rel}: shows {shown} figure(s), the notebook has {figures[stem]}")
    math = page.evaluate("""() => [document.querySelectorAll('.math').length,
                                    document.querySelectorAll('mjx-container').length]""")
    if math[0] and not math[1]:
        problems.append(f"{rel}: {math[0]} formula(s) on the page, none rendered by MathJax")
    if rel == "index.html" or rel.startswith("notebooks/05_"):
        name = "landing" if rel == "index.html" else stem
        page.screenshot(path=str(screenshots / f"{name}.png"), full_page=False)
        figure = page.query_selector(".cell_output img")
        if figure is not None:  # the first plot, as a reader scrolling down would see it
            figure.scroll_into_view_if_needed()
            figure.screenshot(path=str(screenshots / f"{name}-first-figure.png"))
    page.close()
    return problems


# ----------------------------------------------------------------------------------------- main

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="execute (or collect) the notebooks and render the site")
    b.add_argument("--profile", default=os.environ.get("TINYLAB_PROFILE", "quick"))
    b.add_argument("--notebooks", type=Path, default=None,
                   help="take executed notebooks from this folder instead of running them")
    b.add_argument("--output", type=Path, default=ROOT / "runs" / "site")
    c = sub.add_parser("check", help="open every page in headless Chromium")
    c.add_argument("--output", type=Path, default=ROOT / "runs" / "site")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            build(args.profile, args.output.resolve(), args.notebooks and args.notebooks.resolve())
            return 0
        start = time.perf_counter()
        passed, failures = check(args.output / "html", args.output / "screenshots")
    except SiteError as err:
        print(f"site: error: {err}", file=sys.stderr)
        return 2
    for line in failures:
        print(f"  FAIL {line}")
    print(f"site: checked {passed + len({f.split(':')[0] for f in failures})} pages in headless "
          f"Chromium in {time.perf_counter() - start:.1f} s; screenshots in "
          f"{args.output / 'screenshots'}")
    pages_failed = len({f.split(":")[0] for f in failures})
    print(f"site: {passed} passed, {pages_failed} failed")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
