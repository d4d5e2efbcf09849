"""Every command that README, CONTRIBUTING and docs/ show exists: its make target, its
``tinylab`` subcommand, its script. A renamed target or subcommand fails here, not in front
of a newcomer."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from tinylab.cli import build_parser

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", ROOT / "CONTRIBUTING.md", *sorted(ROOT.glob("docs/*.md"))]
FENCE = re.compile(r"```(?:bash|sh|console|shell)?\n(.*?)```", re.S)
INLINE = re.compile(r"`((?:make|tinylab|\.venv/bin/\S+|python|\.venv/bin/python) [^`]*)`")


def _commands(text: str) -> list[str]:
    lines = [line for block in FENCE.findall(text) for line in block.splitlines()]
    lines += INLINE.findall(text)
    out = []
    for line in lines:
        line = re.sub(r"\s+#.*$", "", line).strip().lstrip("!$ ").strip()
        for part in re.split(r"\s*(?:&&|;|\|)\s*", line):
            if part:
                out.append(part)
    return out


def _make_targets() -> set[str]:
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    return set(re.findall(r"^([a-z][a-z-]*):", makefile, re.M))


def _subcommands(parser) -> dict:
    for action in parser._actions:
        if action.__class__.__name__ == "_SubParsersAction":
            return action.choices
    return {}


def _check(command: str, targets: set[str]) -> str | None:
    try:
        words = shlex.split(command)
    except ValueError:
        return None
    words = [w for w in words if not re.match(r"^[A-Z_]+=", w)]  # leading VAR=value
    if not words:
        return None
    head = words[0]
    if head == "make":
        wanted = [w for w in words[1:] if not w.startswith("-") and "=" not in w]
        missing = [w for w in wanted if w not in targets]
        return f"`{command}`: no make target {missing}" if missing else None
    if head.endswith("tinylab") and head in ("tinylab", ".venv/bin/tinylab"):
        parser, path = build_parser(), []
        for word in words[1:]:
            if word.startswith("-") or word in ("...", "DIR"):
                break
            if word.endswith(":"):  # a quoted message (`tinylab gpu-check: ...`), not a command
                return None
            choices = _subcommands(parser)
            if not choices:
                break
            if word not in choices:
                return f"`{command}`: `tinylab {' '.join(path)}` has no subcommand {word!r}"
            parser, path = choices[word], [*path, word]
        return None
    if head.endswith("python") and len(words) > 1 and words[1].endswith(".py"):
        script = ROOT / words[1]
        return None if script.is_file() else f"`{command}`: {words[1]} does not exist"
    return None


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_every_command_shown_exists(page):
    targets = _make_targets()
    problems = [p for c in _commands(page.read_text(encoding="utf-8"))
                if (p := _check(c, targets))]
    assert not problems, "\n".join(problems)


def test_the_check_notices_a_missing_target_subcommand_and_script():
    targets = _make_targets()
    assert _check("make course", targets) is None
    assert "no make target ['cours']" in _check("make cours", targets)
    assert "has no subcommand 'fech'" in _check("tinylab assets fech", targets)
    assert _check(".venv/bin/tinylab course run --profile ci", targets) is None
    assert "does not exist" in _check(".venv/bin/python scripts/nothing.py", targets)


def test_readme_is_one_page():
    size = len((ROOT / "README.md").read_bytes())
    assert size <= 15_000, f"README.md is {size} bytes; results and tables belong in docs/"
