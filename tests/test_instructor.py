"""docs/instructor.md: generated agendas that are current, and commands that exist."""
from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from tinylab.cli import build_parser

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))
from agenda import GUIDE, slot_minutes, sync_instructor_guide  # noqa: E402


def test_agendas_are_current():
    assert not sync_instructor_guide(check=True), "run `make sync`"


@pytest.mark.parametrize("reading, run_s, expected", [
    (30, 17.1 * 60, 40),     # reading is longer: 30 + 10
    (10, 20 * 60, 30),       # the run is longer: learners wait for it
    (25, None, 35),          # not measured: reading alone
    (22, 0, 35),             # rounded up to five minutes
])
def test_slot_rule(reading, run_s, expected):
    assert slot_minutes(reading, run_s) == expected


def test_every_command_in_the_guide_exists():
    text = GUIDE.read_text()
    commands = {c.strip() for c in re.findall(
        r"`(?:\.venv/bin/)?tinylab ((?:[a-z][a-z-]* ?){1,2})", text)}
    assert {"cache unpack", "course prepare", "course solutions", "assets verify"} <= commands
    parser = build_parser()
    for command in commands:
        words = command.split()
        try:  # a subcommand needs its own arguments: parse with placeholders
            parser.parse_args(words + ["x"] if words[-1] in {"unpack", "pack", "solutions"}
                              else words)
        except SystemExit as err:
            pytest.fail(f"the guide names `tinylab {command.strip()}`, which the CLI "
                        f"does not accept ({err})")
