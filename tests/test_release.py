"""`make release-check` refuses, in one line and before building anything, a release whose tag,
version and notebook refs disagree. (Its full run, build and install in a new environment, is
a release step, not a test: it takes minutes.)"""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))
import release_check  # noqa: E402
from tinylab import __version__  # noqa: E402


def test_a_tag_that_does_not_match_the_version_names_both():
    done = subprocess.run([sys.executable, str(ROOT / "scripts" / "release_check.py"),
                           "--tag", "v9.9.9", "--no-install"], capture_output=True, text=True)
    assert done.returncode == 2
    assert done.stdout == ""                       # nothing was built
    assert done.stderr.strip().splitlines() == [
        f"release-check: tag v9.9.9 does not match version {__version__} "
        f"(tinylab/__init__.py): tag v{__version__}, or change the version to 9.9.9"]


def test_a_development_version_is_not_released():
    with pytest.raises(release_check.ReleaseError, match="not a release version"):
        release_check.check_version("v0.3.0.dev0", "0.3.0.dev0")
    release_check.check_version("v0.3.0", "0.3.0")


def test_stale_notebook_refs_are_caught(monkeypatch):
    """A release version whose notebooks still point at `main` fails the refs check."""
    import tinylab

    monkeypatch.setattr(tinylab, "__version__", "0.1.0")
    with pytest.raises(release_check.ReleaseError, match="do not point at v0.1.0"):
        release_check.check_refs("v0.1.0")


def test_release_files_must_carry_the_version():
    with pytest.raises(release_check.ReleaseError, match=r"CHANGELOG.md has no '## \[7.7.7\]'"):
        release_check.check_release_files("7.7.7")
