"""How long installing the locked set takes with pip and with uv (`make setup`'s longest step).

    .venv/bin/python bench/install.py                 # 3 rounds, results in bench/results/install/
    .venv/bin/python bench/install.py --rounds 1      # one pip and one uv install

`make setup` installs torch first (scripts/install_torch.py), then everything else at the
versions of requirements/lock.txt. This script times that second step alone, the way the
Makefile runs it, with each installer in turn:

* one scratch virtual environment (under a temporary folder) gets pip and torch once;
* each round, for pip then uv: everything installed after torch is uninstalled (what
  `make setup` finds at that point: pip, torch and torch's own requirements), the clock
  starts, the installer installs ``-c requirements/lock.txt -e ".[course,dev,site,deploy]"``
  (uv also compiles the bytecode, as pip does by default), the clock stops, and
  ``scripts/lock.py --verify`` checks that the result is exactly the lock.

Both installers keep their download caches between rounds (pip's and uv's own), as on any
machine that has installed the project once; the first round of each may download. Prints
one row per install and the median of each installer; writes ``install.{md,json}``.
"""
from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from benchlib import (REPO_DIR, machine_info, machine_line, markdown_table,  # noqa: E402
                      write_json, write_text)

EXTRAS = "course,dev,site,deploy"


def _run(args: list[str], **kwargs) -> subprocess.CompletedProcess:
    return subprocess.run(args, check=True, cwd=REPO_DIR, **kwargs)


def _makefile_value(name: str) -> str:
    """``NAME ?= value`` from the Makefile: the versions `make setup` installs."""
    for line in (REPO_DIR / "Makefile").read_text().splitlines():
        if line.startswith(f"{name} ?="):
            return line.split("?=", 1)[1].strip()
    raise SystemExit(f"Makefile sets no {name}")


def installed(python: Path, uv: Path) -> set[str]:
    """Names of the distributions installed in ``python``'s environment."""
    listed = _run([str(uv), "pip", "list", "--format", "json", "--python", str(python)],
                  capture_output=True, text=True).stdout
    return {entry["name"].lower().replace("_", "-") for entry in json.loads(listed)}


def empty_environment(python: Path, uv: Path, keep: set[str]) -> None:
    """Uninstall everything that was not there after torch went in (``keep``)."""
    names = sorted(installed(python, uv) - keep)
    if names:
        _run([str(uv), "pip", "uninstall", "--quiet", "--python", str(python), *names])


def install_command(tool: str, python: Path, uv: Path) -> list[str]:
    """The command `make setup` runs for ``tool``."""
    requirement = f".[{EXTRAS}]"
    if tool == "pip":
        return [str(python), "-m", "pip", "install", "--quiet", "-c", "requirements/lock.txt",
                "-e", requirement]
    return [str(uv), "pip", "install", "--quiet", "--python", str(python), "--compile-bytecode",
            "-c", "requirements/lock.txt", "-e", requirement]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=3, help="installs per tool (default 3)")
    parser.add_argument("--output", default=str(REPO_DIR / "bench" / "results" / "install"),
                        help="folder for install.md and install.json")
    args = parser.parse_args(argv)
    if args.rounds < 1:
        parser.error(f"--rounds must be at least 1, got {args.rounds}")

    info = machine_info()
    pip_version, uv_version = _makefile_value("PIP_VERSION"), _makefile_value("UV_VERSION")
    torch_version = _makefile_value("TORCH_VERSION")
    rows = []
    with tempfile.TemporaryDirectory(prefix="tinylab-install-") as scratch:
        venv = Path(scratch) / "venv"
        python, uv = venv / "bin" / "python", venv / "bin" / "uv"
        print(f"scratch environment {venv}: pip {pip_version}, uv {uv_version}, torch "
              f"{torch_version}", flush=True)
        _run([sys.executable, "-m", "venv", str(venv)])
        _run([str(python), "-m", "pip", "install", "--quiet", f"pip=={pip_version}",
              f"uv=={uv_version}"])
        _run([str(python), "scripts/install_torch.py", "--version", torch_version],
             stdout=subprocess.DEVNULL)
        keep = installed(python, uv)      # pip, uv, torch and what torch needs
        for round_ in range(1, args.rounds + 1):
            for tool in ("pip", "uv"):
                empty_environment(python, uv, keep)
                start = time.perf_counter()
                _run(install_command(tool, python, uv), stderr=subprocess.DEVNULL)
                seconds = time.perf_counter() - start
                verified = _run([str(python), "scripts/lock.py", "--verify"],
                                capture_output=True, text=True).stdout.strip()
                rows.append({"round": round_, "tool": tool, "seconds": round(seconds, 1),
                             "verify": verified})
                print(f"round {round_}, {tool}: {seconds:.1f} s; {verified}", flush=True)

    median = {tool: statistics.median(r["seconds"] for r in rows if r["tool"] == tool)
              for tool in ("pip", "uv")}
    ratio = median["pip"] / median["uv"]
    table = markdown_table(["round", "installer", "seconds", "scripts/lock.py --verify"],
                           [[r["round"], r["tool"], f"{r['seconds']:.1f}", r["verify"]]
                            for r in rows], align="llrl")
    summary = (f"Median over {args.rounds} round(s): pip {median['pip']:.1f} s, uv "
               f"{median['uv']:.1f} s, so uv installs the locked set {ratio:.1f}x as fast.")
    text = "\n\n".join([
        f"Command: `.venv/bin/python bench/install.py --rounds {args.rounds}`  \n"
        f"The locked set (`-c requirements/lock.txt -e \".[{EXTRAS}]\"`) into one scratch "
        f"environment that holds torch {torch_version}; installers alternate, download caches "
        f"kept.  \n{machine_line(info)}", table, summary]) + "\n"
    out = Path(args.output)
    write_text(out / "install.md", text)
    write_json(out / "install.json", {"machine": info, "rounds": rows, "median_seconds": median,
                                      "pip_over_uv": ratio, "pip": pip_version,
                                      "uv": uv_version, "torch": torch_version})
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
