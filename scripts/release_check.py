"""A release that cannot half-work: run before pushing a release tag (``make release-check``).

    .venv/bin/python scripts/release_check.py              # HEAD's tag
    .venv/bin/python scripts/release_check.py --tag v0.2.0 # the tag you are about to push

Checks, in order, and stops at the first failure with one line and exit 2:

1. the tag is ``v<version>`` of ``tinylab.__version__`` (the one version source), and that
   version is a release, not a development version (``0.2.0.dev0``);
2. every notebook's Colab badge and install cell, and README's badges, point at that tag
   (``make sync`` writes them from the version);
3. CHANGELOG.md has a section for the version, and CITATION.cff carries it;
4. the sdist and the wheel build, and the wheel holds the package and the licence, not the
   tests or the notebooks;
5. in a new virtual environment that already has torch (as Colab has), the wheel installs
   with the locked versions, imports, ``tinylab --version`` says the version, and
   ``tinylab assets list`` runs.

Release steps: set the version in ``tinylab/__init__.py``, add its CHANGELOG section and
CITATION.cff version, ``make sync``, commit, ``git tag v<version>``, then this.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))


class ReleaseError(Exception):
    """A check that failed; its message is the one line printed."""


def head_tag() -> str:
    done = subprocess.run(["git", "describe", "--tags", "--exact-match", "HEAD"], cwd=ROOT,
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise ReleaseError("HEAD has no tag: tag the release commit (`git tag v<version>`) or "
                           "name the tag you are about to push with --tag / TAG=")
    return done.stdout.strip()


def check_version(tag: str, version: str) -> None:
    if tag != f"v{version}":
        raise ReleaseError(f"tag {tag} does not match version {version} (tinylab/__init__.py): "
                           f"tag v{version}, or change the version to {tag.lstrip('v')}")
    if ".dev" in version or not re.fullmatch(r"\d+\.\d+\.\d+((a|b|rc)\d+)?", version):
        raise ReleaseError(f"version {version} is not a release version (X.Y.Z): set it in "
                           f"tinylab/__init__.py")


def check_refs(tag: str) -> None:
    from notebook_cells import sync_notebooks

    from tinylab.course import release_ref

    if release_ref() != tag:
        raise ReleaseError(f"the notebooks would point at {release_ref()}, not {tag}")
    stale = sync_notebooks(ROOT / "notebooks", check=True, root=ROOT)
    if stale:
        raise ReleaseError(f"notebooks {', '.join(stale)} do not point at {tag}: run "
                           f"`make sync` and commit")
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    refs = set(re.findall(r"colab\.research\.google\.com/github/[^)]+?/blob/([^/]+)/", readme))
    if refs - {tag}:
        raise ReleaseError(f"README's Colab badges point at {sorted(refs - {tag})}, not {tag}")


def check_release_files(version: str) -> None:
    changelog = (ROOT / "CHANGELOG.md").read_text(encoding="utf-8")
    if not re.search(rf"^## \[{re.escape(version)}\]", changelog, re.M):
        raise ReleaseError(f"CHANGELOG.md has no '## [{version}]' section")
    citation = (ROOT / "CITATION.cff").read_text(encoding="utf-8")
    if not re.search(rf'^version: "?{re.escape(version)}"?$', citation, re.M):
        raise ReleaseError(f"CITATION.cff does not carry version {version}")


def build(out: Path, version: str) -> Path:
    done = subprocess.run([sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir",
                           str(out), str(ROOT)], capture_output=True, text=True)
    if done.returncode != 0:
        raise ReleaseError("the build failed: " + (done.stderr.strip().splitlines() or ["?"])[-1])
    wheels = list(out.glob("tinylab_course-*.whl"))
    if len(wheels) != 1 or not list(out.glob("tinylab_course-*.tar.gz")):
        raise ReleaseError(f"expected one wheel and one sdist in {out}, found "
                           f"{sorted(p.name for p in out.iterdir())}")
    names = zipfile.ZipFile(wheels[0]).namelist()
    metadata = zipfile.ZipFile(wheels[0]).read(
        next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    problems = []
    if f"\nVersion: {version}\n" not in metadata:
        problems.append(f"METADATA does not say Version: {version}")
    if "\nLicense-File: LICENSE\n" not in metadata or not any(n.endswith("/LICENSE")
                                                              for n in names):
        problems.append("the LICENSE file is missing")
    if "tinylab/__init__.py" not in names:
        problems.append("the tinylab package is missing")
    if "tinylab/course/__init__.py" not in names:
        problems.append("the tinylab.course subpackage is missing")
    if "tinylab/course/expected.json" not in names:
        problems.append("tinylab/course/expected.json (the notebooks' reference figures) is "
                        "missing")
    stray = sorted({n.split("/")[0] for n in names}
                   & {"tests", "notebooks", "bench", "scripts", "tools"})
    if stray:
        problems.append(f"it carries {stray}")
    if problems:
        raise ReleaseError(f"{wheels[0].name}: " + "; ".join(problems))
    return wheels[0]


def install_and_import(wheel: Path, work: Path, version: str, torch_version: str,
                       torch_pip_args: str) -> None:
    venv = work / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    py = str(venv / "bin" / "python")

    def run(*command, what):
        done = subprocess.run(command, capture_output=True, text=True)
        if done.returncode != 0:
            last = (done.stderr.strip().splitlines() or ["no output"])[-1]
            raise ReleaseError(f"{what} failed in a new environment: {last}")
        return done.stdout

    run(py, str(ROOT / "scripts" / "install_torch.py"), "--version", torch_version,
        "--pip-args", torch_pip_args, what="installing torch")
    run(py, "-m", "pip", "install", "--quiet", "-c", str(ROOT / "requirements" / "lock.txt"),
        str(wheel), what=f"pip install {wheel.name}")
    said = run(str(venv / "bin" / "tinylab"), "--version", what="tinylab --version").strip()
    if said != f"tinylab {version} (distribution tinylab-course)":
        raise ReleaseError(f"the installed wheel says {said!r}, not version {version}")
    run(py, "-c", "import tinylab, tinylab.distill, tinylab.losses", what="import tinylab")
    listed = run(str(venv / "bin" / "tinylab"), "assets", "list", what="tinylab assets list")
    print(listed.rstrip())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tag", default=None, help="the release tag (default: HEAD's tag)")
    parser.add_argument("--torch-version", default="2.13.0")
    parser.add_argument("--torch-pip-args", default="")
    parser.add_argument("--no-install", action="store_true",
                        help="stop after building (skip the new-environment install)")
    args = parser.parse_args(argv)
    from tinylab import __version__ as version

    try:
        tag = args.tag or head_tag()
        check_version(tag, version)
        check_refs(tag)
        check_release_files(version)
        print(f"release-check: {tag} = version {version}; notebooks, README and release files "
              f"agree", flush=True)
        with tempfile.TemporaryDirectory(prefix="tinylab-release-") as tmp:
            wheel = build(Path(tmp) / "dist", version)
            print(f"release-check: built {wheel.name} and its sdist", flush=True)
            if not args.no_install:
                install_and_import(wheel, Path(tmp), version, args.torch_version,
                                   args.torch_pip_args)
                print(f"release-check: {wheel.name} installs, imports and lists the assets")
    except ReleaseError as err:
        print(f"release-check: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
