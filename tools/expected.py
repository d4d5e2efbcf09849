"""The reference figures every notebook compares its run with: ``tinylab/course/expected.json``.

    make expected PROFILE=quick RESULTS=runs/course COMMAND="make course"
    make expected PROFILE=ci RESULTS=runs/ci-notebooks COMMAND="make test"
    .venv/bin/python tools/expected.py --profile quick --command "make course" runs/course

Reads every ``*_results.json`` a notebook wrote (``tinylab.course.save_results``) under the
given folders, keeps the comparable figures (``tinylab.course.expected.figures_of``: model
accuracies, agreement rates, shares kept) and files them under the profile, with the command,
the machine and the date, replacing that profile's earlier entry notebook by notebook. A
results file of another profile is refused, naming it. The notebooks print the figures next
to the learner's own (``tinylab.course.compare_with_expected``).
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Sequence

from tinylab.atomic import atomic_write_text
from tinylab.course.expected import EXPECTED_FILE, figures_of

__all__ = ["collect", "write_expected"]


def collect(folders: Sequence[str | Path], profile: str) -> dict[str, dict[str, float]]:
    """``{notebook: figures}`` from the ``*_results.json`` files under ``folders``."""
    out: dict[str, dict[str, float]] = {}
    for folder in folders:
        files = sorted(Path(folder).rglob("*_results.json"))
        if not files:
            raise FileNotFoundError(f"no *_results.json under {folder}: run the notebooks "
                                    f"first (make course, or make test for the ci profile)")
        for path in files:
            results = json.loads(path.read_text(encoding="utf-8"))
            if results.get("profile") != profile:
                raise ValueError(f"{path} was written under profile "
                                 f"{results.get('profile')!r}, not {profile!r}")
            out[results["notebook"]] = figures_of(results)
    return out


def _machine() -> str:
    import os

    return (f"{platform.machine()}, {os.cpu_count()} cores, Python "
            f"{platform.python_version()}")


def write_expected(folders: Sequence[str | Path], profile: str, command: str,
                   path: str | Path = EXPECTED_FILE) -> dict[str, Any]:
    """Add (or replace) ``profile``'s figures in ``path`` and return the whole file."""
    path = Path(path)
    table = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    table.setdefault("generated_by", "make expected (tools/expected.py); do not edit by hand")
    entry = table.setdefault("profiles", {}).setdefault(profile, {"notebooks": {}})
    entry["notebooks"].update(collect(folders, profile))
    entry.update(command=command, machine=_machine(),
                 date=datetime.now(timezone.utc).strftime("%Y-%m-%d"))
    atomic_write_text(path, json.dumps(table, indent=1, sort_keys=True) + "\n")
    return table


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("folders", nargs="+", help="folders holding the notebooks' results files")
    p.add_argument("--profile", required=True, help="the profile the notebooks ran under")
    p.add_argument("--command", required=True, help="the command that produced the results")
    args = p.parse_args(argv)
    try:
        table = write_expected(args.folders, args.profile, args.command)
    except (OSError, ValueError) as err:
        print(f"tools/expected.py: error: {err}", file=sys.stderr)
        return 2
    notebooks = table["profiles"][args.profile]["notebooks"]
    print(f"wrote {EXPECTED_FILE}: {args.profile}, {len(notebooks)} notebooks")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
