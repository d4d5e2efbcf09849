"""Sphinx configuration of the course site (built by ``tools/site.py``; see docs/design.md).

The site is the Jupyter Book 1 stack used directly: Sphinx, MyST-NB for the executed
notebooks, the book theme, autodoc for the API reference. Everything it loads in a browser
is served from the site itself (MathJax included), so it works in a room without internet.
"""
from __future__ import annotations

import tinylab

project = "tinylab"
author = "the tinylab authors"
release = tinylab.__version__
copyright = "the tinylab authors"

extensions = [
    "myst_nb",              # .md pages and executed .ipynb notebooks (Markdown in MyST)
    "sphinx.ext.autodoc",   # the API reference, from the package's docstrings
]
myst_enable_extensions = ["dollarmath", "amsmath", "colon_fence"]
myst_heading_anchors = 3
nb_execution_mode = "off"   # notebooks arrive executed (papermill, `tinylab course run`)
nb_merge_streams = True
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_default_options = {"members": True, "show-inheritance": False}
suppress_warnings = ["myst.header", "misc.highlighting_failure"]

html_theme = "sphinx_book_theme"
html_title = f"tinylab {release}: distilling BERT, TinyBERT-style"
html_theme_options = {
    "home_page_in_toc": True,
    "show_navbar_depth": 1,
    "use_download_button": True,
    "navigation_with_keys": False,
}
html_static_path = ["_static"]
html_favicon = "_static/favicon.svg"
html_context = {"default_mode": "light"}
html_last_updated_fmt = ""
# MathJax 3 (its npm package, installed by `make site`'s set-up into the venv and copied into
# _static/mathjax by the build): no page asks a CDN for anything. SVG output draws glyphs as
# paths, so no web font is fetched either.
mathjax_path = "mathjax/tex-svg.js"
