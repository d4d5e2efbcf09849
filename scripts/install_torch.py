"""Install the PyTorch build that fits this machine, before anything that depends on torch.

    python scripts/install_torch.py --version 2.13.0            # what `make` runs
    python scripts/install_torch.py --version 2.13.0 --dry-run  # only say what it would do
    python scripts/install_torch.py --version 2.13.0 --build cpu

A bare ``torch`` requirement on Linux takes PyPI's CUDA build: several GB of NVIDIA libraries,
useless on a laptop without an NVIDIA GPU. So ``make`` installs torch first, by itself:

* Linux with an NVIDIA GPU (``nvidia-smi -L`` lists one): PyPI's ``torch==<version>``, the
  CUDA build;
* Linux without one: the CPU build ``torch==<version>+cpu``, first from wherever pip's own
  configuration finds it (a local wheel folder, a mirror), then from PyTorch's CPU index;
* macOS and Windows: PyPI's ``torch==<version>`` (CPU, and Apple's MPS on macOS).

``--build cpu|cuda|default`` (``make TORCH_BUILD=...``) overrides the guess, and
``--pip-args`` (``make TORCH_PIP_ARGS=...``) passes extra pip arguments, e.g. another index.
If no source can deliver the build, it says so in one line and exits 2. A torch that is
already installed at that version and build is kept.
"""
from __future__ import annotations

import argparse
import platform
import shlex
import shutil
import subprocess
import sys
from dataclasses import dataclass, field

TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"
BUILDS = ("cpu", "cuda", "default")


@dataclass(frozen=True)
class Plan:
    """Which build to install, why, and the pip attempts to make in order."""
    build: str
    reason: str
    requirement: str
    attempts: list[list[str]] = field(default_factory=list)
    sources: list[str] = field(default_factory=list)


def nvidia_gpu(which=shutil.which, run=subprocess.run) -> tuple[bool, str]:
    """``(True, name)`` when ``nvidia-smi -L`` lists a GPU, else ``(False, why not)``."""
    smi = which("nvidia-smi")
    if smi is None:
        return False, "nvidia-smi not found"
    try:
        done = run([smi, "-L"], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired) as err:
        return False, f"nvidia-smi failed ({err})"
    gpus = [line for line in done.stdout.splitlines() if line.startswith("GPU ")]
    if done.returncode != 0 or not gpus:
        return False, f"nvidia-smi lists no GPU (exit {done.returncode})"
    return True, gpus[0].split(" (UUID")[0]


def plan(version: str, build: str | None = None, pip_args: str = "",
         system: str | None = None, gpu: tuple[bool, str] | None = None) -> Plan:
    """Decide the build (``build`` overrides the guess) and the pip attempts, without running."""
    system = system or platform.system()
    if build is not None and build not in BUILDS:
        raise ValueError(f"TORCH_BUILD={build!r} is not one of {', '.join(BUILDS)}")
    if build is None:
        if system != "Linux":
            build, reason = "default", f"{system}: PyPI's build is the right one"
        else:
            has_gpu, why = gpu if gpu is not None else nvidia_gpu()
            build, reason = (("cuda", f"NVIDIA GPU found: {why}") if has_gpu
                             else ("cpu", f"no NVIDIA GPU: {why}"))
    else:
        reason = "chosen with TORCH_BUILD"
    extra = shlex.split(pip_args)
    if build == "cpu":
        requirement = f"torch=={version}+cpu"
        attempts = [[requirement, *extra],
                    [requirement, "--extra-index-url", TORCH_CPU_INDEX, *extra]]
        sources = ["pip's own configuration", TORCH_CPU_INDEX]
    else:
        requirement = f"torch=={version}"
        attempts = [[requirement, *extra]]
        sources = ["pip's own configuration (PyPI)"]
    return Plan(build, reason, requirement, attempts, sources)


def installed(python: str) -> str | None:
    """The torch version installed for ``python`` (``2.13.0+cpu``), or None."""
    done = subprocess.run([python, "-c", "import importlib.metadata as m; "
                                         "print(m.version('torch'))"],
                          capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else None


def satisfied(have: str | None, wanted: Plan, version: str) -> bool:
    if have is None or have.split("+")[0] != version:
        return False
    local = have.partition("+")[2]
    if wanted.build == "cpu":
        return local == "cpu"
    if wanted.build == "cuda":
        return local != "cpu"
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--version", required=True, help="the torch release, e.g. 2.13.0")
    parser.add_argument("--build", default=None, help="cpu, cuda or default (PyPI's build); "
                                                      "guessed from the machine when empty")
    parser.add_argument("--pip-args", default="", help="extra pip arguments, one string")
    parser.add_argument("--python", default=sys.executable,
                        help="the interpreter to install into (default: this one)")
    parser.add_argument("--dry-run", action="store_true", help="say what would run, install nothing")
    args = parser.parse_args(argv)
    try:
        chosen = plan(args.version, args.build or None, args.pip_args)
    except ValueError as err:
        print(f"install_torch: {err}", file=sys.stderr)
        return 2
    print(f"torch: the {chosen.build} build, {chosen.requirement} ({chosen.reason}). "
          f"Override: make TORCH_BUILD=cpu|cuda|default, or TORCH_PIP_ARGS='--index-url ...'",
          flush=True)
    pip = [args.python, "-m", "pip", "install", "--quiet"]
    if args.dry_run:
        for attempt in chosen.attempts:
            print("would run:", shlex.join(pip + attempt))
        return 0
    have = installed(args.python)
    if satisfied(have, chosen, args.version):
        print(f"torch: {have} is already installed; kept")
        return 0
    last = ""
    for attempt in chosen.attempts:
        done = subprocess.run(pip + attempt, capture_output=True, text=True)
        if done.returncode == 0:
            print(f"torch: installed {installed(args.python)}")
            return 0
        errors = [l for l in done.stderr.splitlines() if l.startswith("ERROR")]
        last = (errors or done.stderr.strip().splitlines() or ["no output"])[-1].strip()
    print(f"install_torch: could not install {chosen.requirement} ({chosen.build} build) from "
          f"{' or '.join(chosen.sources)}: {last}. Install torch into {args.python} yourself, "
          f"or set TORCH_BUILD / TORCH_PIP_ARGS", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
