"""What a course notebook calls at run time, on a checkout or on Colab.

A notebook on Colab runs from the installed package, without the repository: these helpers
work there too. :func:`notebook_output_dir` picks the folder a notebook writes its results
to; :func:`repository_file` reads a file of the repository from the checkout, else downloads
it at this version's ref; :func:`release_ref` is that ref (``v<version>`` of a release,
``main`` of a development version), the same the Colab badges and install cells point at.
"""
from __future__ import annotations

import os
import sys
import urllib.request
from pathlib import Path

import tinylab
from tinylab.assets import cache_dir
from tinylab.atomic import atomic_write_bytes
from tinylab.course.checkout import checkout_root, installed_repository_url

__all__ = ["notebook_output_dir", "package_version", "release_ref", "repository_file"]


def package_version() -> str:
    """The one version, ``tinylab.__version__`` (``pyproject.toml`` reads it from there)."""
    return tinylab.__version__


def release_ref(version: str | None = None) -> str:
    """The git ref the badges and install cells point at: ``v<version>`` for a release,
    ``main`` for a development version (one with ``.dev``), which has no tag yet."""
    version = version or package_version()
    return "main" if ".dev" in version else f"v{version}"


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


def repository_file(relative: str, *, timeout: float = 30.0) -> Path:
    """A file of the tinylab repository (``"bench/results/bench/shapes.json"``): from the
    source checkout when tinylab runs from one, else downloaded once from GitHub at this
    version's ref (:func:`release_ref`: ``main`` or ``v<version>``) into the tinylab
    cache. A notebook on Colab, which installs the package without the repository, reads the
    same file a checkout has. Raises ``FileNotFoundError`` in one line when neither works."""
    root = checkout_root()
    if root is not None and (root / relative).is_file():
        return root / relative
    repo = installed_repository_url()
    if repo is None:
        raise FileNotFoundError(f"{relative} is not in a source checkout here, and the "
                                f"installed tinylab-course names no Repository URL to "
                                f"download it from")
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
        target.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_bytes(target, data)
    return target
