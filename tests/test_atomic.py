"""tinylab.atomic: the one way tinylab writes a file. A failed write leaves the old file and no
debris; writers that pick a format from the suffix see the real suffix."""
from __future__ import annotations

import pytest

from tinylab.atomic import atomic_path, atomic_write_bytes, atomic_write_text


def test_write_replaces_whole_and_leaves_nothing_behind(tmp_path):
    target = tmp_path / "sub" / "report.json"
    atomic_write_text(target, "old")
    atomic_write_text(target, "new ✓")
    assert target.read_text(encoding="utf-8") == "new ✓"
    atomic_write_bytes(tmp_path / "b.bin", b"\x00\x01")
    assert (tmp_path / "b.bin").read_bytes() == b"\x00\x01"
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["b.bin", "report.json", "sub"]


def test_a_failing_writer_keeps_the_old_file(tmp_path):
    target = tmp_path / "figure.png"
    target.write_bytes(b"old figure")
    with pytest.raises(RuntimeError, match="disk full"):
        with atomic_path(target) as tmp:
            assert tmp.suffix == ".png" and tmp.parent == tmp_path and tmp.name.startswith(".")
            tmp.write_bytes(b"half a fig")
            raise RuntimeError("disk full")
    assert target.read_bytes() == b"old figure"
    assert [p.name for p in tmp_path.iterdir()] == ["figure.png"]



def test_atomic_directory_gets_the_users_umask_not_mkdtemps_0700(tmp_path):
    """A cache folder shared by a group (umask 002) must be readable by the group."""
    import os
    import stat

    from tinylab.atomic import atomic_directory

    old = os.umask(0o002)
    try:
        with atomic_directory(tmp_path / "teachers" / "k") as tmp:
            (tmp / "w.bin").write_bytes(b"w")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "teachers" / "k").stat().st_mode) == 0o775
