"""What the tools share: the repository's root, its ``pyproject.toml``, its one URL, and the
generated run-time table.

The tools in this folder write into the repository (notebook cells, agendas, the run-time
table, the site, the fault table); they run from a source checkout, by make targets. Each
puts this folder on ``sys.path`` and imports this module as ``repository``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

__all__ = ["REPO_ROOT", "TIMES_JSON", "TIMES_MD", "project_metadata", "repository_url",
           "load_times"]

#: The root of the checkout this file belongs to.
REPO_ROOT = Path(__file__).resolve().parents[1]
#: The generated run-time table (``tools/times.py``), read by the notebook headers, the
#: agendas and the site.
TIMES_JSON = REPO_ROOT / "docs" / "notebook-times.json"
TIMES_MD = REPO_ROOT / "docs" / "notebook-times.md"


def project_metadata(root: str | Path = REPO_ROOT) -> dict[str, Any]:
    """``[project]`` of ``pyproject.toml``."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    path = Path(root) / "pyproject.toml"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found: the tools run in a source checkout of "
                                f"tinylab")
    return tomllib.loads(path.read_text(encoding="utf-8"))["project"]


def repository_url(root: str | Path = REPO_ROOT) -> str:
    """The one repository URL (``[project.urls] Repository``), without a trailing slash."""
    urls = project_metadata(root).get("urls", {})
    if "Repository" not in urls:
        raise ValueError("pyproject.toml has no [project.urls] Repository entry; add the "
                         "repository URL there (it is the only place it is written)")
    return urls["Repository"].rstrip("/")


def load_times(path: str | Path = TIMES_JSON) -> dict[str, Any]:
    """The generated table: ``{"runs": {profile: [run, ...]}, "notebooks": {stem: {profile:
    seconds}}}``."""
    path = Path(path)
    return json.loads(path.read_text()) if path.exists() else {"runs": {}, "notebooks": {}}
