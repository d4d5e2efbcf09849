"""``tinylab cache pack`` / ``unpack`` and ``tinylab course prepare``: a room's cache on a stick."""
from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from tinylab.config import PRESETS

from tinylab import cli
from tinylab.course.cache_pack import PACK_MANIFEST, PackError, pack_cache, unpack_cache


def _fake_cache(root: Path) -> Path:
    (root / "teachers" / "abc123").mkdir(parents=True)
    (root / "teachers" / "abc123" / "model.safetensors").write_bytes(b"teacher weights" * 100)
    (root / "teachers" / "abc123" / "config.json").write_text('{"a": 1}')
    (root / "general" / "def456").mkdir(parents=True)
    (root / "general" / "def456" / "model.safetensors").write_bytes(b"student" * 50)
    (root / "augment").mkdir()
    (root / "augment" / "0123.parquet").write_bytes(b"PAR1 rows")
    (root / "teachers" / ".abc123.tmp-9").mkdir()      # a temporary folder: not packed
    return root


def _tree(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_round_trip_adds_entries_and_keeps_existing(tmp_path):
    source = _fake_cache(tmp_path / "source")
    pack = tmp_path / "room.tar"
    manifest = pack_cache(pack, cache=source, kinds=("teachers", "general", "augment"))
    assert manifest["entries"] == ["teachers/abc123", "general/def456", "augment/0123.parquet"]
    target = tmp_path / "laptop"
    (target / "general" / "def456").mkdir(parents=True)
    (target / "general" / "def456" / "model.safetensors").write_bytes(b"newer, local")
    result = unpack_cache(pack, cache=target)
    assert result == {"added": ["teachers/abc123", "augment/0123.parquet"],
                      "kept": ["general/def456"]}
    got = _tree(target)
    assert got["teachers/abc123/model.safetensors"] == b"teacher weights" * 100
    assert got["general/def456/model.safetensors"] == b"newer, local"   # never overwritten
    assert not any(name.startswith(".unpack-") for name in got)        # staging removed
    with pytest.raises(FileExistsError):
        pack_cache(pack, cache=source)                                  # never overwritten


def _rewrite(pack: Path, out: Path, change) -> Path:
    """A copy of ``pack`` with ``change(name, data) -> data`` applied to every member."""
    with tarfile.open(pack) as src, tarfile.open(out, "w") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read()
            data = change(member.name, data)
            member.size = len(data)
            import io
            dst.addfile(member, io.BytesIO(data))
    return out


def test_one_corrupted_file_is_refused_by_name_and_the_cache_is_untouched(tmp_path):
    pack = tmp_path / "room.tar"
    pack_cache(pack, cache=_fake_cache(tmp_path / "source"), kinds=("teachers", "general"))
    bad = _rewrite(pack, tmp_path / "bad.tar", lambda name, data: data.replace(
        b"teacher weights", b"teacher WEIGHTS", 1) if name.endswith(
        "abc123/model.safetensors") else data)
    target = tmp_path / "laptop"
    (target / "augment").mkdir(parents=True)
    (target / "augment" / "mine.parquet").write_bytes(b"mine")
    before = _tree(target)
    with pytest.raises(PackError, match="teachers/abc123/model.safetensors"):
        unpack_cache(bad, cache=target)
    assert _tree(target) == before and len(list(target.iterdir())) == 1


def test_truncated_pack_other_version_and_not_a_pack_fail_in_one_line(tmp_path, capsys,
                                                                        monkeypatch):
    pack = tmp_path / "room.tar"
    pack_cache(pack, cache=_fake_cache(tmp_path / "source"), kinds=("teachers",))
    cut = tmp_path / "cut.tar"
    cut.write_bytes(pack.read_bytes()[:1500])
    old = _rewrite(pack, tmp_path / "old.tar", lambda name, data: json.dumps(
        {**json.loads(data), "tinylab": "0.0.1"}).encode() if name == PACK_MANIFEST else data)
    junk = tmp_path / "junk.tar"
    junk.write_bytes(b"not a tar file at all" * 100)
    cache = tmp_path / "laptop"
    monkeypatch.setenv("TINYLAB_CACHE", str(cache))
    for file, words in ((cut, "truncated"), (old, "packed by tinylab 0.0.1"),
                        (junk, "truncated or damaged")):
        assert cli.main(["cache", "unpack", str(file)]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and words in err, err
    assert not any(p.is_file() for p in cache.rglob("*"))     # nothing half-added


def test_unpack_into_a_folder_that_cannot_be_written(tmp_path, capsys, monkeypatch):
    import tempfile

    pack = tmp_path / "room.tar"
    pack_cache(pack, cache=_fake_cache(tmp_path / "source"), kinds=("teachers",))

    def read_only(*args, **kwargs):
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(tempfile, "mkdtemp", read_only)   # root ignores chmod; simulate it
    monkeypatch.setenv("TINYLAB_CACHE", str(tmp_path / "ro"))
    assert cli.main(["cache", "unpack", str(pack)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "$TINYLAB_CACHE" in err


def test_prepare_uses_the_notebooks_cache_keys():
    from tinylab.config import get_config
    from tinylab.distill import general_cache_key

    quick = get_config("quick", preset="two-stage")
    assert general_cache_key(quick) == general_cache_key(
        get_config("quick").replace(*PRESETS["two-stage"]["quick"]))
    assert general_cache_key(quick) != general_cache_key(get_config("quick"))
    assert get_config("ci", preset="two-stage") == get_config("ci")
    notebooks = Path(__file__).resolve().parents[1] / "notebooks"
    for name in ("05_general_distillation", "06_task_distillation"):
        # both notebooks start from the configuration `course prepare` caches under
        assert 'get_config(PROFILE, preset=\\"two-stage\\")' in (
            notebooks / f"{name}.ipynb").read_text(), name
    course = (Path(__file__).resolve().parents[1] / "tinylab" / "course" / "runner.py").read_text()
    assert 'get_config(profile, preset="two-stage")' in course


@pytest.mark.slow
def test_prepare_pack_unpack_then_notebook_finds_everything(tmp_path, monkeypatch):
    """ci profile: prepare into a fresh cache, pack, unpack on a 'new laptop', and the cache
    keys the notebooks look up are all there."""
    from tinylab.config import get_config
    from tinylab.course import fresh_cache, prepare
    from tinylab.distill import general_cache_key, teacher_cache_key

    monkeypatch.setenv("TINYLAB_CACHE", str(fresh_cache(tmp_path / "instructor")))
    seconds = prepare("ci", progress=False)
    assert set(seconds) == {"teacher", "general student", "augmented data"}
    pack_cache(tmp_path / "room.tar", cache=tmp_path / "instructor",
               kinds=("teachers", "general", "augment"))
    laptop = fresh_cache(tmp_path / "laptop")
    result = unpack_cache(tmp_path / "room.tar", cache=laptop)
    assert len(result["added"]) == 3 and not result["kept"]
    assert (laptop / "teachers" / teacher_cache_key(get_config("ci")) /
            "history.json").exists()
    assert (laptop / "general" / general_cache_key(get_config("ci", preset="two-stage")) /
            "history.json").exists()
    monkeypatch.setenv("TINYLAB_CACHE", str(laptop))
    warm = prepare("ci", progress=False)                       # everything is a cache hit
    assert sum(warm.values()) < sum(seconds.values()) / 3


# --- packs from someone else: every name is checked before anything is written ---------------

def _hostile_pack(path: Path, entries, members, files=None) -> Path:
    """A pack with a well-formed manifest (this tinylab version, correct sha256 and sizes) but
    chosen names: ``members`` maps a tar name to bytes, or to ``("symlink"|"hardlink",
    target)``."""
    import hashlib
    import io

    from tinylab.course.cache_pack import _version

    if files is None:
        files = {name: {"sha256": hashlib.sha256(data).hexdigest(), "size": len(data)}
                 for name, data in members.items() if isinstance(data, bytes)}
    manifest = {"format": 1, "tinylab": _version(), "created": "now", "entries": entries,
                "files": files}
    with tarfile.open(path, "w") as tar:
        blob = json.dumps(manifest).encode()
        info = tarfile.TarInfo(PACK_MANIFEST)
        info.size = len(blob)
        tar.addfile(info, io.BytesIO(blob))
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            if isinstance(data, tuple):
                info.type = tarfile.SYMTYPE if data[0] == "symlink" else tarfile.LNKTYPE
                info.linkname = data[1]
                tar.addfile(info)
            else:
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return path


def _hostile_cases(outside: Path) -> dict[str, tuple[list, dict, dict | None, str]]:
    """name -> (entries, members, files or None for "as the members", the name the error
    must show)."""
    import hashlib

    secret = {"sha256": hashlib.sha256(b"x").hexdigest(), "size": 1}
    return {
        "parent entry": (["../x"], {"../x": b"x"}, None, "../x"),
        "absolute entry": ([str(outside / "abs")], {str(outside / "abs"): b"x"}, None,
                           str(outside / "abs")),
        "kind then parent": (["assets/../../x"], {"assets/../../x": b"x"}, None,
                             "assets/../../x"),
        "unknown kind": (["plugins/x"], {"plugins/x": b"x"}, None, "plugins/x"),
        "nested entry": (["teachers/a/b"], {"teachers/a/b": b"x"}, None, "teachers/a/b"),
        "hidden entry": (["teachers/.a"], {"teachers/.a": b"x"}, None, "teachers/.a"),
        "file escapes its entry": (["teachers/a"], {"teachers/a/../../../x": b"x"}, None,
                                   "teachers/a/../../../x"),
        "file outside every entry": (["teachers/a"], {"general/b/x": b"x"}, None,
                                     "general/b/x"),
        "symlink member": (["teachers/a"], {"teachers/a/link": ("symlink", "/etc/passwd")},
                           {"teachers/a/link": secret}, "teachers/a/link"),
        "hard link member": (["teachers/a"], {"teachers/a/link": ("hardlink", "/etc/passwd")},
                             {"teachers/a/link": secret}, "teachers/a/link"),
        "member not in manifest": (["teachers/a"], {"teachers/a/w": b"x", "../../evil": b"x"},
                                   {"teachers/a/w": secret}, "../../evil"),
    }


def test_a_pack_cannot_write_outside_the_cache(tmp_path, capsys, monkeypatch):
    home = tmp_path / "home"          # the cache sits two levels below: ../../x lands in home
    cache = home / "cache" / "tinylab"
    cache.mkdir(parents=True)
    (home / ".ssh").mkdir()
    (home / ".ssh" / "authorized_keys").write_text("mine")
    monkeypatch.setenv("TINYLAB_CACHE", str(cache))

    def listing() -> dict[str, bytes]:
        return {p.relative_to(tmp_path).as_posix(): (p.read_bytes() if p.is_file() else b"/")
                for p in sorted(tmp_path.rglob("*")) if "packs" not in p.parts}

    (tmp_path / "packs").mkdir()
    for case, (entries, members, files, shown) in _hostile_cases(tmp_path / "abs").items():
        pack = _hostile_pack(tmp_path / "packs" / f"{case.replace(' ', '-')}.tar", entries,
                             members, files)
        before = listing()
        assert cli.main(["cache", "unpack", str(pack)]) == 2, case
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and repr(shown) in err, (case, err)
        assert "refused the whole pack" in err, (case, err)
        assert listing() == before, case          # not a file, not even a staging folder
    assert (home / ".ssh" / "authorized_keys").read_text() == "mine"


def test_a_mixed_pack_is_refused_whole_even_when_the_bad_entry_comes_last(tmp_path):
    good = _hostile_pack(tmp_path / "good.tar", ["teachers/a"], {"teachers/a/w": b"weights"})
    cache = tmp_path / "cache"
    assert unpack_cache(good, cache=cache) == {"added": ["teachers/a"], "kept": []}
    mixed = _hostile_pack(tmp_path / "mixed.tar", ["teachers/b", "../../x"],
                          {"teachers/b/w": b"w", "../../x": b"x"})
    with pytest.raises(PackError, match=r"'\.\./\.\./x'"):
        unpack_cache(mixed, cache=cache)
    assert sorted(p.relative_to(cache).as_posix() for p in cache.rglob("*")) == [
        "teachers", "teachers/a", "teachers/a/w"]


def test_a_killed_unpack_leaves_a_folder_the_next_one_removes(tmp_path):
    """Only tinylab's staging folders go: the name and the marker, and the process gone."""
    import subprocess
    import sys

    from tinylab.course.cache_pack import STAGING_MARKER, remove_stale_staging

    cache = tmp_path / "cache"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    import socket

    stale = cache / ".unpack-killed"
    stale.mkdir(parents=True)
    (stale / STAGING_MARKER).write_text(json.dumps({"pid": int(dead),
                                                    "host": socket.gethostname()}))
    (stale / "teachers").mkdir()
    running = cache / ".unpack-running"
    running.mkdir()
    (running / STAGING_MARKER).write_text(json.dumps({"pid": __import__("os").getpid(),
                                                      "host": socket.gethostname()}))
    users = cache / ".unpack-notes"          # the name alone is not enough
    users.mkdir()
    (users / "mine.txt").write_text("mine")
    pack = _hostile_pack(tmp_path / "ok.tar", ["augment/k.parquet"], {"augment/k.parquet": b"p"})
    unpack_cache(pack, cache=cache)
    assert not stale.exists() and running.exists()
    assert (users / "mine.txt").read_text() == "mine"
    assert remove_stale_staging(cache) == []


def test_pack_never_packs_itself_and_entries_get_the_umask(tmp_path):
    import os
    import stat

    source = _fake_cache(tmp_path / "source")
    with pytest.raises(ValueError, match="packed into itself"):
        pack_cache(source / "teachers" / "abc123" / "room.tar", cache=source)
    assert not (source / "teachers" / "abc123" / "room.tar").exists()
    manifest = pack_cache(source / "room.tar", cache=source)     # in the root: fine
    assert not any("room" in name for name in manifest["files"])
    old = os.umask(0o002)
    try:
        unpack_cache(source / "room.tar", cache=tmp_path / "shared")
    finally:
        os.umask(old)
    folder = tmp_path / "shared" / "teachers" / "abc123"
    assert stat.S_IMODE(folder.stat().st_mode) == 0o775
    assert stat.S_IMODE((folder / "config.json").stat().st_mode) == 0o664
