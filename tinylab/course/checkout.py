"""The one place that finds the source checkout of tinylab.

Some course tooling reads files that only a clone of the repository has: the notebooks
(``tinylab course run``, ``solutions``, ``lab``, ``gpu-check``) and the repository files a
notebook reads (:func:`tinylab.course.notebook.repository_file`). An editable install
(``pip install -e .`` in a clone) has them next to the package; an installed wheel, which is
what the Colab install cell gives, has not. Every module that needs the checkout asks here,
and one that cannot work without it fails in one line (:class:`CheckoutNeeded`) saying what
needs it and how to get one.
"""
from __future__ import annotations

from importlib import metadata
from pathlib import Path

__all__ = ["CheckoutNeeded", "checkout_root", "require_checkout", "installed_repository_url"]

DISTRIBUTION = "tinylab-course"


class CheckoutNeeded(FileNotFoundError):
    """Something that needs a source checkout ran from an installed package."""


def checkout_root() -> Path | None:
    """The root of the source checkout this tinylab is imported from, or ``None`` when it is
    an installed package (the folder above the package holds no ``pyproject.toml`` and no
    ``notebooks/``)."""
    root = Path(__file__).resolve().parents[2]
    if (root / "pyproject.toml").is_file() and (root / "notebooks").is_dir():
        return root
    return None


def installed_repository_url() -> str | None:
    """The repository URL the installed distribution names (``Project-URL: Repository``)."""
    try:
        entries = metadata.metadata(DISTRIBUTION).get_all("Project-URL") or []
    except metadata.PackageNotFoundError:
        return None
    urls = dict(entry.split(", ", 1) for entry in entries if ", " in entry)
    return urls["Repository"].rstrip("/") if "Repository" in urls else None


def require_checkout(what: str) -> Path:
    """The checkout's root; raises :class:`CheckoutNeeded` (one line) naming ``what`` needs
    it when tinylab runs from an installed package."""
    root = checkout_root()
    if root is None:
        url = installed_repository_url() or "the tinylab repository"
        package = Path(__file__).resolve().parents[1]
        raise CheckoutNeeded(f"{what} needs a source checkout of tinylab, but tinylab is "
                             f"installed as a package here ({package}): git clone {url}, "
                             f"then `pip install -e .` inside the clone")
    return root
