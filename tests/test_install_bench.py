"""bench/install.py times what `make setup` runs: the same installers, flags and versions."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from conftest import bench_script

MAKEFILE = (Path(__file__).resolve().parents[1] / "Makefile").read_text()


def _setup_recipe() -> str:
    """The recipe of the stamp target that `make setup` runs, continuation lines joined."""
    start = MAKEFILE.index("$(STAMP):")
    end = MAKEFILE.index("\nsetup:", start)
    return re.sub(r"[ \t]*\\\n\s*", " ", MAKEFILE[start:end])


def test_the_benchmark_reads_the_makefile_versions_and_extras():
    install = bench_script("install")
    for name in ("PIP_VERSION", "UV_VERSION", "TORCH_VERSION"):
        assert re.search(rf"^{name} \?= {re.escape(install._makefile_value(name))}$", MAKEFILE,
                         re.M)
    assert re.search(rf"^EXTRAS := {re.escape(install.EXTRAS)}$", MAKEFILE, re.M)
    with pytest.raises(SystemExit, match="NO_SUCH_SETTING"):
        install._makefile_value("NO_SUCH_SETTING")


@pytest.mark.parametrize("tool", ["uv", "pip"])
def test_each_timed_command_is_the_one_make_setup_runs(tool):
    install = bench_script("install")
    python, uv = Path("/venv/bin/python"), Path("/venv/bin/uv")
    command = " ".join(install.install_command(tool, python, uv))
    # the Makefile's spelling of the same command: $(BIN) is the venv, EXTRAS expanded
    made = (command.replace(str(uv), "$(BIN)/uv").replace(str(python), "$(BIN)/python")
            .replace(f".[{install.EXTRAS}]", '".[$(EXTRAS)]"'))
    assert made in _setup_recipe(), made


def test_uv_falls_back_to_pip_and_the_lock_is_verified_either_way():
    recipe = _setup_recipe()
    uv_at = recipe.index("$(BIN)/uv pip install")
    pip_at = recipe.index("$(BIN)/python -m pip install --quiet -c requirements/lock.txt")
    verify_at = recipe.index("scripts/lock.py --verify")
    assert uv_at < recipe.index("||", uv_at) < pip_at < verify_at


def test_rounds_below_one_are_refused(capsys):
    install = bench_script("install")
    with pytest.raises(SystemExit):
        install.main(["--rounds", "0"])
    assert "--rounds must be at least 1, got 0" in capsys.readouterr().err
