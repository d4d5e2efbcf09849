"""The one tested set of versions: ``requirements/lock.txt``, and ``environment.yml`` from it.

    .venv/bin/python scripts/lock.py            # add what pyproject.toml gained, keep other pins
    .venv/bin/python scripts/lock.py --upgrade  # re-resolve everything to the newest allowed
    .venv/bin/python scripts/lock.py --env-only # only regenerate environment.yml from the lock
    .venv/bin/python scripts/lock.py --check    # exit 1 if environment.yml disagrees with the lock
    .venv/bin/python scripts/lock.py --verify   # exit 1 unless this environment is the locked set

``make lock`` runs the first form. The lock is resolved by pip-tools' ``pip-compile`` from
``pyproject.toml`` (every extra), against the *CPU* build of torch, and torch itself is left
out: ``scripts/install_torch.py`` installs the build that fits the machine first, and the
locked set is then installed with ``pip install -c requirements/lock.txt``. A CUDA build of
torch brings its own NVIDIA packages, which the lock neither lists nor constrains.

Resolving against the CPU build needs a place that serves ``torch==<version>+cpu``: pip's own
configuration (a local wheel folder) or PyTorch's CPU index, passed as ``--torch-index``.
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LOCK = ROOT / "requirements" / "lock.txt"
ENV_YML = ROOT / "environment.yml"
EXTRAS = ("course", "dev", "site", "deploy")
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
_PIN = re.compile(r"^([A-Za-z0-9][A-Za-z0-9._-]*)==([^\s;#]+)")


def torch_version() -> str:
    """The torch release the project is tested with (``TORCH_VERSION`` in the Makefile)."""
    match = re.search(r"^TORCH_VERSION \?= (\S+)$", (ROOT / "Makefile").read_text(), re.M)
    if match is None:
        raise SystemExit("scripts/lock.py: the Makefile has no 'TORCH_VERSION ?= X' line")
    return match.group(1)


def read_pins(path: Path = LOCK) -> dict[str, str]:
    """``{normalised name: version}`` of every ``name==version`` line of a requirements file."""
    pins = {}
    for line in path.read_text(encoding="utf-8").splitlines():
        match = _PIN.match(line.strip().lstrip("- ").strip())
        if match:
            pins[normalise(match.group(1))] = match.group(2)
    return pins


def normalise(name: str) -> str:
    """PEP 503 name normalisation (``Foo_Bar`` and ``foo-bar`` are one package)."""
    return re.sub(r"[-_.]+", "-", name).lower()


# Installed beside the locked set on purpose: torch (installed first, by itself) and what a CUDA
# build of it brings, the installer's own tools, and tinylab itself.
NOT_LOCKED = re.compile(r"^(torch|triton|nvidia-.*|cuda-.*|pip|setuptools|wheel|pip-tools|"
                        r"build|pyproject-hooks|uv|tinylab-course)$")


def verify_installed(pins: dict[str, str]) -> list[str]:
    """What differs between this environment and the lock: missing or other versions, and
    packages the lock does not list (beyond :data:`NOT_LOCKED`)."""
    import importlib.metadata as md
    import sysconfig

    # Only the environment's own site-packages: once setuptools is imported, its vendored
    # packages (setuptools/_vendor/*.dist-info) are on sys.path too, and are not installed.
    places = sorted({sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]})
    have = {normalise(d.metadata["Name"]): d.version for d in md.distributions(path=places)
            if d.metadata["Name"]}
    problems = [f"{name}: locked {version}, installed {have.get(name, 'nothing')}"
                for name, version in sorted(pins.items()) if have.get(name) != version]
    problems += [f"{name} {version}: installed but not in the lock"
                 for name, version in sorted(have.items())
                 if name not in pins and not NOT_LOCKED.match(name)]
    return problems


def environment_yml(pins: dict[str, str], torch: str) -> str:
    """A conda environment with exactly the locked versions (CPU torch from PyTorch's index)."""
    lines = [
        "# Generated from requirements/lock.txt by scripts/lock.py; do not edit by hand.",
        "# The tested set of versions as a conda environment (CPU build of torch):",
        "#   conda env create -f environment.yml && conda activate tinylab",
        "# `make` installs the same set into .venv/ without conda.",
        "name: tinylab",
        "channels:",
        "  - conda-forge",
        "dependencies:",
        "  - python=3.11",
        "  - pip",
        "  - pip:",
        f"      - --extra-index-url {TORCH_CPU_INDEX}",
        f"      - torch=={torch}",
    ]
    lines += [f"      - {name}=={version}" for name, version in sorted(pins.items())]
    lines += ["      - -e .[course,dev,site,deploy]"]
    return "\n".join(lines) + "\n"


def compile_lock(torch_index: str | None, upgrade: bool = False) -> None:
    constraint = ROOT / "requirements" / "torch-cpu.txt"
    constraint.write_text(f"# written by scripts/lock.py: resolve against the CPU build\n"
                          f"torch=={torch_version()}+cpu\n", encoding="utf-8")
    command = [sys.executable, "-m", "piptools", "compile", "--quiet",
               *(["--upgrade"] if upgrade else []),
               *(f"--extra={extra}" for extra in EXTRAS), "--strip-extras",
               "--unsafe-package=torch", "--no-emit-index-url", "--no-emit-find-links",
               "--constraint=requirements/torch-cpu.txt",
               "--output-file=requirements/lock.txt", "pyproject.toml"]
    if torch_index:
        command.insert(4, f"--extra-index-url={torch_index}")
    print("+", " ".join(command), flush=True)
    subprocess.run(command, cwd=ROOT, check=True)
    local = [line for line in LOCK.read_text(encoding="utf-8").splitlines()
             if "file://" in line and not line.lstrip().startswith("#")]
    if local:
        raise SystemExit(f"scripts/lock.py: the lock names a local path ({local[0]}): a package "
                         f"must not require itself through an extra")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--env-only", action="store_true",
                        help="only regenerate environment.yml from the existing lock")
    parser.add_argument("--check", action="store_true",
                        help="exit 1 if environment.yml is not what the lock generates")
    parser.add_argument("--torch-index", default=None,
                        help=f"an index serving torch==<version>+cpu (e.g. {TORCH_CPU_INDEX}) "
                             f"when pip's configuration does not")
    parser.add_argument("--upgrade", action="store_true",
                        help="re-resolve every package to the newest allowed version")
    parser.add_argument("--verify", action="store_true",
                        help="exit 1 unless the running environment holds exactly the lock")
    args = parser.parse_args(argv)
    if args.verify:
        problems = verify_installed(read_pins())
        for line in problems:
            print(f"lock: {line}", file=sys.stderr)
        if problems:
            print(f"this environment is not the locked set ({len(problems)} difference(s)); "
                  f"reinstall with `make clean setup`", file=sys.stderr)
            return 1
        print(f"this environment is exactly requirements/lock.txt ({len(read_pins())} packages)")
        return 0
    if args.check:
        expected = environment_yml(read_pins(), torch_version())
        if ENV_YML.read_text(encoding="utf-8") != expected:
            print("environment.yml disagrees with requirements/lock.txt; regenerate it with "
                  "`python scripts/lock.py --env-only`", file=sys.stderr)
            return 1
        print("environment.yml matches requirements/lock.txt")
        return 0
    if not args.env_only:
        compile_lock(args.torch_index, args.upgrade)
    ENV_YML.write_text(environment_yml(read_pins(), torch_version()), encoding="utf-8")
    print(f"wrote {LOCK.relative_to(ROOT)} ({len(read_pins())} packages) and "
          f"{ENV_YML.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
