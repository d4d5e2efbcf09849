"""`tinylab assets fetch|list` end to end through the CLI entry point, on a fake registry."""
from __future__ import annotations

import hashlib
import shutil
import zipfile
from pathlib import Path

import pytest

from tinylab import assets, cli
from tinylab.assets import Asset, AssetNotAvailableError, Source

DATA = b"some pinned bytes\n"


@pytest.fixture()
def fake_registry(tmp_path, monkeypatch, isolated_cache):
    wheel = tmp_path / "wheels" / "cli_pkg-1.0-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("cli_pkg/data.txt", DATA)
    source = Source("cli-pkg", "1.0", "cli_pkg/",
                    wheel_sha256=hashlib.sha256(wheel.read_bytes()).hexdigest())
    good = Asset("demo", "a demo asset", "MIT",
                 {"data.txt": hashlib.sha256(DATA).hexdigest()}, (source,))
    unreachable = Asset("gone", "not on any index", "MIT", {"x": "0" * 64},
                        (Source("gone-pkg", "1.0", "gone/"),))
    monkeypatch.setattr(assets, "ASSETS", {"demo": good, "gone": unreachable})

    def download(src, dest, *, progress):
        if src.distribution != "cli-pkg":
            raise AssetNotAvailableError(f"pip could not download {src.requirement}: "
                                         "No matching distribution found")
        return Path(shutil.copy(wheel, dest))

    monkeypatch.setattr(assets, "_pip_download", download)
    return isolated_cache


def test_fetch_then_list(fake_registry, capsys):
    assert cli.main(["assets", "list"]) == 0
    out = capsys.readouterr().out
    assert f"cache: {fake_registry}" in out
    assert "demo" in out and "missing" in out and "cli-pkg==1.0" in out

    assert cli.main(["assets", "fetch", "demo"]) == 0
    captured = capsys.readouterr()
    folder = fake_registry / "assets" / "demo"
    assert f"demo                   {folder}" in captured.out
    assert "verified and cached" in captured.err

    assert cli.main(["assets", "fetch", "--quiet", "demo"]) == 0  # idempotent, quiet
    captured = capsys.readouterr()
    assert captured.err == "" and str(folder) in captured.out

    assert cli.main(["assets", "list"]) == 0
    lines = capsys.readouterr().out.splitlines()
    [demo] = [line for line in lines if line.startswith("demo")]
    assert "verified" in demo and "0.0 MB" in demo


def test_fetch_failure_is_one_clean_line(fake_registry, capsys):
    assert cli.main(["assets", "fetch", "--quiet", "gone"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "Traceback" not in err
    assert err.startswith("tinylab: error: could not fetch offline asset 'gone'")
    assert "tinylab assets fetch" in err


def test_unknown_asset_name(fake_registry, capsys):
    assert cli.main(["assets", "fetch", "nope"]) == 2
    assert "unknown asset 'nope'; known assets: demo, gone" in capsys.readouterr().err
